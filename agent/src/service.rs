//! The agent service: the HTTP handlers, command authorization, the fencing term, and the two
//! switch procedures in their safe order.
//!
//! become_passive: setIdentity(unstaked) → confirm with the validator → wait until the staked tower
//! stops changing → read and verify it → store it (etcd, fenced by term) or return it (embedded) →
//! archive and remove it → passive hook. Nothing after a failed demotion runs: a node that may still
//! vote must never look demoted.
//!
//! become_active: check the term → take the tower (hash must match) → verify signature and node
//! pubkey → refuse if older than the newest seen → install atomically → setIdentity(staked,
//! require_tower) unless secure mode → authorized voter → active hook → confirm.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use failover_config::{AgentConfig, TowerStore};
use failover_identity::Pubkey;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, error, info, warn};

use crate::api::*;
use crate::auth::{Audience, AuthError, Verifier};
use crate::commands::run_shell;
use crate::http::LogLimiter;
use crate::state::{SeenTower, StateFile};
use crate::store::{EtcdTowers, StoredTower};
use crate::towers::{self, LocalTower, TowerProblem};
use crate::validator::Validator;

/// Deadlines of the switch phases.
const DEMOTE_DEADLINE: Duration = Duration::from_secs(15);
const CONFIRM_DEADLINE: Duration = Duration::from_secs(10);
const SETTLE_EXTRA: Duration = Duration::from_secs(15);
/// After the authorized voters are removed, how long the tower must stay unchanged: a vote signed
/// before the removal is saved by Agave's voting thread within milliseconds.
const VOTERS_REMOVED_QUIET: Duration = Duration::from_millis(150);
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The running agent.
pub struct Agent {
    pub(crate) cfg: AgentConfig,
    /// This process's id, random per start: signed commands must be addressed to it.
    id: String,
    /// Rejected commands are logged a few times per window, then counted.
    rejected_log: LogLimiter,
    /// The staked identity's vote account, once found on the local validator.
    vote_account: Mutex<Option<Pubkey>>,
    pub(crate) validator: Validator,
    verifier: Option<Verifier>,
    etcd: AsyncMutex<Option<EtcdTowers>>,
    state: AsyncMutex<StateFile>,
    /// One identity change at a time, from the manager or the watchdog.
    pub(crate) switching: AsyncMutex<()>,
    pub(crate) last_manager_contact: Mutex<Instant>,
    /// The watchdog's latest decision, observable by subscribers.
    pub(crate) last_fence: tokio::sync::watch::Sender<Option<FenceReport>>,
    /// The final tower of the last demotion, until a manager has collected it.
    last_demoted_tower: Mutex<Option<TowerBlob>>,
    /// etcd: the hash last backed up, so unchanged towers are not rewritten every ping.
    last_backup: Mutex<Option<String>>,
    /// (modified time, length, sha256) of the staked tower file when `/tower` last read it: an
    /// unchanged file is not read and verified again for a manager that already holds it.
    tower_seen: Mutex<Option<(std::time::SystemTime, u64, String)>>,
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A slot for a message: the number, or "none".
fn slot_text(slot: Option<u64>) -> String {
    slot.map_or("none".to_string(), |s| s.to_string())
}

/// A refused request: its status code and the reason, sent as an [`ErrorResponse`].
pub(crate) struct Refusal {
    status: StatusCode,
    body: ErrorResponse,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn refuse(status: StatusCode, reason: String) -> Refusal {
    Refusal {
        status,
        body: ErrorResponse::new(reason),
    }
}

impl Agent {
    /// The validator process: by name, and on this agent's ledger when it knows it.
    fn find_validator(&self) -> Option<crate::process::Found> {
        crate::process::find(&self.cfg.process_name, self.cfg.ledger_path.as_deref())
    }

    pub fn new(cfg: AgentConfig, mut state: StateFile) -> Arc<Self> {
        if let Some(old) = state.forget_other_identity(&cfg.validator_identity.to_string()) {
            warn!(
                recorded_for = old.identity.as_deref().unwrap_or("unrecorded"),
                last_vote = old.last_vote,
                state = %state.path().display(),
                "forgetting the newest tower recorded for another identity"
            );
            if let Err(e) = state.save() {
                warn!(error = %e, "cannot persist the state");
            }
        }
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
            last_manager_contact: Mutex::new(Instant::now()),
            last_fence: tokio::sync::watch::channel(None).0,
            last_demoted_tower: Mutex::new(None),
            last_backup: Mutex::new(None),
            tower_seen: Mutex::new(None),
            shutdown,
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

    /// How long after the last manager contact this agent will have demoted an isolated validator:
    /// its silence threshold, the connectivity check, and one watchdog period.
    pub fn fence_after(&self) -> Duration {
        self.cfg.manager_timeout
            + self.cfg.connectivity.timeout
            + crate::watchdog::period(&self.cfg)
    }

    /// The watchdog's decisions as they happen.
    pub fn fence_reports(&self) -> tokio::sync::watch::Receiver<Option<FenceReport>> {
        self.last_fence.subscribe()
    }

    pub async fn term(&self) -> u64 {
        self.state.lock().await.state.term
    }

    /// Checks the source address and the signature of a state-changing request.
    fn authorize(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
    ) -> Result<(), Refusal> {
        // The listener refuses other addresses at accept; this is for requests that reach the
        // routes another way (tests call them directly).
        if !self.cfg.allowed_ips.is_empty() && !self.cfg.allowed_ips.contains(&peer.ip()) {
            self.log_rejection(peer, path, "source address not in allowed_ips");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("{} is not in allowed_ips", peer.ip()),
            ));
        }
        if let Some(verifier) = &self.verifier {
            if let Err(e) = verifier.verify(headers, peer.ip(), "POST", path, body, unix_ms()) {
                self.log_rejection(peer, path, &e.to_string());
                let status = if e.is_throttle() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let mut refusal = refuse(status, e.to_string());
                refusal.body.code = Some(e.code().to_string());
                if let AuthError::WrongAudience { mine, .. } = &e {
                    refusal.body.agent_id = Some(mine.clone());
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Logs a refused command, a few times per window at most.
    fn log_rejection(&self, peer: SocketAddr, path: &str, reason: &str) {
        if let Some(held_back) = self.rejected_log.admit() {
            if held_back > 0 {
                warn!(%peer, path, reason, "rejected command ({held_back} more rejections not logged)");
            } else {
                warn!(%peer, path, reason, "rejected command");
            }
        }
    }

    /// Accepts `term` if it is not older than the newest accepted, persisting a newer one before
    /// anything acts on it.
    async fn accept_term(&self, term: u64, what: &str) -> Result<(), Refusal> {
        let mut state = self.state.lock().await;
        if term < state.state.term {
            // A heartbeat or tower read racing a switch's new term is routine; a command is not.
            if what == "status" || what == "tower" {
                debug!(term, current = state.state.term, what, "stale term refused");
            } else {
                warn!(
                    term,
                    current = state.state.term,
                    what,
                    "rejected: stale fencing term"
                );
            }
            let mut refusal = refuse(
                StatusCode::CONFLICT,
                format!(
                    "term {term} is older than term {} already accepted",
                    state.state.term
                ),
            );
            refusal.body.code = Some(CODE_STALE_TERM.into());
            refusal.body.term = Some(state.state.term);
            return Err(refusal);
        }
        if term > state.state.term {
            state.state.term = term;
            if let Err(e) = state.save() {
                error!(error = %e, "cannot persist the fencing term");
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot persist term {term}: {e}"),
                ));
            }
            info!(term, what, "accepted new fencing term");
        }
        Ok(())
    }

    fn heard_from_manager(&self) {
        *self.last_manager_contact.lock().expect("contact") = Instant::now();
    }

    /// Records `tower` as the newest seen if it is.
    async fn note_tower(&self, tower: &LocalTower) {
        let Some(last_vote) = tower.last_vote else {
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
                sha256: tower.sha256.clone(),
            });
            if let Err(e) = state.save() {
                warn!(error = %e, "cannot persist the newest tower seen");
            }
        }
    }

    async fn etcd(&self) -> Result<Option<EtcdTowers>, String> {
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

    fn record(&self, term: u64, tower: &LocalTower) -> StoredTower {
        StoredTower {
            term,
            written_by: self.cfg.listen_addr.to_string(),
            written_at_ms: unix_ms(),
            tower: tower.blob(&self.staked()),
        }
    }

    /// The staked identity's vote account's last vote, as this server's validator sees it
    /// (processed). `None` when the cluster has no vote account for it yet. The vote account is
    /// found once, by its node pubkey, and remembered.
    async fn chain_last_vote(&self) -> Result<Option<u64>, String> {
        let known = *self.vote_account.lock().expect("vote account");
        let (vote_account, last_vote) = self
            .validator
            .vote_account_last_vote(&self.staked(), known)
            .await
            .map_err(|e| {
                format!("cannot check the tower against the chain's last vote (refusing): {e}")
            })?
            .unzip();
        if known.is_none() {
            *self.vote_account.lock().expect("vote account") = vote_account;
        }
        Ok(last_vote)
    }

    /// Checks at start-up that the validator can be reached where the config says, and reports
    /// its role. An admin socket that does not exist is a configuration error; a validator still
    /// starting up is not.
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
        Ok(match version {
            Some(v) => format!("{role} (Agave {v})"),
            None => role,
        })
    }

    /// The staked tower on disk if it verifies and is not the one with SHA-256 `known`. Cheap (one
    /// small file read and a signature check), so the manager can ask several times a second.
    pub fn current_tower(&self, known: Option<&str>) -> TowerResponse {
        let staked = self.staked();
        let stamp = std::fs::metadata(&self.cfg.tower_file)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if let (Some((modified, len)), Some(known)) = (stamp, known) {
            let seen = self.tower_seen.lock().expect("tower seen");
            if seen
                .as_ref()
                .is_some_and(|(m, l, sha)| *m == modified && *l == len && sha == known)
            {
                return TowerResponse { tower: None };
            }
        }
        let Ok(local) = towers::read(&self.cfg.tower_file, &staked) else {
            return TowerResponse { tower: None };
        };
        if let Some((modified, len)) = stamp {
            *self.tower_seen.lock().expect("tower seen") =
                Some((modified, len, local.sha256.clone()));
        }
        let tower = (Some(local.sha256.as_str()) != known).then(|| local.blob(&staked));
        TowerResponse { tower }
    }

    /// The status the manager's heartbeat gets; backs the tower up when active.
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
        let (slot, health) = tokio::join!(self.validator.slot(), self.validator.health());
        let (tower_status, local) = towers::status(&self.cfg.tower_file, &staked);
        if let Some(local) = &local {
            self.note_tower(local).await;
        }
        let term = self.term().await;
        let mut tower_backup = None;
        if role == Role::Active {
            if let Some(local) = &local {
                match &self.cfg.tower_store {
                    TowerStore::Embedded => tower_backup = Some(local.blob(&staked)),
                    TowerStore::Etcd(_) => self.backup_to_etcd(term, local).await,
                }
            }
        } else {
            tower_backup = self.last_demoted_tower.lock().expect("tower").clone();
        }
        StatusResponse {
            agent_version: AGENT_VERSION.into(),
            validator_client: self.cfg.validator_client.name().into(),
            identity: identity.map(|i| i.to_string()),
            identity_error,
            staked_identity: staked.to_string(),
            role,
            process_name: self.cfg.process_name.clone(),
            process_running: Some(process.is_some()),
            process_uptime_secs: process.and_then(|p| p.uptime_secs),
            slot,
            health,
            tower: tower_status,
            tower_backup,
            term,
            agent_id: self.id.clone(),
            not_promotable: crate::keys::check(&self.cfg).err().map(|p| p.join("; ")),
            last_fence: self.last_fence.borrow().clone(),
            fence_after_ms: self.fence_after().as_millis() as u64,
            dry_run: self.cfg.dry_run,
        }
    }

    async fn backup_to_etcd(&self, term: u64, tower: &LocalTower) {
        if self.last_backup.lock().expect("backup").as_deref() == Some(tower.sha256.as_str()) {
            return;
        }
        if self.cfg.dry_run {
            info!(sha256 = %tower.sha256, "[dry-run] would back the tower up to etcd");
            return;
        }
        let result = match self.etcd().await {
            Ok(Some(etcd)) => etcd
                .put_tower(term, &self.record(term, tower))
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => *self.last_backup.lock().expect("backup") = Some(tower.sha256.clone()),
            Err(e) => warn!(error = %e, "tower backup to etcd failed"),
        }
    }

    /// Runs an action unless in dry-run, in which case it only says what it would do.
    async fn act<F, T>(&self, what: &str, action: F) -> Result<String, String>
    where
        F: std::future::Future<Output = Result<T, String>>,
        T: std::fmt::Display,
    {
        if self.cfg.dry_run {
            info!("[dry-run] would {what}");
            return Ok(format!("dry-run: would {what}"));
        }
        action.await.map(|t| t.to_string())
    }

    async fn hook(&self, name: &str, command: Option<&String>) -> Result<String, String> {
        match command {
            None => Ok(format!("no {name} configured")),
            Some(cmd) => self
                .act(
                    &format!("run {name}: {cmd}"),
                    run_shell(cmd, None, HOOK_TIMEOUT),
                )
                .await
                .map(|_| format!("ran {name}")),
        }
    }

    /// Waits until the validator reports (or stops reporting) the staked identity.
    async fn confirm(&self, want_staked: bool) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let seen = self.validator.identity().await;
            match &seen {
                Ok(id) if (*id == self.staked()) == want_staked => {
                    return Ok(format!("validator reports {id}"))
                }
                _ if started.elapsed() >= CONFIRM_DEADLINE => {
                    return Err(match seen {
                        Ok(id) => {
                            format!("validator still reports {id} after {CONFIRM_DEADLINE:?}")
                        }
                        Err(e) => format!("cannot read the validator's identity: {e}"),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// Demotes this validator in the safe order (see the module docs).
    pub async fn become_passive(&self, term: u64, reason: &str) -> FailoverResponse {
        let _guard = self.switching.lock().await;
        info!(term, reason, "become_passive");
        let mut run = Run::new(FailoverAction::BecomePassive, term, self.cfg.dry_run);
        let staked = self.staked();
        // Before anything changes: this term may no longer promote this node.
        if let Err(e) = self.note_demotion(term).await {
            run.phase("term", Err(e));
            return run.finish(self.validator.identity().await.ok());
        }

        let was_staked = match self.validator.identity().await {
            Ok(id) => id == staked,
            // A validator that cannot be read may still vote: a running one must be demoted and
            // confirmed like any other; only one whose process is gone cannot vote.
            Err(e) => {
                if self.find_validator().is_none() {
                    run.phase(
                        "demote",
                        Ok(format!(
                            "validator process {} is not running ({e}): nothing can vote",
                            self.cfg.process_name
                        )),
                    );
                    false
                } else {
                    true
                }
            }
        };
        if was_staked {
            let demote = self.act("set the unstaked identity", async {
                tokio::time::timeout(DEMOTE_DEADLINE, self.validator.demote())
                    .await
                    .map_err(|_| format!("no answer within {DEMOTE_DEADLINE:?}"))?
            });
            if !run.phase("demote", demote.await) {
                return run.finish(self.validator.identity().await.ok());
            }
            if !self.cfg.dry_run && !run.phase("confirm", self.confirm(false).await) {
                return run.finish(self.validator.identity().await.ok());
            }
            // No vote can be signed once the authorized voters are gone: then only a vote already
            // signed can still reach the tower file, and a short quiet time proves it final.
            // Only where this agent can give X back on promotion (it holds the staked key; in
            // secure mode the manager's SSH command would have to).
            let voters =
                if self.validator.manages_voters() && self.cfg.staked_identity_keypair.is_some() {
                    let remove = self.act("remove the authorized voters", async {
                        self.validator
                            .remove_voters()
                            .await
                            .map(|done| done.unwrap_or_default())
                    });
                    run.phase("voters", remove.await)
                } else {
                    false
                };
            let settle = self.act("wait for the tower to settle", async {
                let settled = if voters {
                    towers::wait_quiet(
                        &self.cfg.tower_file,
                        VOTERS_REMOVED_QUIET,
                        self.cfg.tower_settle + SETTLE_EXTRA,
                    )
                    .await
                } else {
                    towers::wait_settled(
                        &self.cfg.tower_file,
                        self.cfg.tower_settle,
                        self.cfg.tower_settle + SETTLE_EXTRA,
                        || self.validator.slot(),
                    )
                    .await
                };
                settled.map(|s| {
                    format!(
                        "{} rewrite(s) after the demotion, {} slots replayed; settled after {} ms",
                        s.changes,
                        s.slots.map_or("?".to_string(), |n| n.to_string()),
                        s.waited.as_millis()
                    )
                })
            });
            if !run.phase("settle", settle.await) {
                return run.finish(self.validator.identity().await.ok());
            }
        } else if run.response.phases.is_empty() {
            run.phase("demote", Ok("validator already not staked".into()));
        }

        match towers::read(&self.cfg.tower_file, &staked) {
            Err(TowerProblem::Missing(path)) => {
                run.phase(
                    "tower",
                    Ok(format!("no staked tower at {}", path.display())),
                );
            }
            Err(e) => {
                // Keep the file: it is evidence, and removing it changes nothing for safety.
                run.phase("tower", Err(e.to_string()));
            }
            Ok(tower) => {
                self.note_tower(&tower).await;
                let blob = tower.blob(&staked);
                run.phase(
                    "tower",
                    Ok(format!(
                        "last vote {}, sha256 {}",
                        slot_text(tower.last_vote),
                        tower.sha256
                    )),
                );
                if let TowerStore::Etcd(_) = &self.cfg.tower_store {
                    let store = self.act("store the tower in etcd", async {
                        let etcd = self.etcd().await?.expect("etcd configured");
                        etcd.put_tower(term, &self.record(term, &tower))
                            .await
                            .map_err(|e| e.to_string())
                            .map(|()| "stored in etcd".to_string())
                    });
                    if !run.phase("store", store.await) {
                        return run.finish(self.validator.identity().await.ok());
                    }
                }
                let archive = self.act("archive and remove the tower", async {
                    let archived =
                        towers::archive(&self.cfg.state_dir, &tower).map_err(|e| e.to_string())?;
                    std::fs::remove_file(&self.cfg.tower_file).map_err(|e| e.to_string())?;
                    Ok::<_, String>(format!("archived to {}, removed", archived.display()))
                });
                run.phase("remove", archive.await);
                *self.last_demoted_tower.lock().expect("tower") = Some(blob.clone());
                run.response.tower = Some(blob);
            }
        }
        run.phase(
            "hook",
            self.hook(
                "passive_identity_symlink_command",
                self.cfg.hooks.passive_identity_symlink_command.as_ref(),
            )
            .await,
        );
        run.finish(self.validator.identity().await.ok())
    }

    /// Records that a demotion in `term` started (persisted before it acts).
    async fn note_demotion(&self, term: u64) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if state.state.demoted_in_term == Some(term) || self.cfg.dry_run {
            return Ok(());
        }
        state.state.demoted_in_term = Some(term);
        state
            .save()
            .map_err(|e| format!("cannot persist the demotion in term {term}: {e}"))
    }

    /// Whether this node was demoted in `term`: a term that moved the identity away from it cannot
    /// move it back (a replayed or misdirected `become_active`).
    pub(crate) async fn demoted_in(&self, term: u64) -> bool {
        self.state.lock().await.state.demoted_in_term == Some(term)
    }

    /// Promotes this validator in the safe order (see the module docs).
    pub async fn become_active(&self, req: &FailoverRequest) -> FailoverResponse {
        let _guard = self.switching.lock().await;
        info!(term = req.term, reason = %req.reason, skip_identity = req.skip_identity, "become_active");
        let mut run = Run::new(FailoverAction::BecomeActive, req.term, self.cfg.dry_run);
        if self.demoted_in(req.term).await {
            run.phase(
                "term",
                Err(format!(
                    "this node was demoted in term {}: a term moves the staked identity away from \
                     a node once, never back (a replayed or misdirected command?)",
                    req.term
                )),
            );
            return run.finish(self.validator.identity().await.ok());
        }

        let tower = match self.incoming_tower(req).await {
            Ok(t) => t,
            Err(e) => {
                run.phase("tower", Err(e));
                return run.finish(self.validator.identity().await.ok());
            }
        };
        match &tower {
            Some(t) => {
                run.phase(
                    "tower",
                    Ok(format!(
                        "verified: last vote {}, sha256 {}",
                        slot_text(t.last_vote),
                        t.sha256
                    )),
                );
                let install = self.act("install the tower", async {
                    towers::install(&self.cfg.tower_file, t).map_err(|e| e.to_string())?;
                    Ok::<_, String>(format!("installed at {}", self.cfg.tower_file.display()))
                });
                if !run.phase("install", install.await) {
                    return run.finish(self.validator.identity().await.ok());
                }
                if !self.cfg.dry_run {
                    self.note_tower(t).await;
                }
            }
            None => {
                run.phase("tower", Ok("no tower offered or stored; the validator must build its own (require_tower is off)".into()));
            }
        }

        if req.skip_identity {
            run.phase(
                "promote",
                Ok("skipped: secure mode, the manager sets the identity".into()),
            );
        } else {
            let keypair = self.cfg.staked_identity_keypair.clone();
            let promote = self.act(
                "set the staked identity",
                self.validator
                    .promote(keypair.as_deref(), self.cfg.require_tower),
            );
            if !run.phase("promote", promote.await) {
                return run.finish(self.validator.identity().await.ok());
            }
            // A demotion by this product empties Agave's authorized voters: give X back, or the
            // promoted validator holds X and never votes.
            let add_voter = self.cfg.add_authorized_voter || self.validator.manages_voters();
            if let (true, Some(keypair)) = (add_voter, keypair.as_deref()) {
                let add = self.act(
                    "add the authorized voter",
                    self.validator.add_authorized_voter(keypair),
                );
                if !run.phase("authorized_voter", add.await) {
                    return run.finish(self.validator.identity().await.ok());
                }
            }
        }
        run.phase(
            "hook",
            self.hook(
                "active_identity_symlink_command",
                self.cfg.hooks.active_identity_symlink_command.as_ref(),
            )
            .await,
        );
        if !req.skip_identity && !self.cfg.dry_run {
            run.phase("confirm", self.confirm(true).await);
        }
        *self.last_demoted_tower.lock().expect("tower") = None;
        run.finish(self.validator.identity().await.ok())
    }

    /// The tower to install on promotion, verified, or `None` when there is none anywhere and the
    /// validator does not require one.
    async fn incoming_tower(&self, req: &FailoverRequest) -> Result<Option<LocalTower>, String> {
        let staked = self.staked();
        let blob = match &self.cfg.tower_store {
            TowerStore::Embedded => req.tower.clone(),
            TowerStore::Etcd(_) => {
                let etcd = self.etcd().await?.expect("etcd configured");
                etcd.get_tower()
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|r| r.tower)
            }
        };
        let offered = match blob {
            Some(blob) => Some(
                towers::verify_blob(&blob, &staked, req.tower_sha256.as_deref())
                    .map_err(|e| e.to_string())?,
            ),
            None if req.tower_sha256.is_some() => {
                return Err("the manager expects a tower but none was offered or stored".into())
            }
            None => None,
        };
        // Never go back: not older than what this agent has seen, than a tower already here, than
        // the newest vote the manager saw land, nor than what this validator shows on chain.
        let newest_seen = self.state.lock().await.state.newest_tower.clone();
        let local = towers::read(&self.cfg.tower_file, &staked).ok();
        let mut floors = vec![
            (
                newest_seen.map(|t| t.last_vote),
                "the newest tower this agent has seen",
            ),
            (
                local.as_ref().and_then(|t| t.last_vote),
                "the tower already on this server",
            ),
        ];
        // A dry run demoted nobody: the old active votes on, so the chain is always ahead of the
        // tower offered and these floors say nothing about a real switch.
        if self.cfg.dry_run {
            info!("[dry-run] the tower is not checked against the chain's last vote");
        } else {
            floors.push((
                req.min_last_vote,
                "the vote account's last vote the manager saw",
            ));
        }
        if offered.is_some() && !self.cfg.dry_run {
            let on_chain = self.chain_last_vote().await?;
            floors.push((
                on_chain,
                "the vote account's last vote on this validator's chain",
            ));
        }
        let floor = floors
            .into_iter()
            .filter_map(|(slot, what)| Some((slot?, what)))
            .max_by_key(|(slot, _)| *slot);
        match (&offered, floor) {
            (Some(t), Some((newest, what))) if t.last_vote.is_none_or(|v| v < newest) => {
                Err(TowerProblem::Stale {
                    offered: t.last_vote,
                    newest,
                    what,
                }
                .to_string())
            }
            (None, _) if local.is_some() => Ok(local),
            (None, _) if self.cfg.require_tower => {
                Err("no tower to install and require_tower is on: refusing to promote".into())
            }
            _ => Ok(offered),
        }
    }
}

/// Collects the timed phases of one switch.
struct Run {
    response: FailoverResponse,
    last: Instant,
}

impl Run {
    fn new(action: FailoverAction, term: u64, dry_run: bool) -> Self {
        Self {
            response: FailoverResponse {
                ok: true,
                action,
                term,
                identity: None,
                tower: None,
                phases: Vec::new(),
                dry_run,
                error: None,
            },
            last: Instant::now(),
        }
    }

    /// Records a phase; returns whether it succeeded.
    fn phase(&mut self, name: &str, result: Result<String, String>) -> bool {
        let ms = self.last.elapsed().as_millis() as u64;
        self.last = Instant::now();
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        if ok {
            info!(phase = name, ms, %detail, "phase done");
        } else {
            error!(phase = name, ms, %detail, "phase failed");
            self.response.ok = false;
            self.response.error = Some(format!("{name}: {detail}"));
        }
        self.response.phases.push(Phase {
            name: name.into(),
            ms,
            detail,
        });
        ok
    }

    fn finish(mut self, identity: Option<Pubkey>) -> FailoverResponse {
        self.response.identity = identity.map(|i| i.to_string());
        self.response
    }
}

type Ctx = State<Arc<Agent>>;

/// How often a held `/tower` request looks at the tower file.
const TOWER_WAIT_LOOK: Duration = Duration::from_millis(10);

/// The agent's routes.
pub fn app(agent: Arc<Agent>) -> Router {
    Router::new()
        .route(PATH_STATUS, post(status))
        .route(PATH_FAILOVER, post(failover))
        .route(PATH_SHUTDOWN, post(shutdown))
        .route(PATH_IDENTITY, get(identity))
        .route(PATH_HEALTH, get(health))
        .route(PATH_TOWER, post(tower))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(crate::http::bounded_body))
        .with_state(agent)
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// What a heartbeat-like request goes through before it is answered: the allow-list and the
/// signature, the body, the term; then it counts as contact from the manager.
async fn admit<T: DeserializeOwned + Default>(
    agent: &Agent,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    what: &str,
    term: impl Fn(&T) -> u64,
) -> Result<T, Refusal> {
    agent.authorize(peer, headers, path, body)?;
    let req: T = parse(body)?;
    agent.accept_term(term(&req), what).await?;
    agent.heard_from_manager();
    Ok(req)
}

async fn status(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = admit(
        &agent,
        peer,
        &headers,
        PATH_STATUS,
        &body,
        "status",
        |r: &StatusRequest| r.term,
    );
    if let Err(r) = admitted.await {
        return r.into_response();
    }
    Json(agent.status().await).into_response()
}

async fn tower(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = admit(
        &agent,
        peer,
        &headers,
        PATH_TOWER,
        &body,
        "tower",
        |r: &TowerRequest| r.term,
    );
    let req = match admitted.await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let known = req.known_sha256.as_deref();
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms.min(TOWER_WAIT_MAX_MS));
    loop {
        let answer = agent.current_tower(known);
        if answer.tower.is_some() || Instant::now() >= deadline {
            return Json(answer).into_response();
        }
        // A stat of the file per look while it is unchanged; Agave rewrites it once per vote.
        tokio::time::sleep(TOWER_WAIT_LOOK).await;
    }
}

async fn failover(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = agent.authorize(peer, &headers, PATH_FAILOVER, &body) {
        return r.into_response();
    }
    let req: FailoverRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("bad failover request: {e}"),
            )
            .into_response()
        }
    };
    if let Err(r) = agent.accept_term(req.term, "failover").await {
        return r.into_response();
    }
    agent.heard_from_manager();
    let response = match req.action {
        FailoverAction::BecomePassive => agent.become_passive(req.term, &req.reason).await,
        FailoverAction::BecomeActive => agent.become_active(&req).await,
    };
    let code = if response.ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (code, Json(response)).into_response()
}

async fn shutdown(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = agent.authorize(peer, &headers, PATH_SHUTDOWN, &body) {
        return r.into_response();
    }
    let req: ShutdownRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = agent.accept_term(req.term, "shutdown").await {
        return r.into_response();
    }
    info!(%peer, "shutdown requested by the manager");
    if let Some(cmd) = agent.cfg.hooks.agent_stop_command.clone() {
        // Stop through the service manager, or it would restart the agent.
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = agent
                .act(
                    &format!("run agent_stop_command: {cmd}"),
                    run_shell(&cmd, None, HOOK_TIMEOUT),
                )
                .await
            {
                error!(error = %e, "agent_stop_command failed; stopping by myself");
            }
            let _ = agent.shutdown.send(true);
        });
    } else {
        let _ = agent.shutdown.send(true);
    }
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn identity(State(agent): Ctx) -> Response {
    let response = match agent.validator.identity().await {
        Ok(id) => IdentityResponse {
            identity: Some(id.to_string()),
            error: None,
        },
        Err(e) => IdentityResponse {
            identity: None,
            error: Some(e),
        },
    };
    Json(response).into_response()
}

async fn health(State(agent): Ctx) -> Response {
    Json(HealthResponse {
        ok: true,
        agent_version: AGENT_VERSION.into(),
        agent_id: agent.id.clone(),
        validator_identity: agent.staked().to_string(),
    })
    .into_response()
}

/// Serves the agent on `listener` until `shutdown` resolves or a manager asks it to stop; runs the
/// self-fencing watchdog alongside.
pub async fn run(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut stop = agent.shutdown.subscribe();
    let watchdog = tokio::spawn(crate::watchdog::run(agent.clone()));
    let allowed = agent.cfg.allowed_ips.clone();
    let result = crate::http::serve(listener, app(agent.clone()), allowed, async move {
        tokio::select! {
            _ = shutdown => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
    .await;
    watchdog.abort();
    info!("agent stopped");
    result
}

/// Where the archive of towers and the state file live (for tests and operators).
pub fn state_dir(agent: &Agent) -> PathBuf {
    agent.cfg.state_dir.clone()
}
