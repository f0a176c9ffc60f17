//! The two switch procedures, in their safe order — one path for both consensuses: only which
//! file is the vote state (tower or vote history), where it lives, what `setIdentity` requires,
//! and how its end is proven differ.
//!
//! become_passive: record the demotion's term → passive hook (what a restart loads is unstaked
//! first) → remove the authorized voters (no vote can be signed after) → setIdentity (unstaked) →
//! confirm with the validator (recorded: holding X again needs a promotion) → wait until the vote
//! state is provably final → read and verify it → store it (etcd, fenced by term) or return it
//! (embedded) → archive and remove it. Nothing after a failed demotion runs: a node that may
//! still vote must never look demoted (its voters and its identity link are given back).
//!
//! become_active: check the term and the consensus → take the vote state (hash must match) →
//! verify signature and node pubkey → refuse if older than any floor (the newest this agent saw,
//! the manager's, the chain's) → under Alpenglow, when the old active's final history was out of
//! reach, wait until this validator's root passes the slot its votes may have reached (votor does
//! not vote at or below its root) → install atomically → setIdentity (staked; the tower required under
//! TowerBFT, the vote history under Alpenglow) unless secure mode → authorized voter → active hook
//! → confirm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use failover_config::TowerStore;
use failover_identity::{Pubkey, VoteStateKind};
use tokio::time::timeout;
use tracing::{debug, error, info, warn};

use crate::agent::{slot_text, Agent};
use crate::api::*;
use crate::commands::run_shell;
use crate::consensus::Consensus;
use crate::lease::{PAUSE_DEADLINE, PROBE_DEADLINE};
use crate::state::Role;
use crate::vote_state::{self, LocalVoteState, VoteStateProblem};

/// Deadlines of the switch phases.
const DEMOTE_DEADLINE: Duration = Duration::from_secs(15);
/// Counts a promotion in [`Agent::promotions`] when it begins and again when it ends, however it
/// ends: the count is odd while one runs.
struct Promoting<'a>(&'a AtomicU64);

impl<'a> Promoting<'a> {
    fn begin(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Promoting<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a pause that got no answer within its deadline reports.
const HUNG: &str = "no answer";
const CONFIRM_DEADLINE: Duration = Duration::from_secs(10);
const SETTLE_EXTRA: Duration = Duration::from_secs(15);
/// How long a promotion waits for this validator's root to pass the old active's possible votes
/// (normally a leader window, under 2 s) before it refuses; the manager tries again.
const ROOT_WAIT: Duration = Duration::from_secs(20);
const ROOT_POLL: Duration = Duration::from_millis(100);

/// The finalized root this validator must reach before it takes the staked identity under
/// Alpenglow, and why.
#[derive(Clone, Copy, Debug)]
struct RootBound {
    slot: u64,
    /// The slot the unreachable old active's votes may have reached (else: the installed vote
    /// history's own root).
    old_votes: bool,
}

impl RootBound {
    /// The higher of the two bounds a promotion has: the old active's possible votes (from the
    /// request) and the root of the vote history being installed. Votor asserts that every slot
    /// it looks at is at or above its history's root (agave-votor 4.2.2 `vote_history.rs`,
    /// `assert!(slot >= self.root)`): a block this node replayed below it but has not rooted
    /// aborts the validator once it is X.
    fn of(req: &FailoverRequest, incoming: Option<&LocalVoteState>) -> Option<Self> {
        let old_votes = req.min_root.max(req.past_lockouts);
        let history = incoming.and_then(|t| t.root);
        match (old_votes, history) {
            (Some(v), Some(h)) if h > v => Some(Self {
                slot: h,
                old_votes: false,
            }),
            (Some(v), _) => Some(Self {
                slot: v,
                old_votes: true,
            }),
            (None, Some(h)) => Some(Self {
                slot: h,
                old_votes: false,
            }),
            (None, None) => None,
        }
    }

    fn why_ok(&self) -> &'static str {
        if self.old_votes {
            "X votes on no slot the old active may have voted on"
        } else {
            "every block this node holds unrooted is above the vote history's root"
        }
    }

    fn why_refused(&self) -> &'static str {
        if self.old_votes {
            "the slot the old active's votes may have reached: it lags the cluster, and as X it \
             could vote against them"
        } else {
            "the root of the vote history to install: it lags the cluster, and votor would abort \
             on a block between the two"
        }
    }
}
pub(crate) const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// After the authorized voters are removed, how long the vote state must stay unchanged before it
/// counts as final: a vote signed before the removal reaches the file within milliseconds — the
/// tower from Agave's voting thread, the vote history from votor's voting service (4.2) or its
/// event loop (4.3).
fn voters_removed_quiet(kind: VoteStateKind) -> Duration {
    match kind {
        VoteStateKind::Tower => Duration::from_millis(150),
        VoteStateKind::VoteHistory => Duration::from_millis(150),
    }
}

/// Collects the timed phases of one switch.
pub(crate) struct Run {
    pub response: FailoverResponse,
    last: Instant,
}

impl Run {
    pub fn new(action: FailoverAction, term: u64, dry_run: bool) -> Self {
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
    pub fn phase(&mut self, name: &str, result: Result<String, String>) -> bool {
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

    pub fn finish(mut self, identity: Option<Pubkey>) -> FailoverResponse {
        self.response.identity = identity.map(|i| i.to_string());
        self.response
    }
}

impl Agent {
    /// Runs an action unless in dry-run, in which case it only says what it would do.
    pub(crate) async fn act<F, T>(&self, what: &str, action: F) -> Result<String, String>
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

    /// Records that a demotion in `term` started (persisted before it acts).
    async fn note_demotion(&self, term: u64) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if state.state.demoted_in_term == Some(term) || self.cfg.dry_run {
            return Ok(());
        }
        state
            .update(|s| s.demoted_in_term = Some(term))
            .map_err(|e| format!("cannot persist the demotion in term {term}: {e}"))
    }

    /// Whether this node was demoted in `term`: a term that moved the identity away from it cannot
    /// move it back (a replayed or misdirected `become_active`).
    pub(crate) async fn demoted_in(&self, term: u64) -> bool {
        self.state.lock().await.state.demoted_in_term == Some(term)
    }

    /// Whether this agent empties and refills the validator's authorized voters itself: Agave's
    /// admin RPC, with the staked key here to give back (in secure mode the manager's SSH command
    /// would have to).
    fn handles_voters(&self) -> bool {
        self.validator.manages_voters() && self.cfg.staked_identity_keypair.is_some()
    }

    /// Records the identity change just completed (persisted; a failure is logged, the change
    /// stands).
    async fn note_role(&self, role: Role) {
        if self.cfg.dry_run {
            return;
        }
        let mut state = self.state.lock().await;
        if state.state.last_role == Some(role) {
            return;
        }
        state.state.last_role = Some(role);
        if let Err(e) = state.save() {
            warn!(error = %e, ?role, "cannot persist the role change");
        }
    }

    /// Records a demotion in `term` that left the validator unstaked, with the process demoted.
    async fn note_demoted(&self, term: u64) {
        let validator_pid = self.find_validator().map(|f| f.pid);
        self.note_role(Role::Passive {
            term,
            validator_pid,
        })
        .await;
    }

    /// The last identity change this agent completed.
    pub(crate) async fn last_role(&self) -> Option<Role> {
        self.state.lock().await.state.last_role
    }

    /// Kills a validator that does not answer (`why`), as the watchdog's fence would, recording
    /// the phase: a demotion that only waited for its calls to time out held the switching lock
    /// for tens of seconds, in which the watchdog could not fence it while the manager, counting
    /// the node from its last answer, promoted the other. False when it could not be killed.
    async fn kill_hung(&self, run: &mut Run, why: &str) -> bool {
        if self.cfg.dry_run {
            return run.phase(
                "kill",
                Ok(format!("dry-run: would kill the validator: {why}")),
            );
        }
        warn!(
            reason = why,
            "killing the validator: a hung process cannot be demoted"
        );
        let killed = self
            .kill_validator()
            .await
            .map(|pid| format!("{why}: validator pid {pid} killed, it can cast no vote"));
        run.phase("kill", killed)
    }

    /// Demotes this validator in the safe order (see the module docs).
    pub async fn become_passive(&self, term: u64, reason: &str) -> FailoverResponse {
        let guard = self.switching.lock().await;
        self.become_passive_locked(&guard, term, reason).await
    }

    /// [`Agent::become_passive`] for a caller that holds the switching lock (`_held`), so that
    /// no promotion can come between its own check and the demotion.
    pub(crate) async fn become_passive_locked(
        &self,
        _held: &tokio::sync::MutexGuard<'_, ()>,
        term: u64,
        reason: &str,
    ) -> FailoverResponse {
        info!(term, reason, "become_passive");
        let mut run = Run::new(FailoverAction::BecomePassive, term, self.cfg.dry_run);
        let staked = self.staked();
        // Before anything changes: this term may no longer promote this node.
        if let Err(e) = self.note_demotion(term).await {
            run.phase("term", Err(e));
            return run.finish(self.validator.identity().await.ok());
        }
        // Then what a restart would load, before the running validator changes: from here a
        // validator restarted by systemd comes up unstaked, also if this demotion stops half-way.
        // A failure is reported and the demotion goes on (stopping the votes is the safe way).
        run.phase(
            "hook",
            self.hook(
                "passive_identity_symlink_command",
                self.cfg.hooks.passive_identity_symlink_command.as_ref(),
            )
            .await,
        );
        let kind = self.kind_for(self.consensus(true).await);

        let mut was_staked = match timeout(PROBE_DEADLINE, self.validator.identity()).await {
            Ok(Ok(id)) => id == staked,
            // Hung (no answer at all): nothing it is asked would be carried out, and the lock
            // this demotion holds keeps the watchdog from fencing it — so kill it now, as the
            // watchdog would, and hand its final vote state over from disk.
            Err(_) if self.find_validator().is_some() => {
                let why = format!("the validator did not answer within {PROBE_DEADLINE:?}");
                if !self.kill_hung(&mut run, &why).await {
                    return run.finish(None);
                }
                false
            }
            Err(_) => {
                run.phase(
                    "demote",
                    Ok(format!(
                        "validator process {} is not running (no answer within \
                         {PROBE_DEADLINE:?}): nothing can vote",
                        self.cfg.process_name
                    )),
                );
                false
            }
            // A validator that cannot be read may still vote: a running one must be demoted and
            // confirmed like any other; only one whose process is gone cannot vote.
            Ok(Err(e)) => {
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
        'staked: {
            if was_staked {
                // First the authorized voters: Agave signs each vote (tower or Alpenglow) with a key
                // read from that list under the lock this call takes, so once it returns no vote can
                // be signed — not the straggler that follows setIdentity, not one after an isolation
                // heals. Then only a vote already signed can reach the file.
                let voters = self.handles_voters() && {
                    let remove = self.act("remove the authorized voters", async {
                        match timeout(PAUSE_DEADLINE, self.validator.remove_voters()).await {
                            Ok(done) => done.map(|done| done.unwrap_or_default()),
                            Err(_) => Err(HUNG.to_string()),
                        }
                    });
                    match remove.await {
                        Ok(detail) => run.phase("voters", Ok(detail)),
                        Err(e) if e == HUNG => {
                            let why = format!(
                                "the validator did not answer the pause within {PAUSE_DEADLINE:?}"
                            );
                            if !self.kill_hung(&mut run, &why).await {
                                return run.finish(None);
                            }
                            // Gone: nothing to demote or wait for; its file is final.
                            was_staked = false;
                            break 'staked;
                        }
                        Err(e) => {
                            // Not fatal: the demotion goes on, and the slot rule proves the end.
                            run.phase(
                                "voters",
                                Ok(format!(
                                    "could not remove them ({e}); waiting by slots instead"
                                )),
                            );
                            false
                        }
                    }
                };
                crate::pause::point(&self.cfg.state_dir, "demote_voters_removed").await;
                let demote = self.act("set the unstaked identity", async {
                    tokio::time::timeout(DEMOTE_DEADLINE, self.validator.demote())
                        .await
                        .map_err(|_| format!("no answer within {DEMOTE_DEADLINE:?}"))?
                });
                if !run.phase("demote", demote.await) {
                    if voters {
                        // Still the active (or unknown): give its voters back rather than leave a
                        // staked validator that never votes.
                        self.restore_voters(&mut run).await;
                    }
                    if self.validator.identity().await.ok() == Some(staked) {
                        // And its identity link, so that a restart does not drop the staked identity.
                        run.phase(
                            "hook_back",
                            self.hook(
                                "active_identity_symlink_command",
                                self.cfg.hooks.active_identity_symlink_command.as_ref(),
                            )
                            .await,
                        );
                    }
                    return run.finish(self.validator.identity().await.ok());
                }
                if !self.cfg.dry_run && !run.phase("confirm", self.confirm(false).await) {
                    return run.finish(self.validator.identity().await.ok());
                }
                // Unstaked now, whatever follows: holding X again takes a promotion.
                self.note_demoted(term).await;
                let path = match self.path_of(kind) {
                    Ok(p) => p,
                    Err(e) => {
                        run.phase("settle", Err(e));
                        return run.finish(self.validator.identity().await.ok());
                    }
                };
                crate::pause::point(&self.cfg.state_dir, "demote_settling").await;
                let what = format!("wait for the {kind} to be final");
                let settle = self.act(&what, async {
                    let settled = if voters {
                        vote_state::wait_quiet(
                            &path,
                            voters_removed_quiet(kind),
                            self.cfg.tower_settle + SETTLE_EXTRA,
                        )
                        .await
                    } else {
                        vote_state::wait_settled(
                            kind,
                            &path,
                            &staked,
                            self.cfg.tower_settle,
                            self.cfg.tower_settle + SETTLE_EXTRA,
                            || self.validator.slot(),
                            || async { self.chain_last_vote().await.ok().flatten() },
                        )
                        .await
                    };
                    settled.map(|s| {
                        format!(
                        "{} rewrite(s) of the {kind} after the demotion, {} slots replayed; final \
                         after {} ms",
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
        }
        if !was_staked {
            self.note_demoted(term).await;
        }

        let read = match self.path_of(kind) {
            Ok(path) => vote_state::read(kind, &path, &staked),
            Err(_) => Err(VoteStateProblem::Missing {
                kind,
                path: Default::default(),
            }),
        };
        match read {
            Err(VoteStateProblem::Missing { path, .. }) => {
                // An earlier demotion (this node's own fence, or a manager's whose answer was
                // lost, also before an agent restart: kept in the archive) handed the final vote
                // state over already: it is still the final one, and says so — a manager that
                // took it for an older backup would wait for roots (Alpenglow) it need not.
                let fenced = self.last_demoted.lock().expect("demoted").clone();
                match fenced.filter(|b| b.kind == kind) {
                    Some(blob) if !was_staked => {
                        run.phase(
                            "tower",
                            Ok(format!(
                                "{kind} handed over by the last demotion: last vote {}, sha256 {}",
                                slot_text(blob.last_vote),
                                blob.sha256
                            )),
                        );
                        run.response.tower = Some(blob);
                    }
                    _ => {
                        run.phase(
                            "tower",
                            Ok(format!("no staked {kind} at {}", path.display())),
                        );
                    }
                }
            }
            Err(e) => {
                // Keep the file: it is evidence, and removing it changes nothing for safety.
                run.phase("tower", Err(e.to_string()));
            }
            Ok(local) => {
                if !self.hand_over(term, &local, &mut run).await {
                    return run.finish(self.validator.identity().await.ok());
                }
                // Handed over and removed, not yet answered.
                crate::pause::point(&self.cfg.state_dir, "demote_handed_over").await;
            }
        }
        run.finish(self.validator.identity().await.ok())
    }

    /// The demoted node's final vote state: recorded, stored (etcd) or returned (embedded),
    /// archived, and removed from where a restart would load it. False when a phase failed.
    async fn hand_over(&self, term: u64, local: &LocalVoteState, run: &mut Run) -> bool {
        let staked = self.staked();
        let kind = local.kind;
        self.note_vote_state(local).await;
        let blob = local.blob(&staked);
        run.phase(
            "tower",
            Ok(format!(
                "{kind}: last vote {}, sha256 {}",
                slot_text(local.last_vote),
                local.sha256
            )),
        );
        if let TowerStore::Etcd(_) = &self.cfg.tower_store {
            let what = format!("store the {kind} in etcd");
            let store = self.act(&what, async {
                let etcd = self.etcd().await?.expect("etcd configured");
                etcd.put_tower(term, &self.record(term, local))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|()| "stored in etcd".to_string())
            });
            if !run.phase("store", store.await) {
                return false;
            }
        }
        let what = format!("archive and remove the {kind}");
        let archive = self.act(&what, async {
            let archived =
                vote_state::archive(&self.cfg.state_dir, local).map_err(|e| e.to_string())?;
            let path = self.path_of(kind)?;
            std::fs::remove_file(&path).map_err(|e| e.to_string())?;
            Ok::<_, String>(format!("archived to {}, removed", archived.display()))
        });
        run.phase("remove", archive.await);
        *self.last_demoted.lock().expect("demoted") = Some(blob.clone());
        run.response.tower = Some(blob);
        true
    }

    /// The key the vote account's votes are signed with: `authorized_voter_keypair` when it is a
    /// key of its own, else the staked identity. A demotion removes every authorized voter; this
    /// is the one to give back.
    fn voter_keypair(&self) -> Option<&std::path::Path> {
        self.cfg
            .authorized_voter_keypair
            .as_deref()
            .or(self.cfg.staked_identity_keypair.as_deref())
    }

    /// Adds the authorized voter back after a demotion that did not happen.
    async fn restore_voters(&self, run: &mut Run) {
        let Some(keypair) = self.voter_keypair() else {
            return;
        };
        let restored = self
            .act(
                "give the authorized voter back",
                self.validator.add_authorized_voter(keypair),
            )
            .await;
        // The switch already failed; this phase only says what became of the voters.
        let ms = 0;
        let detail = match restored {
            Ok(d) => format!("{d}: the validator votes again"),
            Err(e) => format!("could not give the voter back ({e}): it holds X and cannot vote"),
        };
        info!(phase = "restore_voters", ms, %detail, "phase done");
        run.response.phases.push(Phase {
            name: "restore_voters".into(),
            ms,
            detail,
        });
    }

    /// Promotes this validator in the safe order (see the module docs).
    /// `admitted`: when the command was admitted (the new active's lease is capped from it).
    pub async fn become_active(
        &self,
        req: &FailoverRequest,
        admitted: Instant,
    ) -> FailoverResponse {
        let _guard = self.switching.lock().await;
        let _promoting = Promoting::begin(&self.promotions);
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
        // Already holding X: installing a vote state over a running active's would roll its
        // votes back. The same term's promotion, asked again (its answer was lost), is done.
        if let Ok(id) = self.validator.identity().await {
            if id == self.staked() && !req.skip_identity {
                if self.last_role().await == Some(Role::Active { term: req.term }) {
                    run.phase(
                        "promote",
                        Ok(format!("already promoted in term {}", req.term)),
                    );
                    self.lease.promoted(admitted);
                } else {
                    run.phase(
                        "term",
                        Err(
                            "this validator already holds the staked identity: refusing to \
                             install a vote state over a running active's"
                                .into(),
                        ),
                    );
                }
                return run.finish(Some(id));
            }
        }
        let consensus = self.consensus(true).await;
        let kind = match self.kind_to_install(req, consensus) {
            Ok(kind) => kind,
            Err(e) => {
                run.phase("consensus", Err(e));
                return run.finish(self.validator.identity().await.ok());
            }
        };
        // Past the old active's lockouts under TowerBFT: every tower held is older than the chain,
        // so none is installed; the validator builds its tower from the vote account's own state
        // (Agave's `Tower::new_from_bankforks` when no tower file loads).
        let from_chain = kind == VoteStateKind::Tower && req.past_lockouts.is_some();
        let incoming = if from_chain {
            match self
                .clear_for_chain_tower(req.past_lockouts.unwrap_or(0))
                .await
            {
                Ok(detail) => {
                    run.phase("tower", Ok(detail));
                    None
                }
                Err(e) => {
                    run.phase("tower", Err(e));
                    return run.finish(self.validator.identity().await.ok());
                }
            }
        } else {
            match self.incoming_vote_state(req, kind).await {
                Ok(t) => t,
                Err(e) => {
                    run.phase("tower", Err(e));
                    return run.finish(self.validator.identity().await.ok());
                }
            }
        };
        match &incoming {
            None if from_chain => {}
            Some(t) => {
                run.phase(
                    "tower",
                    Ok(format!(
                        "{kind} verified: last vote {}, sha256 {}",
                        slot_text(t.last_vote),
                        t.sha256
                    )),
                );
                let what = format!("install the {kind}");
                let install = self.act(&what, async {
                    let path = self.path_of(kind)?;
                    vote_state::install(&path, t).map_err(|e| e.to_string())?;
                    Ok::<_, String>(format!("installed at {}", path.display()))
                });
                if !run.phase("install", install.await) {
                    return run.finish(self.validator.identity().await.ok());
                }
                if !self.cfg.dry_run {
                    self.note_vote_state(t).await;
                }
                crate::pause::point(&self.cfg.state_dir, "promote_installed").await;
            }
            None => {
                run.phase(
                    "tower",
                    Ok(format!(
                        "no {kind} offered or stored; the validator builds its own"
                    )),
                );
            }
        }
        let root_bound = match kind {
            VoteStateKind::VoteHistory => RootBound::of(req, incoming.as_ref()),
            VoteStateKind::Tower => None,
        };
        if let (Some(bound), false) = (root_bound, self.cfg.dry_run) {
            if !run.phase("root", self.wait_for_root(bound).await) {
                return run.finish(self.validator.identity().await.ok());
            }
        }
        if let (VoteStateKind::Tower, Some(bound), false) =
            (kind, req.past_lockouts, self.cfg.dry_run)
        {
            if !run.phase("lockouts", self.wait_for_slot(bound).await) {
                return run.finish(self.validator.identity().await.ok());
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
                self.validator.promote(
                    keypair.as_deref(),
                    kind,
                    self.cfg.require_tower && !from_chain,
                ),
            );
            if !run.phase("promote", promote.await) {
                return run.finish(self.validator.identity().await.ok());
            }
            // Staked, its authorized voters not yet given back.
            crate::pause::point(&self.cfg.state_dir, "promote_identity_set").await;
            // A demotion by this product empties Agave's authorized voters: give the voter back
            // (X, or the vote account's own voter key), or the promoted validator holds X and
            // never votes.
            let add_voter = self.cfg.add_authorized_voter || self.validator.manages_voters();
            if let (true, Some(keypair)) = (add_voter, self.voter_keypair()) {
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
        *self.last_demoted.lock().expect("demoted") = None;
        let response = run.finish(self.validator.identity().await.ok());
        if response.ok && !self.cfg.dry_run {
            self.note_role(Role::Active { term: req.term }).await;
            // The new active's lease, from the completion (the manager counts this node from its
            // answer, or from when it gave up on one — both later), renewed before the switching
            // lock is let go so that the watchdog never sees a promoted node with an old lease.
            self.lease.promoted(admitted);
            // Active, not yet answered.
            crate::pause::point(&self.cfg.state_dir, "promote_done").await;
        }
        response
    }

    /// Waits until this validator's finalized root reaches `bound`.
    async fn wait_for_root(&self, bound: RootBound) -> Result<String, String> {
        let started = Instant::now();
        let mut last = None;
        loop {
            match self.validator.finalized_slot().await {
                Ok(root) if root >= bound.slot => {
                    return Ok(format!(
                        "finalized root {root} has reached {} (waited {} ms): {}",
                        bound.slot,
                        started.elapsed().as_millis(),
                        bound.why_ok()
                    ))
                }
                Ok(root) => last = Some(root),
                Err(e) => debug!(error = %e, "waiting for the finalized root"),
            }
            if started.elapsed() >= ROOT_WAIT {
                return Err(format!(
                    "this validator's finalized root is {} after {} s, below {}, {}; refusing",
                    slot_text(last),
                    ROOT_WAIT.as_secs(),
                    bound.slot,
                    bound.why_refused()
                ));
            }
            tokio::time::sleep(ROOT_POLL).await;
        }
    }

    /// Before a promotion onto the chain's own vote state: checks the lockout bound is past the
    /// chain's last vote, and archives and removes a staked tower already here (older than the
    /// chain, or the manager would have offered it), so that the validator builds its own.
    async fn clear_for_chain_tower(&self, bound: u64) -> Result<String, String> {
        let on_chain = self.chain_last_vote().await?;
        if on_chain.is_some_and(|v| v >= bound) {
            return Err(format!(
                "the lockout bound {bound} is not past the chain's last vote {}: refusing",
                slot_text(on_chain)
            ));
        }
        let path = self.path_of(VoteStateKind::Tower)?;
        let mut detail = format!(
            "every tower held is older than the chain's last vote {}: none installed, the \
             validator builds its tower from the vote account",
            slot_text(on_chain)
        );
        if let Ok(local) = vote_state::read(VoteStateKind::Tower, &path, &self.staked()) {
            if self.cfg.dry_run {
                detail.push_str("; dry-run: would archive and remove the tower here");
            } else {
                let archived =
                    vote_state::archive(&self.cfg.state_dir, &local).map_err(|e| e.to_string())?;
                std::fs::remove_file(&path).map_err(|e| e.to_string())?;
                detail.push_str(&format!(
                    "; the older tower here (last vote {}) archived to {}",
                    slot_text(local.last_vote),
                    archived.display()
                ));
            }
        } else if path.exists() {
            return Err(format!(
                "{} exists but does not verify: refusing (Agave would exit on it)",
                path.display()
            ));
        }
        Ok(detail)
    }

    /// Waits until this validator has replayed past `bound` (TowerBFT votes from the bank it just
    /// replayed): every vote the fenced old active may have cast has lost its lockout by then.
    async fn wait_for_slot(&self, bound: u64) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let slot = self.validator.slot().await;
            if slot.is_some_and(|s| s > bound) {
                return Ok(format!(
                    "replayed slot {} is past {bound} (waited {} ms): every vote the old active \
                     may have cast beyond the chain has lost its lockout",
                    slot_text(slot),
                    started.elapsed().as_millis()
                ));
            }
            if started.elapsed() >= ROOT_WAIT {
                return Err(format!(
                    "this validator is at slot {} after {} s, not past {bound}: refusing",
                    slot_text(slot),
                    ROOT_WAIT.as_secs()
                ));
            }
            tokio::time::sleep(ROOT_POLL).await;
        }
    }

    /// Which vote state a promotion must install, from what this validator says its cluster runs:
    /// refused when the manager believes otherwise, during the migration to Alpenglow (unless
    /// allowed), and when the consensus cannot be told.
    fn kind_to_install(
        &self,
        req: &FailoverRequest,
        consensus: Consensus,
    ) -> Result<VoteStateKind, String> {
        if let Some(theirs) = req.consensus {
            let disagree = theirs != Consensus::Unknown
                && consensus != Consensus::Unknown
                && theirs.name() != consensus.name();
            if disagree {
                return Err(format!(
                    "the manager sees {theirs}, but this validator's RPC says {consensus}: \
                     refusing until both agree"
                ));
            }
        }
        match consensus {
            Consensus::Migrating { .. } if !req.allow_migration => Err(format!(
                "{consensus}: no promotion during the migration (its genesis vote is persisted \
                 nowhere); wait for the genesis certificate, or force it"
            )),
            Consensus::Migrating { .. } => Ok(req
                .tower
                .as_ref()
                .map_or_else(|| self.kind_for(consensus), |t| t.kind)),
            Consensus::Unknown if !self.cfg.dry_run => Err(
                "cannot tell which consensus the cluster runs: this validator's RPC does not \
                 answer getVersion/getAgGenesisCert (set consensus in the config to decide)"
                    .into(),
            ),
            other => Ok(self.kind_for(other)),
        }
    }

    /// The vote state to install on promotion, verified, or `None` when there is none anywhere and
    /// the validator does not need one.
    async fn incoming_vote_state(
        &self,
        req: &FailoverRequest,
        kind: VoteStateKind,
    ) -> Result<Option<LocalVoteState>, String> {
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
            Some(blob) if blob.kind != kind => {
                return Err(VoteStateProblem::WrongKind {
                    offered: blob.kind,
                    needed: kind,
                }
                .to_string())
            }
            Some(blob) => Some(
                vote_state::verify_blob(&blob, &staked, req.tower_sha256.as_deref())
                    .map_err(|e| e.to_string())?,
            ),
            None if req.tower_sha256.is_some() => {
                return Err(format!(
                    "the manager expects a {kind} but none was offered or stored"
                ))
            }
            None => None,
        };
        // Never go back: not older than what this agent has seen, than a file already here, than
        // the newest vote the manager saw land, nor than what this validator shows on chain.
        let newest_seen = self.state.lock().await.state.newest_tower.clone();
        let local = self
            .file_of(kind)
            .and_then(|path| vote_state::read(kind, path, &staked).ok());
        let mut floors = vec![
            (
                newest_seen.map(|t| t.last_vote),
                "the newest vote state this agent has seen",
            ),
            (
                local.as_ref().and_then(|t| t.last_vote),
                "the vote state already on this server",
            ),
        ];
        // A dry run demoted nobody: the old active votes on, so the chain is always ahead of the
        // file offered and these floors say nothing about a real switch.
        let on_chain = if self.cfg.dry_run {
            info!("[dry-run] the vote state is not checked against the chain's last vote");
            None
        } else if let Some(bound) = req.past_lockouts {
            // The old active was fenced by time before its final vote state reached anyone: the
            // chain is ahead of every copy. Safe once no vote beyond the chain keeps a lockout,
            // which the promotion waits for (this validator votes only past `bound`).
            let on_chain = self.chain_last_vote().await?;
            if on_chain.is_some_and(|v| v >= bound) {
                return Err(format!(
                    "the lockout bound {bound} is not past the chain's last vote {}: refusing",
                    slot_text(on_chain)
                ));
            }
            info!(
                bound,
                chain_last_vote = slot_text(on_chain),
                "accepting a vote state older than the chain: every vote beyond it has lost its lockout by the bound"
            );
            None
        } else {
            floors.push((
                req.min_last_vote,
                "the vote account's last vote the manager saw",
            ));
            let on_chain = self.chain_last_vote().await?;
            floors.push((
                on_chain,
                "the vote account's last vote on this validator's chain",
            ));
            on_chain
        };
        let floor = floors
            .into_iter()
            .filter_map(|(slot, what)| Some((slot?, what)))
            .max_by_key(|(slot, _)| *slot);
        match (&offered, floor) {
            (Some(t), Some((newest, what))) if t.last_vote.is_none_or(|v| v < newest) => {
                Err(VoteStateProblem::Stale {
                    kind,
                    offered: t.last_vote,
                    newest,
                    what,
                }
                .to_string())
            }
            (None, _) if local.is_some() => Ok(local),
            (None, _) if kind == VoteStateKind::Tower && self.cfg.require_tower => {
                Err("no tower to install and require_tower is on: refusing to promote".into())
            }
            // Agave would let votor start from an empty history: the way to double votes.
            (None, _) if kind == VoteStateKind::VoteHistory && on_chain.is_some_and(|v| v > 0) => {
                Err(format!(
                    "no vote history to install, and the vote account has votes on chain (last \
                     {}): refusing to promote onto an empty history",
                    slot_text(on_chain)
                ))
            }
            _ => Ok(offered),
        }
    }
}
