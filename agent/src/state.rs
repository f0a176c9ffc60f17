//! What the agent must remember across restarts: the highest fencing term it accepted and the
//! newest staked tower it has seen. Kept as a small JSON file in `state_dir`, written atomically;
//! losing it would let a replayed old term or an old tower through.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "agent-state.json";

/// The newest tower this agent has seen for the staked identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeenTower {
    pub last_vote: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistedState {
    pub term: u64,
    pub newest_tower: Option<SeenTower>,
}

/// The state file and its current contents.
pub struct StateFile {
    path: PathBuf,
    pub state: PersistedState,
}

impl StateFile {
    /// Loads the state from `dir` (creating the directory), or starts empty if there is none.
    /// A file that exists but cannot be parsed is an error: starting from term 0 would undo fencing.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt ({e}); refusing to start without the fencing term it holds — \
                     inspect it, and delete it only if you know no newer term was issued",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::default(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        Ok(Self { path, state })
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.new");
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        assert_eq!(file.state, PersistedState::default());
        file.state.term = 7;
        file.state.newest_tower = Some(SeenTower {
            last_vote: 1234,
            sha256: "ab".into(),
        });
        file.save().unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().state, file.state);
        std::fs::write(file.path(), b"{garbage").unwrap();
        assert!(StateFile::load(dir.path()).is_err());
    }
}
