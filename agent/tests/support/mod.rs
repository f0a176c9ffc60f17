//! One harness for the agent's tests: a simulated cluster, an agent per validator started on a
//! loopback port with a config that goes through the real config parser, and a manager key that
//! signs the commands.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use failover_agent::api::{FailoverAction, FailoverRequest, FailoverResponse, VoteStateBlob};
use failover_agent::state::StateFile;
use failover_agent::{Agent, AgentClient, CommandSigner};
use failover_identity::Keypair;
use failover_sim::{Cluster, SimConfig};
use serde_json::{json, Value};

pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct RunningAgent {
    pub url: String,
    pub agent: Arc<Agent>,
    pub state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningAgent {
    /// Stops the agent and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Bed {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub manager: Arc<Keypair>,
    pub agents: Vec<RunningAgent>,
}

/// An agent config for node `i` of `cluster` (agave kind, embedded store, signed commands).
pub fn agent_config(cluster: &Cluster, dir: &Path, manager: &Keypair, i: usize) -> Value {
    let info = cluster.info();
    let node = &info.nodes[i];
    let mut config = json!({
        "listen_addr": "127.0.0.1:0",
        "allowed_ips": ["127.0.0.1"],
        "local_rpc": node.rpc_url,
        // The node's stand-in process: it comes and goes with the node, and an agent that fences
        // a hung validator by SIGKILL kills it (and so crashes the node), never this test.
        "process_name": node.process_name,
        "manager_timeout": "30s",
        "validator_identity": info.staked_pubkey,
        "ledger_path": node.ledger,
        "staked_identity_keypair": info.staked_keypair,
        "unstaked_identity_keypair": node.unstaked_keypair,
        "manager_pubkeys": [manager.pubkey().to_string()],
        "state_dir": dir.join(format!("agent{}", i + 1)),
        "tower_settle": "250ms",
        // Loopback only: nothing here may leave the machine.
        "connectivity_targets": ["127.0.0.1:9"],
        "connectivity_failures_to_fence": 1,
        "connectivity_timeout": "200ms",
    });
    if let Some(voter) = &info.voter_keypair {
        config["authorized_voter_keypair"] = json!(voter);
    }
    config
}

/// Starts an agent from a config value (through the real parser).
pub async fn start_agent(config: &Value, dir: &Path) -> RunningAgent {
    let text = serde_json::to_string_pretty(config).unwrap();
    let path = dir.join(format!("agent-config-{}.json", rand_suffix()));
    std::fs::write(&path, &text).unwrap();
    let cfg = failover_config::load_agent(&path).unwrap_or_else(|e| panic!("{e}"));
    let state_dir = cfg.state_dir.clone();
    let state = StateFile::load(&cfg.state_dir).unwrap();
    let agent = Agent::new(cfg, state);
    agent.startup_check().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(failover_agent::run(agent.clone(), listener, async move {
        let _ = stopped.await;
    }));
    RunningAgent {
        url,
        agent,
        state_dir,
        stop: Some(stop),
        task,
    }
}

fn rand_suffix() -> String {
    failover_identity::Keypair::generate().pubkey().to_string()[..8].to_string()
}

/// A cluster with an agent on each of its two nodes; `tweak` edits each agent's config.
pub async fn bed_with(tweak: impl Fn(usize, &mut Value)) -> Bed {
    bed_with_slots(Duration::from_millis(100), tweak).await
}

/// [`bed_with`] with a chosen slot time.
pub async fn bed_with_slots(slot_time: Duration, tweak: impl Fn(usize, &mut Value)) -> Bed {
    bed_on(
        |dir| {
            let mut sim = SimConfig::new(dir);
            sim.slot_time = slot_time;
            sim
        },
        tweak,
    )
    .await
}

/// A bed on an Alpenglow cluster (100 ms slots).
pub async fn alpenglow_bed(tweak: impl Fn(usize, &mut Value)) -> Bed {
    bed_on(
        |dir| {
            let mut sim = SimConfig::alpenglow(dir);
            sim.slot_time = Duration::from_millis(100);
            sim
        },
        tweak,
    )
    .await
}

/// A bed on the cluster `sim` describes (given the cluster directory).
pub async fn bed_on(
    sim: impl FnOnce(PathBuf) -> SimConfig,
    tweak: impl Fn(usize, &mut Value),
) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(sim(dir.path().join("cluster")))
        .await
        .unwrap();
    let manager = Arc::new(Keypair::generate());
    let mut agents = Vec::new();
    for i in 0..2 {
        let mut config = agent_config(&cluster, dir.path(), &manager, i);
        tweak(i, &mut config);
        agents.push(start_agent(&config, dir.path()).await);
    }
    Bed {
        cluster,
        dir,
        manager,
        agents,
    }
}

pub async fn bed() -> Bed {
    bed_with(|_, _| {}).await
}

/// A failover command as the manager sends it.
pub fn command(
    action: FailoverAction,
    term: u64,
    tower: Option<VoteStateBlob>,
    sha: Option<String>,
) -> FailoverRequest {
    FailoverRequest {
        action,
        term,
        switch_id: None,
        skip_identity: false,
        reason: "test".into(),
        tower,
        tower_sha256: sha,
        min_last_vote: None,
        min_root: None,
        past_lockouts: None,
        consensus: None,
        allow_migration: false,
    }
}

/// Waits for the watchdog of agent `i` to decide, and returns its report.
pub async fn fence_report(bed: &Bed, i: usize) -> failover_agent::api::FenceReport {
    let mut reports = bed.agents[i].agent.fence_reports();
    let report = tokio::time::timeout(PATIENCE, reports.wait_for(|r| r.is_some()))
        .await
        .expect("the watchdog decided")
        .unwrap()
        .clone();
    report.unwrap()
}

impl Bed {
    /// A client for agent `i`, signing as the manager.
    pub fn client(&self, i: usize) -> AgentClient {
        AgentClient::new(
            &self.agents[i].url,
            Some(self.signer()),
            Duration::from_secs(30),
        )
    }

    /// How the manager signs for this cluster's staked identity.
    pub fn signer(&self) -> CommandSigner {
        CommandSigner {
            key: self.manager.clone(),
            staked: self.cluster.staked_pubkey(),
        }
    }

    /// The manager's part of a switch with the embedded store: demote `from`, hand its final
    /// tower to `to`, promote `to`.
    pub async fn switch(
        &self,
        from: usize,
        to: usize,
        term: u64,
    ) -> (FailoverResponse, FailoverResponse) {
        let passive = self
            .client(from)
            .failover(&command(FailoverAction::BecomePassive, term, None, None))
            .await
            .unwrap();
        assert!(passive.ok, "become_passive failed: {passive:#?}");
        let tower: VoteStateBlob = passive.tower.clone().expect("the old active's final tower");
        let sha = Some(tower.sha256.clone());
        let active = self
            .client(to)
            .failover(&command(
                FailoverAction::BecomeActive,
                term,
                Some(tower),
                sha,
            ))
            .await
            .unwrap();
        (passive, active)
    }
}

/// A real `failover-agent` process (this package's binary), stopped by its pid when dropped.
pub struct AgentProcess {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    fd_limit: Option<u32>,
    /// Its log (standard error), kept while it runs.
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl AgentProcess {
    /// Starts `failover-agent --config` on `config` (its `listen_addr` is replaced by a free
    /// loopback port) and waits until it listens.
    pub async fn start(config: &Value, dir: &Path, name: &str) -> Self {
        Self::start_limited(config, dir, name, None).await
    }

    /// [`AgentProcess::start`] with at most `fd_limit` open files (`ulimit -n`) when given.
    pub async fn start_limited(
        config: &Value,
        dir: &Path,
        name: &str,
        fd_limit: Option<u32>,
    ) -> Self {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = config.clone();
        config["listen_addr"] = format!("127.0.0.1:{port}").into();
        let config_path = dir.join(format!("validator-config-{name}.json"));
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let state_dir = PathBuf::from(config["state_dir"].as_str().unwrap());
        let child = Self::spawn(&config_path, &dir.join(format!("{name}.log")), fd_limit).await;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Self {
            url: format!("http://{addr}"),
            addr,
            state_dir,
            config_path,
            fd_limit,
            log: dir.join(format!("{name}.log")),
            child,
        }
    }

    async fn spawn(config: &Path, log: &Path, fd_limit: Option<u32>) -> tokio::process::Child {
        use tokio::io::AsyncBufReadExt;
        // `exec` keeps the pid: the agent is the shell's process, stopped by that pid.
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(match fd_limit {
                Some(n) => format!("ulimit -n {n} && exec \"$0\" --config \"$1\""),
                None => "exec \"$0\" --config \"$1\"".to_string(),
            })
            .arg(env!("CARGO_BIN_EXE_failover-agent"))
            .arg(config);
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut file = std::fs::File::create(log).unwrap();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("agent start-up")
                .unwrap()
                .unwrap_or_else(|| {
                    panic!("agent exited during start-up; log in {}", log.display())
                });
            use std::io::Write;
            let _ = writeln!(file, "{line}");
            if line.contains(" listening listen=") {
                break;
            }
        }
        // Keep its log, and keep draining it so it never blocks on a full pipe.
        tokio::spawn(async move {
            use std::io::Write;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(file, "{line}");
            }
        });
        child
    }

    /// Stops the process (SIGKILL by pid) and starts it again on the same config and state.
    pub async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        self.log = self.config_path.with_extension("restarted.log");
        self.child = Self::spawn(&self.config_path, &self.log, self.fd_limit).await;
    }
}

/// A simulated cluster with a real agent process on each node.
pub struct ProcessBed {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub manager: Arc<Keypair>,
    pub agents: Vec<AgentProcess>,
}

/// [`ProcessBed`] with `tweak` applied to each agent's config; `manager` signs (a fresh key if
/// `None`).
impl ProcessBed {
    /// How the manager signs for this cluster's staked identity.
    pub fn signer(&self) -> CommandSigner {
        CommandSigner {
            key: self.manager.clone(),
            staked: self.cluster.staked_pubkey(),
        }
    }
}

pub async fn process_bed(
    manager: Option<Arc<Keypair>>,
    tweak: impl Fn(usize, &mut Value),
) -> ProcessBed {
    process_bed_limited(manager, None, tweak).await
}

/// [`process_bed`] with each agent limited to `fd_limit` open files.
pub async fn process_bed_limited(
    manager: Option<Arc<Keypair>>,
    fd_limit: Option<u32>,
    tweak: impl Fn(usize, &mut Value),
) -> ProcessBed {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new(dir.path().join("cluster"));
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    let manager = manager.unwrap_or_else(|| Arc::new(Keypair::generate()));
    let mut agents = Vec::new();
    for i in 0..2 {
        let mut config = agent_config(&cluster, dir.path(), &manager, i);
        tweak(i, &mut config);
        let name = format!("agent{}", i + 1);
        agents.push(AgentProcess::start_limited(&config, dir.path(), &name, fd_limit).await);
    }
    ProcessBed {
        cluster,
        dir,
        manager,
        agents,
    }
}
