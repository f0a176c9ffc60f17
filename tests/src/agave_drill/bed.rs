//! The test bed around a real cluster: an agent per failover node and the manager (real
//! processes, default detection settings, embedded tower store) — or two managers electing their
//! leader through a real etcd, which then also keeps the vote-state backups —, a webhook inbox for
//! the managers' messages, counting relays in front of the RPC endpoints, and CPU/RSS readings of
//! our processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use failover_identity::{AdminRpcClient, Keypair, Timeouts};
use serde::Serialize;
use serde_json::json;

use super::proxy::CountingProxy;
use super::RealCluster;
use crate::demo::{
    agent_config_path, free_port, sibling, spawn, spawn_with_env, start_agent, start_inbox,
    AgentSetup, Inbox, Proc,
};
use crate::etcd::EtcdServer;

/// The manager's cooldown between automatic switches in the bed: long enough that one drill's
/// switch is never followed by another inside its own run (a validator restarted after a kill
/// may take tens of seconds before X's votes land again), short enough for back-to-back drills.
const COOLDOWN: Duration = Duration::from_secs(30);

/// How long a manager may take to log that it leads or follows after its start.
const ELECTION_PATIENCE: Duration = Duration::from_secs(30);
/// What a manager logs when it wins the election, and when another one leads.
pub(super) const ELECTED: &str = "elected: this manager leads";
pub(super) const FOLLOWING: &str = "another manager leads";
/// What a leader logs once its leading session has claimed its term: from then on it acts.
pub(super) const LEADING: &str = "leading in term";

/// Who watches the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Managers {
    /// One manager with the embedded tower store: the reference's setup.
    One,
    /// Two managers (one per "server") electing their leader through a real single-member etcd
    /// on loopback, which also keeps the agents' vote-state backups. Every manager's pause points
    /// are on (`FAILOVER_PAUSE_POINTS=1`), so a drill can hold it at a step of a switch.
    TwoOverEtcd,
}

/// One manager process of the bed and its files.
pub(super) struct Manager {
    proc: Option<Proc>,
    /// `manager` or `manager-2`: its state dir, and the stem of its config and log names.
    name: String,
    pub(super) cfg: PathBuf,
    /// The running process's log (a restart starts another).
    log: PathBuf,
    starts: u32,
}

impl Manager {
    pub(super) fn state_dir(&self, bed_dir: &Path) -> PathBuf {
        bed_dir.join(&self.name)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }
}

/// Agents, the manager and their instruments on a real cluster.
pub struct Bed {
    pub cluster: RealCluster,
    pub(super) dir: PathBuf,
    agent_bin: PathBuf,
    pub(super) agents: [Option<Proc>; 2],
    agent_starts: u32,
    /// One manager, or two over etcd.
    pub(super) managers: Vec<Manager>,
    /// Which of `managers` leads (the only one with `Managers::One`).
    pub(super) leader: usize,
    /// The etcd the two managers elect through.
    etcd: Option<EtcdServer>,
    pub(super) manager_bin: PathBuf,
    pub(super) inbox: Inbox,
    inbox_task: tokio::task::JoinHandle<()>,
    /// In front of the cluster RPC the manager uses.
    cluster_rpc: CountingProxy,
    /// In front of each node's RPC, as its agent's `local_rpc`.
    local_rpc: [CountingProxy; 2],
    /// The port of each agent's connectivity-check target.
    pub(super) uplinks: [u16; 2],
    /// When a drill last moved X (the manager's cooldown runs from there).
    pub(super) last_switch: Option<Instant>,
    /// Validators that exited on their own between drills, and what the product did about it.
    pub exits: Vec<String>,
    /// Planned switches with `--now` (no wait for a leader gap).
    pub planned_now: bool,
    /// Count X's skipped leader slots around each planned switch (waits ~40 slots per switch).
    pub count_leader_slots: bool,
}

/// CPU and memory of the manager and the agents over a window, and the RPC load they put on the
/// validators.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub secs: f64,
    pub manager_rss_kib: u64,
    pub manager_cpu_pct: f64,
    /// The larger of the two agents.
    pub agent_rss_kib: u64,
    pub agent_cpu_pct: f64,
    /// Requests per second the manager sent to the cluster RPC.
    pub cluster_rpc_per_s: f64,
    /// Requests per second each agent sent to its validator's RPC (the larger of the two).
    pub local_rpc_per_s: f64,
}

/// A reading of our processes and relays at one instant.
pub struct Reading {
    at: Instant,
    /// (rss KiB, utime+stime ticks) of the manager, agent A, agent B.
    procs: [Option<(u64, u64)>; 3],
    cluster_requests: u64,
    local_requests: [u64; 2],
}

/// Waits (at most `within`) until the log at `path` has a line with `needle` after byte `mark`;
/// returns when it was seen.
pub(super) async fn logged(
    path: &Path,
    needle: &str,
    mark: u64,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let log = std::fs::read(path).unwrap_or_default();
        if log
            .get(mark as usize..)
            .is_some_and(|after| String::from_utf8_lossy(after).contains(needle))
        {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {needle:?} within {within:?} in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// RSS (KiB) and CPU time (clock ticks) of a process.
fn proc_usage(pid: Option<u32>) -> Option<(u64, u64)> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

impl Bed {
    /// Starts an agent per failover node and the manager(s).
    pub async fn start(
        cluster: RealCluster,
        dir: &Path,
        managers: Managers,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A fresh bed: state left by a drill on another cluster (terms, towers of another X)
        // would only get in the way.
        for state in ["agent-a", "agent-b", "manager", "manager-2", "etcd"] {
            let _ = std::fs::remove_dir_all(dir.join(state));
        }
        let etcd = match managers {
            Managers::One => None,
            Managers::TwoOverEtcd => Some(EtcdServer::start(&dir.join("etcd")).await?),
        };
        let store = etcd
            .as_ref()
            .map(|e| json!({"kind": "etcd", "endpoints": [e.endpoint()]}));
        let agent_bin = sibling("failover-agent")?;
        let manager_bin = sibling("failover-manager")?;
        let key = Keypair::generate();
        let key_path = dir.join("manager-signing-keypair.json");
        let _ = std::fs::remove_file(&key_path);
        key.write_new_file(&key_path)?;
        // Each agent's connectivity-check target, its "uplink to the outside": kept open for the
        // bed's lifetime; the isolation drill cuts one of them.
        let mut uplinks = [0u16; 2];
        for uplink in &mut uplinks {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            *uplink = listener.local_addr()?.port();
            tokio::spawn(async move {
                loop {
                    let _ = listener.accept().await;
                }
            });
        }
        let cluster_rpc = CountingProxy::start(&cluster.cluster_rpc).await?;
        let local_rpc = [
            CountingProxy::start(&cluster.a.rpc_url).await?,
            CountingProxy::start(&cluster.b.rpc_url).await?,
        ];
        let mut agents = [None, None];
        let mut endpoints = Vec::new();
        for i in 0..2 {
            let node = cluster.node(i).clone();
            let port = free_port().await?;
            let agent = start_agent(
                &agent_bin,
                dir,
                AgentSetup {
                    name: &node.name,
                    host: &node.ip,
                    port,
                    rpc_url: &local_rpc[i].url,
                    process_name: "agave-validator",
                    staked: &cluster.x,
                    ledger: &node.ledger,
                    staked_keypair: &cluster.x_keypair,
                    unstaked_keypair: &node.unstaked_keypair,
                    manager: &key.pubkey(),
                    reachable: &format!("127.0.0.1:{}", uplinks[i]),
                    identity_link: None,
                    tower_store: store.as_ref(),
                },
            )
            .await?;
            agents[i] = Some(agent);
            endpoints.push(format!("http://{}:{port}", node.ip));
        }
        let (inbox_url, inbox, inbox_task) = start_inbox().await?;
        let mut manager_config = json!({
            "validator1": {"endpoint": endpoints[0], "ip": cluster.a.ip},
            "validator2": {"endpoint": endpoints[1], "ip": cluster.b.ip},
            "cluster_rpc": cluster_rpc.url,
            "cluster_ws": cluster.cluster_ws,
            "staked_identity_pubkey": cluster.x.to_string(),
            "vote_account_pubkey": cluster.vote_account.to_string(),
            "signing_keypair_path": key_path,
            "state_dir": dir.join("manager"),
            "failover_cooldown": format!("{}s", COOLDOWN.as_secs()),
            "webhook_url": format!("{inbox_url}/webhook"),
        });
        let names: &[&str] = match (&etcd, &store) {
            (Some(etcd), Some(store)) => {
                manager_config["tower_store"] = store.clone();
                manager_config["election"] = json!({"endpoints": [etcd.endpoint()]});
                &["manager", "manager-2"]
            }
            _ => &["manager"],
        };
        let mut bed = Self {
            cluster,
            dir: dir.to_path_buf(),
            agent_bin,
            agents,
            agent_starts: 1,
            managers: Vec::new(),
            leader: 0,
            etcd,
            manager_bin,
            inbox,
            inbox_task,
            cluster_rpc,
            local_rpc,
            uplinks,
            last_switch: None,
            planned_now: false,
            count_leader_slots: false,
            exits: Vec::new(),
        };
        for name in names {
            let mut config = manager_config.clone();
            config["state_dir"] = json!(dir.join(name));
            let cfg = dir.join(format!("{name}-config.json"));
            std::fs::write(&cfg, serde_json::to_string_pretty(&config)?)?;
            bed.managers.push(Manager {
                proc: None,
                name: name.to_string(),
                cfg,
                log: PathBuf::new(),
                starts: 0,
            });
        }
        // The first leads; the second, started once it does, follows.
        bed.start_manager(0, ELECTED).await?;
        if bed.managers.len() > 1 {
            bed.start_manager(1, FOLLOWING).await?;
        }
        Ok(bed)
    }

    /// Starts manager `i` on its config (its log `NAME.log`, then `NAME.N.log`) and, with two,
    /// waits until it logged `election` (it leads, or it follows).
    pub(super) async fn start_manager(&mut self, i: usize, election: &str) -> anyhow::Result<()> {
        let two = self.managers.len() > 1;
        let m = &mut self.managers[i];
        anyhow::ensure!(m.proc.is_none(), "{} is running", m.name);
        m.starts += 1;
        m.log = if m.starts == 1 {
            self.dir.join(format!("{}.log", m.name))
        } else {
            self.dir.join(format!("{}.{}.log", m.name, m.starts))
        };
        // A drill may hold the manager at a step of a switch (`failover_agent::pause`).
        let env: &[(&str, &str)] = &[("FAILOVER_PAUSE_POINTS", "1")];
        let proc = spawn_with_env(
            "manager",
            &self.manager_bin,
            &["--config", m.cfg.to_str().expect("UTF-8 path")],
            env,
            &m.log,
            "manager running",
        )
        .await?;
        m.proc = Some(proc);
        if two {
            self.manager_logged(i, election, 0, ELECTION_PATIENCE)
                .await
                .map_err(|e| anyhow::anyhow!("{e} after its start"))?;
        }
        Ok(())
    }

    /// The leading manager's config (for one-shot commands such as `--trigger-failover`).
    pub(super) fn manager_cfg(&self) -> &Path {
        &self.managers[self.leader].cfg
    }

    /// Where manager `i`'s log ends now.
    pub(super) fn log_mark_of(&self, i: usize) -> u64 {
        std::fs::metadata(&self.managers[i].log).map_or(0, |m| m.len())
    }

    /// Manager `i`'s current log.
    pub(super) fn manager_log(&self, i: usize) -> PathBuf {
        self.managers[i].log.clone()
    }

    /// Waits (at most `within`) until manager `i`'s log after `mark` has a line with `needle`;
    /// returns when it was seen.
    pub(super) async fn manager_logged(
        &self,
        i: usize,
        needle: &str,
        mark: u64,
        within: Duration,
    ) -> anyhow::Result<Instant> {
        logged(&self.managers[i].log, needle, mark, within).await
    }

    /// `kill -9` of manager `i`.
    pub(super) async fn kill_manager(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.managers[i];
        let proc = m
            .proc
            .take()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", m.name))?;
        proc.kill().await;
        Ok(())
    }

    /// Waits until the manager's cooldown after the last switch has passed, so that it may act
    /// on the next fault (and so that, in the agent drill, its not acting means something).
    pub(super) async fn past_cooldown(&self) {
        if let Some(at) = self.last_switch {
            let until = at + COOLDOWN + Duration::from_secs(1);
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Where the manager's log ends now: [`Bed::manager_held_since`] reads what follows.
    pub(super) fn manager_log_mark(&self) -> u64 {
        self.log_mark_of(self.leader)
    }

    /// The manager's last "not switching" line after `mark` and its last failed switch's error: why
    /// a failover did not come.
    pub(super) fn manager_held_since(&self, mark: u64) -> Option<String> {
        let log = std::fs::read(&self.managers[self.leader].log).ok()?;
        let after = log.get(mark as usize..)?;
        let text = String::from_utf8_lossy(after);
        let last = |needle: &str| {
            text.lines()
                .rev()
                .find(|l| l.contains(needle))
                .map(str::trim)
        };
        // A switch that failed says why (a refused promotion); the holds after it say what then.
        let failed = last(" FAILED ").and_then(|l| l.split_once("error: ").map(|(_, e)| e));
        match (last("not switching"), failed) {
            (Some(hold), Some(e)) => Some(format!("{hold}; last failed switch: {e}")),
            (Some(hold), None) => Some(hold.to_string()),
            (None, Some(e)) => Some(format!("last failed switch: {e}")),
            (None, None) => None,
        }
    }

    /// Whether node `i`'s agent (any of its starts) logged `needle`.
    pub(super) fn agent_logged(&self, i: usize, needle: &str) -> bool {
        let prefix = format!("agent-{}.", self.cluster.node(i).name);
        std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(&prefix)
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle))
            })
        })
    }

    /// Which node holds X now.
    pub async fn active(&self) -> anyhow::Result<usize> {
        for i in 0..2 {
            let client = AdminRpcClient::new(&self.cluster.node(i).admin_socket, Timeouts::LOCAL);
            if client.identity().await.ok() == Some(self.cluster.x) {
                return Ok(i);
            }
        }
        anyhow::bail!("neither A nor B holds X")
    }

    /// `kill -9` of node `i`'s agent.
    pub(super) async fn kill_agent_process(&mut self, i: usize) -> anyhow::Result<()> {
        let agent = self.agents[i].take().ok_or_else(|| {
            anyhow::anyhow!("the agent of {} is not running", self.cluster.node(i).name)
        })?;
        agent.kill().await;
        Ok(())
    }

    /// The largest `fence_after` an agent published to the manager, as the manager persisted it
    /// (what a restarted manager waits for a node it has not heard since its start).
    pub(super) fn persisted_fence_after(&self) -> anyhow::Result<Duration> {
        let path = self.managers[self.leader]
            .state_dir(&self.dir)
            .join("manager-state.json");
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let ms = state["fence_after_ms"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no fence_after_ms in {}", path.display()))?;
        Ok(Duration::from_millis(ms))
    }

    /// `kill -9` of the (leading) manager, then a new one on the same config and state dir (its
    /// log in `manager.N.log`).
    pub(super) async fn restart_manager(&mut self) -> anyhow::Result<()> {
        let _ = self.kill_manager(self.leader).await;
        self.start_manager(self.leader, ELECTED).await
    }

    /// Starts node `i`'s agent again on the config it had.
    pub(super) async fn restart_agent(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.agents[i].is_none(), "that agent is running");
        let name = self.cluster.node(i).name.clone();
        let config = agent_config_path(&self.dir, &name);
        self.agent_starts += 1;
        let log = self
            .dir
            .join(format!("agent-{name}.{}.log", self.agent_starts));
        let agent = spawn(
            "agent",
            &self.agent_bin,
            &["--config", config.to_str().expect("UTF-8 path")],
            &log,
            " listening listen=",
        )
        .await?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Our processes and relays now.
    pub fn reading(&self) -> Reading {
        let pid = |p: &Option<Proc>| p.as_ref().and_then(Proc::pid);
        Reading {
            at: Instant::now(),
            procs: [
                proc_usage(self.managers[self.leader].pid()),
                proc_usage(pid(&self.agents[0])),
                proc_usage(pid(&self.agents[1])),
            ],
            cluster_requests: self.cluster_rpc.requests(),
            local_requests: [self.local_rpc[0].requests(), self.local_rpc[1].requests()],
        }
    }

    /// What happened between `earlier` and now.
    pub fn usage_since(&self, earlier: &Reading) -> Usage {
        let now = self.reading();
        let secs = (now.at - earlier.at).as_secs_f64().max(1e-3);
        // USER_HZ is 100 on Linux.
        let cpu = |i: usize| match (earlier.procs[i], now.procs[i]) {
            (Some((_, a)), Some((_, b))) => b.saturating_sub(a) as f64 / 100.0 / secs * 100.0,
            _ => 0.0,
        };
        let rss = |i: usize| now.procs[i].map_or(0, |(r, _)| r);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        Usage {
            secs: round(secs),
            manager_rss_kib: rss(0),
            manager_cpu_pct: round(cpu(0)),
            agent_rss_kib: rss(1).max(rss(2)),
            agent_cpu_pct: round(cpu(1).max(cpu(2))),
            cluster_rpc_per_s: round(rate(earlier.cluster_requests, now.cluster_requests)),
            local_rpc_per_s: round(
                rate(earlier.local_requests[0], now.local_requests[0])
                    .max(rate(earlier.local_requests[1], now.local_requests[1])),
            ),
        }
    }

    /// The steady state: nothing happening for `window`.
    pub async fn idle(&self, window: Duration) -> Usage {
        let before = self.reading();
        tokio::time::sleep(window).await;
        self.usage_since(&before)
    }

    /// Stops the managers, the agents and etcd (by pid).
    pub async fn stop(mut self) {
        for m in self.managers.iter_mut().filter_map(|m| m.proc.take()) {
            m.stop().await;
        }
        for a in self.agents.iter_mut().filter_map(Option::take) {
            a.stop().await;
        }
        if let Some(etcd) = self.etcd.take() {
            let _ = etcd.stop();
        }
        self.inbox_task.abort();
    }
}
