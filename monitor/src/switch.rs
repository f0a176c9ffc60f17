//! Moving the staked identity, in DESIGN.md §3's order, through the agents: raise the term →
//! demote the old active and confirm (or, when it cannot be reached, rely on its fence and the
//! newest verified tower backup) → promote the new one with the tower and its hash → confirm
//! through its agent and through gossip. Every phase is timed; the switch ends with one summary.

use std::time::{Duration, Instant};

use failover_agent::api::{FailoverAction, FailoverRequest, FailoverResponse, Role, VoteStateBlob};
use failover_agent::vote_state::verify_blob;
use failover_agent::ClientError;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn, Instrument};

use crate::manager::Manager;

/// How long gossip may take to show the new active before the switch reports it unconfirmed.
const GOSSIP_CONFIRM: Duration = Duration::from_secs(10);
/// Alpenglow's leader window: a voter may still skip the rest of the window it is in, or fill its
/// own leader slots, ahead of the cluster's tip.
const LEADER_WINDOW_SLOTS: u64 = 4;
/// How long a switch asks an agent that missed the last heartbeat for its vote-state backup.
const BACKUP_ASK_MISSING: Duration = Duration::from_millis(300);
/// How long a switch step that got no answer (connection cut, answer lost, timed out) is asked
/// for again, and how often. The agent answers a repeated step from its journal, or once the run
/// in progress ends; it never runs it twice (agent `journal.rs`).
const ASK_AGAIN_FOR: Duration = Duration::from_secs(3);
const ASK_AGAIN_EVERY: Duration = Duration::from_millis(200);

/// A switch step that got no readable answer, however often it was asked.
struct NoAnswer {
    error: ClientError,
    /// Some attempt may have reached the agent: the step may have run, or may still be running.
    delivered: bool,
}

/// A switch to make.
#[derive(Clone, Debug)]
pub struct Plan {
    pub from: Option<usize>,
    pub to: usize,
    pub reason: String,
    /// The old active's agent can be asked to demote it.
    pub demotable: bool,
    /// Forced through the migration to Alpenglow (a planned switch with `--force`).
    pub allow_migration: bool,
    /// Fenced by time without a vote state as new as the chain's: the slot by which every vote
    /// the old active may have cast beyond it has lost its lockout (from the engine).
    pub past_lockouts: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseTime {
    pub name: String,
    pub ms: u64,
    pub detail: String,
}

/// How a switch went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    pub term: u64,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub phases: Vec<PhaseTime>,
    /// Decision → new active confirmed by its agent.
    pub total_ms: u64,
    pub error: Option<String>,
    pub dry_run: bool,
    /// Whether trying the same switch again soon could succeed (false for SSH refusals).
    #[serde(default = "yes")]
    pub retry_soon: bool,
    /// The new active refused its promotion and the old one was made active again.
    #[serde(default)]
    pub rolled_back: bool,
}

fn yes() -> bool {
    true
}

impl Outcome {
    /// One line with every phase's time.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {} ms", p.name, p.ms))
            .collect();
        let verdict = match (self.dry_run, self.ok, self.rolled_back) {
            (true, true, _) => "planned (dry run: nothing was changed)",
            (true, false, _) => "would be refused (dry run: nothing was changed)",
            (false, true, _) => "done",
            (false, false, true) => "FAILED and ROLLED BACK",
            (false, false, false) => "FAILED",
        };
        format!(
            "switch term {} {} → {} {verdict} in {} ms ({}): {}{}",
            self.term,
            self.from.as_deref().unwrap_or("nobody"),
            self.to,
            self.total_ms,
            self.reason,
            phases.join(", "),
            self.error
                .as_ref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        )
    }
}

struct Clock {
    started: Instant,
    last: Instant,
    outcome: Outcome,
}

impl Clock {
    fn phase(&mut self, name: &str, result: Result<String, String>) -> bool {
        let ms = self.last.elapsed().as_millis() as u64;
        self.last = Instant::now();
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        if ok {
            info!(phase = name, ms, %detail, "switch phase done");
        } else {
            error!(phase = name, ms, %detail, "switch phase failed");
            self.outcome.ok = false;
            self.outcome.error = Some(format!("{name}: {detail}"));
        }
        self.outcome.phases.push(PhaseTime {
            name: name.into(),
            ms,
            detail,
        });
        ok
    }
}

impl Manager {
    /// Executes `plan` — or, with `dry_run` (or the config's `dry_run`), only says phase by phase
    /// what it would do and changes nothing. Nothing is promoted unless the old active is proven
    /// demoted, or could not be reached and the engine has waited out its fence.
    pub async fn execute(&mut self, plan: Plan, dry_run: bool) -> Outcome {
        let dry_run = dry_run || self.cfg.dry_run;
        // Every line the switch logs carries these (as span fields in JSON logs); the term is
        // recorded once it is raised.
        let span = tracing::info_span!(
            "switch",
            from = plan.from.map(|i| self.describe(i)).as_deref().unwrap_or("nobody"),
            to = %self.describe(plan.to),
            reason = %plan.reason,
            term = tracing::field::Empty,
            dry_run,
        );
        self.execute_in(plan, dry_run).instrument(span).await
    }

    async fn execute_in(&mut self, plan: Plan, dry_run: bool) -> Outcome {
        let names: Vec<String> = (0..self.node_count()).map(|i| self.describe(i)).collect();
        let name = |i: usize| names[i].clone();
        let mut clock = Clock {
            started: Instant::now(),
            last: Instant::now(),
            outcome: Outcome {
                ok: true,
                term: 0,
                from: plan.from.map(name),
                to: name(plan.to),
                reason: plan.reason.clone(),
                phases: Vec::new(),
                total_ms: 0,
                error: None,
                dry_run,
                retry_soon: true,
                rolled_back: false,
            },
        };
        info!(
            from = clock.outcome.from.as_deref().unwrap_or("nobody"),
            to = %clock.outcome.to,
            reason = %plan.reason,
            demotable = plan.demotable,
            "switch decided"
        );
        if dry_run {
            self.plan_phases(&plan, &mut clock);
            return self.finish(clock);
        }
        // Secure mode: prove the new active can be reached over SSH before anything changes.
        if let Some(target) = self.ssh_target(plan.to) {
            match target.run("true", None).await {
                Ok(_) => {
                    clock.phase(
                        "ssh_check",
                        Ok(format!(
                            "{}@{}:{} reachable",
                            target.user, target.host, target.port
                        )),
                    );
                }
                Err(e) => {
                    clock.outcome.retry_soon = false;
                    clock.phase("ssh_check", Err(format!("{e}; nothing was changed")));
                    return self.finish(clock);
                }
            }
        }

        // 1. A new term, persisted (and in etcd) before any agent hears it.
        let term = match self.next_term().await {
            Ok(t) => t,
            Err(e) => {
                clock.phase("term", Err(e));
                return self.finish(clock);
            }
        };
        clock.outcome.term = term;
        tracing::Span::current().record("term", term);
        clock.phase("term", Ok(format!("term {term}")));
        // Pause points (fault tests kill the manager there): before the demotion, after it
        // (`switch_demoted`), after the promotion's answer and after the confirmation.
        failover_agent::pause::point(&self.cfg.state_dir, "switch_term").await;

        // 2. Demote the old active, or rely on its fence.
        let mut tower: Option<VoteStateBlob> = None;
        match plan.from {
            Some(a) if plan.demotable => {
                let request = FailoverRequest {
                    switch_id: Some(self.switch_id(term)),
                    ..command(FailoverAction::BecomePassive, term, &plan.reason, None)
                };
                match self.ask(a, &request).await {
                    Ok(r) if r.ok && r.identity.as_deref() != Some(self.staked_str().as_str()) => {
                        let settle = r
                            .phases
                            .iter()
                            .find(|p| p.name == "settle")
                            .map(|p| p.detail.clone());
                        tower = r.tower;
                        clock.phase(
                            "demote",
                            Ok(format!(
                                "{} demoted{}",
                                name(a),
                                settle.map(|s| format!(" ({s})")).unwrap_or_default()
                            )),
                        );
                    }
                    Ok(r) => {
                        clock.phase(
                            "demote",
                            Err(r.error.unwrap_or_else(|| {
                                "the validator still reports the staked identity".into()
                            })),
                        );
                        return self.finish(clock);
                    }
                    Err(NoAnswer { error, .. }) => {
                        clock.phase("demote", Err(error.to_string()));
                        return self.finish(clock);
                    }
                }
            }
            Some(a) => {
                clock.phase("demote", Ok(format!("{} unreachable: fenced: its lease and its last landed vote are past its fence_after plus the margin", name(a))));
            }
            None => {
                clock.phase("demote", Ok("nobody holds the staked identity".into()));
            }
        }

        // 3. The tower: the one the demotion returned (embedded store) or stored (etcd), else the
        // newest verified backup.
        let etcd_store = !matches!(self.cfg.tower_store, failover_config::TowerStore::Embedded);
        let from_demotion =
            tower.is_some() || (etcd_store && plan.demotable && plan.from.is_some());
        let tower = match tower {
            Some(t) => Some(t),
            None => self.newest_backup().await,
        };
        // Never a tower older than what the chain shows was voted (DESIGN.md §3 rule 2): with the
        // old active unreachable, the newest backup may predate votes it cast since.
        let chain_vote = self.last_sample().and_then(|s| s.view.last_vote);
        let behind = match (&tower, chain_vote) {
            (Some(t), Some(voted)) => t.last_vote.is_none_or(|v| v < voted),
            (None, Some(voted)) => voted > 0,
            _ => false,
        };
        let past_lockouts = plan.past_lockouts.filter(|_| behind && !plan.demotable);
        if let Some(bound) = past_lockouts {
            clock.phase(
                "lockouts",
                Ok(format!(
                    "the newest vote state held (last vote {}) is older than the chain's last vote {}: \
                     the old active is fenced, and every vote it may have cast beyond the chain has \
                     lost its lockout by slot {bound}; the new active votes only past it",
                    slot_text(tower.as_ref().and_then(|t| t.last_vote)),
                    slot_text(chain_vote)
                )),
            );
        }
        if let (Some(t), Some(voted), None) = (&tower, chain_vote, past_lockouts) {
            if t.last_vote.is_none_or(|v| v < voted) {
                clock.phase(
                    "tower",
                    Err(format!(
                        "the newest tower available (last vote {}) is older than the vote account's last vote {voted}: \
                         promoting with it could break lockouts; bring the old active's agent back (its tower is on its disk) \
                         or restore that tower by hand",
                        slot_text(t.last_vote)
                    )),
                );
                return self.finish(clock);
            }
        }
        if let (None, Some(voted), None) = (&tower, chain_vote, past_lockouts) {
            if voted > 0 {
                clock.phase(
                    "tower",
                    Err(format!(
                        "no vote state anywhere{}, and the vote account's last vote is {voted}: a \
                         new active building its own could break lockouts; bring the old active's \
                         agent back (its vote state is on its disk) or restore it by hand",
                        if etcd_store {
                            " (none readable in etcd)"
                        } else {
                            ""
                        }
                    )),
                );
                return self.finish(clock);
            }
        }
        // What the promotion installs is checked against this hash: with the etcd store, the
        // record the floors above were checked on.
        let sha = tower.as_ref().map(|t| t.sha256.clone());
        clock.phase(
            "tower",
            Ok(match &tower {
                Some(t) => format!(
                    "{}last vote {}, sha256 {}",
                    if etcd_store { "in etcd: " } else { "" },
                    slot_text(t.last_vote),
                    &t.sha256[..16]
                ),
                None => "no vote state anywhere, and no vote on the chain: the new active builds its own".into(),
            }),
        );
        if let Some(t) = &tower {
            self.save_backup(t);
        }

        // The old active is demoted (or fenced) and nobody holds X yet: where a fault test kills
        // the manager to leave a switch half done.
        failover_agent::pause::point(&self.cfg.state_dir, "switch_demoted").await;

        // 4. Promote.
        let embedded = matches!(self.cfg.tower_store, failover_config::TowerStore::Embedded);
        let request = command(
            FailoverAction::BecomeActive,
            term,
            &plan.reason,
            if embedded { tower.clone() } else { None },
        );
        let request = FailoverRequest {
            tower_sha256: sha,
            // The agent checks its own validator agrees on the consensus.
            consensus: Some(self.observer.consensus()),
            allow_migration: plan.allow_migration,
            // Secure mode: the agent installs the tower; the identity comes over SSH.
            skip_identity: self.secure_key.is_some(),
            // The agent refuses a tower older than this, and than what its own validator shows.
            min_last_vote: chain_vote,
            min_root: (!from_demotion)
                .then(|| self.unseen_votes_bound(tower.as_ref(), chain_vote))
                .flatten(),
            past_lockouts,
            switch_id: Some(self.switch_id(term)),
            ..request
        };
        let promoted = self.ask(plan.to, &request).await;
        // Whatever came back (or nothing, in time): a lease the agent started on this command
        // began before now, so the fence waits count from here for this node.
        self.observer.lease_granted(plan.to);
        // Give X back to the node it came from, with its own final tower, rather than leave
        // nobody voting — only where the new one surely does not hold it.
        let can_roll_back = plan.demotable && self.secure_key.is_none();
        match promoted {
            Ok(r) if r.ok => {
                let detail = r
                    .phases
                    .iter()
                    .map(|p| format!("{} {} ms", p.name, p.ms))
                    .collect::<Vec<_>>()
                    .join(", ");
                clock.phase(
                    "promote",
                    Ok(format!("{} promoted ({detail})", name(plan.to))),
                );
            }
            Ok(r) => {
                let refused_staked = r.identity.as_deref() == Some(self.staked_str().as_str());
                clock.phase(
                    "promote",
                    Err(r.error.unwrap_or_else(|| "promotion failed".into())),
                );
                // A definite refusal, with the node still unstaked.
                if let (Some(a), true, false) = (plan.from, can_roll_back, refused_staked) {
                    self.roll_back(a, tower, chain_vote, &plan.reason, &mut clock)
                        .await;
                }
                return self.finish(clock);
            }
            Err(NoAnswer {
                error,
                delivered: false,
            }) => {
                clock.phase(
                    "promote",
                    Err(format!("{error}: the promotion never reached it")),
                );
                if let (Some(a), true) = (plan.from, can_roll_back) {
                    self.roll_back(a, tower, chain_vote, &plan.reason, &mut clock)
                        .await;
                }
                return self.finish(clock);
            }
            Err(NoAnswer { error, .. }) => {
                // It may hold X: no rollback. It is "maybe active" to the engine until it
                // answers, or its lease has surely run out.
                clock.phase(
                    "promote",
                    Err(format!(
                        "{error}, also when asked again for {ASK_AGAIN_FOR:?}: {} may hold the \
                         staked identity, so it is not given back; the next heartbeats decide",
                        name(plan.to)
                    )),
                );
                return self.finish(clock);
            }
        }

        // 4b. Secure mode: the identity travels over SSH, on the remote command's stdin.
        if self.secure_key.is_some() {
            let lease = keep_lease(
                self.observer.agent(plan.to).clone(),
                self.cfg.heartbeat_interval,
                term,
                format!("{} during the SSH steps", name(plan.to)),
            );
            let promoted = tokio::select! {
                done = self.ssh_promote(plan.to, term, &plan.reason, &mut clock) => done,
                never = lease => match never {},
            };
            if let Err(e) = promoted {
                clock.outcome.retry_soon = false;
                clock.phase("ssh", Err(e));
                return self.finish(clock);
            }
        }

        failover_agent::pause::point(&self.cfg.state_dir, "switch_promoted").await;

        // 5. Confirm through the agent, then through gossip.
        let confirmed = match self.observer.agent(plan.to).status(term).await {
            Ok(s) if s.role == Role::Active => Ok(format!(
                "{} reports {}",
                name(plan.to),
                s.identity.unwrap_or_default()
            )),
            Ok(s) => Err(format!(
                "{} reports {} ({})",
                name(plan.to),
                s.identity.as_deref().unwrap_or("no readable identity"),
                s.role
            )),
            Err(e) => Err(e.to_string()),
        };
        if !clock.phase("confirm", confirmed) {
            return self.finish(clock);
        }
        failover_agent::pause::point(&self.cfg.state_dir, "switch_confirmed").await;
        clock.outcome.total_ms = clock.started.elapsed().as_millis() as u64;
        let want = self.cfg_ip(plan.to);
        let deadline = Instant::now() + GOSSIP_CONFIRM;
        // Heartbeats run beside the gossip polls, not between them: a slow getClusterNodes
        // (seconds on a big cluster's RPC node) must not stretch the gap between two of them.
        let heartbeats = keep_lease(
            self.observer.agent(plan.to).clone(),
            self.cfg.heartbeat_interval,
            term,
            format!("{} while gossip catches up", name(plan.to)),
        );
        let polls = async {
            loop {
                match self.observer.gossip_holder().await {
                    Ok(Some(ip)) if ip == want => {
                        break Ok(format!("gossip shows the staked identity at {ip}"))
                    }
                    _ if Instant::now() >= deadline => {
                        break Err(format!(
                            "gossip did not show the staked identity at {want} within \
                             {GOSSIP_CONFIRM:?}"
                        ))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let gossip: Result<String, String> = tokio::select! {
            found = polls => found,
            never = heartbeats => match never {},
        };
        if let Err(e) = &gossip {
            // The agent confirmed the identity; gossip lagging is worth a warning, not a rollback.
            warn!("{e}");
            clock.outcome.phases.push(PhaseTime {
                name: "gossip".into(),
                ms: clock.last.elapsed().as_millis() as u64,
                detail: e.clone(),
            });
        } else {
            clock.phase("gossip", gossip);
        }
        self.finish(clock)
    }

    /// Makes `a`, which this switch demoted, active again with its own final tower, in a term of
    /// its own (the demotion's term may not promote it).
    async fn roll_back(
        &mut self,
        a: usize,
        tower: Option<VoteStateBlob>,
        chain_vote: Option<u64>,
        reason: &str,
        clock: &mut Clock,
    ) {
        let failure = clock.outcome.error.clone();
        let term = match self.next_term().await {
            Ok(t) => t,
            Err(e) => {
                clock.phase("rollback", Err(format!("no term for the rollback: {e}")));
                clock.outcome.error = failure;
                return;
            }
        };
        let embedded = matches!(self.cfg.tower_store, failover_config::TowerStore::Embedded);
        let request = FailoverRequest {
            min_last_vote: chain_vote,
            switch_id: Some(self.switch_id(term)),
            ..command(
                FailoverAction::BecomeActive,
                term,
                &format!("rollback: {reason}"),
                if embedded { tower } else { None },
            )
        };
        let rolled_back = self.ask(a, &request).await;
        self.observer.lease_granted(a);
        let result = match rolled_back {
            Ok(r) if r.ok => {
                clock.outcome.rolled_back = true;
                Ok(format!(
                    "{} active again with its own final tower (term {term})",
                    self.describe(a)
                ))
            }
            Ok(r) => Err(format!(
                "{} could not be made active again: {}; NOBODY VOTES, check both now",
                self.describe(a),
                r.error.unwrap_or_default()
            )),
            Err(NoAnswer { error, .. }) => Err(format!(
                "{} could not be made active again: {error}; check both now",
                self.describe(a)
            )),
        };
        clock.phase("rollback", result);
        // The switch's failure stays the headline.
        clock.outcome.error = failure.map(|f| match clock.outcome.rolled_back {
            true => format!("{f}; rolled back: {} votes again", self.describe(a)),
            false => f,
        });
    }

    /// Sends the switch step `request` to agent `i`. When no answer comes back (the connection
    /// was cut, the answer lost, the wait timed out), asks again with the same request for up
    /// to [`ASK_AGAIN_FOR`]: the agent answers from its journal what the step did, or waits
    /// for the run in progress, and never runs it twice. A refusal is an answer.
    async fn ask(&self, i: usize, request: &FailoverRequest) -> Result<FailoverResponse, NoAnswer> {
        let mut delivered = false;
        let mut until: Option<Instant> = None;
        loop {
            if let Some(why) = self.may_not_act() {
                let error = ClientError::NotSent {
                    url: self.commands[i].endpoint().to_string(),
                    why,
                };
                warn!("{error}");
                return Err(NoAnswer { error, delivered });
            }
            let attempt = match until {
                None => self.commands[i].failover(request).await,
                Some(until) => {
                    tokio::time::timeout_at(until.into(), self.commands[i].failover(request))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ClientError::TimedOut {
                                url: self.commands[i].endpoint().to_string(),
                                within: ASK_AGAIN_FOR,
                            })
                        })
                }
            };
            let error = match attempt {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            delivered |= !error.never_delivered();
            let until = *until.get_or_insert_with(|| Instant::now() + ASK_AGAIN_FOR);
            let answered = matches!(
                error,
                ClientError::Refused { .. } | ClientError::WrongIdentity { .. }
            );
            if answered || Instant::now() + ASK_AGAIN_EVERY >= until {
                return Err(NoAnswer { error, delivered });
            }
            let step = match request.action {
                FailoverAction::BecomeActive => "promotion",
                FailoverAction::BecomePassive => "demotion",
            };
            warn!(
                "no answer from {} to its {step} in term {} ({error}): asking again for the outcome",
                self.describe(i),
                request.term
            );
            tokio::time::sleep(ASK_AGAIN_EVERY).await;
        }
    }

    /// A dry run: each phase the switch would go through, with what it would do and what it would
    /// use, from the last sample — and the refusal a real switch would meet, if any. Nothing is
    /// sent to any agent and the term is not raised.
    fn plan_phases(&self, plan: &Plan, clock: &mut Clock) {
        let name = |i: usize| self.describe(i);
        let sample = self.last_sample();
        let agents_term = sample
            .map(|s| {
                s.last_statuses
                    .iter()
                    .flatten()
                    .map(|st| st.term)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let term = self.term().max(agents_term) + 1;
        let mut would = |phase: &str, detail: String| {
            clock.phase(phase, Ok(format!("would {detail}")));
        };
        would(
            "term",
            format!("raise the fencing term to {term} and persist it"),
        );
        if let Some(target) = self.ssh_target(plan.to) {
            would(
                "ssh_check",
                format!(
                    "run `true` over SSH on {}@{}:{}",
                    target.user, target.host, target.port
                ),
            );
        }
        match plan.from {
            Some(a) if plan.demotable => would(
                "demote",
                format!(
                    "ask {}'s agent to become passive: unstaked identity, confirm, remove the \
                     authorized voters, wait for the tower to settle, hand it over",
                    name(a)
                ),
            ),
            Some(a) => would(
                "demote",
                format!(
                    "rely on {}'s self-fence (its agent is unreachable)",
                    name(a)
                ),
            ),
            None => would("demote", "skip: nobody holds the staked identity".into()),
        }
        let chain_vote = sample.and_then(|s| s.view.last_vote);
        let backup = self.saved_backup();
        let source = match plan.from {
            Some(_) if plan.demotable => "the final tower from the demotion".to_string(),
            _ => match &backup {
                Some(t) => format!(
                    "the newest backup (last vote {})",
                    t.last_vote.map_or("none".into(), |v| v.to_string())
                ),
                None => "no tower: none is backed up".into(),
            },
        };
        let floor = chain_vote.map_or(String::new(), |v| {
            format!("; refused if older than the vote account's last vote {v}")
        });
        let stale = !plan.demotable
            && matches!((&backup, chain_vote), (Some(t), Some(v)) if t.last_vote.is_none_or(|l| l < v));
        if stale {
            clock.phase(
                "tower",
                Err(format!(
                    "would refuse: {source} is older than the vote account's last vote {}",
                    chain_vote.unwrap_or_default()
                )),
            );
            return;
        }
        let mut would = |phase: &str, detail: String| {
            clock.phase(phase, Ok(format!("would {detail}")));
        };
        would("tower", format!("use {source}{floor}"));
        let promote = if self.secure_key.is_some() {
            "install the tower; the identity follows over SSH"
        } else {
            "install the tower and set the staked identity with require_tower, then add the \
             authorized voter"
        };
        let wait_root = match (
            plan.demotable,
            self.unseen_votes_bound(backup.as_ref(), chain_vote),
        ) {
            (false, Some(slot)) => format!(
                "; it first waits until its validator's finalized root reaches {slot} (or later: \
                 the tip when the switch runs), so X votes on no slot the old active may have"
            ),
            _ => String::new(),
        };
        would(
            "promote",
            format!(
                "ask {}'s agent to become active: {promote}{wait_root}",
                name(plan.to)
            ),
        );
        if self.secure_key.is_some() {
            would(
                "ssh_set_identity",
                "pipe the staked keypair to ssh_set_identity_command on its stdin".into(),
            );
        }
        would(
            "confirm",
            format!("read {}'s identity back through its agent", name(plan.to)),
        );
        would(
            "gossip",
            format!("wait up to {GOSSIP_CONFIRM:?} for gossip to show the staked identity there"),
        );
    }

    /// Secure mode's promotion: set-identity (with the tower requirement) and the authorized voter
    /// over SSH. If the voter cannot be added, the node is demoted again so it is left passive.
    async fn ssh_promote(
        &mut self,
        to: usize,
        term: u64,
        reason: &str,
        clock: &mut Clock,
    ) -> Result<(), String> {
        let secure = self.cfg.secure.clone().expect("secure mode");
        let target = self.ssh_target(to).expect("secure mode");
        let key = self.secure_key.clone().expect("secure mode");
        let ledger = self.cfg.validators[to].ledger_path.clone();
        let json = key.to_json();
        // Under Alpenglow there is no tower to require (the vote history is required by default).
        let require_tower = secure.ssh_require_tower && !self.observer.consensus().is_alpenglow();
        let set = crate::ssh::remote_command(
            &secure.ssh_set_identity_command,
            ledger.as_deref(),
            require_tower,
        );
        match target.run(&set, Some(json.as_bytes())).await {
            Ok(_) => {
                clock.phase(
                    "ssh_set_identity",
                    Ok(format!("`{set}` on {}", target.host)),
                );
            }
            Err(e) => return Err(format!("{e}; {} left passive", self.describe(to))),
        }
        if let Some(template) = &secure.ssh_authorized_voter_command {
            let add = crate::ssh::remote_command(template, ledger.as_deref(), false);
            match target.run(&add, Some(json.as_bytes())).await {
                Ok(_) => {
                    clock.phase(
                        "ssh_authorized_voter",
                        Ok(format!("`{add}` on {}", target.host)),
                    );
                }
                Err(crate::ssh::SshError::RemoteFailed { stderr, .. })
                    if stderr.contains("already present") =>
                {
                    clock.phase(
                        "ssh_authorized_voter",
                        Ok("authorized voter already present".into()),
                    );
                }
                Err(e) => {
                    // Staked but unable to vote: put it back to passive rather than leave it so.
                    let request = FailoverRequest {
                        switch_id: Some(self.switch_id(term)),
                        ..command(FailoverAction::BecomePassive, term, reason, None)
                    };
                    let reverted = self.commands[to]
                        .failover(&request)
                        .await
                        .map(|r| r.ok)
                        .unwrap_or(false);
                    return Err(format!(
                        "{e}; {} {}",
                        self.describe(to),
                        if reverted {
                            "demoted again"
                        } else {
                            "COULD NOT BE DEMOTED AGAIN: check it now"
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, mut clock: Clock) -> Outcome {
        if clock.outcome.total_ms == 0 {
            clock.outcome.total_ms = clock.started.elapsed().as_millis() as u64;
        }
        let outcome = clock.outcome;
        if outcome.ok {
            info!("{}", outcome.summary());
        } else {
            error!("{}", outcome.summary());
        }
        outcome
    }

    /// Under Alpenglow, with the old active's final vote history out of reach: the slot its votes
    /// may have reached. It has stopped voting by now (its fence has passed, or its validator is
    /// down), so that is at most the newest of the cluster's tip, the history to be installed and
    /// X's last landed vote — plus a leader window.
    fn unseen_votes_bound(
        &self,
        history: Option<&VoteStateBlob>,
        chain_vote: Option<u64>,
    ) -> Option<u64> {
        if !self.observer.consensus().is_alpenglow() {
            return None;
        }
        let tip = self.last_sample().and_then(|s| s.view.tip);
        [tip, history.and_then(|h| h.last_vote), chain_vote]
            .into_iter()
            .flatten()
            .max()
            .map(|slot| slot.saturating_add(LEADER_WINDOW_SLOTS))
    }

    /// The newest verified tower any source offers: the manager's own backup, or what an agent
    /// returned with its status (an active's current tower, a demoted node's final one). With
    /// the etcd store, only etcd's record: the promotion installs that one, whatever else the
    /// manager holds (and the active writes it every heartbeat, fenced by the term).
    async fn newest_backup(&mut self) -> Option<VoteStateBlob> {
        let staked = self.cfg.staked_identity_pubkey;
        let wanted = self.observer.consensus().vote_state_kind();
        if !matches!(self.cfg.tower_store, failover_config::TowerStore::Embedded) {
            return self
                .etcd_backup()
                .await
                .filter(|t| wanted.is_none_or(|k| k == t.kind));
        }
        let mut candidates: Vec<VoteStateBlob> = self.saved_backup().into_iter().collect();
        for i in 0..self.node_count() {
            // An agent that missed the last heartbeat gets a short wait (it is usually the old
            // active, cut off or dead: the full timeout cost every such switch 2 s).
            let missed = self
                .last_sample()
                .is_some_and(|s| s.view.nodes[i].misses > 0);
            let within = if missed {
                self.cfg.request_timeout.min(BACKUP_ASK_MISSING)
            } else {
                self.cfg.request_timeout
            };
            if let Ok(s) = self
                .observer
                .agent(i)
                .status_within(self.term(), within)
                .await
            {
                candidates.extend(s.tower_backup);
            }
        }
        candidates
            .into_iter()
            // A tower is no use to an Alpenglow cluster, nor a vote history to a TowerBFT one.
            .filter(|t| wanted.is_none_or(|k| k == t.kind))
            .filter(|t| match verify_blob(t, &staked, None) {
                Ok(_) => true,
                Err(e) => {
                    warn!(error = %e, "ignoring a backup that does not verify");
                    false
                }
            })
            .max_by_key(|t| t.last_vote)
    }
}

/// A slot for a message: the number, or "none".
pub(crate) fn slot_text(slot: Option<u64>) -> String {
    slot.map_or("none".to_string(), |s| s.to_string())
}

fn command(
    action: FailoverAction,
    term: u64,
    reason: &str,
    tower: Option<VoteStateBlob>,
) -> FailoverRequest {
    FailoverRequest {
        action,
        term,
        skip_identity: false,
        reason: reason.to_string(),
        tower_sha256: tower.as_ref().map(|t| t.sha256.clone()),
        switch_id: None,
        min_last_vote: None,
        min_root: None,
        past_lockouts: None,
        consensus: None,
        allow_migration: false,
        tower,
    }
}

/// Heartbeats to a new active every `interval` until dropped (`to` names it and the step, for the
/// log). Its lease runs from its promotion and each heartbeat acknowledges the one before: a step
/// that waits on something else — the SSH commands of secure mode, gossip — must not let it run
/// out, or the new active fences itself in the middle of its own promotion.
async fn keep_lease(
    agent: failover_agent::AgentClient,
    interval: Duration,
    term: u64,
    to: String,
) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = agent.status(term).await {
            warn!("heartbeat to {to}: {e}");
        }
    }
}
