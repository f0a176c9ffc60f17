//! The manager's control loop and its one-shot commands.
//!
//! Each heartbeat: the observer samples everything → the engine decides → actions run (switch,
//! notify). A planned switchover (`--trigger-failover`) reaches a running manager through its
//! control socket (`<state_dir>/manager.sock`); without one, the CLI does it itself. The term and
//! the newest verified tower backup persist in `<state_dir>/manager-state.json`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover_agent::api::VoteStateBlob;
use failover_agent::store::{Claim, EtcdTowers};
use failover_agent::vote_state::verify_blob;
use failover_agent::{AgentClient, CommandSigner};
use failover_config::{ManagerConfig, TowerStore};
use failover_identity::{Keypair, Permissions, Pubkey};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::control::{self, ControlAnswer, ControlRequest, StateLock};
use crate::engine::{Action, Consensus, Engine, Hold, Rules, FENCE_AFTER_UNKNOWN};
use crate::notify::{Event, Notifier, NotifierConfig};
use crate::observer::{Observer, ObserverConfig, Sample};
use crate::switch::{Outcome, PhaseTime, Plan};

/// Agents may take this long to answer a switch command (settle + deadlines).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After a failed switch, wait this long before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// A manager whose leading session ended starts the next one no sooner.
const LEAD_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// A planned switch reads this many slots of leader schedule beyond its window at a time.
const LEADER_LOOKAHEAD: u64 = 400;
/// How often a planned switch looks at the tip while it waits for a leader gap.
const LEADER_LOOK: Duration = Duration::from_millis(50);
/// The same, while nobody can be voting with the staked identity (its validator down, or nobody
/// holding it): a retry costs a few requests, waiting costs votes.
const RETRY_WHILE_NOBODY_VOTES: Duration = Duration::from_secs(2);
const STATE_FILE: &str = "manager-state.json";
/// The manager keeps a request open to the active's agent that returns when its tower changes
/// (embedded store). If the active is later cut off, a switch needs a tower at least as recent as
/// the last vote that landed; with backups only at one-second heartbeats it was often a vote or
/// two older, and the switch (rightly) refused. Agave saves the tower just before it sends the
/// vote, so a held request learns of each vote within milliseconds.
const TOWER_WAIT: Duration = Duration::from_millis(1_500);
/// After a failed tower request, before the next one (the heartbeat reports the agent).
const TOWER_RETRY: Duration = Duration::from_millis(250);
/// The soonest the control loop looks again when a fence is about to pass.
const FENCE_LOOK_MIN: Duration = Duration::from_millis(20);
/// At shutdown, queued notifications get this long to go out.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Persisted {
    term: u64,
    /// The newest verified tower backup (embedded store).
    tower: Option<VoteStateBlob>,
    /// The largest `fence_after` an agent ever published to this manager: a restarted manager
    /// that has not heard an agent yet waits this (from its own start) before promoting past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fence_after_ms: Option<u64>,
}

pub struct Manager {
    pub(crate) cfg: ManagerConfig,
    pub(crate) observer: Observer,
    /// Clients for switch commands (longer timeout than heartbeats).
    pub(crate) commands: Vec<AgentClient>,
    pub(crate) engine: Engine,
    pub(crate) notifier: Notifier,
    state: Persisted,
    etcd: Option<EtcdTowers>,
    last_sample: Option<Sample>,
    /// Secure identity mode: the staked keypair, held only here (zeroized on drop).
    pub(crate) secure_key: Option<Arc<Keypair>>,
    /// The state-dir lock, held by a manager that may switch and persist; `None` for a read-only
    /// one (`--status`, `--shutdown-agent`), which writes nothing.
    lock: Option<StateLock>,
    /// Random per process: names this manager's switches.
    instance: String,
    /// What `GET /metrics` on `metrics_listen_addr` shows.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The last switch that was not a dry run (kept in `last-switch.json` too), for `status`.
    last_switch: Option<Outcome>,
    /// What the last heartbeat held back, each with why, for `status`.
    pub(crate) holds: Vec<String>,
    /// Whom the tower follower asks (see [`Manager::tower_target`]), set after every observation:
    /// also those of a planned switch, which keeps the control loop busy for up to a minute.
    follow: watch::Sender<Option<(usize, u64)>>,
    /// With an `election`: where this manager stands; it sends no command unless it leads.
    standing: Option<crate::election::Standing>,
    /// With an `election` and the embedded tower store: where the term is claimed.
    terms: Option<EtcdTowers>,
}

/// The keys the manager starts with, loaded and checked — by the start and by `--check-config`
/// alike, so the check passes exactly the configs that start.
pub struct Keys {
    /// Signs commands to the agents (`signing_keypair_path`).
    pub signer: Option<Arc<Keypair>>,
    /// Secure identity mode: the staked keypair (`identity_keypair_path`).
    pub secure: Option<Arc<Keypair>>,
}

impl Keys {
    /// Loads every key the config names; all problems at once, each with its field.
    pub fn load(cfg: &ManagerConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let signer = match &cfg.signing_keypair_path {
            None => None,
            Some(path) => match Keypair::read_file(path, Permissions::Strict) {
                Ok(key) => Some(Arc::new(key)),
                Err(e) => {
                    problems.push(format!("signing_keypair_path: {e}"));
                    None
                }
            },
        };
        let secure = match &cfg.secure {
            None => None,
            Some(secure) => {
                match Keypair::read_file(&secure.identity_keypair_path, Permissions::Strict) {
                    Ok(key) if key.pubkey() != cfg.staked_identity_pubkey => {
                        problems.push(format!(
                            "identity_keypair_path: {} holds {}, not staked_identity_pubkey {}",
                            secure.identity_keypair_path.display(),
                            key.pubkey(),
                            cfg.staked_identity_pubkey
                        ));
                        None
                    }
                    Ok(key) => Some(Arc::new(key)),
                    Err(e) => {
                        problems.push(format!("identity_keypair_path: {e}"));
                        None
                    }
                }
            }
        };
        if problems.is_empty() {
            Ok(Self { signer, secure })
        } else {
            Err(problems)
        }
    }
}

impl Manager {
    /// Builds the manager that may switch: takes the state-dir lock (refused while another manager
    /// holds it), loads keys and state, builds the clients, starts the pubsub tip watcher.
    pub async fn new(cfg: ManagerConfig, notifier: Notifier) -> anyhow::Result<Self> {
        let lock = StateLock::acquire(&cfg.state_dir)?;
        let mut manager = Self::build(cfg, notifier, None).await?;
        manager.lock = Some(lock);
        Ok(manager)
    }

    /// A manager that only observes and never writes its state (beside a running one).
    pub async fn read_only(cfg: ManagerConfig) -> anyhow::Result<Self> {
        Self::build(cfg, Notifier::disabled(), None).await
    }

    /// `metrics`: the series to keep counting in (a manager that leads again after following
    /// goes on with its own); new ones otherwise.
    async fn build(
        cfg: ManagerConfig,
        notifier: Notifier,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> anyhow::Result<Self> {
        let Keys {
            signer,
            secure: secure_key,
        } = Keys::load(&cfg).map_err(|problems| anyhow::anyhow!("{}", problems.join("; ")))?;
        let state = match std::fs::read(cfg.state_dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt: {e}",
                    cfg.state_dir.join(STATE_FILE).display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => anyhow::bail!("cannot read the manager state: {e}"),
        };
        let signer = signer.map(|key| CommandSigner {
            key,
            staked: cfg.staked_identity_pubkey,
        });
        let client = |v: &failover_config::ValidatorEndpoint, timeout| {
            AgentClient::new(v.endpoint.as_str(), signer.clone(), timeout)
        };
        let agents = cfg
            .validators
            .iter()
            .map(|v| client(v, cfg.request_timeout))
            .collect();
        let commands = cfg
            .validators
            .iter()
            .map(|v| client(v, COMMAND_TIMEOUT))
            .collect();
        let metrics = metrics.unwrap_or_else(|| {
            Arc::new(crate::metrics::Metrics::new(
                node_names(&cfg),
                notifier.deliveries(),
            ))
        });
        let observer = Observer::new(
            ObserverConfig {
                cluster_rpc: cfg.cluster_rpc.to_string(),
                cluster_ws: cfg.cluster_ws.to_string(),
                staked: cfg.staked_identity_pubkey,
                vote_account: cfg.vote_account_pubkey,
                ips: cfg.validators.iter().map(|v| v.ip).collect(),
                request_timeout: cfg.request_timeout,
                rpc_requests_per_second: cfg.rpc_requests_per_second,
                consensus: cfg.consensus,
            },
            agents,
            metrics.clone(),
        );
        let engine = Engine::new(Rules {
            misses_before_failover: cfg.misses_before_failover,
            slot_diff_threshold: cfg.slot_diff_threshold,
            stale_vote_slot_threshold: cfg.stale_vote_slot_threshold,
            alpenglow_stale_vote_slot_threshold: cfg.alpenglow_stale_vote_slot_threshold,
            cooldown: cfg.failover_cooldown,
            fence_margin: cfg.fence_margin,
            watch_votes: cfg.vote_account_pubkey.is_some(),
            startup_grace: cfg.startup_grace_period,
            fence_after_unknown: state
                .fence_after_ms
                .map_or(FENCE_AFTER_UNKNOWN, Duration::from_millis),
        });
        Ok(Self {
            cfg,
            observer,
            commands,
            engine,
            notifier,
            state,
            etcd: None,
            last_sample: None,
            secure_key,
            lock: None,
            instance: failover_agent::auth::Audience::new_agent_id(),
            metrics,
            last_switch: None,
            holds: Vec::new(),
            follow: watch::Sender::new(None),
            standing: None,
            terms: None,
        })
    }

    /// The switch id of this manager's commands in `term` (see `FailoverRequest::switch_id`):
    /// random per manager process, so that two managers that computed the same term never
    /// command in it both.
    pub(crate) fn switch_id(&self, term: u64) -> String {
        format!("{}-{term}", self.instance)
    }

    /// How to reach validator `i` over SSH (secure mode).
    pub(crate) fn ssh_target(&self, i: usize) -> Option<crate::ssh::SshTarget> {
        let secure = self.cfg.secure.as_ref()?;
        let v = &self.cfg.validators[i];
        Some(crate::ssh::SshTarget {
            program: secure.ssh_program.clone(),
            user: secure.ssh_user.clone(),
            host: v.ssh_host.clone(),
            port: v.ssh_port,
            key: secure.ssh_key_path.clone(),
            known_hosts: secure.ssh_known_hosts.clone(),
            timeout: Duration::from_secs(30),
        })
    }

    pub(crate) fn describe(&self, i: usize) -> String {
        let v = &self.cfg.validators[i];
        format!("{} ({})", v.name, v.ip)
    }

    pub(crate) fn cfg_ip(&self, i: usize) -> IpAddr {
        self.cfg.validators[i].ip
    }

    /// The validator `--to` names, which must not be `active`.
    fn node_named(&self, name: &str, active: usize) -> Result<usize, String> {
        let names: Vec<&str> = self
            .cfg
            .validators
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        let i = names.iter().position(|n| *n == name).ok_or_else(|| {
            format!(
                "--to {name:?}: no validator has that name (the config names {})",
                names.join(", ")
            )
        })?;
        if i == active {
            return Err(format!(
                "--to {name:?}: {} already holds the staked identity; nothing to switch",
                self.describe(i)
            ));
        }
        Ok(i)
    }

    /// How many validators this manager watches.
    pub(crate) fn node_count(&self) -> usize {
        self.cfg.validators.len()
    }

    pub(crate) fn staked_str(&self) -> String {
        self.cfg.staked_identity_pubkey.to_string()
    }

    pub fn term(&self) -> u64 {
        self.state.term
    }

    fn save_state(&self) -> std::io::Result<()> {
        if self.lock.is_none() {
            return Ok(());
        }
        write_state(&self.cfg.state_dir, &self.state)
    }

    async fn etcd(&mut self) -> Result<Option<EtcdTowers>, String> {
        let TowerStore::Etcd(config) = &self.cfg.tower_store else {
            return Ok(None);
        };
        if self.etcd.is_none() {
            self.etcd = Some(
                EtcdTowers::connect(config)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(self.etcd.clone())
    }

    /// The next term: above everything this manager and the agents have seen; persisted, and
    /// claimed in etcd (one switch per term), before any agent hears it.
    pub(crate) async fn next_term(&mut self) -> Result<u64, String> {
        let guard = match &self.standing {
            Some(standing) => Some(standing.guard().ok_or_else(|| {
                format!("this manager no longer leads ({})", standing.describe())
            })?),
            None => None,
        };
        let agents_max = self
            .last_sample
            .as_ref()
            .map(|s| {
                s.last_statuses
                    .iter()
                    .flatten()
                    .map(|st| st.term)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let store = self.term_store().await?;
        let etcd_term = match &store {
            Some(store) => store.term().await.map_err(|e| e.to_string())?,
            None => 0,
        };
        let term = self.state.term.max(agents_max).max(etcd_term) + 1;
        self.state.term = term;
        self.save_state()
            .map_err(|e| format!("cannot persist term {term}: {e}"))?;
        if let Some(store) = store {
            let guard = guard.iter().flat_map(|g| g.compares());
            match store
                .claim_term(term, guard)
                .await
                .map_err(|e| e.to_string())?
            {
                Claim::Taken => {}
                Claim::Lost { current } if current < term => {
                    return Err(format!(
                        "etcd refused term {term}: this manager no longer holds the leader key; \
                         nothing was changed"
                    ));
                }
                Claim::Lost { current } => {
                    // The next switch starts above it.
                    self.state.term = self.state.term.max(current);
                    if let Err(e) = self.save_state() {
                        warn!(error = %e, "cannot persist etcd's term {current}");
                    }
                    return Err(format!(
                        "etcd already holds term {current} (this switch wanted {term}): another \
                         manager is switching, or did; nothing was changed"
                    ));
                }
            }
        }
        Ok(term)
    }

    /// Where terms are claimed: the etcd tower store's term, or with only an `election`, the
    /// election's etcd; `None` for a lone manager with the embedded store (its state dir).
    async fn term_store(&mut self) -> Result<Option<EtcdTowers>, String> {
        if let Some(store) = self.etcd().await? {
            return Ok(Some(store));
        }
        let Some(election) = &self.cfg.election else {
            return Ok(None);
        };
        if self.terms.is_none() {
            let config = failover_config::EtcdStore {
                endpoints: election.endpoints.clone(),
                key_prefix: election.key_prefix.clone(),
                dial_timeout: election.dial_timeout,
            };
            let store = EtcdTowers::connect(&config)
                .await
                .map_err(|e| format!("election etcd: {e}"))?;
            self.terms = Some(store);
        }
        Ok(self.terms.clone())
    }

    /// What `status` names as its source: the running manager, and where it stands.
    fn source(&self) -> String {
        match &self.standing {
            Some(standing) => format!("running manager, {}", standing.describe()),
            None => "running manager".into(),
        }
    }

    /// Why this manager may not send a command now (an elected manager that does not lead).
    pub(crate) fn may_not_act(&self) -> Option<String> {
        let standing = self.standing.as_ref()?;
        (!standing.leading())
            .then(|| format!("this manager no longer leads ({})", standing.describe()))
    }

    /// With an election: keeps the largest `fence_after` the agents published in etcd, for the
    /// next leader, which may never hear an agent that died with this one.
    async fn publish_fence_after(&mut self) {
        let Some(ms) = self.state.fence_after_ms else {
            return;
        };
        let result = match self.term_store().await {
            Ok(Some(store)) => store.raise_fence_after(ms).await.map_err(|e| e.to_string()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot keep the agents' fence_after in etcd");
        }
    }

    /// A new leader: what the managers before it learnt of the agents' `fence_after`, the wait
    /// for an agent it has not heard (instead of a worst case).
    async fn learn_fence_after(&mut self) {
        let stored = match self.term_store().await {
            Ok(Some(store)) => store.fence_after().await.map_err(|e| e.to_string()),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let stored = stored.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the agents' fence_after from etcd");
            None
        });
        let Some(known) = stored.max(self.state.fence_after_ms) else {
            return;
        };
        self.state.fence_after_ms = Some(known);
        if let Err(e) = self.save_state() {
            warn!(error = %e, "cannot persist the agents' fence_after");
        }
        self.engine.assume_fence_after(Duration::from_millis(known));
    }

    /// The vote state stored in etcd, if it verifies.
    pub(crate) async fn etcd_backup(&mut self) -> Option<VoteStateBlob> {
        let etcd = match self.etcd().await {
            Ok(etcd) => etcd?,
            Err(e) => {
                warn!(error = %e, "cannot reach etcd for the vote state");
                return None;
            }
        };
        match etcd.get_tower().await {
            Ok(Some(record)) => {
                match verify_blob(&record.tower, &self.cfg.staked_identity_pubkey, None) {
                    Ok(_) => Some(record.tower),
                    Err(e) => {
                        warn!(error = %e, term = record.term, written_by = %record.written_by, "the vote state in etcd does not verify");
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "cannot read the vote state from etcd");
                None
            }
        }
    }

    /// Keeps the tower follower's newest tower.
    fn keep_followed(&mut self, tower: Option<VoteStateBlob>) {
        if let Some(tower) = tower {
            self.save_backup(&tower);
        }
    }

    pub(crate) fn saved_backup(&self) -> Option<VoteStateBlob> {
        self.state.tower.clone()
    }

    /// Keeps `tower` as the backup if it verifies and is newer than the one kept.
    pub(crate) fn save_backup(&mut self, tower: &VoteStateBlob) {
        if self
            .state
            .tower
            .as_ref()
            .is_some_and(|t| t.last_vote >= tower.last_vote)
        {
            return;
        }
        if let Err(e) = verify_blob(tower, &self.cfg.staked_identity_pubkey, None) {
            warn!(error = %e, "not keeping a tower backup that does not verify");
            return;
        }
        self.state.tower = Some(tower.clone());
        if let Err(e) = self.save_state() {
            warn!(error = %e, "cannot persist the tower backup");
        }
    }

    /// One heartbeat: sample, keep the tower backup, decide.
    pub async fn observe(&mut self) -> Vec<Action> {
        let mut sample = self.observer.sample(self.state.term).await;
        if let Some(theirs) = sample.agent_term_above.filter(|t| *t > self.state.term) {
            warn!(
                mine = self.state.term,
                theirs,
                "an agent has accepted term {theirs}, above this manager's {}: adopting it (was \
                 the state_dir reset, or another manager running?)",
                self.state.term
            );
            self.state.term = theirs;
            if let Err(e) = self.save_state() {
                warn!(error = %e, "cannot persist the adopted term");
            }
        }
        let mut raised = false;
        for status in sample.statuses.iter().flatten() {
            if let Some(tower) = &status.tower_backup {
                self.save_backup(tower);
            }
            if self
                .state
                .fence_after_ms
                .is_none_or(|f| status.fence_after_ms > f)
            {
                self.state.fence_after_ms = Some(status.fence_after_ms);
                if let Err(e) = self.save_state() {
                    warn!(error = %e, "cannot persist the agents' fence_after");
                }
                raised = true;
            }
        }
        if raised && self.standing.is_some() {
            self.publish_fence_after().await;
        }
        // Whether the newest vote state held is older than the chain's last vote (then a switch
        // past an unreachable active waits out the lockouts): with the etcd store, etcd's record,
        // read only while an agent is not answering.
        let held = match self.cfg.tower_store {
            TowerStore::Embedded => Some(self.state.tower.as_ref().and_then(|t| t.last_vote)),
            TowerStore::Etcd(_) if sample.view.nodes.iter().any(|n| n.misses > 0) => {
                Some(self.etcd_backup().await.and_then(|t| t.last_vote))
            }
            TowerStore::Etcd(_) => None,
        };
        if let Some(held) = held {
            sample.view.backup_behind_chain = sample
                .view
                .last_vote
                .is_some_and(|chain| held.is_none_or(|h| h < chain));
        }
        let actions = self.engine.step(&sample.view);
        self.metrics.sampled(&sample, self.state.term);
        self.last_sample = Some(sample);
        let target = self.tower_target();
        self.follow
            .send_if_modified(|t| std::mem::replace(t, target) != target);
        actions
    }

    /// Whom the tower follower should ask: the active, when its agent answers, and the term.
    fn tower_target(&self) -> Option<(usize, u64)> {
        if !matches!(self.cfg.tower_store, TowerStore::Embedded) {
            return None;
        }
        let active = self.active()?;
        let sample = self.last_sample.as_ref()?;
        (sample.view.nodes[active].misses == 0).then_some((active, self.state.term))
    }

    pub fn last_sample(&self) -> Option<&Sample> {
        self.last_sample.as_ref()
    }

    /// Which node holds the staked identity now, by its agent.
    fn active(&self) -> Option<usize> {
        let sample = self.last_sample.as_ref()?;
        (0..self.node_count()).find(|&i| {
            sample.view.nodes[i]
                .report
                .as_ref()
                .and_then(|r| r.holds_staked)
                == Some(true)
        })
    }

    /// A planned switchover from the active to `to` (a validator's name), or without it to the
    /// standby the engine would pick. Refuses when that standby is unfit unless `force`. With `dry_run`, returns the plan phase by phase and changes nothing. Unless
    /// `now` (or a dry run), it starts at a moment the staked identity leads none of the next
    /// `planned_switch_leader_slots` slots, so that no block of its own is skipped while the
    /// identity moves.
    pub async fn trigger(
        &mut self,
        reason: &str,
        to: Option<&str>,
        force: bool,
        dry_run: bool,
        now: bool,
    ) -> Result<Outcome, String> {
        // Two samples, so that the view is current.
        self.observe().await;
        self.observe().await;
        let sample = self.last_sample.clone().expect("sampled");
        let active = self
            .active()
            .ok_or("no validator reports the staked identity: nothing to switch from")?;
        let passive = match to {
            None => self.engine.standby(&sample.view, active),
            Some(name) => self.node_named(name, active)?,
        };
        if sample.view.nodes[active].misses > 0 {
            return Err(format!(
                "{}'s agent is not answering: cannot demote it",
                self.describe(active)
            ));
        }
        let consensus = self.observer.refresh_consensus().await;
        let migrating = matches!(consensus, Consensus::Migrating { .. });
        if migrating && !force {
            return Err(format!(
                "refusing: the cluster is {consensus}, and a switch now could lose votes the \
                 migration depends on; --force to switch anyway"
            ));
        }
        if let Some(problem) = self.engine.passive_problem(&sample.view, passive) {
            if !force {
                return Err(format!(
                    "refusing: {problem} ({}); --force to switch anyway",
                    self.describe(passive)
                ));
            }
            warn!(%problem, "switching anyway (--force)");
        }
        if !(dry_run || self.cfg.dry_run) {
            let env = crate::hooks::pre_env(
                "planned",
                &self.describe(active),
                &self.describe(passive),
                reason,
                self.state.term,
            );
            let (hook, answered) = self
                .keeping_leases(crate::hooks::planned_pre(&self.cfg.switch_hooks, &env))
                .await;
            self.leases_kept(answered);
            hook.map_err(|i| self.stopped_answering(i, "the pre-switch hook"))?
                .map_err(|e| format!("cancelled: {e}; nothing was changed"))?;
        }
        let leader = match now || dry_run {
            true => None,
            false => {
                let (gap, answered) = self.keeping_leases(self.leader_gap()).await;
                self.leases_kept(answered);
                Some(gap.map_err(|i| self.stopped_answering(i, "the wait for a leader gap"))?)
            }
        };
        let mut outcome = self
            .execute(
                Plan {
                    from: Some(active),
                    to: passive,
                    reason: reason.to_string(),
                    demotable: true,
                    allow_migration: migrating,
                    past_lockouts: None,
                },
                dry_run,
            )
            .await;
        if let Some(leader) = leader {
            outcome.phases.insert(0, leader);
        }
        self.after_switch(&outcome, "planned");
        Ok(outcome)
    }

    /// Runs `work` (a wait of a planned switch: its pre-hook, the leader gap) with every agent
    /// heartbeated beside it, so that no lease lapses while nothing is observed, and says when
    /// each agent last answered, for [`Manager::leases_kept`]. The heartbeats are not samples (the
    /// next one judges), but an agent that misses `misses_before_failover` of them in a row ends
    /// the wait (`Err` of its index): the switch it waited for cannot be made, and a failure must
    /// not wait up to a minute to be judged.
    async fn keeping_leases<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> (Result<T, usize>, Vec<Option<Duration>>) {
        let term = self.state.term;
        let n = self.node_count();
        let mut answered = vec![None; n];
        let heartbeats = async {
            let mut missed = vec![0u32; n];
            let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let asked = (0..n).map(|i| self.observer.agent(i).status(term));
                let results = futures_util::future::join_all(asked).await;
                for (i, result) in results.into_iter().enumerate() {
                    if result.is_ok() {
                        answered[i] = Some(self.observer.now());
                        missed[i] = 0;
                    } else {
                        missed[i] += 1;
                        if missed[i] >= self.cfg.misses_before_failover {
                            return i;
                        }
                    }
                }
            }
        };
        let out = tokio::select! {
            out = work => Ok(out),
            gone = heartbeats => Err(gone),
        };
        (out, answered)
    }

    /// An agent that answered a heartbeat of [`Manager::keeping_leases`] holds a lease from then
    /// (the answer's arrival, later than the lease began: the safe side for a fence wait).
    fn leases_kept(&mut self, answered: Vec<Option<Duration>>) {
        for (i, at) in answered.into_iter().enumerate() {
            if let Some(at) = at {
                self.observer.lease_granted_at(i, at);
            }
        }
    }

    /// Why a planned switch stopped before it changed anything: node `i`'s agent went silent.
    fn stopped_answering(&self, i: usize, during: &str) -> String {
        let text = format!(
            "cancelled: {}'s agent stopped answering during {during}; nothing was changed \
             (the manager goes on watching it)",
            self.describe(i)
        );
        warn!("{text}");
        text
    }

    /// Waits, at most `planned_switch_leader_wait`, until the staked identity leads none of the
    /// next `planned_switch_leader_slots` slots; what it found, as a phase. The schedule is read
    /// once per few minutes of slots; the tip comes from pubsub (or one `getSlot` per look).
    async fn leader_gap(&self) -> PhaseTime {
        let started = Instant::now();
        let (window, patience) = (
            self.cfg.planned_switch_leader_slots,
            self.cfg.planned_switch_leader_wait,
        );
        let staked = self.cfg.staked_identity_pubkey;
        let mut schedule: Option<(u64, Vec<Pubkey>)> = None;
        let mut said = false;
        let detail = loop {
            let Some(tip) = self.observer.tip().await else {
                break "the cluster's slot is unknown: switching without waiting for a leader gap"
                    .to_string();
            };
            let known = schedule
                .as_ref()
                .is_some_and(|(from, l)| tip >= *from && tip + window <= from + l.len() as u64);
            if !known {
                match self
                    .observer
                    .slot_leaders(tip, window + LEADER_LOOKAHEAD)
                    .await
                {
                    Ok(leaders) => schedule = Some((tip, leaders)),
                    Err(e) => {
                        warn!("{e}: switching without waiting for a leader gap");
                        break format!(
                            "the leader schedule is unavailable ({e}): switching at once"
                        );
                    }
                }
            }
            let (from, leaders) = schedule.as_ref().expect("read above");
            let next = leaders[(tip - from) as usize..]
                .iter()
                .take(window as usize)
                .position(|l| *l == staked)
                .map(|i| tip + i as u64);
            let waited = started.elapsed();
            match next {
                None => {
                    break format!(
                        "the staked identity leads none of slots {tip}–{} (waited {} ms)",
                        tip + window - 1,
                        waited.as_millis()
                    )
                }
                Some(slot) if waited >= patience => {
                    warn!(
                        slot,
                        "the staked identity still leads within the next {window} slots after \
                         {patience:?}: switching anyway (--now skips the wait)"
                    );
                    break format!(
                        "the staked identity leads slot {slot}, within the next {window}, after \
                         waiting {patience:?}: switching anyway; its blocks in that window may be skipped"
                    );
                }
                Some(slot) if !said => {
                    said = true;
                    info!(
                        slot,
                        "waiting up to {patience:?} for a moment the staked identity leads none of \
                         the next {window} slots (--now skips this)"
                    );
                }
                Some(_) => {}
            }
            tokio::time::sleep(LEADER_LOOK).await;
        };
        PhaseTime {
            name: "leader".into(),
            ms: started.elapsed().as_millis() as u64,
            detail,
        }
    }

    fn after_switch(&mut self, outcome: &Outcome, reason: &'static str) {
        self.metrics.switched(outcome, reason);
        if outcome.dry_run {
            return;
        }
        let kind = if reason == "planned" {
            "planned"
        } else {
            "automatic"
        };
        crate::hooks::post(
            &self.cfg.switch_hooks,
            crate::hooks::post_env(kind, outcome),
        );
        self.last_switch = Some(outcome.clone());
        if self.lock.is_some() {
            let path = self.cfg.state_dir.join(crate::status::LAST_SWITCH_FILE);
            let text = serde_json::to_vec_pretty(outcome).expect("an outcome serializes");
            if let Err(e) = failover_agent::state::write_durably(&path, &text) {
                warn!(error = %e, path = %path.display(), "cannot keep the last switch for status");
            }
        }
        if outcome.ok {
            self.engine.switched(self.observer.now());
            self.notifier.send(Event::FailoverComplete {
                reason: outcome.reason.clone(),
                from: outcome.from.clone().unwrap_or_else(|| "nobody".into()),
                to: outcome.to.clone(),
                term: outcome.term,
                summary: outcome.summary(),
            });
        } else {
            self.notifier.send(Event::FailoverFailed {
                reason: outcome.reason.clone(),
                error: outcome.error.clone().unwrap_or_default(),
                rolled_back: outcome.rolled_back,
            });
        }
    }

    /// What `status` shows: the last heartbeat's view of every node and the cluster, the term,
    /// the last switch (from memory, else from the state dir) and the current holds.
    pub fn status_report(&self, source: &str) -> crate::status::StatusReport {
        use crate::status::{ClusterStatus, NodeStatus, StatusReport, LAST_SWITCH_FILE};
        let last_switch = self.last_switch.clone().or_else(|| {
            let text = std::fs::read(self.cfg.state_dir.join(LAST_SWITCH_FILE)).ok()?;
            serde_json::from_slice(&text).ok()
        });
        let sample = self.last_sample.as_ref();
        let view = sample.map(|s| &s.view);
        let tip = view.and_then(|v| v.tip);
        let nodes = (0..self.node_count())
            .map(|i| {
                let status = sample.and_then(|s| s.statuses[i].as_ref());
                let report = view.and_then(|v| v.nodes[i].report.as_ref());
                NodeStatus {
                    name: self.describe(i),
                    endpoint: self.commands[i].endpoint().into(),
                    reachable: status.is_some(),
                    error: sample.and_then(|s| s.errors[i].clone()),
                    role: match status.and_then(|_| report?.holds_staked) {
                        Some(true) => "active".into(),
                        Some(false) => "passive".into(),
                        None => "unknown".into(),
                    },
                    identity: status.and_then(|s| s.identity.clone()),
                    slot: status.and_then(|s| s.slot),
                    lag: status
                        .and_then(|s| s.slot)
                        .zip(tip)
                        .map(|(slot, tip)| tip.saturating_sub(slot)),
                    last_vote: status.and_then(|s| s.tower.last_vote),
                    health: status.map(|s| s.health.to_string()),
                    process_running: status.and_then(|s| s.process_running),
                    promotable: status.is_some_and(|s| s.not_promotable.is_none())
                        && report.is_some_and(|r| r.healthy),
                    not_promotable: status.and_then(|s| s.not_promotable.clone()),
                }
            })
            .collect();
        StatusReport {
            source: source.into(),
            term: self.state.term,
            nodes,
            cluster: ClusterStatus {
                consensus: view.map_or("unknown".into(), |v| v.consensus.to_string()),
                tip,
                last_vote: view.and_then(|v| v.last_vote),
                vote_lag: view
                    .and_then(|v| v.last_vote)
                    .zip(tip)
                    .map(|(vote, tip)| tip.saturating_sub(vote)),
                stale_above: view.map_or(0, |v| self.engine.stale_threshold(v)),
            },
            last_switch,
            holds: self.holds.clone(),
            managers: self.standing.as_ref().and_then(|s| s.managers()),
        }
    }

    /// Lines describing every validator, for `--status` and the periodic report.
    pub fn status_lines(&self) -> Vec<String> {
        let Some(sample) = &self.last_sample else {
            return vec!["no sample yet".into()];
        };
        let mut lines = Vec::new();
        for i in 0..self.node_count() {
            let line = match (&sample.statuses[i], &sample.errors[i]) {
                (Some(s), _) => format!(
                    "{}: {}, identity {}, slot {}, {}, process {}, tower last vote {}{}",
                    self.describe(i),
                    s.role,
                    s.identity.as_deref().unwrap_or("unreadable"),
                    s.slot.map_or("?".into(), |v| v.to_string()),
                    s.health,
                    match s.process_running {
                        Some(true) => "running",
                        Some(false) => "NOT running",
                        None => "?",
                    },
                    s.tower.last_vote.map_or("none".into(), |v| v.to_string()),
                    match &s.not_promotable {
                        Some(why) => format!("; NOT PROMOTABLE: {why}"),
                        None => String::new(),
                    },
                ),
                (None, err) => format!(
                    "{}: UNREACHABLE ({})",
                    self.describe(i),
                    err.as_deref().unwrap_or("?")
                ),
            };
            lines.push(line);
        }
        lines.push(format!(
            "cluster: {}; tip {}, vote account last vote {} (stale above {} slots), term {}",
            sample.view.consensus,
            sample.view.tip.map_or("?".into(), |v| v.to_string()),
            sample.view.last_vote.map_or("?".into(), |v| v.to_string()),
            self.engine.stale_threshold(&sample.view),
            self.state.term
        ));
        lines
    }

    /// Sends `/shutdown` to every agent at once.
    pub async fn shutdown_agents(&self) -> Vec<Result<(), String>> {
        let term = self.state.term;
        let asked = self.commands.iter().map(|c| c.shutdown(term));
        futures_util::future::join_all(asked)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }
}

/// Runs the manager until `shutdown` resolves.
pub async fn run(
    cfg: ManagerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with(cfg, shutdown, || {}).await
}

/// [`run`], calling `ready` once the control socket accepts requests.
pub async fn run_with(
    cfg: ManagerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let (notifier, _sender) = Notifier::start(NotifierConfig::from_manager(&cfg));
    let socket_path = control::socket_path(&cfg.state_dir);
    // The only manager on this state dir until the end, also while it follows another.
    let mut lock = Some(StateLock::acquire(&cfg.state_dir)?);
    let metrics = Arc::new(crate::metrics::Metrics::new(
        node_names(&cfg),
        notifier.deliveries(),
    ));
    let (control_tx, mut control_rx) = mpsc::channel(8);
    let control = control::bind(&cfg.state_dir)?;
    let control_task = tokio::spawn(control::serve(control, control_tx));
    // Room for the term and the contacts a switch records, should the disk fill up.
    let reserve_task = failover_agent::state::keep_reserve(cfg.state_dir.clone());
    let metrics_task = match cfg.metrics_listen_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("metrics_listen_addr {addr}: cannot listen: {e}"))?;
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
            )))
        }
        None => None,
    };
    let election = cfg
        .election
        .as_ref()
        .map(|e| crate::election::Election::start(e, election_name()));
    info!(
        election = election.as_ref().map(|e| e.standing().me().to_string()),
        "manager running; control socket {}",
        socket_path.display()
    );
    if failover_agent::pause::enabled() {
        warn!(
            dir = %failover_agent::pause::dir(&cfg.state_dir).display(),
            "pause points on ({}=1): a test can hold this manager at chosen steps; never in production",
            failover_agent::pause::ENV
        );
    }
    ready();
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        if let Some(election) = &election {
            if !follow(&cfg, election.standing(), &mut control_rx, &mut shutdown).await {
                break;
            }
        }
        // A fresh session per leadership: what an earlier one observed may be stale by now.
        let mut manager =
            Manager::build(cfg.clone(), notifier.clone(), Some(metrics.clone())).await?;
        manager.lock = lock.take();
        manager.standing = election.as_ref().map(|e| e.standing());
        info!(term = manager.term(), "{}", manager.source());
        let ended = lead(&mut manager, &mut control_rx, &mut shutdown).await;
        lock = manager.lock.take();
        if ended == Ended::Shutdown {
            break;
        }
        warn!("this manager no longer leads: it stops acting and follows");
        // Still elected (its term claim failed): not at once again.
        tokio::select! {
            _ = shutdown.as_mut() => break,
            _ = tokio::time::sleep(LEAD_AGAIN_AFTER) => {}
        }
    }
    control_task.abort();
    reserve_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    if !notifier.flush_within(SHUTDOWN_FLUSH).await {
        warn!("stopping with notifications undelivered after {SHUTDOWN_FLUSH:?}");
    }
    // Held through the flush: a second manager on this state dir is refused until this one is gone.
    drop(lock);
    info!("manager stopped");
    Ok(())
}

/// How a leading session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    NoLongerLeading,
}

/// The validators' names, in the config's order.
fn node_names(cfg: &ManagerConfig) -> Vec<String> {
    cfg.validators.iter().map(|v| v.name.clone()).collect()
}

/// This manager's name in the election: host and process, for operators reading who leads.
fn election_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!(
        "{host} pid {} ({})",
        std::process::id(),
        failover_agent::auth::Audience::new_agent_id()
    )
}

/// While another manager leads: answers the control socket (switches are the leader's; a status
/// is one observation of its own, beside the loop), until this one leads (`true`) or shuts down
/// (`false`).
async fn follow(
    cfg: &ManagerConfig,
    mut standing: crate::election::Standing,
    control_rx: &mut mpsc::Receiver<(ControlRequest, control::ControlReply)>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return false,
            _ = standing.until_leading() => return true,
            Some((request, reply)) = control_rx.recv() => match request {
                ControlRequest::Trigger { .. } => {
                    let _ = reply.send(Err(format!(
                        "this manager does not lead ({}): switches are made by the leading manager",
                        standing.describe()
                    )));
                }
                ControlRequest::Status => {
                    tokio::spawn(follower_status(cfg.clone(), standing.clone(), reply));
                }
            },
        }
    }
}

/// A follower's `status`: one observation, as the command makes without a manager (its first
/// heartbeat to each agent acknowledges nothing, so no lease is renewed by it), with who leads.
async fn follower_status(
    cfg: ManagerConfig,
    standing: crate::election::Standing,
    reply: control::ControlReply,
) {
    let answer = match Manager::read_only(cfg).await {
        Ok(mut manager) => {
            manager.observe().await;
            let mut report = manager.status_report(&format!(
                "{}; one observation by this follower",
                standing.describe()
            ));
            report.managers = standing.managers();
            Ok(ControlAnswer::Status(Box::new(report)))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    let _ = reply.send(answer);
}

/// One leading session: heartbeats, judgement and switches, until shutdown or, with an
/// election, until this manager no longer leads.
async fn lead(
    manager: &mut Manager,
    control_rx: &mut mpsc::Receiver<(ControlRequest, control::ControlReply)>,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Ended {
    let heartbeat = manager.cfg.heartbeat_interval;
    let status_every = manager.cfg.status_report_interval;
    let notifier = manager.notifier.clone();
    // A new leader's first act: a term of its own, which its heartbeats carry to the agents, so
    // that they refuse every command of an earlier leader (one paused mid-switch, say).
    if manager.standing.is_some() {
        match manager.next_term().await {
            Ok(term) => {
                info!(term, "leading in term {term}: the agents refuse every earlier leader's command once they hear it");
                manager.learn_fence_after().await;
            }
            Err(e) => {
                warn!("cannot claim a term as the new leader: {e}");
                return Ended::NoLongerLeading;
            }
        }
    }
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest tower only: while the loop is busy (a planned switch's waits can last a minute)
    // older ones are of no use, and a queue of them would be taken before the current one.
    let (tower_tx, mut tower_rx) = watch::channel(None);
    let follower = tokio::spawn(follow_tower(
        (0..manager.node_count())
            .map(|i| manager.observer.agent(i).clone())
            .collect(),
        manager.saved_backup().map(|t| t.sha256),
        manager.follow.subscribe(),
        tower_tx,
        manager.cfg.request_timeout,
    ));
    let mut report =
        tokio::time::interval_at(tokio::time::Instant::now() + status_every, status_every);
    // After a failed switch, the same plan waits before it is tried again; a different one (the
    // old active became reachable, another node is the target) goes ahead at once.
    let mut failed: Option<(PlanKey, Duration)> = None;
    // The standing hold, by kind (its numbers change every heartbeat): said once.
    let mut last_hold: Option<(&'static str, std::mem::Discriminant<Hold>)> = None;
    let mut critical = false;
    let standing = manager.standing.clone();
    let lost = async move {
        match standing {
            Some(mut standing) => standing.until_not_leading().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let ended = loop {
        tokio::select! {
            _ = &mut *shutdown => break Ended::Shutdown,
            _ = &mut lost => break Ended::NoLongerLeading,
            _ = report.tick() => notifier.send(Event::Status { lines: manager.status_lines() }),
            Ok(()) = tower_rx.changed() => {
                let tower = tower_rx.borrow_and_update().clone();
                manager.keep_followed(tower);
            }
            Some((request, reply)) = control_rx.recv() => {
                let answer = match request {
                    ControlRequest::Trigger { reason, force, dry_run, now, to } => {
                        manager.trigger(&reason, to.as_deref(), force, dry_run, now).await.map(ControlAnswer::Switched)
                    }
                    ControlRequest::Status => Ok(ControlAnswer::Status(Box::new(manager.status_report(&manager.source())))),
                };
                let _ = reply.send(answer);
            }
            _ = ticks.tick() => {
                if tower_rx.has_changed().unwrap_or(false) {
                    let tower = tower_rx.borrow_and_update().clone();
                    manager.keep_followed(tower);
                }
                let actions = manager.observe().await;
                manager.holds.clear();
                let mut saw_critical = false;
                for action in actions {
                    match action {
                        Action::Unreachable { node } => {
                            let error = manager.last_sample().and_then(|s| s.errors[node].clone()).unwrap_or_default();
                            warn!(node = %manager.describe(node), %error, "agent unreachable");
                            manager.notifier.send(Event::ServerUnreachable { name: manager.describe(node), endpoint: manager.commands[node].endpoint().into(), error });
                        }
                        Action::BackOnline { node } => {
                            info!(node = %manager.describe(node), "agent back online");
                            manager.notifier.send(Event::ServerBackOnline { name: manager.describe(node), endpoint: manager.commands[node].endpoint().into() });
                        }
                        Action::Critical { text } => {
                            saw_critical = true;
                            if !critical {
                                error!("{text}");
                                manager.notifier.send(Event::Critical { text });
                            }
                        }
                        Action::Attention { text, critical, .. } => {
                            if critical {
                                error!("{text}");
                                manager.notifier.send(Event::Critical { text });
                            } else {
                                warn!("{text}");
                                manager.notifier.send(Event::Warning { text });
                            }
                        }
                        Action::Cleared { cause } => info!("resolved: {cause}"),
                        Action::Hold { reason, hold } => {
                            manager.metrics.held(&hold);
                            manager.holds.push(format!("{reason}: {hold}"));
                            let key = (reason.kind(), std::mem::discriminant(&hold));
                            let changed = last_hold != Some(key);
                            if changed && !matches!(hold, Hold::AwaitingFence { .. }) || last_hold.is_none() {
                                warn!("not switching: {reason}, but {hold}");
                            }
                            last_hold = Some(key);
                            // The next look when the fence has surely passed, not up to a heartbeat later.
                            if let Hold::AwaitingFence { remaining } = hold {
                                if remaining < heartbeat {
                                    ticks.reset_after(remaining.max(FENCE_LOOK_MIN));
                                }
                            }
                        }
                        Action::Failover { from, to, reason, demotable, past_lockouts } => {
                            last_hold = None;
                            let key = (from, to, demotable);
                            let now = manager.observer.now();
                            if failed.is_some_and(|(k, until)| k == key && now < until) {
                                continue;
                            }
                            let nobody_votes = reason.while_nobody_votes(demotable);
                            let reason_label = reason.label();
                            let from_name = from.map_or("nobody".to_string(), |i| manager.describe(i));
                            crate::hooks::automatic_pre(&manager.cfg.switch_hooks, crate::hooks::pre_env("automatic", &from_name, &manager.describe(to), &reason.to_string(), manager.term()));
                            let outcome = manager.execute(Plan { from, to, reason: reason.to_string(), demotable, allow_migration: false, past_lockouts }, false).await;
                            manager.after_switch(&outcome, reason_label);
                            // A failure that retrying cannot fix (SSH refused, unknown host key) waits
                            // out the cooldown instead of hammering the validators — unless nobody
                            // can be voting meanwhile: then every few seconds counts (an SSH step
                            // that failed after the tower was installed left X with nobody).
                            let wait = if nobody_votes && !outcome.ok {
                                warn!("nobody votes with the staked identity: trying again in {RETRY_WHILE_NOBODY_VOTES:?}");
                                RETRY_WHILE_NOBODY_VOTES
                            } else if outcome.retry_soon {
                                RETRY_AFTER_FAILURE
                            } else {
                                manager.cfg.failover_cooldown
                            };
                            failed = (!outcome.ok).then(|| (key, manager.observer.now() + wait));
                        }
                    }
                }
                critical = saw_critical;
            }
        }
    };
    follower.abort();
    ended
}

/// Keeps one held `/tower` request open to the active's agent (`target`: which node, at which
/// term) and passes every changed tower to the control loop, which verifies and keeps it.
async fn follow_tower(
    agents: Vec<AgentClient>,
    mut known: Option<String>,
    mut target: watch::Receiver<Option<(usize, u64)>>,
    towers: watch::Sender<Option<VoteStateBlob>>,
    request_timeout: Duration,
) {
    // Held for less than the client's own timeout, so a quiet tower is not an error.
    let wait = TOWER_WAIT.min(request_timeout.saturating_sub(Duration::from_millis(500)));
    loop {
        let Some((node, term)) = *target.borrow_and_update() else {
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        match agents[node].tower(term, known.clone(), wait).await {
            Ok(answer) => {
                if let Some(tower) = answer.tower {
                    known = Some(tower.sha256.clone());
                    if towers.send(Some(tower)).is_err() {
                        return;
                    }
                }
            }
            Err(_) => tokio::time::sleep(TOWER_RETRY).await,
        }
    }
}

/// A fixed-rate schedule: the status report every `status_report_interval` (4 h by default).
pub struct Every {
    period: Duration,
    next: tokio::time::Instant,
}

impl Every {
    /// First due one period from now.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            next: tokio::time::Instant::now() + period,
        }
    }

    /// Waits until the next due time. Cancel-safe: a cancelled wait does not skip a report.
    pub async fn tick(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next += self.period;
    }
}

/// Writes the manager's state into `state_dir`, durably.
fn write_state(state_dir: &std::path::Path, state: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
    failover_agent::state::write_durably(&state_dir.join(STATE_FILE), &bytes)
}

/// What identifies a switch for retry purposes: from, to, whether the old active is demotable.
type PlanKey = (Option<usize>, usize, bool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_state_survives_a_power_cut() {
        failover_sim::durability::assert_durable(
            "manager::tests::the_manager_state_survives_a_power_cut",
            |dir| {
                let state = Persisted {
                    term: 7,
                    ..Default::default()
                };
                write_state(dir, &state).unwrap();
            },
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_status_report_comes_every_four_hours() {
        let four_hours = Duration::from_secs(4 * 3600);
        let mut every = Every::new(four_hours);
        for _ in 0..3 {
            let early =
                tokio::time::timeout(four_hours - Duration::from_secs(1), every.tick()).await;
            assert!(early.is_err(), "a report came early");
            tokio::time::timeout(Duration::from_secs(2), every.tick())
                .await
                .expect("the report is due at four hours");
        }
    }
}
