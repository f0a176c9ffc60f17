//! Starting, driving and stopping a simulated cluster: the slot clock, each node's servers (RPC,
//! pubsub, admin socket) and the cluster endpoint, and faults on demand.
//!
//! Each node also has a stand-in process: a real `sleep infinity` run through a symlink named
//! after the node ([`NodeInfo::process_name`]), so that a check that looks for the validator in
//! `/proc` by name sees it come and go. A crash kills it, a restart starts a new one, a hang stops
//! it (SIGSTOP) and unhang continues it. Stand-ins are signalled, killed and reaped by pid, never
//! by name, and all of them are killed when the cluster shuts down or is dropped.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use failover_identity::tower::{tower_path, TowerFile};
use failover_identity::write_atomic;
use failover_identity::{Keypair, Pubkey};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use crate::process::OwnedProcess;
use crate::safety::{SafetyRecorder, SafetyReport};
use crate::server::Down;
pub use crate::world::Consensus;
use crate::world::{NetworkNode, Node, VoteAccount, World};

/// The Agave version simulated nodes report unless told otherwise.
pub const DEFAULT_VERSION: &str = "3.1.12";
/// The version an Alpenglow cluster's nodes report unless told otherwise.
pub const ALPENGLOW_VERSION: &str = "4.2.2";

/// The longest name `/proc/<pid>/comm` shows in full: the kernel's `TASK_COMM_LEN` less the NUL.
const COMM_MAX_BYTES: usize = 15;

/// How long a restarted node waits for the ports it had to be free again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the stand-ins' program may be; the first that exists is used.
const SLEEP_BINARIES: [&str; 2] = ["/usr/bin/sleep", "/bin/sleep"];

/// How to build a cluster. `dir` must be chosen; the rest has defaults matching a local Agave
/// test cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where keypairs and each node's ledger go.
    pub dir: PathBuf,
    /// Validators in the failover pair (usually 2).
    pub nodes: usize,
    pub slot_time: Duration,
    /// Which node starts with the staked identity (`None`: nobody votes until promoted).
    pub active: Option<usize>,
    /// Model Agave's replay race: one more vote with the old identity after `setIdentity`.
    pub straggler_votes: bool,
    /// The slot the cluster starts at (so there is history to look at).
    pub start_slot: u64,
    /// Agave version each node reports (`getVersion`), which also decides its `setIdentity`
    /// arity; missing entries use [`DEFAULT_VERSION`].
    pub versions: Vec<String>,
    /// TowerBFT (default), Alpenglow, or the migration between them.
    pub consensus: Consensus,
    /// Loopback address of node `i` is `127.0.0.(first_ip_octet + i)`; the cluster endpoint is on
    /// 127.0.0.1. Distinct addresses let the manager tell nodes apart in gossip by IP, as in
    /// production.
    pub first_ip_octet: u8,
    /// The vote account's authorized voter is a keypair of its own (`--authorized-voter`), not
    /// the staked identity.
    pub separate_voter: bool,
}

impl SimConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            nodes: 2,
            slot_time: Duration::from_millis(400),
            active: Some(0),
            straggler_votes: true,
            start_slot: 1_000,
            versions: Vec::new(),
            first_ip_octet: 2,
            consensus: Consensus::Tower,
            separate_voter: false,
        }
    }

    /// The same cluster running Alpenglow since `start_slot` (nodes report 4.2.2).
    pub fn alpenglow(dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::new(dir);
        config.consensus = Consensus::Alpenglow {
            genesis_slot: config.start_slot.max(64) - 64,
        };
        config
    }

    /// The version node `i` reports.
    fn version(&self, i: usize) -> String {
        self.versions
            .get(i)
            .cloned()
            .unwrap_or_else(|| match self.consensus {
                Consensus::Tower => DEFAULT_VERSION.to_string(),
                _ => ALPENGLOW_VERSION.to_string(),
            })
    }
}

/// A fault to put a node in, or to take it out of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The validator process dies: sockets close, admin socket removed, gone from gossip.
    Crash,
    /// Start again with its startup identity and no faults; it answers "still starting" for
    /// `startup_slots` slots first.
    Restart {
        #[serde(default)]
        startup_slots: u64,
    },
    /// Stop answering anything (connections still accepted), stop voting.
    Hang,
    Unhang,
    /// Replay this many slots behind the cluster (0 to catch up).
    Behind {
        slots: u64,
    },
    StopVoting,
    ResumeVoting,
    /// Cut off from the cluster (its network gone, the process running): it keeps voting, but
    /// its votes never reach anyone, so none lands on the vote account.
    CutOff,
    Reconnect,
    /// Delay every admin-RPC answer.
    SlowAdmin {
        millis: u64,
    },
    /// Make `setIdentity` fail (or work again).
    RefuseSetIdentity {
        refuse: bool,
    },
    /// Agave 4.3: the next `times` identity changes apply only in part and fail.
    PartialSetIdentity {
        times: u32,
    },
    /// Clear every fault but a crash.
    Heal,
}

/// Where to find one node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub ip: IpAddr,
    pub rpc_url: String,
    pub pubsub_url: String,
    pub rpc_addr: SocketAddr,
    pub ledger: PathBuf,
    pub admin_socket: PathBuf,
    pub unstaked_keypair: PathBuf,
    pub unstaked_pubkey: String,
    /// The name of the node's stand-in process, as `/proc/<pid>/comm` shows it
    /// (`simval-<unstaked pubkey prefix>-<node number>`, at most 15 bytes): what an agent's
    /// `process_name` should be.
    pub process_name: String,
    /// The `--identity` symlink the node restarts with (points at the staked or unstaked keypair).
    pub identity_link: PathBuf,
}

/// Where to find the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterInfo {
    pub rpc_url: String,
    pub pubsub_url: String,
    pub staked_keypair: PathBuf,
    pub staked_pubkey: String,
    /// The vote account's own authorized-voter keypair, with [`SimConfig::separate_voter`].
    pub voter_keypair: Option<PathBuf>,
    pub vote_pubkey: String,
    pub slot_time_ms: u64,
    pub nodes: Vec<NodeInfo>,
}

/// Which server answers: the cluster endpoint (the big "network" node) or one of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Network,
    Node(usize),
}

/// State shared by the clock and every server.
pub struct Shared {
    world: Mutex<World>,
    /// Bumped whenever something a waiting server cares about changed (faults, slots).
    changes: watch::Sender<u64>,
    /// The cluster slot, after each tick.
    pub slots: broadcast::Sender<u64>,
    pub rpc_addrs: Vec<SocketAddr>,
    pub network_rpc_addr: SocketAddr,
    runtimes: Mutex<Vec<Option<NodeRuntime>>>,
    /// Node `i`'s stand-in is started through `stand_in_links[i]`, a symlink to `sleep`.
    stand_in_links: Vec<PathBuf>,
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("world lock")
    }

    pub fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits while `endpoint` is hung. A crashed node's servers are being torn down; requests
    /// that raced in wait too, and die with their connection.
    pub async fn wait_responsive(&self, endpoint: Endpoint) {
        let Endpoint::Node(i) = endpoint else { return };
        let mut changes = self.changes.subscribe();
        while !self.world().nodes[i].responsive() {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Current admin-RPC delay of node `i`.
    pub fn admin_delay(&self, i: usize) -> Duration {
        Duration::from_millis(self.world().nodes[i].faults.admin_delay_ms)
    }

    /// The pid of node `i`'s stand-in process while it runs; `None` while the node is crashed.
    pub fn stand_in_pid(&self, i: usize) -> Option<u32> {
        self.runtimes()
            .get(i)?
            .as_ref()
            .filter(|runtime| !runtime.stand_in.exited())
            .map(|runtime| runtime.stand_in.pid())
    }

    fn runtimes(&self) -> MutexGuard<'_, Vec<Option<NodeRuntime>>> {
        self.runtimes.lock().expect("runtimes")
    }
}

/// What a running node is made of; dropped when it crashes.
struct NodeRuntime {
    down: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The real process standing in for the validator's, for checks that look in `/proc`.
    stand_in: OwnedProcess,
}

/// A running simulated cluster. Dropping it stops every task it started.
pub struct Cluster {
    shared: Arc<Shared>,
    info: ClusterInfo,
    network_down: watch::Sender<bool>,
    clock: tokio::task::JoinHandle<()>,
    keypairs: Vec<Arc<Keypair>>,
    staked: Arc<Keypair>,
}

impl Cluster {
    /// Creates keys and ledgers under `config.dir`, binds every server, and starts the clock.
    pub async fn start(config: SimConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.nodes >= 1, "a cluster needs at least one node");
        std::fs::create_dir_all(&config.dir)?;
        let staked = Arc::new(Keypair::generate());
        let staked_path = config.dir.join("staked-identity.json");
        write_keypair(&staked, &staked_path)?;
        let vote_keypair = Keypair::generate();
        write_keypair(&vote_keypair, &config.dir.join("vote-account.json"))?;
        let voter_path = config.dir.join("authorized-voter.json");
        let voter = if config.separate_voter {
            let voter = Arc::new(Keypair::generate());
            write_keypair(&voter, &voter_path)?;
            voter
        } else {
            staked.clone()
        };
        let network_identity = Keypair::generate().pubkey();
        let sleep = find_sleep()?;

        let mut nodes = Vec::new();
        let mut node_infos = Vec::new();
        let mut listeners = Vec::new();
        let mut keypairs = Vec::new();
        let mut stand_in_links = Vec::new();
        for i in 0..config.nodes {
            let name = format!("node{}", i + 1);
            let home = config.dir.join(&name);
            let ledger = home.join("ledger");
            std::fs::create_dir_all(&ledger)?;
            let unstaked = Arc::new(Keypair::generate());
            let unstaked_path = home.join("unstaked-identity.json");
            write_keypair(&unstaked, &unstaked_path)?;
            keypairs.push(unstaked.clone());
            let process_name = stand_in_name(&unstaked.pubkey(), i + 1);
            let link = home.join(&process_name);
            link_to(&sleep, &link)?;
            stand_in_links.push(link);
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, config.first_ip_octet + i as u8));
            let (rpc, pubsub) = bind_pair(ip).await?;
            let rpc_addr = rpc.local_addr()?;
            let identity = if config.active == Some(i) {
                staked.clone()
            } else {
                unstaked.clone()
            };
            // The validator starts with `--identity <home>/identity.json`, a symlink the
            // reference design's identity_symlink commands repoint on promotion and demotion.
            let identity_link = home.join("identity.json");
            let _ = std::fs::remove_file(&identity_link);
            let target = if config.active == Some(i) {
                &staked_path
            } else {
                &unstaked_path
            };
            std::os::unix::fs::symlink(target, &identity_link)?;
            let version = config.version(i);
            let mut node = Node::new(
                name.clone(),
                ledger.clone(),
                identity,
                vec![voter.clone()],
                version,
            );
            node.identity_link = Some(identity_link.clone());
            nodes.push(node);
            node_infos.push(NodeInfo {
                name,
                ip,
                rpc_url: format!("http://{rpc_addr}"),
                pubsub_url: format!("ws://{}", pubsub.local_addr()?),
                rpc_addr,
                admin_socket: ledger.join("admin.rpc"),
                ledger,
                unstaked_keypair: unstaked_path,
                unstaked_pubkey: unstaked.pubkey().to_string(),
                process_name,
                identity_link,
            });
            listeners.push((rpc, pubsub));
        }
        let (net_rpc, net_pubsub) = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
        let network_rpc_addr = net_rpc.local_addr()?;

        let start = config.start_slot.max(64);
        let vote = VoteAccount {
            vote_pubkey: vote_keypair.pubkey(),
            node_pubkey: staked.pubkey(),
            authorized_voter: voter.pubkey(),
            activated_stake: 997_717_120,
            commission: 100,
            last_vote: start - 1,
            root_slot: start - 1 - crate::world::ROOT_DISTANCE,
            credits: 2_234,
            last_voter: config.active,
        };
        if let Some(active) = config.active {
            // The active node has been voting: give it a real tower (or vote history) up to the
            // last vote.
            match config.consensus {
                Consensus::Alpenglow { .. } => {
                    write_vote_history(&staked, &nodes[active].ledger, start - 1)?
                }
                _ => write_history_tower(&staked, &nodes[active].ledger, start - 1)?,
            }
        }
        let mut world = World::new(
            start,
            vote,
            NetworkNode {
                identity: network_identity,
                vote_pubkey: Keypair::generate().pubkey(),
                activated_stake: 9_997_717_120,
                pubsub_silent: false,
                gossip_frozen: None,
            },
            nodes,
            SafetyRecorder::new(staked.pubkey(), config.nodes),
            config.straggler_votes,
            config.consensus,
        );
        if let Some(active) = config.active {
            // What the active voted before the simulation began counts as cast.
            world
                .safety
                .tower_written(active, staked.pubkey(), start - 1);
        }
        for i in 0..config.nodes {
            world.boot_node(i);
        }

        let (changes, _) = watch::channel(0);
        let (slots, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            changes,
            slots,
            rpc_addrs: node_infos.iter().map(|n| n.rpc_addr).collect(),
            network_rpc_addr,
            runtimes: Mutex::new(Vec::new()),
            stand_in_links,
        });

        let (network_down, down) = Down::new();
        crate::rpc::spawn(shared.clone(), Endpoint::Network, net_rpc, net_pubsub, down);
        for (i, (rpc, pubsub)) in listeners.into_iter().enumerate() {
            match start_node(&shared, i, rpc, pubsub, &node_infos[i]) {
                Ok(runtime) => shared.runtimes().push(Some(runtime)),
                Err(err) => {
                    // No `Cluster` will be dropped to stop the nodes already started.
                    stop_nodes(&shared);
                    return Err(err);
                }
            }
        }

        let clock = tokio::spawn(run_clock(shared.clone(), config.slot_time));
        let info = ClusterInfo {
            rpc_url: format!("http://{network_rpc_addr}"),
            pubsub_url: format!(
                "ws://{}",
                SocketAddr::new(network_rpc_addr.ip(), network_rpc_addr.port() + 1)
            ),
            staked_keypair: staked_path,
            voter_keypair: config.separate_voter.then_some(voter_path),
            staked_pubkey: staked.pubkey().to_string(),
            vote_pubkey: vote_keypair.pubkey().to_string(),
            slot_time_ms: config.slot_time.as_millis() as u64,
            nodes: node_infos,
        };
        Ok(Self {
            shared,
            info,
            network_down,
            clock,
            keypairs,
            staked,
        })
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn staked_pubkey(&self) -> Pubkey {
        self.staked.pubkey()
    }

    /// The unstaked identity node `i` was started with.
    pub fn unstaked_pubkey(&self, i: usize) -> Pubkey {
        self.keypairs[i].pubkey()
    }

    /// The pid of node `i`'s stand-in process (named [`NodeInfo::process_name`]) while it runs;
    /// `None` while the node is crashed or after shutdown. A restart gives it a new pid.
    pub fn stand_in_pid(&self, i: usize) -> Option<u32> {
        self.shared.stand_in_pid(i)
    }

    pub fn slot(&self) -> u64 {
        self.shared.world().slot
    }

    /// Node `i`'s current identity, or `None` while it is crashed.
    pub fn identity(&self, i: usize) -> Option<Pubkey> {
        let world = self.shared.world();
        let node = &world.nodes[i];
        (!node.faults.crashed).then(|| node.identity.pubkey())
    }

    pub fn vote_account(&self) -> VoteAccount {
        self.shared.world().vote.clone()
    }

    pub fn safety(&self) -> SafetyReport {
        self.shared.world().safety.report()
    }

    /// Runs `f` on the world under its lock (for assertions).
    pub fn with_world<T>(&self, f: impl FnOnce(&World) -> T) -> T {
        f(&self.shared.world())
    }

    /// Waits until `cond` holds, re-checking after every change; fails after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&World) -> bool,
    ) -> anyhow::Result<()> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.shared.world()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => anyhow::bail!("cluster stopped"),
                Err(_) => anyhow::bail!("condition not reached within {timeout:?}"),
            }
        }
    }

    /// Waits until the cluster reaches `slot`.
    pub async fn wait_for_slot(&self, slot: u64, timeout: Duration) -> anyhow::Result<()> {
        self.wait_until(timeout, |w| w.slot >= slot).await
    }

    /// The next `slots` slots produce no block (a run of skipped leaders): the vote account's last
    /// vote stands still for them.
    pub fn skip_blocks(&self, slots: u64) {
        self.shared.world().skip_blocks(slots);
    }

    /// Silences (or wakes) the cluster endpoint's pubsub: connections and subscriptions stay
    /// open, no notification is sent.
    pub fn silence_network_pubsub(&self, silent: bool) {
        self.shared.world().network.pubsub_silent = silent;
    }

    /// Freezes (or thaws) gossip as `getClusterNodes` shows it: while frozen, each node keeps the
    /// identity (or absence) it had at the freeze.
    pub fn freeze_gossip(&self, frozen: bool) {
        let mut world = self.shared.world();
        world.network.gossip_frozen = frozen.then(|| {
            world
                .nodes
                .iter()
                .map(|n| (!n.faults.crashed && !n.faults.cut_off).then(|| n.identity.pubkey()))
                .collect()
        });
    }

    /// Puts node `i` into (or takes it out of) a fault.
    pub async fn fault(&self, i: usize, fault: Fault) -> anyhow::Result<()> {
        anyhow::ensure!(i < self.info.nodes.len(), "no node {i}");
        match fault {
            Fault::Crash => {
                // Return once the servers let go of their ports, as a dead process's have, so
                // that a restart right after can bind them again.
                for task in crash_node(&self.shared, i) {
                    let _ = task.await;
                }
            }
            Fault::Restart { startup_slots } => {
                // Wait for the old servers to let go of their ports, as a restarted process would.
                for task in crash_node(&self.shared, i) {
                    let _ = task.await;
                }
                let info = &self.info.nodes[i];
                let rpc = rebind(info.rpc_addr).await?;
                let pubsub = rebind(SocketAddr::new(info.ip, info.rpc_addr.port() + 1)).await?;
                self.shared.world().restart(i, startup_slots);
                let runtime = start_node(&self.shared, i, rpc, pubsub, info)?;
                self.shared.runtimes()[i] = Some(runtime);
            }
            other => {
                // The stand-in stops (or continues) first, as a process does before it goes
                // quiet; a failed signal leaves the fault unapplied.
                match other {
                    Fault::Hang => pause_stand_in(&self.shared, i, true)?,
                    Fault::Unhang | Fault::Heal => pause_stand_in(&self.shared, i, false)?,
                    _ => {}
                }
                let mut world = self.shared.world();
                let faults = &mut world.nodes[i].faults;
                match other {
                    Fault::Hang => faults.hung = true,
                    Fault::Unhang => faults.hung = false,
                    Fault::Behind { slots } => faults.behind = slots,
                    Fault::StopVoting => faults.stop_voting = true,
                    Fault::ResumeVoting => faults.stop_voting = false,
                    Fault::CutOff => faults.cut_off = true,
                    Fault::Reconnect => faults.cut_off = false,
                    Fault::SlowAdmin { millis } => faults.admin_delay_ms = millis,
                    Fault::RefuseSetIdentity { refuse } => faults.refuse_set_identity = refuse,
                    Fault::PartialSetIdentity { times } => faults.partial_set_identity = times,
                    Fault::Heal => {
                        let crashed = faults.crashed;
                        *faults = Default::default();
                        faults.crashed = crashed;
                    }
                    Fault::Crash | Fault::Restart { .. } => unreachable!(),
                }
            }
        }
        self.shared.bump();
        Ok(())
    }

    /// Stops the clock and every server, and kills and reaps every stand-in process.
    pub fn shutdown(&self) {
        self.clock.abort();
        let _ = self.network_down.send(true);
        stop_nodes(&self.shared);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Kills node `i` like a process death: servers and connections gone, admin socket removed,
/// no identity held.
pub(crate) fn crash_node(shared: &Shared, i: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let runtime = shared.runtimes()[i].take();
    let tasks = match runtime {
        Some(runtime) => {
            kill_stand_in(&runtime.stand_in);
            let _ = runtime.down.send(true);
            runtime.tasks
        }
        None => Vec::new(),
    };
    let socket = shared.world().nodes[i].ledger.join("admin.rpc");
    let _ = std::fs::remove_file(socket);
    shared.world().crash(i);
    shared.bump();
    tasks
}

/// Agave's admin `exit`: the process exits about 100 ms after answering.
pub(crate) fn exit_node(shared: &Arc<Shared>, i: usize) {
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = crash_node(&shared, i);
    });
}

fn start_node(
    shared: &Arc<Shared>,
    i: usize,
    rpc: TcpListener,
    pubsub: TcpListener,
    info: &NodeInfo,
) -> anyhow::Result<NodeRuntime> {
    // The process starts before it opens its sockets; if they fail, dropping it stops it.
    let stand_in = spawn_stand_in(&shared.stand_in_links[i])?;
    let (down_tx, down) = Down::new();
    let mut tasks = vec![crate::admin::spawn(
        shared.clone(),
        i,
        &info.admin_socket,
        down.clone(),
    )?];
    tasks.extend(crate::rpc::spawn(
        shared.clone(),
        Endpoint::Node(i),
        rpc,
        pubsub,
        down,
    ));
    Ok(NodeRuntime {
        down: down_tx,
        tasks,
        stand_in,
    })
}

/// Stops every running node's servers and kills and reaps its stand-in; the runtimes stay, so
/// this may run twice (`shutdown`, then drop).
fn stop_nodes(shared: &Shared) {
    for runtime in shared.runtimes().iter().flatten() {
        kill_stand_in(&runtime.stand_in);
        let _ = runtime.down.send(true);
    }
}

/// The stand-in's name for node `number` (from 1): `simval-<pubkey prefix>-<number>`. The
/// node's fresh unstaked pubkey makes it unique across clusters running side by side; the prefix
/// is shortened if need be so that the whole name fits in `comm`.
fn stand_in_name(unstaked: &Pubkey, number: usize) -> String {
    const PREFIX_LEN: usize = 6;
    let number = number.to_string();
    let room = COMM_MAX_BYTES.saturating_sub("simval--".len() + number.len());
    // Base58 is ASCII, so any byte index is a char boundary.
    let pubkey = unstaked.to_string();
    format!("simval-{}-{number}", &pubkey[..room.min(PREFIX_LEN)])
}

/// The system's `sleep`, which every stand-in runs.
fn find_sleep() -> anyhow::Result<PathBuf> {
    SLEEP_BINARIES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no sleep(1) at {}: the simulated nodes' stand-in processes run it (install coreutils)",
                SLEEP_BINARIES.join(" or ")
            )
        })
}

/// Makes `link` a symlink to `target`, replacing whatever was there (a reused `dir`).
fn link_to(target: &Path, link: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", link.display())),
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("symlink {} to {}", link.display(), target.display()))
}

/// Runs `<link> infinity` and returns once `/proc/<pid>/comm` shows it. The kernel names a
/// process after the file name it was executed by, so comm (and argv[0]) carry the link's name,
/// not `sleep`.
fn spawn_stand_in(link: &Path) -> anyhow::Result<OwnedProcess> {
    let mut command = Command::new(link);
    command.arg("infinity");
    // A multi-call binary (busybox, uutils coreutils) picks its tool by argv[0]'s name; it gets
    // `sleep` there, and comm still comes from the link.
    let target =
        std::fs::canonicalize(link).with_context(|| format!("resolve {}", link.display()))?;
    if target.file_name() != Some(OsStr::new("sleep")) {
        command.arg0("sleep");
    }
    let stand_in = OwnedProcess::spawn_silent(
        "stand-in",
        command,
        &format!("{} leads nowhere: is sleep(1) gone?", link.display()),
    )?;
    let name = link.file_name().and_then(OsStr::to_str).unwrap_or_default();
    stand_in.wait_exec_named(name)?;
    Ok(stand_in)
}

/// SIGKILL and reap; a stand-in that will not die is reported, not fatal.
fn kill_stand_in(stand_in: &OwnedProcess) {
    if let Err(err) = stand_in.kill() {
        eprintln!(
            "failover-sim: killing stand-in process {}: {err:#}",
            stand_in.pid()
        );
    }
}

/// Stops (SIGSTOP) or continues (SIGCONT) node `i`'s stand-in and waits until `/proc` shows it
/// stopped or running; a crashed node has none.
fn pause_stand_in(shared: &Shared, i: usize, stopped: bool) -> anyhow::Result<()> {
    let runtimes = shared.runtimes();
    let Some(runtime) = &runtimes[i] else {
        return Ok(());
    };
    runtime
        .stand_in
        .signal(if stopped { "STOP" } else { "CONT" })?;
    runtime.stand_in.wait_stopped(stopped)
}

async fn run_clock(shared: Arc<Shared>, slot_time: Duration) {
    let mut interval = tokio::time::interval(slot_time);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        // A stand-in killed from outside (an agent fencing a hung validator with SIGKILL) is a
        // validator process that died: its node crashes, as Agave's would.
        let killed: Vec<usize> = shared
            .runtimes()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| r.stand_in.exited()))
            .map(|(i, _)| i)
            .collect();
        for i in killed {
            drop(crash_node(&shared, i));
        }
        let slot = {
            let mut world = shared.world();
            world.tick();
            world.slot
        };
        let _ = shared.slots.send(slot);
        shared.bump();
    }
}

/// Binds `addr` again after a crash closed its listener. A process spawned anywhere in this
/// process (a stand-in, kill(1)) holds a copy of every descriptor from its fork until its exec
/// closes them, so a listener closed here may go on listening for a moment.
async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
    let mut backoff = Duration::from_millis(1);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("bind {addr} again")),
        }
    }
}

/// Binds an RPC port and the pubsub port right above it (Agave's convention) on `ip`.
async fn bind_pair(ip: IpAddr) -> anyhow::Result<(TcpListener, TcpListener)> {
    for _ in 0..64 {
        let rpc = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let port = rpc.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(pubsub) = TcpListener::bind(SocketAddr::new(ip, port + 1)).await {
            return Ok((rpc, pubsub));
        }
    }
    anyhow::bail!("no free pair of adjacent ports on {ip}")
}

fn write_keypair(keypair: &Keypair, path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    keypair.write_new_file(path)?;
    Ok(())
}

/// Writes a tower for `identity` whose lockouts end at `last_vote`, as a voting node would have.
/// A vote history of `identity` with notarize and finalize votes on the two slots up to
/// `last_vote`, rooted at the one before (the shape of a real 4.2.2 file).
fn write_vote_history(identity: &Keypair, ledger: &Path, last_vote: u64) -> anyhow::Result<()> {
    use failover_identity::vote_history::{
        vote_history_path, Block, VoteHistory, VoteHistoryFile, VotePayload,
    };
    let block = |slot| Block {
        slot,
        block_id: crate::world::block_id(slot),
    };
    let slots = [last_vote - 1, last_vote];
    let history = VoteHistory {
        node_pubkey: identity.pubkey(),
        voted: slots.to_vec(),
        voted_notar: slots.iter().map(|s| (*s, block(*s).block_id)).collect(),
        its_over: slots.to_vec(),
        votes_cast: slots
            .iter()
            .map(|s| {
                (
                    *s,
                    vec![
                        VotePayload::Notar {
                            block: block(*s),
                            shred_version: 0,
                        },
                        VotePayload::Finalize {
                            slot: *s,
                            shred_version: 0,
                        },
                    ],
                )
            })
            .collect(),
        notarized_blocks: slots.iter().map(|s| block(*s)).collect(),
        parent_ready_slots: vec![(last_vote, vec![block(last_vote - 1)])],
        root: last_vote - 1,
        ..VoteHistory::default()
    };
    write_atomic(
        &vote_history_path(ledger, &identity.pubkey()),
        &VoteHistoryFile::sign(&history, identity),
    )?;
    Ok(())
}

fn write_history_tower(identity: &Keypair, ledger: &Path, last_vote: u64) -> anyhow::Result<()> {
    use failover_identity::tower::{BlockTimestamp, LastVote, Lockout, Tower, TowerVoteState};
    let lockouts: Vec<Lockout> = (0..31u64)
        .map(|k| Lockout {
            slot: last_vote - 30 + k,
            confirmation_count: (31 - k) as u32,
        })
        .collect();
    let root = Some(last_vote - 31);
    let tower = Tower {
        node_pubkey: identity.pubkey(),
        threshold_depth: 8,
        threshold_size: 2.0 / 3.0,
        vote_state: TowerVoteState::new(lockouts.clone(), root),
        last_vote: LastVote::TowerSync {
            lockouts,
            root,
            hash: [0; 32],
            timestamp: None,
            block_id: [0; 32],
        },
        last_timestamp: BlockTimestamp::default(),
    };
    write_atomic(
        &tower_path(ledger, &identity.pubkey()),
        &TowerFile::sign(&tower, identity),
    )?;
    Ok(())
}
