//! The staked identity's vote state on this server — its tower under TowerBFT, its vote history
//! under Alpenglow: reading and verifying it, waiting for it to be final after a demotion,
//! installing one received from the other server, and archiving the ones removed. Every file that
//! enters or leaves goes through the identity crate's codec and signature check; the steps are the
//! same for both kinds, and only the settle rule knows one from the other.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use failover_identity::{tower_hash, write_atomic, Pubkey, VoteStateFile, VoteStateKind};

use crate::api::{VoteStateBlob, VoteStateStatus};

/// A vote-state file read from disk and verified for the staked identity.
#[derive(Clone, Debug)]
pub struct LocalVoteState {
    pub kind: VoteStateKind,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub last_vote: Option<u64>,
    pub root: Option<u64>,
}

impl LocalVoteState {
    pub fn blob(&self, identity: &Pubkey) -> VoteStateBlob {
        VoteStateBlob::new(
            identity.to_string(),
            self.kind,
            &self.bytes,
            self.last_vote,
            self.root,
        )
    }
}

/// Why a vote-state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VoteStateProblem {
    #[error("no {kind} file at {path}")]
    Missing { kind: VoteStateKind, path: PathBuf },
    #[error("cannot read {path}: {error}")]
    Unreadable { path: PathBuf, error: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{kind} hash {got} is not the expected {want}")]
    HashMismatch {
        kind: VoteStateKind,
        got: String,
        want: String,
    },
    #[error("a {offered} was offered but this cluster needs a {needed}")]
    WrongKind {
        offered: VoteStateKind,
        needed: VoteStateKind,
    },
    #[error("{kind} last vote {} is older than {what} ({newest}): installing it could violate lockouts", offered.map_or("none".to_string(), |v| v.to_string()))]
    Stale {
        kind: VoteStateKind,
        offered: Option<u64>,
        newest: u64,
        what: &'static str,
    },
}

/// Reads and verifies the `kind` file at `path` for `identity`.
pub fn read(
    kind: VoteStateKind,
    path: &Path,
    identity: &Pubkey,
) -> Result<LocalVoteState, VoteStateProblem> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VoteStateProblem::Missing {
                kind,
                path: path.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(VoteStateProblem::Unreadable {
                path: path.to_path_buf(),
                error: e.to_string(),
            })
        }
    };
    verify_bytes(kind, bytes, identity)
}

/// Parses and verifies vote-state bytes for `identity`.
pub fn verify_bytes(
    kind: VoteStateKind,
    bytes: Vec<u8>,
    identity: &Pubkey,
) -> Result<LocalVoteState, VoteStateProblem> {
    let file = VoteStateFile::parse(kind, &bytes)
        .map_err(|e| VoteStateProblem::Invalid(format!("{kind} rejected: {e}")))?;
    file.verify(identity)
        .map_err(|e| VoteStateProblem::Invalid(format!("{kind} rejected: {e}")))?;
    Ok(LocalVoteState {
        kind,
        sha256: tower_hash(&bytes),
        last_vote: file.latest_vote(),
        root: file.root(),
        bytes,
    })
}

/// Verifies a received file: its bytes hash to what it claims, and to `expected` when given.
pub fn verify_blob(
    blob: &VoteStateBlob,
    identity: &Pubkey,
    expected: Option<&str>,
) -> Result<LocalVoteState, VoteStateProblem> {
    let kind = blob.kind;
    let bytes = blob
        .bytes()
        .ok_or_else(|| VoteStateProblem::Invalid(format!("{kind} is not valid base64")))?;
    let got = tower_hash(&bytes);
    for want in std::iter::once(blob.sha256.as_str()).chain(expected) {
        if got != want {
            return Err(VoteStateProblem::HashMismatch {
                kind,
                got,
                want: want.to_string(),
            });
        }
    }
    verify_bytes(kind, bytes, identity)
}

/// The file as `/status` reports it.
pub fn status(
    kind: VoteStateKind,
    path: &Path,
    identity: &Pubkey,
) -> (VoteStateStatus, Option<LocalVoteState>) {
    let mut status = VoteStateStatus {
        kind,
        path: path.display().to_string(),
        present: path.exists(),
        last_vote: None,
        root: None,
        sha256: None,
        error: None,
    };
    match read(kind, path, identity) {
        Ok(t) => {
            status.last_vote = t.last_vote;
            status.root = t.root;
            status.sha256 = Some(t.sha256.clone());
            (status, Some(t))
        }
        Err(VoteStateProblem::Missing { .. }) => (status, None),
        Err(e) => {
            status.error = Some(e.to_string());
            (status, None)
        }
    }
}

/// What identifies one version of the file: a rename (Agave's atomic write) changes the inode.
fn fingerprint(path: &Path) -> Option<(u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Slots the validator must replay after the demotion (and after the last rewrite) before an
/// unchanged tower counts as final.
pub const SETTLE_SLOTS: u64 = 3;

/// How the wait for a demoted node's tower ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub waited: Duration,
    /// Tower rewrites seen after the demotion (Agave casts at most one).
    pub changes: u32,
    /// Slots the validator replayed meanwhile (`None` when its RPC did not answer).
    pub slots: Option<u64>,
}

/// Waits until the tower at `path` has not changed for `quiet`: after the validator's authorized
/// voters were removed, only a vote already signed can still be written (within milliseconds).
pub async fn wait_quiet(
    path: &Path,
    quiet: Duration,
    deadline: Duration,
) -> Result<Settled, String> {
    let started = Instant::now();
    let mut last = fingerprint(path);
    let mut since = Instant::now();
    let mut changes = 0u32;
    loop {
        if since.elapsed() >= quiet {
            return Ok(Settled {
                waited: started.elapsed(),
                changes,
                slots: None,
            });
        }
        if started.elapsed() >= deadline {
            return Err(format!(
                "{} still changing {deadline:?} after the voters were removed ({changes} rewrites)",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = fingerprint(path);
        if now != last {
            last = now;
            since = Instant::now();
            changes += 1;
        }
    }
}

/// Waits until the staked vote state at `path` can no longer change after a confirmed demotion,
/// where the validator's authorized voters could not be removed (secure mode, Frankendancer, the
/// command kind): a vote may still be signed after `setIdentity`.
///
/// Agave's replay loop notices a new identity only after it has voted on the next bank it
/// finishes (solana-core 3.1 `replay_stage.rs`): one more vote with the old identity may come,
/// and when slots are slow it comes seconds later — no fixed quiet time covers it. And the save
/// of a vote signed just before `setIdentity` can itself reach the file after it. Counting
/// rewrites cannot tell the two apart (one rewrite used to be taken for the straggler), so the
/// rule is by slot: the file is final once the validator has replayed [`SETTLE_SLOTS`] slots
/// since it last changed and at least `quiet` has passed, and — for a tower — once its last vote
/// is at or past the vote account's last vote as this validator sees it (`chain_vote`): a vote
/// that landed but is not in the file means a save is still to come.
///
/// `slot` reads the validator's processed slot; when it cannot (RPC down), only `deadline` ends
/// the wait, with an error — the vote state is never declared final on time alone.
#[allow(clippy::too_many_arguments)]
pub async fn wait_settled<F, Fut, G, Gut>(
    kind: VoteStateKind,
    path: &Path,
    identity: &Pubkey,
    quiet: Duration,
    deadline: Duration,
    mut slot: F,
    mut chain_vote: G,
) -> Result<Settled, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
    G: FnMut() -> Gut,
    Gut: std::future::Future<Output = Option<u64>>,
{
    let started = Instant::now();
    let mut last = fingerprint(path);
    let first_slot = slot().await;
    let mut since = Instant::now();
    let mut slot_at_change = first_slot;
    let mut changes = 0u32;
    let mut now_slot = first_slot;
    let mut last_slot_poll = Instant::now();
    // The file's last vote below the chain's, when that held the settle back.
    let mut behind: Option<(Option<u64>, u64)> = None;
    // The vote account is read at most ten times a second too.
    let mut last_chain_look: Option<Instant> = None;
    loop {
        let replayed = match (slot_at_change, now_slot) {
            (Some(from), Some(now)) => Some(now.saturating_sub(from)),
            _ => None,
        };
        let quiet_for_slots =
            since.elapsed() >= quiet && replayed.is_some_and(|r| r >= SETTLE_SLOTS);
        let chain_due = last_chain_look.is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if quiet_for_slots && chain_due {
            last_chain_look = Some(Instant::now());
            let caught_up = match kind {
                VoteStateKind::VoteHistory => true,
                VoteStateKind::Tower => {
                    let file = read(kind, path, identity).ok().and_then(|s| s.last_vote);
                    match chain_vote().await {
                        Some(chain) if file.is_none_or(|f| f < chain) => {
                            behind = Some((file, chain));
                            false
                        }
                        _ => true,
                    }
                }
            };
            if caught_up {
                return Ok(Settled {
                    waited: started.elapsed(),
                    changes,
                    slots: match (first_slot, now_slot) {
                        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                        _ => None,
                    },
                });
            }
        }
        if started.elapsed() >= deadline {
            let behind = behind.map_or(String::new(), |(file, chain)| {
                format!(
                    "; its last vote {} is behind the vote account's {chain}",
                    file.map_or("none".into(), |v| v.to_string())
                )
            });
            return Err(format!(
                "{} not provably final after {deadline:?} ({changes} rewrites since the demotion, \
                 {} slots replayed{behind}): is the validator still voting with it, or is its RPC down?",
                path.display(),
                replayed.map_or("unknown".to_string(), |r| r.to_string())
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = fingerprint(path);
        // The validator's RPC is asked at most ten times a second.
        if last_slot_poll.elapsed() >= Duration::from_millis(100) {
            last_slot_poll = Instant::now();
            if let Some(s) = slot().await {
                now_slot = Some(s);
            }
        }
        if now != last {
            last = now;
            since = Instant::now();
            slot_at_change = now_slot;
            changes += 1;
            if changes > 1 && kind == VoteStateKind::Tower {
                tracing::warn!(changes, path = %path.display(), "tower rewritten more than once after the demotion");
            }
        }
    }
}

/// Installs `state` at `path` atomically.
pub fn install(path: &Path, state: &LocalVoteState) -> std::io::Result<()> {
    write_atomic(path, &state.bytes)
}

/// Keeps a copy of a vote-state file leaving this server in `<state_dir>/towers/` (both kinds),
/// so none is ever lost.
/// The newest vote state of `identity` in the archive (the highest last vote among the files that
/// verify): a demoted node's final one, which survives an agent restart there.
pub fn newest_archived(state_dir: &Path, identity: &Pubkey) -> Option<LocalVoteState> {
    let entries = std::fs::read_dir(state_dir.join("towers")).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = if name.starts_with("vote_history-") {
                VoteStateKind::VoteHistory
            } else if name.starts_with("tower-") {
                VoteStateKind::Tower
            } else {
                return None;
            };
            read(kind, &e.path(), identity).ok()
        })
        .max_by_key(|s| s.last_vote)
}

pub fn archive(state_dir: &Path, tower: &LocalVoteState) -> std::io::Result<PathBuf> {
    let dir = state_dir.join("towers");
    std::fs::create_dir_all(&dir)?;
    let prefix = match tower.kind {
        VoteStateKind::Tower => "tower",
        VoteStateKind::VoteHistory => "vote_history",
    };
    let path = dir.join(format!(
        "{prefix}-{}-{}.bin",
        tower.last_vote.unwrap_or(0),
        &tower.sha256[..16]
    ));
    write_atomic(&path, &tower.bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use failover_identity::tower::{BlockTimestamp, LastVote, Lockout, TowerVoteState};
    use failover_identity::{tower_path, Keypair, Tower, TowerFile};

    /// A signed tower file in Agave's format whose last vote is `last`.
    fn write_tower(path: &Path, key: &Keypair, last: u64) {
        let lockouts = vec![Lockout {
            slot: last,
            confirmation_count: 1,
        }];
        let tower = Tower {
            node_pubkey: key.pubkey(),
            threshold_depth: 8,
            threshold_size: 2.0 / 3.0,
            vote_state: TowerVoteState::new(lockouts.clone(), None),
            last_vote: LastVote::TowerSync {
                lockouts,
                root: None,
                hash: [1; 32],
                timestamp: None,
                block_id: [2; 32],
            },
            last_timestamp: BlockTimestamp {
                slot: last,
                timestamp: 0,
            },
        };
        write_atomic(path, &TowerFile::sign(&tower, key)).unwrap();
    }

    /// A validator whose processed slot and view of the vote account the test moves.
    #[derive(Clone)]
    struct Validator {
        slot: Arc<AtomicU64>,
        chain: Arc<AtomicU64>,
        /// Told at each slot read: the settle has begun (its file fingerprint is taken).
        asked: Arc<tokio::sync::Notify>,
    }

    impl Validator {
        fn new(slot: u64, chain: u64) -> Self {
            Self {
                slot: Arc::new(AtomicU64::new(slot)),
                chain: Arc::new(AtomicU64::new(chain)),
                asked: Arc::new(tokio::sync::Notify::new()),
            }
        }

        fn settle(
            &self,
            path: &Path,
            key: &Keypair,
            deadline: Duration,
        ) -> tokio::task::JoinHandle<Result<Settled, String>> {
            let (path, identity, v) = (path.to_path_buf(), key.pubkey(), self.clone());
            tokio::spawn(async move {
                let (slot, chain, asked) = (v.slot.clone(), v.chain.clone(), v.asked.clone());
                wait_settled(
                    VoteStateKind::Tower,
                    &path,
                    &identity,
                    Duration::from_millis(20),
                    deadline,
                    || {
                        let s = slot.load(Ordering::SeqCst);
                        asked.notify_one();
                        async move { Some(s) }
                    },
                    || {
                        let c = chain.load(Ordering::SeqCst);
                        async move { Some(c) }
                    },
                )
                .await
            })
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_late_save_of_the_vote_before_the_demotion_is_not_taken_for_the_straggler() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let path = tower_path(dir.path(), &key.pubkey());
        // At the demotion the file holds 10; vote 11 was signed just before setIdentity and
        // has landed, its save is late.
        write_tower(&path, &key, 10);
        let validator = Validator::new(100, 11);
        let settle = validator.settle(&path, &key, Duration::from_secs(20));
        validator.asked.notified().await;
        write_tower(&path, &key, 11);
        // Slow slots: the straggler (the replay loop's last vote with X) comes a while later,
        // and the validator has replayed no slot meanwhile.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !settle.is_finished(),
            "the late save was taken for the straggler: {:?}",
            settle.await
        );
        write_tower(&path, &key, 12);
        validator.chain.store(12, Ordering::SeqCst);
        // Replay goes on: a slot every 20 ms.
        let slot = validator.slot.clone();
        let replay = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                slot.fetch_add(1, Ordering::SeqCst);
            }
        });
        let settled = settle.await.unwrap().unwrap();
        replay.abort();
        assert_eq!(settled.changes, 2);
        let last = read(VoteStateKind::Tower, &path, &key.pubkey())
            .unwrap()
            .last_vote;
        assert_eq!(last, Some(12));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tower_behind_a_vote_that_landed_is_never_final() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();
        let path = tower_path(dir.path(), &key.pubkey());
        write_tower(&path, &key, 10);
        // The slots go by, the file stays at 10, and the chain has 11 from this validator.
        let validator = Validator::new(200, 11);
        let settle = validator.settle(&path, &key, Duration::from_millis(600));
        validator.asked.notified().await;
        validator.slot.store(210, Ordering::SeqCst);
        let err = settle.await.unwrap().unwrap_err();
        assert!(err.contains("behind the vote account's 11"), "{err}");
    }

    #[test]
    fn an_installed_vote_state_survives_a_power_cut() {
        failover_sim::durability::assert_durable(
            "vote_state::tests::an_installed_vote_state_survives_a_power_cut",
            |dir| {
                let state = LocalVoteState {
                    kind: VoteStateKind::Tower,
                    bytes: vec![1, 2, 3],
                    sha256: "0".repeat(64),
                    last_vote: Some(5),
                    root: None,
                };
                install(&dir.join("tower-1_9-X.bin"), &state).unwrap();
            },
        );
    }
}
