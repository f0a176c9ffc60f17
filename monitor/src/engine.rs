//! The decision engine: a pure function of what was observed (and the engine's own memory of
//! earlier samples) to what to do. No IO, no clock reads, no randomness — time comes in the view.
//!
//! Rules, in DESIGN.md's terms:
//! - fail over when the active's agent is unreachable for `misses_before_failover` heartbeats, its
//!   validator process is down, it lags the tip by more than `slot_diff_threshold`, or the vote
//!   account's last vote lags the tip by more than `stale_vote_slot_threshold` (each of the last
//!   three confirmed by two consecutive samples);
//! - never to a passive that is itself unreachable, down, unhealthy or lagging; not within the
//!   cooldown after a switch unless nobody can be voting with the staked identity (its validator is
//!   down, or nobody holds it): the cooldown stops flapping between voters, and waiting it out
//!   with no voter only loses votes; not while the view is incomplete;
//! - when the old active cannot be demoted (its agent is unreachable), only with positive evidence
//!   that it no longer votes: the vote account is watched, its votes lag the tip, and its published
//!   `fence_after` plus a margin has passed both since its agent last answered (its lease, see
//!   `failover_agent::lease`) and since a vote last landed (an agent past its lease keeps voting
//!   while its votes land); a manager that never heard it assumes the worst case from its start;
//! - a node whose agent missed a heartbeat is "unknown", never "known passive": its last report
//!   may predate a promotion whose answer never came;
//! - when nobody holds the staked identity (an interrupted switch) and nobody votes, promote.

use std::time::Duration;

pub use failover_agent::consensus::Consensus;

/// The thresholds the engine applies (from the manager config).
#[derive(Clone, Debug)]
pub struct Rules {
    pub misses_before_failover: u32,
    pub slot_diff_threshold: u64,
    pub stale_vote_slot_threshold: u64,
    /// The same under Alpenglow, where `lastVote` comes from certificates in later blocks and
    /// trails the tip by ~8 slots when all is well (also used while the consensus is unknown).
    pub alpenglow_stale_vote_slot_threshold: u64,
    pub cooldown: Duration,
    pub fence_margin: Duration,
    /// Whether the vote account is watched (a config without `vote_account_pubkey` is not).
    pub watch_votes: bool,
    /// No automatic switch this soon after the manager started (`startup_grace_period`).
    pub startup_grace: Duration,
    /// The `fence_after` to assume for a node this manager has no report from (the largest any
    /// agent published before, persisted, or a worst case).
    pub fence_after_unknown: Duration,
}

/// The `fence_after` assumed for an agent no manager ever heard: above what agents with the
/// reference's 30 s `manager_timeout` publish.
pub const FENCE_AFTER_UNKNOWN: Duration = Duration::from_secs(45);

/// What one agent last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentReport {
    /// Whether the validator runs with the staked identity; `None` when its identity could not be
    /// read.
    pub holds_staked: Option<bool>,
    pub process_running: Option<bool>,
    pub slot: Option<u64>,
    pub healthy: bool,
    /// How long after the last manager contact this agent self-fences.
    pub fence_after: Duration,
    /// Why this node could not be promoted now (its keys), when it could not.
    pub not_promotable: Option<String>,
}

/// One validator as the manager sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Consecutive heartbeats without an answer from its agent.
    pub misses: u32,
    /// The last report (kept while the agent is unreachable).
    pub report: Option<AgentReport>,
    /// When the agent last answered, in the view's clock.
    pub last_answer: Option<Duration>,
    /// Gossip shows the staked identity at this node's address.
    pub staked_in_gossip: bool,
}

/// Everything observed at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The view's clock (monotonic, from the manager's start).
    pub now: Duration,
    /// The validators in the config's order, which is their standby priority.
    pub nodes: Vec<NodeView>,
    /// What the cluster runs, as its RPC says.
    pub consensus: Consensus,
    /// The cluster's tip (processed slot).
    pub tip: Option<u64>,
    /// The vote account's last vote; `None` when unknown or not watched.
    pub last_vote: Option<u64>,
    /// When the cluster's answer with `last_vote` arrived. A fence counts from the vote's
    /// progress, so it must be when the vote was read, not when the sample ended (`now`): a
    /// sample waits up to `request_timeout` for an agent that no longer answers.
    pub last_vote_at: Duration,
    /// The newest vote state the manager could hand over is older than `last_vote` (embedded
    /// store; the etcd record is checked by the switch itself).
    pub backup_behind_chain: bool,
}

/// How many slots after a fenced active's last possible vote every lockout it may have built
/// beyond the chain has expired, under TowerBFT: a node that sees no other votes (cut off) can
/// stack at most `VOTE_THRESHOLD_DEPTH` (8) votes above the last one two thirds of the stake
/// confirmed — the threshold check refuses the next — so none of its unseen votes carries a
/// lockout above 2^9 slots (solana-core `consensus.rs`, `check_vote_stake_threshold`). Plus a
/// leader window.
pub const TOWER_LOCKOUT_EXPIRY_SLOTS: u64 = (1 << 9) + 4;

/// Why a switch is wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    AgentUnreachable {
        misses: u32,
    },
    ValidatorDown,
    SlotLag {
        lag: u64,
    },
    VoteStale {
        lag: u64,
    },
    /// Nobody holds the staked identity and nobody votes (an interrupted switch).
    NoActive,
}

impl Reason {
    /// A switch for this reason is wanted while nobody votes with the staked identity: its
    /// validator is down, nobody holds it, or its holder is unreachable and, when such a switch
    /// is proposed, fenced with its votes stopped. The cooldown does not hold such a switch back,
    /// and a failed one is retried soon.
    pub fn while_nobody_votes(&self, demotable: bool) -> bool {
        match self {
            Reason::ValidatorDown | Reason::NoActive => true,
            Reason::AgentUnreachable { .. } => !demotable,
            Reason::SlotLag { .. } | Reason::VoteStale { .. } => false,
        }
    }

    /// The kind of reason, without its numbers (for saying a standing problem once).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::AgentUnreachable { .. } => "the active's agent is unreachable",
            Reason::ValidatorDown => "the active validator is down",
            Reason::SlotLag { .. } => "the active validator lags the cluster",
            Reason::VoteStale { .. } => "the vote account's votes are stale",
            Reason::NoActive => "no validator holds the staked identity",
        }
    }

    /// The kind as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::AgentUnreachable { .. } => "agent_unreachable",
            Reason::ValidatorDown => "validator_down",
            Reason::SlotLag { .. } => "slot_lag",
            Reason::VoteStale { .. } => "vote_stale",
            Reason::NoActive => "no_active",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::AgentUnreachable { misses } => {
                write!(f, "active agent unreachable for {misses} heartbeats")
            }
            Reason::ValidatorDown => write!(f, "active validator is down"),
            Reason::SlotLag { lag } => {
                write!(f, "active validator is {lag} slots behind the cluster")
            }
            Reason::VoteStale { lag } => write!(
                f,
                "vote account's last vote is {lag} slots behind the cluster"
            ),
            Reason::NoActive => {
                write!(f, "no validator holds the staked identity and nobody votes")
            }
        }
    }
}

/// Why a wanted switch is not made now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    ViewIncomplete,
    Cooldown {
        remaining: Duration,
    },
    PassiveUnreachable,
    PassiveDown,
    PassiveUnhealthy,
    PassiveLagging {
        lag: u64,
    },
    /// The passive's agent says it could not switch (a keypair it would use is wrong or missing).
    PassiveNotPromotable {
        why: String,
    },
    /// Within `startup_grace_period` of the manager's start, no automatic switch.
    StartupGrace {
        remaining: Duration,
    },
    /// The cluster migrates to Alpenglow (feature active, no genesis certificate): no handover
    /// is safe until it ends.
    MigrationWindow {
        consensus: Consensus,
    },
    /// The old active cannot be demoted and its votes still land.
    OldActiveStillVoting,
    /// The old active cannot be demoted; its self-fence has not surely happened yet.
    AwaitingFence {
        remaining: Duration,
    },
    /// The old active cannot be demoted and no vote account is watched: nothing can prove it
    /// stopped voting.
    NoVoteEvidence,
    /// The old active is fenced, but the newest vote state the manager holds is older than the
    /// chain's last vote (it was cut off before its final tower reached anyone). Under TowerBFT
    /// the new active may not vote until every vote the old one could have cast beyond the
    /// chain has lost its lockout: `slots` more slots.
    AwaitingLockouts {
        slots: u64,
    },
    /// Both validators report the staked identity: a human must look.
    BothActive,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::ViewIncomplete => write!(f, "the view is not complete yet"),
            Hold::Cooldown { remaining } => write!(
                f,
                "cooldown after the last switch ({}s left)",
                remaining.as_secs()
            ),
            Hold::PassiveUnreachable => write!(f, "the passive's agent is unreachable"),
            Hold::PassiveDown => write!(f, "the passive validator is down"),
            Hold::PassiveUnhealthy => write!(f, "the passive validator is unhealthy"),
            Hold::PassiveLagging { lag } => {
                write!(f, "the passive validator is {lag} slots behind")
            }
            Hold::PassiveNotPromotable { why } => {
                write!(f, "the passive could not be promoted: {why}")
            }
            Hold::MigrationWindow { consensus } => write!(
                f,
                "the cluster is {consensus}: no switch until the migration ends"
            ),
            Hold::StartupGrace { remaining } => write!(
                f,
                "the manager started less than its startup_grace_period ago ({}s left)",
                remaining.as_secs()
            ),
            Hold::OldActiveStillVoting => write!(
                f,
                "its validator's votes still land: it votes, and promoting the other would \
                 make two voters"
            ),
            Hold::AwaitingFence { remaining } => {
                write!(
                    f,
                    "waiting {} ms for the unreachable active to have fenced itself",
                    remaining.as_millis()
                )
            }
            Hold::BothActive => write!(f, "both validators report the staked identity"),
            Hold::AwaitingLockouts { slots } => write!(
                f,
                "the newest tower held is older than the chain's last vote: waiting {slots} slots \
                 until every vote the fenced active may have cast beyond it has lost its lockout"
            ),
            Hold::NoVoteEvidence => write!(
                f,
                "no vote_account_pubkey is configured, so nothing proves the unreachable active \
                 stopped voting: no automatic failover past it"
            ),
        }
    }
}

/// What the engine asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the staked identity to `to`. `from` is the old active when known; `demotable` says
    /// whether its agent can be asked to demote it (otherwise it is fenced by time).
    Failover {
        from: Option<usize>,
        to: usize,
        reason: Reason,
        demotable: bool,
        /// Fenced by time with no vote state as new as the chain's: every vote the old active may
        /// have cast beyond what is known has lost its lockout by this slot, and the new active
        /// may vote only from a bank past it (see [`Hold::AwaitingLockouts`]).
        past_lockouts: Option<u64>,
    },
    /// A switch is wanted but must wait.
    Hold {
        reason: Reason,
        hold: Hold,
    },
    /// An agent became unreachable (said once) or came back.
    Unreachable {
        node: usize,
    },
    BackOnline {
        node: usize,
    },
    /// Both validators hold the staked identity.
    Critical {
        text: String,
    },
    /// A standing problem began (said once per cause, until it clears): a standby that could not
    /// take over, or a hold that leaves nobody voting (`critical`).
    Attention {
        cause: Cause,
        text: String,
        critical: bool,
    },
    /// A standing problem ended.
    Cleared {
        cause: Cause,
    },
}

/// A standing problem, for saying it once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    StandbyNotPromotable {
        node: usize,
    },
    StandbyDown {
        node: usize,
    },
    /// A switch is wanted for a reason (its kind) but held (its kind), and nobody votes meanwhile.
    NobodyVoting {
        reason: &'static str,
        hold: String,
    },
}

/// The engine's memory of earlier samples.
#[derive(Clone, Debug)]
pub struct Engine {
    rules: Rules,
    down_samples: u32,
    lag_samples: u32,
    stale_samples: u32,
    last_switch: Option<Duration>,
    /// Per node: its agent's unreachability was said.
    reported_unreachable: Vec<bool>,
    /// The node last judged active: a dead active is not a "standby that is down".
    active: Option<usize>,
    /// The last vote seen and when it last advanced.
    vote_progress: Option<(u64, Duration)>,
    /// The tip when the unreachable active's fence became sure (reset when it answers again).
    fence_sure_at: Option<u64>,
    /// Standing problems already said.
    said: std::collections::BTreeSet<Cause>,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::StandbyNotPromotable { node } => {
                write!(f, "standby validator{} can be promoted again", node + 1)
            }
            Cause::StandbyDown { node } => {
                write!(f, "standby validator{}'s validator runs again", node + 1)
            }
            Cause::NobodyVoting { reason, .. } => {
                write!(f, "a validator votes again (was: {reason})")
            }
        }
    }
}

/// What to tell the operator about `cause`, and whether it is critical.
fn describe(cause: &Cause, view: &View, held: Option<String>) -> (String, bool) {
    let why = |node: usize| {
        view.nodes[node]
            .report
            .as_ref()
            .and_then(|r| r.not_promotable.clone())
            .unwrap_or_default()
    };
    match cause {
        Cause::StandbyNotPromotable { node } => (
            format!(
                "standby validator{} could not take over: {}",
                node + 1,
                why(*node)
            ),
            false,
        ),
        Cause::StandbyDown { node } => (
            format!(
                "standby validator{}'s validator process is not running: no failover is possible",
                node + 1
            ),
            false,
        ),
        Cause::NobodyVoting { reason, hold } => (
            format!(
                "nobody is voting: {}",
                held.unwrap_or_else(|| format!("{reason} ({hold})"))
            ),
            true,
        ),
    }
}

/// A stable name for a hold, without its changing numbers (for saying it once).
fn hold_kind(hold: &Hold) -> String {
    match hold {
        Hold::Cooldown { .. } => "cooldown after the last switch".into(),
        Hold::PassiveLagging { .. } => "the passive validator is behind".into(),
        Hold::StartupGrace { .. } => "startup grace period".into(),
        Hold::MigrationWindow { .. } => "migration to Alpenglow".into(),
        Hold::AwaitingFence { .. } => "waiting for the fence".into(),
        Hold::AwaitingLockouts { .. } => "waiting for lockouts to expire".into(),
        other => other.to_string(),
    }
}

fn lag(tip: Option<u64>, slot: Option<u64>) -> Option<u64> {
    Some(tip?.saturating_sub(slot?))
}

impl Engine {
    /// The `fence_after` to assume for an agent not heard since this engine started: what the
    /// agents published to an earlier manager (see [`Rules::fence_after_unknown`]).
    pub fn assume_fence_after(&mut self, fence_after: Duration) {
        self.rules.fence_after_unknown = fence_after;
    }

    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            down_samples: 0,
            lag_samples: 0,
            stale_samples: 0,
            last_switch: None,
            reported_unreachable: Vec::new(),
            active: None,
            vote_progress: None,
            fence_sure_at: None,
            said: Default::default(),
        }
    }

    /// Records that a switch happened at `at` (starts the cooldown, forgets old samples).
    pub fn switched(&mut self, at: Duration) {
        self.last_switch = Some(at);
        self.fence_sure_at = None;
        self.down_samples = 0;
        self.lag_samples = 0;
        self.stale_samples = 0;
    }

    /// Decides what to do about `view`, and says each standing problem once.
    pub fn step(&mut self, view: &View) -> Vec<Action> {
        let mut actions = self.decide(view);
        let causes = self.causes(view, &actions);
        for (cause, (text, critical)) in &causes {
            if self.said.insert(cause.clone()) {
                actions.push(Action::Attention {
                    cause: cause.clone(),
                    text: text.clone(),
                    critical: *critical,
                });
            }
        }
        let gone: Vec<Cause> = self
            .said
            .iter()
            .filter(|c| !causes.contains_key(c))
            .cloned()
            .collect();
        for cause in gone {
            self.said.remove(&cause);
            actions.push(Action::Cleared { cause });
        }
        actions
    }

    /// The standing problems of this view: a reachable standby that could not take over (keys,
    /// validator down), and a wanted switch held while nobody votes.
    fn causes(
        &self,
        view: &View,
        actions: &[Action],
    ) -> std::collections::BTreeMap<Cause, (String, bool)> {
        let mut causes = std::collections::BTreeMap::new();
        let mut add = |cause: Cause, held: Option<String>| {
            let described = describe(&cause, view, held);
            causes.insert(cause, described);
        };
        for (node, n) in view.nodes.iter().enumerate() {
            let Some(report) = n.report.as_ref().filter(|_| n.misses == 0) else {
                continue;
            };
            if report.holds_staked == Some(true) || self.active == Some(node) {
                continue;
            }
            if report.not_promotable.is_some() {
                add(Cause::StandbyNotPromotable { node }, None);
            }
            if report.process_running == Some(false) {
                add(Cause::StandbyDown { node }, None);
            }
        }
        let votes_stale = self.stale_samples >= 2;
        for action in actions {
            if let Action::Hold { reason, hold } = action {
                let nobody = match reason {
                    Reason::ValidatorDown | Reason::VoteStale { .. } | Reason::NoActive => true,
                    Reason::SlotLag { .. } | Reason::AgentUnreachable { .. } => votes_stale,
                };
                // Waiting out a fence or a cooldown is expected to end by itself.
                let passing = matches!(hold, Hold::AwaitingFence { .. } | Hold::ViewIncomplete);
                if nobody && !passing {
                    add(
                        Cause::NobodyVoting {
                            reason: reason.kind(),
                            hold: hold_kind(hold),
                        },
                        Some(format!("{reason}, and no switch is possible: {hold}")),
                    );
                }
            }
        }
        causes
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        let mut actions = Vec::new();
        self.reported_unreachable.resize(view.nodes.len(), false);
        for (i, node) in view.nodes.iter().enumerate() {
            let unreachable = node.misses >= self.rules.misses_before_failover;
            if unreachable && !self.reported_unreachable[i] {
                self.reported_unreachable[i] = true;
                actions.push(Action::Unreachable { node: i });
            } else if node.misses == 0 && self.reported_unreachable[i] {
                self.reported_unreachable[i] = false;
                actions.push(Action::BackOnline { node: i });
            }
        }
        if let Some(vote) = view.last_vote {
            match self.vote_progress {
                Some((seen, _)) if vote <= seen => {}
                _ => self.vote_progress = Some((vote, view.last_vote_at)),
            }
        }
        let vote_lag = lag(view.tip, view.last_vote).filter(|_| self.rules.watch_votes);
        let votes_stale_now = vote_lag.is_some_and(|l| l > self.stale_threshold(view));
        self.stale_samples = if votes_stale_now {
            self.stale_samples + 1
        } else {
            0
        };

        if !self.complete(view) {
            self.down_samples = 0;
            self.lag_samples = 0;
            return actions;
        }
        // What a node holds, as far as is known now: a node that missed a heartbeat is unknown
        // (its last report may predate a promotion whose answer never came).
        let holds = |i: usize| {
            let n = &view.nodes[i];
            n.report
                .as_ref()
                .filter(|_| n.misses == 0)
                .and_then(|r| r.holds_staked)
        };
        let reachable = |i: usize| view.nodes[i].misses == 0 && view.nodes[i].report.is_some();
        let nodes = 0..view.nodes.len();
        let holders: Vec<usize> = nodes.clone().filter(|&i| holds(i) == Some(true)).collect();
        let active = match holders.as_slice() {
            [] => {
                // Nobody says so: the active is the one not known to be passive (its identity is
                // unreadable or its agent never answered), preferring the one gossip shows as
                // staked.
                let candidates: Vec<usize> = nodes.filter(|&i| holds(i) != Some(false)).collect();
                match candidates.as_slice() {
                    [one] => Some(*one),
                    several => several
                        .iter()
                        .copied()
                        .find(|&i| view.nodes[i].staked_in_gossip),
                }
            }
            [one] => Some(*one),
            several => {
                let which: Vec<String> = several
                    .iter()
                    .map(|i| format!("validator{}", i + 1))
                    .collect();
                actions.push(Action::Critical {
                    text: format!(
                        "{} report the staked identity: not switching; check them now",
                        if several.len() == 2 && view.nodes.len() == 2 {
                            "both validators".to_string()
                        } else {
                            which.join(" and ")
                        }
                    ),
                });
                return actions;
            }
        };
        self.active = active;
        if active.is_some_and(|a| view.nodes[a].misses == 0) {
            self.fence_sure_at = None;
        }
        let Some(a) = active else {
            // Nobody holds the staked identity. Promote only when nobody votes either.
            if self.rules.watch_votes && self.stale_samples >= 2 {
                let best = self.standby_for_no_active(view);
                return self.propose(view, actions, None, best, Reason::NoActive, true);
            }
            return actions;
        };
        let node = &view.nodes[a];
        let report = node.report.as_ref();

        let reason = if node.misses >= self.rules.misses_before_failover {
            Some(Reason::AgentUnreachable {
                misses: node.misses,
            })
        } else if !reachable(a) {
            // A miss or two: wait for the threshold rather than judge on an old report.
            None
        } else {
            let down = report.is_some_and(|r| {
                r.process_running == Some(false) || (r.holds_staked.is_none() && r.slot.is_none())
            });
            self.down_samples = if down { self.down_samples + 1 } else { 0 };
            let slot_lag = lag(view.tip, report.and_then(|r| r.slot));
            let lagging = slot_lag.is_some_and(|l| l > self.rules.slot_diff_threshold);
            self.lag_samples = if lagging { self.lag_samples + 1 } else { 0 };
            if self.down_samples >= 2 {
                Some(Reason::ValidatorDown)
            } else if self.lag_samples >= 2 {
                Some(Reason::SlotLag {
                    lag: slot_lag.unwrap_or(0),
                })
            } else if self.stale_samples >= 2 {
                Some(Reason::VoteStale {
                    lag: vote_lag.unwrap_or(0),
                })
            } else {
                None
            }
        };
        let Some(reason) = reason else { return actions };
        let demotable = reachable(a);
        let standby = self.standby(view, a);
        self.propose(view, actions, Some(a), standby, reason, demotable)
    }

    /// The vote-lag threshold for the view's consensus; the larger one while it is not known.
    pub fn stale_threshold(&self, view: &View) -> u64 {
        match view.consensus {
            Consensus::TowerBft => self.rules.stale_vote_slot_threshold,
            _ => self
                .rules
                .alpenglow_stale_vote_slot_threshold
                .max(self.rules.stale_vote_slot_threshold),
        }
    }

    /// Checks everything that could forbid moving the identity to `to` now.
    fn propose(
        &mut self,
        view: &View,
        mut actions: Vec<Action>,
        from: Option<usize>,
        to: usize,
        reason: Reason,
        demotable: bool,
    ) -> Vec<Action> {
        let hold = |hold| Action::Hold {
            reason: reason.clone(),
            hold,
        };
        if let Consensus::Migrating { .. } = view.consensus {
            actions.push(hold(Hold::MigrationWindow {
                consensus: view.consensus,
            }));
            return actions;
        }
        if view.now < self.rules.startup_grace {
            actions.push(hold(Hold::StartupGrace {
                remaining: self.rules.startup_grace - view.now,
            }));
            return actions;
        }
        if let Some(h) = self.passive_problem(view, to) {
            actions.push(hold(h));
            return actions;
        }
        // The cooldown guards against flapping, not against two voters (the fence rules below do
        // that), and waiting it out while nobody votes costs votes. An unreachable active whose
        // votes still land keeps it (the fence rules would hold the switch anyway).
        let nobody_votes =
            reason.while_nobody_votes(demotable) && (demotable || self.stale_samples >= 2);
        if let Some(at) = self.last_switch.filter(|_| !nobody_votes) {
            let since = view.now.saturating_sub(at);
            if since < self.rules.cooldown {
                actions.push(hold(Hold::Cooldown {
                    remaining: self.rules.cooldown - since,
                }));
                return actions;
            }
        }
        let mut past_lockouts = None;
        if let (Some(a), false) = (from, demotable) {
            // The old active cannot be told to stop: prove it has stopped.
            if !self.rules.watch_votes {
                actions.push(hold(Hold::NoVoteEvidence));
                return actions;
            }
            if self.stale_samples < 2 {
                actions.push(hold(Hold::OldActiveStillVoting));
                return actions;
            }
            let node = &view.nodes[a];
            let fence = node
                .report
                .as_ref()
                .map_or(self.rules.fence_after_unknown, |r| r.fence_after)
                + self.rules.fence_margin;
            // Its lease ran from no later than its agent's last answer (or this manager's start);
            // past it, the agent keeps voting only while its votes land.
            let silent = view
                .now
                .saturating_sub(node.last_answer.unwrap_or(Duration::ZERO));
            let since_vote = view
                .now
                .saturating_sub(self.vote_progress.map_or(Duration::ZERO, |(_, at)| at));
            let waited = silent.min(since_vote);
            if waited < fence {
                self.fence_sure_at = None;
                actions.push(hold(Hold::AwaitingFence {
                    remaining: fence - waited,
                }));
                return actions;
            }
            if view.backup_behind_chain {
                let tip = view.tip.unwrap_or(0);
                let sure_at = *self.fence_sure_at.get_or_insert(tip);
                // Under Alpenglow the agent waits for its root instead (votor votes on nothing
                // at or below it), so there is nothing to wait for here.
                let bound = match view.consensus {
                    Consensus::TowerBft => sure_at + TOWER_LOCKOUT_EXPIRY_SLOTS,
                    _ => sure_at,
                };
                if tip < bound {
                    actions.push(hold(Hold::AwaitingLockouts { slots: bound - tip }));
                    return actions;
                }
                past_lockouts = Some(bound);
            }
        }
        actions.push(Action::Failover {
            from,
            to,
            reason,
            demotable,
            past_lockouts,
        });
        actions
    }

    /// What, if anything, makes node `p` unfit to become the active now.
    pub fn passive_problem(&self, view: &View, p: usize) -> Option<Hold> {
        let node = &view.nodes[p];
        let Some(report) = node.report.as_ref().filter(|_| node.misses == 0) else {
            return Some(Hold::PassiveUnreachable);
        };
        if report.process_running == Some(false) || report.holds_staked.is_none() {
            return Some(Hold::PassiveDown);
        }
        if let Some(why) = &report.not_promotable {
            return Some(Hold::PassiveNotPromotable { why: why.clone() });
        }
        if let Some(l) = lag(view.tip, report.slot).filter(|l| *l > self.rules.slot_diff_threshold)
        {
            return Some(Hold::PassiveLagging { lag: l });
        }
        if report.slot.is_none() || !report.healthy {
            return Some(Hold::PassiveUnhealthy);
        }
        None
    }

    /// The standby to move the identity to from `active`: the first node in priority order (the
    /// config's) that could be promoted now; when none could, the first, whose problem then
    /// holds the switch.
    pub fn standby(&self, view: &View, active: usize) -> usize {
        let standbys = || (0..view.nodes.len()).filter(move |&i| i != active);
        standbys()
            .find(|&i| self.passive_problem(view, i).is_none())
            .or_else(|| standbys().next())
            .expect("a config names at least two validators")
    }

    /// With nobody active: of the nodes that could be promoted now, the one closest to the tip;
    /// when none could, the reachable one closest to it (whose problem then holds the switch).
    /// Ties go to the earlier in priority order.
    fn standby_for_no_active(&self, view: &View) -> usize {
        let score = |i: usize| {
            let n = &view.nodes[i];
            (
                self.passive_problem(view, i).is_none(),
                n.misses == 0,
                n.report.as_ref().and_then(|r| r.slot).unwrap_or(0),
            )
        };
        // `max_by_key` keeps the last of equals: reversed, that is the earliest in priority.
        (0..view.nodes.len())
            .rev()
            .max_by_key(|&i| score(i))
            .unwrap_or(0)
    }

    /// Decisions wait for a tip, a vote sample when votes are watched, and a word from each agent
    /// (or enough misses to call it unreachable).
    fn complete(&self, view: &View) -> bool {
        view.tip.is_some()
            && (!self.rules.watch_votes || view.last_vote.is_some())
            && view
                .nodes
                .iter()
                .all(|n| n.report.is_some() || n.misses >= self.rules.misses_before_failover)
    }
}

#[cfg(test)]
mod tests;
