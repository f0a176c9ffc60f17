//! The running agent: what it knows (its config, its validator, the persisted term and newest vote
//! state, the consensus its validator reports), and what it tells the manager (`/status`, the
//! held `/tower` read). The switch procedures are in `switch.rs`, the HTTP routes in `routes.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use failover_config::{AgentConfig, TowerStore};
use failover_identity::{Pubkey, VoteStateKind};
use solana_commitment_config::CommitmentConfig;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn};

use crate::api::*;
use crate::auth::{Audience, Verifier};
use crate::consensus::Consensus;
use crate::http::LogLimiter;
use crate::state::{SeenTower, StateFile};
use crate::store::{EtcdTowers, StoredTower};
use crate::validator::Validator;
use crate::vote_state::{self, LocalVoteState};

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long a consensus reading is reused (the validator's RPC is asked at most this often).
const CONSENSUS_FRESH: Duration = Duration::from_secs(2);
/// How often [`Agent::back_up_each_save`] looks at the vote-state file (a stat while it is
/// unchanged; Agave rewrites it once per vote).
const ETCD_BACKUP_LOOK: Duration = Duration::from_millis(10);

/// The running agent.
pub struct Agent {
    pub(crate) cfg: AgentConfig,
    /// This process's id, random per start: signed commands must be addressed to it.
    pub(crate) id: String,
    /// Rejected commands are logged a few times per window, then counted.
    pub(crate) rejected_log: LogLimiter,
    /// The staked identity's vote account, once found on the local validator.
    vote_account: Mutex<Option<Pubkey>>,
    pub(crate) validator: Validator,
    pub(crate) verifier: Option<Verifier>,
    etcd: AsyncMutex<Option<EtcdTowers>>,
    pub(crate) state: AsyncMutex<StateFile>,
    /// One identity change at a time, from the manager or the watchdog.
    pub(crate) switching: AsyncMutex<()>,
    /// Bumped as each `become_active` begins and as it ends (odd while one runs): an identity the
    /// watchdog asked for before or during a promotion says nothing about the validator after it
    /// (see `watchdog.rs`).
    pub(crate) promotions: std::sync::atomic::AtomicU64,
    /// The manager's lease: renewed only by heartbeats it acknowledged (see `lease.rs`).
    pub(crate) lease: crate::lease::Lease,
    /// The watchdog's latest decision, observable by subscribers.
    pub(crate) last_fence: tokio::sync::watch::Sender<Option<FenceReport>>,
    /// The final vote state of the last demotion, until a manager has collected it.
    pub(crate) last_demoted: Mutex<Option<VoteStateBlob>>,
    /// etcd: the hash last backed up, so unchanged files are not rewritten every ping.
    last_backup: Mutex<Option<String>>,
    /// Whether the last heartbeat found the validator holding the staked identity (for
    /// [`Agent::back_up_each_save`], which reads no identity of its own).
    active_at_last_status: std::sync::atomic::AtomicBool,
    /// (path, modified time, length, sha256) of the vote-state file when `/tower` last read it:
    /// an unchanged file is not read and verified again for a manager that already holds it.
    seen_file: Mutex<Option<(PathBuf, SystemTime, u64, String)>>,
    /// The consensus the validator reported, and when.
    consensus: Mutex<Option<(Consensus, Instant)>>,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// The switch steps run here and their outcomes (see `journal.rs`).
    pub(crate) journal: Mutex<crate::journal::Journal>,
    /// What `GET /metrics` shows (see `metrics.rs`).
    pub(crate) metrics: crate::metrics::Metrics,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A slot for a message: the number, or "none".
pub(crate) fn slot_text(slot: Option<u64>) -> String {
    slot.map_or("none".to_string(), |s| s.to_string())
}

impl Agent {
    /// The validator process: by name, and on this agent's ledger when it knows it.
    pub(crate) fn find_validator(&self) -> Option<crate::process::Found> {
        crate::process::find(&self.cfg.process_name, self.cfg.ledger_path.as_deref())
    }

    /// SIGKILLs the validator process found by name and ledger and waits until it is gone; returns
    /// its pid. Never this agent's own process.
    pub(crate) async fn kill_validator(&self) -> Result<u32, String> {
        let found = self
            .find_validator()
            .ok_or_else(|| format!("no {} process found to kill", self.cfg.process_name))?;
        let pid = found.pid;
        if pid == std::process::id() {
            return Err(format!(
                "the process named {} is this agent itself: not killing it",
                self.cfg.process_name
            ));
        }
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Err(format!("pid {pid} out of range"));
        };
        // SAFETY: kill(2) with a pid read from /proc and a constant signal; no memory is involved.
        if unsafe { libc::kill(raw, libc::SIGKILL) } != 0 {
            return Err(format!(
                "kill -9 {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + crate::lease::KILL_DEADLINE;
        loop {
            if !crate::process::alive(pid) {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "pid {pid} still running {} ms after SIGKILL",
                    crate::lease::KILL_DEADLINE.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn new(cfg: AgentConfig, mut state: StateFile) -> Arc<Self> {
        if let Some(old) = state.forget_other_identity(&cfg.validator_identity.to_string()) {
            warn!(
                recorded_for = old.identity.as_deref().unwrap_or("unrecorded"),
                last_vote = old.last_vote,
                state = %state.path().display(),
                "forgetting the newest vote state recorded for another identity"
            );
            if let Err(e) = state.save() {
                warn!(error = %e, "cannot persist the state");
            }
        }
        // A demoted node's final vote state lived only in memory: after a restart it is read
        // back from the archive, so that a manager that never got it can still have it.
        let last_demoted = match state.state.last_role {
            Some(crate::state::Role::Passive { .. }) => {
                vote_state::newest_archived(&cfg.state_dir, &cfg.validator_identity)
                    .filter(|archived| {
                        state.state.newest_tower.as_ref().is_none_or(|seen| {
                            archived.last_vote.is_some_and(|v| v >= seen.last_vote)
                        })
                    })
                    .map(|archived| {
                        info!(
                            last_vote = slot_text(archived.last_vote),
                            "offering the final vote state of the last demotion from the archive"
                        );
                        archived.blob(&cfg.validator_identity)
                    })
            }
            _ => None,
        };
        let id = Audience::new_agent_id();
        let verifier = cfg.auth.require_signed_commands.then(|| {
            Verifier::new(
                cfg.auth.manager_pubkeys.clone(),
                cfg.auth.command_max_age,
                Audience {
                    agent_id: id.clone(),
                    staked: cfg.validator_identity,
                },
            )
        });
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Arc::new(Self {
            id,
            rejected_log: LogLimiter::new(5, Duration::from_secs(10)),
            vote_account: Mutex::new(None),
            validator: Validator::new(&cfg),
            verifier,
            etcd: AsyncMutex::new(None),
            state: AsyncMutex::new(state),
            switching: AsyncMutex::new(()),
            promotions: std::sync::atomic::AtomicU64::new(0),
            lease: crate::lease::Lease::resume(
                cfg.manager_timeout,
                cfg.connectivity.timeout,
                &cfg.state_dir,
            ),
            last_fence: tokio::sync::watch::channel(None).0,
            last_demoted: Mutex::new(last_demoted),
            last_backup: Mutex::new(None),
            active_at_last_status: std::sync::atomic::AtomicBool::new(false),
            seen_file: Mutex::new(None),
            consensus: Mutex::new(None),
            shutdown,
            journal: Mutex::new(crate::journal::Journal::load(&cfg.state_dir)),
            metrics: crate::metrics::Metrics::new(),
            cfg,
        })
    }

    pub fn staked(&self) -> Pubkey {
        self.cfg.validator_identity
    }

    /// This agent process's id (random per start; see [`crate::auth`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lease's published number: how long after the manager last heard this agent (or after
    /// its votes last landed, whichever is later) an active without evidence has stopped voting.
    pub fn fence_after(&self) -> Duration {
        self.lease.fence_after()
    }

    /// The watchdog's decisions as they happen.
    pub fn fence_reports(&self) -> tokio::sync::watch::Receiver<Option<FenceReport>> {
        self.last_fence.subscribe()
    }

    pub async fn term(&self) -> u64 {
        self.state.lock().await.state.term
    }

    /// What the validator says its cluster runs (or the configured value), asked again when the
    /// last answer is older than [`CONSENSUS_FRESH`] or `fresh` is set.
    pub async fn consensus(&self, fresh: bool) -> Consensus {
        if !fresh {
            if let Some((c, at)) = *self.consensus.lock().expect("consensus") {
                if at.elapsed() < CONSENSUS_FRESH {
                    return c;
                }
            }
        }
        let now = crate::consensus::resolve(self.cfg.consensus, self.validator.rpc()).await;
        let mut slot = self.consensus.lock().expect("consensus");
        let previous = slot.map(|(c, _)| c);
        // A validator that stopped answering does not make the consensus unknown again.
        let now = match (now, previous) {
            (Consensus::Unknown, Some(known)) => known,
            _ => now,
        };
        if previous.is_some_and(|p| p.name() != now.name()) {
            info!(from = %previous.unwrap_or_default(), to = %now, "the validator's consensus changed");
        }
        *slot = Some((now, Instant::now()));
        now
    }

    /// The vote-state kind of `consensus`, or — in the migration window or when unknown — the
    /// kind whose file for the staked identity was written last (a tower when there is none).
    pub(crate) fn kind_for(&self, consensus: Consensus) -> VoteStateKind {
        if let Some(kind) = consensus.vote_state_kind() {
            return kind;
        }
        let modified = |kind| {
            self.file_of(kind)
                .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
        };
        match (
            modified(VoteStateKind::Tower),
            modified(VoteStateKind::VoteHistory),
        ) {
            (Some(t), Some(h)) if h > t => VoteStateKind::VoteHistory,
            (None, Some(_)) => VoteStateKind::VoteHistory,
            _ => VoteStateKind::Tower,
        }
    }

    /// Where the staked identity's `kind` file lives on this server: the tower in the tower
    /// directory; the vote history always in the ledger (`None` without `ledger_path`).
    pub(crate) fn file_of(&self, kind: VoteStateKind) -> Option<&Path> {
        match kind {
            VoteStateKind::Tower => Some(self.cfg.tower_file.as_path()),
            VoteStateKind::VoteHistory => self.cfg.vote_history_file.as_deref(),
        }
    }

    /// [`Agent::file_of`], or why there is none.
    pub(crate) fn path_of(&self, kind: VoteStateKind) -> Result<PathBuf, String> {
        self.file_of(kind).map(Path::to_path_buf).ok_or_else(|| {
            format!(
                "no ledger_path in the config: the {kind} lives in the validator's ledger \
                 directory, set ledger_path"
            )
        })
    }

    /// Records `local` as the newest vote state seen if it is.
    pub(crate) async fn note_vote_state(&self, local: &LocalVoteState) {
        let Some(last_vote) = local.last_vote else {
            return;
        };
        let mut state = self.state.lock().await;
        if state
            .state
            .newest_tower
            .as_ref()
            .is_none_or(|t| last_vote > t.last_vote)
        {
            state.state.newest_tower = Some(SeenTower {
                identity: Some(self.staked().to_string()),
                last_vote,
                sha256: local.sha256.clone(),
            });
            if let Err(e) = state.save() {
                warn!(error = %e, "cannot persist the newest vote state seen");
            }
        }
    }

    pub(crate) async fn etcd(&self) -> Result<Option<EtcdTowers>, String> {
        let TowerStore::Etcd(config) = &self.cfg.tower_store else {
            return Ok(None);
        };
        let mut slot = self.etcd.lock().await;
        if slot.is_none() {
            *slot = Some(
                EtcdTowers::connect(config)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(slot.clone())
    }

    pub(crate) fn record(&self, term: u64, local: &LocalVoteState) -> StoredTower {
        StoredTower {
            term,
            written_by: self.cfg.listen_addr.to_string(),
            written_at_ms: unix_ms(),
            tower: local.blob(&self.staked()),
        }
    }

    /// The staked identity's vote account's last vote, as this server's validator sees it
    /// (processed). `None` when the cluster has no vote account for it yet. The vote account is
    /// found once, by its node pubkey, and remembered.
    pub(crate) async fn chain_last_vote(&self) -> Result<Option<u64>, String> {
        self.last_vote_at(CommitmentConfig::processed())
            .await
            .map_err(|e| {
                format!("cannot check the vote state against the chain's last vote (refusing): {e}")
            })
    }

    /// The vote account's last vote in blocks two thirds of the stake voted on (confirmed): on
    /// this validator, a vote counted there has reached the cluster — a node cut off on its own
    /// fork cannot confirm anything.
    pub(crate) async fn confirmed_last_vote(&self) -> Result<Option<u64>, String> {
        self.last_vote_at(CommitmentConfig::confirmed()).await
    }

    /// The vote account's last vote at `commitment`, finding (once) and remembering the account.
    async fn last_vote_at(&self, commitment: CommitmentConfig) -> Result<Option<u64>, String> {
        let known = *self.vote_account.lock().expect("vote account");
        let found = self
            .validator
            .vote_account_last_vote(&self.staked(), known, commitment)
            .await?;
        if known.is_none() {
            *self.vote_account.lock().expect("vote account") = found.map(|(a, _)| a);
        }
        Ok(found.map(|(_, v)| v))
    }

    /// Checks at start-up that the validator can be reached where the config says, and reports
    /// its role and consensus. An admin socket that does not exist is a configuration error; a
    /// validator still starting up is not.
    pub async fn startup_check(&self) -> Result<String, String> {
        if let Some(socket) = self.validator.admin_socket() {
            if !socket.exists() {
                // With the validator down there is no socket yet; with it running, the path is wrong.
                if self.find_validator().is_some() {
                    return Err(format!(
                        "admin socket {} does not exist although {} is running: is ledger_path / \
                         admin_socket the validator's?",
                        socket.display(),
                        self.cfg.process_name
                    ));
                }
                return Ok(format!(
                    "validator not running ({} not found, no admin socket at {}): reporting it down",
                    self.cfg.process_name,
                    socket.display()
                ));
            }
        }
        let version = self.validator.learn_version().await;
        let role = match self.validator.identity().await {
            Ok(id) if id == self.staked() => {
                format!("ACTIVE: the validator runs with the staked identity {id}")
            }
            Ok(id) => format!(
                "passive: the validator runs with {id}, not the staked {}",
                self.staked()
            ),
            Err(e) => format!("role unknown for now: {e}"),
        };
        let consensus = self.consensus(true).await;
        Ok(match version {
            Some(v) => format!("{role} (Agave {v}, {consensus})"),
            None => format!("{role} ({consensus})"),
        })
    }

    /// The staked identity's current vote state on disk (the consensus's kind) if it verifies and
    /// is not the one with SHA-256 `known`. Cheap (a stat, and one small read and signature check
    /// when it changed), so the manager can ask several times a second.
    pub async fn current_vote_state(&self, known: Option<&str>) -> TowerResponse {
        let staked = self.staked();
        let kind = self.kind_for(self.consensus(false).await);
        let Some(path) = self.file_of(kind) else {
            return TowerResponse { tower: None };
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if let (Some((modified, len)), Some(known)) = (stamp, known) {
            let seen = self.seen_file.lock().expect("seen file");
            if seen.as_ref().is_some_and(|(p, m, l, sha)| {
                p == path && *m == modified && *l == len && sha == known
            }) {
                return TowerResponse { tower: None };
            }
        }
        let Ok(local) = vote_state::read(kind, path, &staked) else {
            return TowerResponse { tower: None };
        };
        if let Some((modified, len)) = stamp {
            *self.seen_file.lock().expect("seen file") =
                Some((path.to_path_buf(), modified, len, local.sha256.clone()));
        }
        let tower = (Some(local.sha256.as_str()) != known).then(|| local.blob(&staked));
        TowerResponse { tower }
    }

    /// The status the manager's heartbeat gets; backs the vote state up when active.
    pub async fn status(&self) -> StatusResponse {
        let staked = self.staked();
        let (identity, identity_error) = match self.validator.identity().await {
            Ok(id) => (Some(id), None),
            Err(e) => (None, Some(e)),
        };
        let role = match identity {
            Some(id) if id == staked => Role::Active,
            Some(_) => Role::Passive,
            None => Role::Unknown,
        };
        let process = self.find_validator();
        let (slot, health, consensus) = tokio::join!(
            self.validator.slot(),
            self.validator.health(),
            self.consensus(false)
        );
        self.active_at_last_status
            .store(role == Role::Active, std::sync::atomic::Ordering::Relaxed);
        self.metrics.holds_staked_identity.set(match role {
            Role::Active => 1,
            Role::Passive => 0,
            Role::Unknown => -1,
        });
        if let Some(slot) = slot {
            self.metrics.validator_slot.set(slot as i64);
        }
        let kind = self.kind_for(consensus);
        let path = self
            .file_of(kind)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let (file_status, local) = vote_state::status(kind, &path, &staked);
        if let Some(local) = &local {
            self.note_vote_state(local).await;
        }
        let term = self.term().await;
        let mut backup = None;
        // With the etcd store `back_up_each_save` copies each save; a heartbeat never waits for etcd.
        if role == Role::Active {
            if let (Some(local), TowerStore::Embedded) = (&local, &self.cfg.tower_store) {
                backup = Some(local.blob(&staked));
            }
        } else {
            backup = self.last_demoted.lock().expect("demoted").clone();
        }
        StatusResponse {
            agent_version: AGENT_VERSION.into(),
            validator_client: self.cfg.validator_client.name().into(),
            identity: identity.map(|i| i.to_string()),
            identity_error,
            staked_identity: staked.to_string(),
            role,
            consensus,
            process_name: self.cfg.process_name.clone(),
            process_running: Some(process.is_some()),
            process_uptime_secs: process.and_then(|p| p.uptime_secs),
            slot,
            health,
            tower: file_status,
            tower_backup: backup,
            term,
            agent_id: self.id.clone(),
            not_promotable: crate::keys::check(&self.cfg).err().map(|p| p.join("; ")),
            last_fence: self.last_fence.borrow().clone(),
            fence_after_ms: self.fence_after().as_millis() as u64,
            dry_run: self.cfg.dry_run,
        }
    }

    /// With the etcd store, while the last heartbeat found this node active: every vote state the
    /// validator saves goes to etcd as it is saved — what the manager's tower follower does with
    /// the embedded store. When the host dies, etcd is then behind the chain by at most the vote
    /// saved just before it was sent, not by every vote since the last heartbeat (which made the
    /// manager wait out the lockouts of votes it never saw, minutes on Agave).
    pub async fn back_up_each_save(self: Arc<Self>) {
        let staked = self.staked();
        let mut seen: Option<(PathBuf, SystemTime, u64)> = None;
        loop {
            tokio::time::sleep(ETCD_BACKUP_LOOK).await;
            if !self
                .active_at_last_status
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                continue;
            }
            let kind = self.kind_for(self.consensus(false).await);
            let Some(path) = self.file_of(kind).map(Path::to_path_buf) else {
                continue;
            };
            let Some(stamp) = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((path.clone(), m.modified().ok()?, m.len())))
            else {
                continue;
            };
            if seen.as_ref() == Some(&stamp) {
                continue;
            }
            let Ok(local) = vote_state::read(kind, &path, &staked) else {
                continue;
            };
            seen = Some(stamp);
            let term = self.term().await;
            self.backup_to_etcd(term, &local).await;
        }
    }

    async fn backup_to_etcd(&self, term: u64, local: &LocalVoteState) {
        if self.last_backup.lock().expect("backup").as_deref() == Some(local.sha256.as_str()) {
            return;
        }
        // Never for a term that has moved on or demoted this node. A backup read before a
        // demotion may still arrive after its final vote state: etcd keeps the newer one
        // (`put_backup`), so no lock here makes a demotion wait for a slow etcd.
        {
            let state = self.state.lock().await;
            if state.state.term != term || state.state.demoted_in_term.is_some_and(|t| t >= term) {
                return;
            }
        }
        if self.cfg.dry_run {
            info!(sha256 = %local.sha256, "[dry-run] would back the {} up to etcd", local.kind);
            return;
        }
        crate::pause::point(&self.cfg.state_dir, "etcd_backup").await;
        let result = match self.etcd().await {
            Ok(Some(etcd)) => etcd
                .put_backup(term, &self.record(term, local))
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => {
                debug!(?outcome, last_vote = ?local.last_vote, "{} backup to etcd", local.kind);
                *self.last_backup.lock().expect("backup") = Some(local.sha256.clone());
            }
            Err(e) => warn!(error = %e, "{} backup to etcd failed", local.kind),
        }
        crate::pause::point(&self.cfg.state_dir, "etcd_backup_done").await;
    }
}

/// Where the archive of vote-state files and the state file live (for tests and operators).
pub fn state_dir(agent: &Agent) -> PathBuf {
    agent.cfg.state_dir.clone()
}
