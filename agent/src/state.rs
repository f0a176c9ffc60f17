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
    /// The identity whose tower it was (absent in files written before it was recorded).
    #[serde(default)]
    pub identity: Option<String>,
}

/// The last identity change this agent completed, and in which term.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// A `become_active` succeeded: the staked identity is this node's to hold.
    Active { term: u64 },
    /// A demotion left the validator without the staked identity: holding it again needs a
    /// `become_active` (a validator restarted with it on its command line has none).
    Passive {
        term: u64,
        /// The validator process demoted (none when it was not running): another one with the
        /// staked keypair on its command line was started since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validator_pid: Option<u32>,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PersistedState {
    pub term: u64,
    pub newest_tower: Option<SeenTower>,
    /// The term of the last demotion this agent started: a term moves the staked identity away
    /// from a node once and never back, so `become_active` in that term is refused.
    #[serde(default)]
    pub demoted_in_term: Option<u64>,
    /// The last identity change completed here (absent before the first, and in files written
    /// before it was recorded: then nothing is assumed).
    #[serde(default)]
    pub last_role: Option<Role>,
    /// The switch that issued the first command of the newest term commanded here: (term, id).
    #[serde(default)]
    pub term_owner: Option<(u64, String)>,
}

/// The state file and its current contents.
/// How often a state dir's reserve is looked at, and made again once it was given up.
const RESERVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps the reserve of `dir` (`failover_identity::durable::keep_reserve`) now and every minute
/// from now on, until the task is aborted; logs when it cannot.
pub fn keep_reserve(dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut said = false;
        loop {
            let d = dir.clone();
            let kept =
                tokio::task::spawn_blocking(move || failover_identity::durable::keep_reserve(&d))
                    .await;
            match kept {
                Ok(Ok(true)) => said = false,
                Ok(Ok(false)) if !said => {
                    said = true;
                    tracing::error!(
                        dir = %dir.display(),
                        "the state dir's disk is full: no room for its {} MiB reserve; a switch \
                         may not be able to record its term",
                        failover_identity::durable::RESERVE_BYTES >> 20
                    );
                }
                Ok(Err(e)) if !said => {
                    said = true;
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the state dir's reserve");
                }
                _ => {}
            }
            tokio::time::sleep(RESERVE_EVERY).await;
        }
    })
}

fn write(path: &Path, state: &PersistedState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    write_durably(path, &bytes)
}

/// Writes `bytes` to `path` durably, and says so loudly when that took the state dir's reserve
/// (what the agent's and the manager's files in their state dirs are written with).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    failover_identity::durable::write(path, bytes)?;
    if failover_identity::durable::reserve_was_released() {
        tracing::error!(
            file = %path.display(),
            "the state dir's disk is full: gave up its reserve ({} MiB) to write this file; \
             free space there — until then the next full write fails",
            failover_identity::durable::RESERVE_BYTES >> 20
        );
    }
    Ok(())
}

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

    /// Writes the state atomically and durably (a power cut never undoes a term).
    pub fn save(&self) -> std::io::Result<()> {
        write(&self.path, &self.state)
    }

    /// Applies `change` and writes the result. The change is kept only once it is on disk: a
    /// term or a demotion that could not be recorded must not be acted on — nor pass, when the
    /// same command is asked again, as already recorded.
    pub fn update(&mut self, change: impl FnOnce(&mut PersistedState)) -> std::io::Result<()> {
        let mut next = self.state.clone();
        change(&mut next);
        write(&self.path, &next)?;
        self.state = next;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets a newest tower recorded for another identity (the configured staked identity
    /// changed, or the state dir came from another cluster): its slots say nothing about this
    /// identity's lockouts, and keeping it would refuse every tower this identity offers.
    /// Returns what was forgotten.
    pub fn forget_other_identity(&mut self, identity: &str) -> Option<SeenTower> {
        let other = self
            .state
            .newest_tower
            .as_ref()
            .is_some_and(|t| t.identity.as_deref().is_some_and(|i| i != identity));
        if other {
            self.state.newest_tower.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A term the disk refused is not kept: the same term asked again must try to record it
    /// again, not pass as already accepted (it did, which let a switch act on a term a restart
    /// would forget).
    #[test]
    fn an_update_that_cannot_be_written_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let mut file = StateFile::load(&state_dir).unwrap();
        file.update(|s| s.term = 4).unwrap();
        // Writes fail from here (the state dir is a plain file now: even root cannot write
        // under it).
        std::fs::remove_dir_all(&state_dir).unwrap();
        std::fs::write(&state_dir, b"not a directory").unwrap();
        assert!(file.update(|s| s.term = 5).is_err());
        assert_eq!(file.state.term, 4);
        assert!(file.update(|s| s.demoted_in_term = Some(5)).is_err());
        assert_eq!(file.state.demoted_in_term, None);
    }

    #[test]
    fn the_state_file_survives_a_power_cut() {
        failover_sim::durability::assert_durable(
            "state::tests::the_state_file_survives_a_power_cut",
            |dir| {
                let mut file = StateFile::load(dir).unwrap();
                file.state.term = 7;
                file.save().unwrap();
            },
        );
    }

    #[test]
    fn a_tower_seen_for_another_identity_is_forgotten_one_without_identity_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        let seen = |identity: Option<&str>| SeenTower {
            last_vote: 340,
            sha256: "ab".into(),
            identity: identity.map(str::to_string),
        };
        file.state.newest_tower = Some(seen(None));
        assert_eq!(file.forget_other_identity("X"), None);
        file.state.newest_tower = Some(seen(Some("X")));
        assert_eq!(file.forget_other_identity("X"), None);
        assert!(file.state.newest_tower.is_some());
        file.state.newest_tower = Some(seen(Some("Y")));
        assert_eq!(file.forget_other_identity("X"), Some(seen(Some("Y"))));
        assert_eq!(file.state.newest_tower, None);
        // Files from before the field existed still load.
        std::fs::write(
            file.path(),
            r#"{"term": 3, "newest_tower": {"last_vote": 9, "sha256": "cd"}}"#,
        )
        .unwrap();
        let old = StateFile::load(dir.path()).unwrap();
        assert_eq!(old.state.newest_tower.unwrap().identity, None);
    }

    #[test]
    fn round_trips_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        assert_eq!(file.state, PersistedState::default());
        file.state.term = 7;
        file.state.demoted_in_term = Some(6);
        file.state.last_role = Some(Role::Passive {
            term: 6,
            validator_pid: Some(42),
        });
        file.state.newest_tower = Some(SeenTower {
            identity: None,
            last_vote: 1234,
            sha256: "ab".into(),
        });
        file.save().unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().state, file.state);
        std::fs::write(file.path(), b"{garbage").unwrap();
        assert!(StateFile::load(dir.path()).is_err());
    }
}
