//! The one observer: everything the manager knows comes through here, once per heartbeat.
//!
//! - The cluster tip from a pubsub `slotSubscribe` (reconnected with backoff; while it is down,
//!   or silent for [`PUBSUB_SILENT`] — an open stream that stopped sending would freeze the tip
//!   and with it every lag — `getSlot` is polled instead).
//! - The vote account's last vote from `getVoteAccounts { votePubkey, processed }`.
//! - Gossip from `getClusterNodes`: which configured IP carries the staked identity.
//! - Each agent's `/status` (signed), with consecutive misses counted.
//!
//! Requests to the cluster RPC go through one rate limiter. It never runs or parses the `solana`
//! CLI.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover_agent::api::{Health, StatusResponse};
use failover_agent::AgentClient;
use failover_identity::Pubkey;
use futures_util::StreamExt;
use solana_commitment_config::CommitmentConfig;
use solana_pubsub_client::nonblocking::pubsub_client::PubsubClient;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::config::RpcGetVoteAccountsConfig;
use tracing::{debug, info, warn};

use crate::engine::{AgentReport, Consensus, NodeView, View};
use crate::metrics::Metrics;

/// How often gossip is re-read, in heartbeats (`getClusterNodes` is the heaviest call).
const GOSSIP_EVERY: u64 = 5;
/// How often the cluster's consensus is asked again, in heartbeats (more often while unknown).
const CONSENSUS_EVERY: u64 = 10;

/// What the observer needs to know.
#[derive(Clone, Debug)]
pub struct ObserverConfig {
    pub cluster_rpc: String,
    pub cluster_ws: String,
    pub staked: Pubkey,
    pub vote_account: Option<Pubkey>,
    /// Each validator's address in gossip, in the config's order.
    pub ips: Vec<IpAddr>,
    pub request_timeout: Duration,
    pub rpc_requests_per_second: u32,
    /// `consensus` from the config: `auto` asks the cluster.
    pub consensus: failover_config::ConsensusSetting,
}

/// The latest tip from pubsub.
#[derive(Default)]
struct Tip {
    slot: AtomicU64,
    live: AtomicBool,
}

/// A token bucket for the cluster RPC.
struct Limiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
    /// Every request it lets through is counted, by method.
    metrics: Arc<Metrics>,
}

impl Limiter {
    fn new(per_second: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
            metrics,
        }
    }

    async fn acquire(&self, method: &'static str) {
        self.metrics.rpc(method);
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep(*next - now).await;
        }
        *next = (*next).max(now) + self.interval;
    }
}

/// How long a heartbeat waits for an agent that missed the previous one.
const MISSING_AGENT_WAIT: Duration = Duration::from_millis(500);

/// One agent's history.
#[derive(Default, Clone)]
struct NodeState {
    misses: u32,
    /// When the agent last answered a heartbeat (or a command that can start a lease returned):
    /// its lease began no later.
    last_answer: Option<Duration>,
    last_status: Option<StatusResponse>,
}

/// What one heartbeat saw.
#[derive(Clone, Debug)]
pub struct Sample {
    pub view: View,
    /// The agents' full answers (`None` when the agent did not answer this time).
    pub statuses: Vec<Option<StatusResponse>>,
    /// The last answers ever received (kept while an agent is unreachable).
    pub last_statuses: Vec<Option<StatusResponse>>,
    pub errors: Vec<Option<String>>,
    /// An agent refused this manager's term as older than its own: the term it holds. The
    /// heartbeat was sent again with it, so that agent still counts as answering.
    pub agent_term_above: Option<u64>,
}

pub struct Observer {
    cfg: ObserverConfig,
    agents: Vec<AgentClient>,
    rpc: RpcClient,
    tip: Arc<Tip>,
    tip_task: tokio::task::JoinHandle<()>,
    limiter: Limiter,
    nodes: Vec<NodeState>,
    gossip: Option<Option<IpAddr>>,
    consensus: Consensus,
    heartbeats: u64,
    started: Instant,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.tip_task.abort();
    }
}

impl Observer {
    pub fn new(cfg: ObserverConfig, agents: Vec<AgentClient>, metrics: Arc<Metrics>) -> Self {
        let tip = Arc::new(Tip::default());
        let tip_task = tokio::spawn(watch_tip(cfg.cluster_ws.clone(), tip.clone()));
        let rpc = RpcClient::new_with_timeout(cfg.cluster_rpc.clone(), cfg.request_timeout);
        Self {
            limiter: Limiter::new(cfg.rpc_requests_per_second, metrics),
            cfg,
            rpc,
            tip,
            tip_task,
            nodes: vec![NodeState::default(); agents.len()],
            agents,
            gossip: None,
            consensus: Consensus::Unknown,
            heartbeats: 0,
            started: Instant::now(),
        }
    }

    pub fn agent(&self, i: usize) -> &AgentClient {
        &self.agents[i]
    }

    /// The manager's monotonic clock, shared with the engine's views.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// A command that can start a lease (`become_active`) to agent `i` has returned or been given
    /// up on: its lease, if any, began before now, so fence waits for it count from here.
    pub fn lease_granted(&mut self, i: usize) {
        self.lease_granted_at(i, self.now());
    }

    /// Agent `i` answered at `at` (this observer's clock) outside a sample.
    pub fn lease_granted_at(&mut self, i: usize, at: Duration) {
        let node = &mut self.nodes[i];
        node.last_answer = Some(node.last_answer.map_or(at, |t| t.max(at)));
    }

    /// Reads everything once.
    pub async fn sample(&mut self, term: u64) -> Sample {
        self.heartbeats += 1;
        let refresh_gossip = self.gossip.is_none() || self.heartbeats.is_multiple_of(GOSSIP_EVERY);
        if self.consensus == Consensus::Unknown || self.heartbeats.is_multiple_of(CONSENSUS_EVERY) {
            self.refresh_consensus().await;
        }
        // An agent that already missed a heartbeat gets a shorter wait: a hung one must not stretch
        // every heartbeat (and so every decision) to the request timeout. Answers that come later
        // are not acknowledged, so its lease is not renewed by them either.
        let within = |i: usize| {
            if self.nodes[i].misses > 0 {
                self.cfg.request_timeout.min(MISSING_AGENT_WAIT)
            } else {
                self.cfg.request_timeout
            }
        };
        let statuses = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, agent)| agent.status_within(term, within(i)));
        let (mut results, tip, (last_vote, last_vote_at), gossip) = tokio::join!(
            futures_util::future::join_all(statuses),
            self.tip(),
            self.last_vote(),
            async {
                if refresh_gossip {
                    Some(self.gossip_holder().await)
                } else {
                    None
                }
            }
        );
        if let Some(Ok(holder)) = gossip {
            self.gossip = Some(holder);
        }
        // A manager whose term is behind the agents' (a fresh state_dir) learns theirs instead of
        // counting every refused heartbeat as a miss.
        let mut agent_term_above = None;
        for (i, result) in results.iter_mut().enumerate() {
            let Some(theirs) = result.as_ref().err().and_then(|e| e.agent_term()) else {
                continue;
            };
            if theirs > term {
                agent_term_above = agent_term_above.max(Some(theirs));
                *result = self.agents[i].status(theirs).await;
            }
        }
        let now = self.now();
        let mut statuses = vec![None; self.nodes.len()];
        let mut errors = vec![None; self.nodes.len()];
        for (i, result) in results.into_iter().enumerate() {
            let node = &mut self.nodes[i];
            match result {
                Ok(status) => {
                    if node.misses > 0 {
                        info!(node = i + 1, "agent answers again");
                    }
                    node.misses = 0;
                    node.last_answer = Some(now);
                    node.last_status = Some(status.clone());
                    statuses[i] = Some(status);
                }
                Err(e) => {
                    node.misses += 1;
                    debug!(node = i + 1, misses = node.misses, error = %e, "agent did not answer");
                    errors[i] = Some(e.to_string());
                }
            }
        }
        let holder = self.gossip.flatten();
        let view = View {
            now,
            nodes: self
                .nodes
                .iter()
                .zip(&self.cfg.ips)
                .map(|(node, ip)| NodeView {
                    misses: node.misses,
                    report: node
                        .last_status
                        .as_ref()
                        .map(|s| report(s, &self.cfg.staked)),
                    last_answer: node.last_answer,
                    staked_in_gossip: holder == Some(*ip),
                })
                .collect(),
            consensus: self.consensus,
            tip,
            last_vote,
            last_vote_at,
            // The manager, which holds the backups, fills this in.
            backup_behind_chain: false,
        };
        Sample {
            view,
            statuses,
            last_statuses: self.nodes.iter().map(|n| n.last_status.clone()).collect(),
            errors,
            agent_term_above,
        }
    }

    /// What the cluster runs, as last read.
    pub fn consensus(&self) -> Consensus {
        self.consensus
    }

    /// Asks the cluster's RPC which consensus it runs (three small requests at most); a failed
    /// answer keeps what was known.
    pub async fn refresh_consensus(&mut self) -> Consensus {
        for _ in 0..3 {
            self.limiter.acquire("consensus_probe").await;
        }
        let now = failover_agent::consensus::resolve(self.cfg.consensus, &self.rpc).await;
        if now != Consensus::Unknown {
            if now.name() != self.consensus.name() {
                info!("the cluster runs {now}");
            }
            self.consensus = now;
        } else if self.consensus == Consensus::Unknown {
            debug!("the cluster's consensus could not be read yet");
        }
        self.consensus
    }

    /// Who leads each of `limit` slots from `start` (`getSlotLeaders`).
    pub async fn slot_leaders(&self, start: u64, limit: u64) -> Result<Vec<Pubkey>, String> {
        self.limiter.acquire("getSlotLeaders").await;
        self.rpc
            .get_slot_leaders(start, limit)
            .await
            .map_err(|e| format!("getSlotLeaders: {e}"))
    }

    /// The tip: from pubsub while it is live, else one `getSlot`.
    pub(crate) async fn tip(&self) -> Option<u64> {
        if self.tip.live.load(Ordering::Relaxed) {
            return Some(self.tip.slot.load(Ordering::Relaxed));
        }
        self.limiter.acquire("getSlot").await;
        match self
            .rpc
            .get_slot_with_commitment(CommitmentConfig::processed())
            .await
        {
            Ok(slot) => Some(slot),
            Err(e) => {
                warn!(error = %e, "cluster RPC getSlot failed");
                None
            }
        }
    }

    /// The vote account's last vote, and when the answer came (the manager's clock).
    async fn last_vote(&self) -> (Option<u64>, Duration) {
        let vote = self.read_last_vote().await;
        (vote, self.now())
    }

    async fn read_last_vote(&self) -> Option<u64> {
        let vote = self.cfg.vote_account?;
        self.limiter.acquire("getVoteAccounts").await;
        let config = RpcGetVoteAccountsConfig {
            vote_pubkey: Some(vote.to_string()),
            commitment: Some(CommitmentConfig::processed()),
            keep_unstaked_delinquents: Some(true),
            ..Default::default()
        };
        match self.rpc.get_vote_accounts_with_config(config).await {
            Ok(accounts) => accounts
                .current
                .iter()
                .chain(accounts.delinquent.iter())
                .find(|a| a.vote_pubkey == vote.to_string())
                .map(|a| a.last_vote),
            Err(e) => {
                warn!(error = %e, "cluster RPC getVoteAccounts failed");
                None
            }
        }
    }

    /// Which configured validator's address gossip shows the staked identity at.
    pub async fn gossip_holder(&self) -> Result<Option<IpAddr>, String> {
        self.limiter.acquire("getClusterNodes").await;
        let nodes = self.rpc.get_cluster_nodes().await.map_err(|e| {
            warn!(error = %e, "cluster RPC getClusterNodes failed");
            e.to_string()
        })?;
        let staked = self.cfg.staked.to_string();
        Ok(nodes
            .iter()
            .find(|n| n.pubkey == staked)
            .and_then(|n| n.gossip)
            .map(|g| g.ip())
            .filter(|ip| self.cfg.ips.contains(ip)))
    }
}

/// What the engine needs from a status answer.
pub fn report(status: &StatusResponse, staked: &Pubkey) -> AgentReport {
    AgentReport {
        holds_staked: status.identity.as_ref().map(|id| *id == staked.to_string()),
        process_running: status.process_running,
        slot: status.slot,
        healthy: status.health == Health::Ok,
        fence_after: Duration::from_millis(status.fence_after_ms),
        not_promotable: status.not_promotable.clone(),
    }
}

/// A slot stream with no notification for this long is taken for stalled (five 400 ms slots).
pub const PUBSUB_SILENT: Duration = Duration::from_secs(2);

/// Follows the tip over pubsub for as long as it runs, reconnecting with backoff. A silent
/// stream is said once, and its return once.
async fn watch_tip(url: String, tip: Arc<Tip>) {
    let mut backoff = Duration::from_millis(250);
    let mut silent = false;
    loop {
        match PubsubClient::new(url.as_str()).await {
            Ok(client) => match client.slot_subscribe().await {
                Ok((mut slots, _unsubscribe)) => {
                    if !silent {
                        info!(%url, "following the cluster tip over pubsub");
                    }
                    loop {
                        match tokio::time::timeout(PUBSUB_SILENT, slots.next()).await {
                            Ok(Some(info)) => {
                                tip.slot.store(info.slot, Ordering::Relaxed);
                                tip.live.store(true, Ordering::Relaxed);
                                backoff = Duration::from_millis(250);
                                if std::mem::take(&mut silent) {
                                    info!(%url, "pubsub slot notifications are back");
                                }
                            }
                            Ok(None) => {
                                warn!(%url, "pubsub slot stream ended; polling getSlot until it is back");
                                break;
                            }
                            Err(_) => {
                                if !std::mem::replace(&mut silent, true) {
                                    warn!(%url, silent_ms = PUBSUB_SILENT.as_millis() as u64, "pubsub slot stream silent; polling getSlot until notifications come again");
                                }
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(%url, error = %e, "slotSubscribe failed"),
            },
            Err(e) => debug!(%url, error = %e, "pubsub connect failed"),
        }
        tip.live.store(false, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
