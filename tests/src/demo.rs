//! The product's main job on loopback: the simulated cluster, a real `failover-agent` process per
//! validator and a real `failover-manager`, with the embedded tower store and the manager's default
//! detection settings. It runs a planned switchover, then an automatic failover after crashing the
//! active, then one after the active stops voting, and prints what happened with timings. With
//! several rounds it is the benchmark of BENCHMARKS.md.
//!
//! The simulator does not link the agent or the manager: it runs their binaries, found next to its
//! own, and stops every process it started by its pid.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::post;
use axum::{Json, Router};
use failover_identity::Keypair;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Fault, SimConfig};

/// How long any step of the demo may take before it is reported as stuck.
const STEP: Duration = Duration::from_secs(90);

/// A process the demo started; SIGTERM by pid when dropped (SIGKILL as the backstop).
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9`, and reaps it.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Spawns `bin args…` with its log in `log`, and waits until a log line contains `ready`.
pub(crate) async fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[&str],
    log: &Path,
    ready: &str,
) -> anyhow::Result<Proc> {
    spawn_with_env(name, bin, args, &[], log, ready).await
}

/// [`spawn`] with `env` added to its environment.
pub(crate) async fn spawn_with_env(
    name: &'static str,
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    ready: &str,
) -> anyhow::Result<Proc> {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut file = tokio::fs::File::create(log).await?;
    let waited = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await? {
            file.write_all(format!("{line}\n").as_bytes()).await?;
            if line.contains(ready) {
                return Ok(true);
            }
        }
        Ok::<_, std::io::Error>(false)
    })
    .await;
    if !matches!(waited, Ok(Ok(true))) {
        anyhow::bail!("{name} did not start; see {}", log.display());
    }
    // Keep writing its log.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = file.write_all(format!("{line}\n").as_bytes()).await;
        }
    });
    Ok(Proc { child })
}

/// What an agent on one validator server needs to know (agave kind, signed commands from the
/// manager's key, loopback only).
pub(crate) struct AgentSetup<'a> {
    pub name: &'a str,
    /// The loopback address it listens on (its "server's" address).
    pub host: &'a str,
    pub port: u16,
    pub rpc_url: &'a str,
    pub process_name: &'a str,
    pub staked: &'a failover_identity::Pubkey,
    pub ledger: &'a Path,
    pub staked_keypair: &'a Path,
    pub unstaked_keypair: &'a Path,
    pub manager: &'a failover_identity::Pubkey,
    /// A reachable loopback address for the connectivity check (so agents never fence by mistake).
    pub reachable: &'a str,
    /// The validator's `--identity` symlink, when the reference's symlink hooks should repoint it.
    pub identity_link: Option<&'a Path>,
    /// Where its vote-state backups go besides its state dir (the agent's `tower_store`).
    pub tower_store: Option<&'a Value>,
}

/// Where `start_agent` writes the config of agent `name`.
pub(crate) fn agent_config_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("validator-config-{name}.json"))
}

/// Writes the agent's config into `dir` and starts `failover-agent` on it.
pub(crate) async fn start_agent(bin: &Path, dir: &Path, a: AgentSetup<'_>) -> anyhow::Result<Proc> {
    let mut config = json!({
        "listen_addr": format!("{}:{}", a.host, a.port),
        "allowed_ips": ["127.0.0.1"],
        "local_rpc": a.rpc_url,
        "process_name": a.process_name,
        "validator_identity": a.staked.to_string(),
        "ledger_path": a.ledger,
        "staked_identity_keypair": a.staked_keypair,
        "unstaked_identity_keypair": a.unstaked_keypair,
        "manager_pubkeys": [a.manager.to_string()],
        "state_dir": dir.join(format!("agent-{}", a.name)),
        "connectivity_targets": [a.reachable],
        "connectivity_failures_to_fence": 1,
    });
    if let Some(link) = a.identity_link {
        // The reference's hooks: a restarted validator comes back with what the link names.
        config["active_identity_symlink_command"] =
            format!("ln -sfn {} {}", a.staked_keypair.display(), link.display()).into();
        config["passive_identity_symlink_command"] = format!(
            "ln -sfn {} {}",
            a.unstaked_keypair.display(),
            link.display()
        )
        .into();
    }
    if let Some(store) = a.tower_store {
        config["tower_store"] = store.clone();
    }
    let path = agent_config_path(dir, a.name);
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let log = dir.join(format!("agent-{}.log", a.name));
    spawn(
        "agent",
        bin,
        &["--config", path.to_str().expect("UTF-8 path")],
        &log,
        " listening listen=",
    )
    .await
}

/// Writes the manager's config into `dir` and starts `failover-manager` on it; returns the process
/// and the config path (for one-shot commands such as `--trigger-failover`).
pub(crate) async fn start_manager(
    bin: &Path,
    dir: &Path,
    config: &Value,
) -> anyhow::Result<(Proc, PathBuf)> {
    let path = dir.join("manager-config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config)?)?;
    let log = dir.join("manager.log");
    let manager = spawn(
        "manager",
        bin,
        &["--config", path.to_str().expect("UTF-8 path")],
        &log,
        "manager running",
    )
    .await?;
    Ok((manager, path))
}

/// A loopback port nothing uses right now (bound and released).
pub(crate) async fn free_port() -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port())
}

/// A binary built next to this one.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace`)",
        path.display()
    );
    Ok(path)
}

/// Timings of one round of the demo.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Round {
    /// Planned switchover: decision → new active confirmed, as the manager measured it.
    pub planned_ms: u64,
    /// Crash of the active → the manager decided (its message minus its own switch time).
    pub crash_detect_ms: u64,
    /// Crash → new active confirmed.
    pub crash_total_ms: u64,
    /// Active stops voting → the manager decided, in slots.
    pub silent_detect_slots: u64,
    /// Active stops voting → new active confirmed.
    pub silent_total_ms: u64,
    /// Slots without a vote around each automatic failover.
    pub crash_vote_gap: u64,
    pub silent_vote_gap: u64,
}

/// The messages the manager sends to its webhook, as they arrive.
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<(Instant, String)>,
}

impl Inbox {
    /// Forgets the messages that arrived so far.
    pub(crate) fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Every message that arrives within `window` (all of it is waited for).
    pub(crate) async fn all_within(&mut self, window: Duration) -> Vec<(Instant, String)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            got.push(msg);
        }
        got
    }

    pub(crate) async fn next_with(&mut self, needle: &str) -> anyhow::Result<(Instant, String)> {
        self.next_with_within(needle, STEP).await
    }

    /// The next message containing `needle`, within `patience` in all (other messages do not
    /// extend it).
    pub(crate) async fn next_with_within(
        &mut self,
        needle: &str,
        patience: Duration,
    ) -> anyhow::Result<(Instant, String)> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no manager message containing {needle:?} within {patience:?}")
                })?
                .ok_or_else(|| anyhow::anyhow!("webhook receiver closed"))?;
            if msg.1.contains(needle) {
                return Ok(msg);
            }
        }
    }
}

pub(crate) async fn start_inbox() -> anyhow::Result<(String, Inbox, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/webhook",
        post(move |Json(body): Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    Instant::now(),
                    body["text"].as_str().unwrap_or_default().to_string(),
                ));
                Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, Inbox { rx }, task))
}

/// "… done in 812 ms …" → 812.
pub(crate) fn switch_ms(message: &str) -> u64 {
    // "… done in N ms", or "… FAILED and ROLLED BACK in N ms".
    message
        .split(" done in ")
        .nth(1)
        .or_else(|| message.split(" ROLLED BACK in ").nth(1))
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the demo in `dir` for `rounds` rounds; prints as it goes.
pub async fn run(
    dir: &Path,
    slot_time: Duration,
    rounds: usize,
    alpenglow: bool,
) -> anyhow::Result<Vec<Round>> {
    let agent_bin = sibling("failover-agent")?;
    let manager_bin = sibling("failover-manager")?;
    let mut sim = if alpenglow {
        SimConfig::alpenglow(dir.join("cluster"))
    } else {
        SimConfig::new(dir.join("cluster"))
    };
    sim.slot_time = slot_time;
    let cluster = Arc::new(Cluster::start(sim).await?);
    let info = cluster.info().clone();
    let (webhook, mut inbox, inbox_task) = start_inbox().await?;
    let manager_key = Keypair::generate();
    let key_path = dir.join("manager-signing-keypair.json");
    manager_key.write_new_file(&key_path)?;

    println!(
        "== a simulated {} cluster (Agave {}, {} ms slots), two agents and the manager on loopback",
        if alpenglow { "Alpenglow" } else { "TowerBFT" },
        cluster.with_world(|w| w.nodes[0].version.clone()),
        slot_time.as_millis()
    );
    let mut agents = Vec::new();
    let mut endpoints = Vec::new();
    for node in info.nodes.iter() {
        let port = free_port().await?;
        let agent = start_agent(
            &agent_bin,
            dir,
            AgentSetup {
                name: &node.name,
                host: "127.0.0.1",
                port,
                rpc_url: &node.rpc_url,
                process_name: &node.process_name,
                staked: &cluster.staked_pubkey(),
                ledger: &node.ledger,
                staked_keypair: &info.staked_keypair,
                unstaked_keypair: &node.unstaked_keypair,
                manager: &manager_key.pubkey(),
                // Loopback only: the reachable target is the demo's own webhook listener.
                reachable: webhook.trim_start_matches("http://"),
                identity_link: Some(&node.identity_link),
                tower_store: None,
            },
        )
        .await?;
        agents.push(agent);
        println!(
            "  {}: agent on 127.0.0.1:{port}, validator rpc {}, log {}",
            node.name,
            node.rpc_url,
            dir.join(format!("agent-{}.log", node.name)).display()
        );
        endpoints.push((format!("http://127.0.0.1:{port}"), node.ip));
    }
    let manager_config = json!({
        "validator1": {"endpoint": endpoints[0].0, "ip": endpoints[0].1.to_string()},
        "validator2": {"endpoint": endpoints[1].0, "ip": endpoints[1].1.to_string()},
        "cluster_rpc": info.rpc_url,
        "cluster_ws": info.pubsub_url,
        "staked_identity_pubkey": info.staked_pubkey,
        "vote_account_pubkey": info.vote_pubkey,
        "signing_keypair_path": key_path,
        "state_dir": dir.join("manager"),
        "webhook_url": format!("{webhook}/webhook"),
        // The demo switches every few seconds; production keeps the 10-minute default.
        "failover_cooldown": "5s",
        // The simulator's staked identity leads one 4-slot window in four: 12-slot gaps.
        "planned_switch_leader_slots": 8,
    });
    let (manager, manager_cfg) = start_manager(&manager_bin, dir, &manager_config).await?;
    let manager_log = dir.join("manager.log");
    println!(
        "  manager: heartbeat 1 s (default), log {}",
        manager_log.display()
    );

    let staked = cluster.staked_pubkey();
    let active = || (0..2).find(|&i| cluster.identity(i) == Some(staked));
    // Votes as cast (the recorder sees each): under Alpenglow the vote account learns of a vote
    // only with its certificate, slots later, which is no part of the switch.
    let last_cast = || cluster.with_world(|w| w.safety.last_vote_cast().unwrap_or(0));
    let wait_voting = |i: usize, after: u64| {
        let cluster = cluster.clone();
        async move {
            cluster
                .wait_until(STEP, |w| {
                    w.holders(&staked) == vec![i] && w.safety.first_vote_after(i, after).is_some()
                })
                .await
        }
    };
    let slot_ms = slot_time.as_millis() as u64;
    let mut results = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("\n== round {round} of {rounds}");
        }
        // Planned switchover.
        let from = active().context("nobody active")?;
        cluster.wait_for_slot(cluster.slot() + 3, STEP).await?;
        let before = last_cast();
        let out = Command::new(&manager_bin)
            .args([
                "--config",
                manager_cfg.to_str().unwrap(),
                "--trigger-failover",
                "--reason",
                "demo: planned switchover",
            ])
            .output()
            .await?;
        let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        anyhow::ensure!(
            out.status.success(),
            "planned switchover failed: {summary} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_voting(1 - from, before).await?;
        println!("\n-- planned switchover\n{summary}");
        let planned_ms = switch_ms(&summary);

        // Crash the active validator.
        let from = 1 - from;
        inbox.next_with("Failover complete").await?;
        cluster
            .wait_for_slot(cluster.slot() + (5_000 / slot_ms.max(1)) + 3, STEP)
            .await?; // past the cooldown
        let crashed = Instant::now();
        cluster.fault(from, Fault::Crash).await?;
        let last_vote = last_cast();
        let (at, message) = inbox.next_with("Failover complete").await?;
        wait_voting(1 - from, last_vote).await?;
        let crash_total_ms = crashed.elapsed().as_millis() as u64;
        let crash_detect_ms = (at - crashed).as_millis() as u64
            - switch_ms(&message).min((at - crashed).as_millis() as u64);
        let crash_vote_gap = first_vote_after(&cluster, 1 - from, last_vote).await? - last_vote - 1;
        println!("\n-- crash of {}: detected in {crash_detect_ms} ms, new active voting {crash_total_ms} ms after the crash, vote gap {crash_vote_gap} slots\n{message}", info.nodes[from].name);
        cluster
            .fault(from, Fault::Restart { startup_slots: 2 })
            .await?;

        // The active stops voting but stays up.
        let from = 1 - from;
        cluster
            .wait_for_slot(cluster.slot() + (5_000 / slot_ms.max(1)) + 3, STEP)
            .await?;
        cluster
            .wait_until(STEP, |w| w.nodes[1 - from].faults.starting_until.is_none())
            .await?;
        let silent_slot = cluster.slot();
        let silenced = Instant::now();
        cluster.fault(from, Fault::StopVoting).await?;
        let last_vote = last_cast();
        let (at, message) = inbox.next_with("Failover complete").await?;
        wait_voting(1 - from, last_vote).await?;
        let silent_total_ms = silenced.elapsed().as_millis() as u64;
        let decided_after = (at - silenced).as_millis() as u64
            - switch_ms(&message).min((at - silenced).as_millis() as u64);
        let silent_detect_slots = decided_after / slot_ms.max(1);
        let silent_vote_gap =
            first_vote_after(&cluster, 1 - from, last_vote).await? - last_vote - 1;
        println!("\n-- {} stops voting at slot {silent_slot}: detected after {silent_detect_slots} slots, new active voting {silent_total_ms} ms later, vote gap {silent_vote_gap} slots\n{message}", info.nodes[from].name);
        cluster.fault(from, Fault::ResumeVoting).await?;
        cluster
            .wait_for_slot(cluster.slot() + (5_000 / slot_ms.max(1)) + 3, STEP)
            .await?;

        results.push(Round {
            planned_ms,
            crash_detect_ms,
            crash_total_ms,
            silent_detect_slots,
            silent_total_ms,
            crash_vote_gap,
            silent_vote_gap,
        });
    }

    let safety = cluster.safety();
    println!(
        "\n== safety: staked identity on two nodes: {}; two votes in one slot: {}; {} went backwards: {}",
        yes_no(safety.staked_held_twice),
        yes_no(safety.double_votes),
        if alpenglow { "vote history" } else { "tower" },
        yes_no(safety.tower_went_backwards)
    );
    manager.stop().await;
    for agent in agents {
        agent.stop().await;
    }
    inbox_task.abort();
    cluster.shutdown();
    anyhow::ensure!(
        safety.violations.is_empty(),
        "safety violated: {:?}",
        safety.violations
    );
    Ok(results)
}

/// The first slot node `i` voted on after `after` (as cast; the recorder sees every vote).
async fn first_vote_after(cluster: &Cluster, i: usize, after: u64) -> anyhow::Result<u64> {
    cluster
        .wait_until(STEP, |w| w.safety.first_vote_after(i, after).is_some())
        .await?;
    Ok(cluster
        .with_world(|w| w.safety.first_vote_after(i, after))
        .unwrap_or(after + 1))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "YES"
    } else {
        "never"
    }
}
