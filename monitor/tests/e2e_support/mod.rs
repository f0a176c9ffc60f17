//! The whole system on loopback for the manager's tests: a simulated cluster, a real
//! `failover-agent` process per validator (stopped by pid), the manager in-process, and a
//! loopback receiver playing Telegram's Bot API and a webhook.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use failover_identity::Keypair;
use failover_sim::{Cluster, SimConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const PATIENCE: Duration = Duration::from_secs(30);
pub const BOT_TOKEN: &str = "123456:test-token-never-logged";

/// A binary built next to these tests (`cargo test --workspace` builds every binary).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Messages the receiver got: (path, text).
#[derive(Clone, Default)]
pub struct Inbox {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

pub struct Receiver {
    pub url: String,
    pub inbox: Inbox,
    rx: mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a loopback server that records every POSTed message (Telegram `sendMessage` and
    /// the webhook alike).
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = Inbox::default();
        let app = Router::new()
            .fallback(post(record))
            .with_state((tx, inbox.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            inbox,
            rx,
            task,
        }
    }

    /// Waits for the next message whose text contains `needle`.
    pub async fn wait_for(&mut self, needle: &str) -> (String, String) {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no message containing {needle:?}; got {:?}",
                        self.inbox.all()
                    )
                })
                .expect("receiver open");
            if msg.1.contains(needle) {
                return msg;
            }
        }
    }
}

impl Inbox {
    pub fn all(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.all()
            .iter()
            .filter(|(_, t)| t.contains(needle))
            .count()
    }

    /// How many different messages contain `needle` (Telegram and the webhook get the same
    /// ones, in either order).
    pub fn messages(&self, needle: &str) -> usize {
        let texts: std::collections::BTreeSet<String> = self
            .all()
            .into_iter()
            .filter(|(_, t)| t.contains(needle))
            .map(|(_, t)| t)
            .collect();
        texts.len()
    }
}

async fn record(
    State((tx, inbox)): State<(mpsc::UnboundedSender<(String, String)>, Inbox)>,
    uri: axum::http::Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let path = uri.path().to_string();
    inbox
        .seen
        .lock()
        .unwrap()
        .push((path.clone(), text.clone()));
    let _ = tx.send((path, text));
    Json(json!({"ok": true, "result": {}}))
}

/// A running `failover-agent` process.
pub struct AgentProcess {
    pub child: Child,
    pub url: String,
    /// Every line it logged after start-up.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    /// SIGKILL by pid, as a crash of the agent would be.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// A failing test shows what each agent logged: its fence and switch decisions are half the story.
impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "--- agent {} logged {} lines; the last 40:",
                self.url,
                log.len()
            );
            for line in log.iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub struct System {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub manager_key: PathBuf,
    pub manager_pubkey: String,
    pub agents: Vec<AgentProcess>,
    pub receiver: Receiver,
    /// The manager config (JSON), editable before starting the manager.
    pub manager_config: Value,
    /// The real etcd of the etcd tower store ([`etcd_system`]), stopped when dropped.
    pub etcd: Option<(failover_sim::etcd::EtcdServer, tempfile::TempDir)>,
}

pub async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Starts the cluster and both agents; `agent_edit` changes each agent's config.
pub async fn system(agent_edit: impl Fn(usize, &mut Value)) -> System {
    system_on(SimConfig::new, agent_edit).await
}

/// [`system`] with the etcd tower store on both agents and the manager: a real single-member
/// etcd on loopback.
pub async fn etcd_system() -> System {
    let dir = tempfile::tempdir().unwrap();
    let etcd = failover_sim::etcd::EtcdServer::start(dir.path())
        .await
        .unwrap();
    let store = json!({"kind": "etcd", "endpoints": [etcd.endpoint()], "dial_timeout": "1s"});
    let mut sys = system(|_, config| config["tower_store"] = store.clone()).await;
    sys.manager_config["tower_store"] = store;
    sys.etcd = Some((etcd, dir));
    sys
}

/// [`system`] with `nodes` validators, given to the manager as a `validators` list.
pub async fn system_of(nodes: usize) -> System {
    system_on(
        |dir| SimConfig {
            nodes,
            ..SimConfig::new(dir)
        },
        |_, _| {},
    )
    .await
}

/// [`system`] on an Alpenglow cluster.
pub async fn alpenglow_system(agent_edit: impl Fn(usize, &mut Value)) -> System {
    system_on(SimConfig::alpenglow, agent_edit).await
}

/// [`system`] on the cluster `make` describes (given its directory); 100 ms slots.
pub async fn system_on(
    make: impl FnOnce(PathBuf) -> SimConfig,
    agent_edit: impl Fn(usize, &mut Value),
) -> System {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = make(dir.path().join("cluster"));
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    let info = cluster.info().clone();
    let manager = Keypair::generate();
    let manager_key = dir.path().join("manager-signing.json");
    manager.write_new_file(&manager_key).unwrap();
    let receiver = Receiver::start().await;

    let mut agents = Vec::new();
    let mut endpoints = Vec::new();
    for (i, node) in info.nodes.iter().enumerate() {
        let port = free_port().await;
        let mut config = json!({
            "listen_addr": format!("127.0.0.1:{port}"),
            "allowed_ips": ["127.0.0.1"],
            "local_rpc": node.rpc_url,
            "process_name": node.process_name,
            "manager_timeout": "1s",
            "validator_identity": info.staked_pubkey,
            "ledger_path": node.ledger,
            "staked_identity_keypair": info.staked_keypair,
            "unstaked_identity_keypair": node.unstaked_keypair,
            // The reference's hooks: a restarted validator comes back with what the link names.
            "active_identity_symlink_command": format!("ln -sfn {} {}", info.staked_keypair.display(), node.identity_link.display()),
            "passive_identity_symlink_command": format!("ln -sfn {} {}", node.unstaked_keypair.display(), node.identity_link.display()),
            "manager_pubkeys": [manager.pubkey().to_string()],
            "state_dir": dir.path().join(format!("agent{}", i + 1)),
            "connectivity_targets": [receiver.url.trim_start_matches("http://")],
            "connectivity_failures_to_fence": 1,
            "connectivity_timeout": "200ms",
        });
        agent_edit(i, &mut config);
        let path = dir.path().join(format!("validator-config-{}.json", i + 1));
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        agents.push(spawn_agent(&path, url.clone()).await);
        endpoints.push((url, node.ip));
    }
    let mut manager_config = json!({
        "cluster_rpc": info.rpc_url,
        "cluster_ws": info.pubsub_url,
        "heartbeat_interval": "200ms",
        "misses_before_failover": 3,
        "request_timeout": "1s",
        "slot_diff_threshold": 100,
        "stale_vote_slot_threshold": 8,
        "staked_identity_pubkey": info.staked_pubkey,
        "vote_account_pubkey": info.vote_pubkey,
        "signing_keypair_path": manager_key,
        "state_dir": dir.path().join("manager"),
        "failover_cooldown": "1m",
        // The simulator's staked identity leads one 4-slot window in four: 12-slot gaps.
        "planned_switch_leader_slots": 8,
        "fence_margin": "500ms",
        "telegram_bot_token": BOT_TOKEN,
        "telegram_chat_id": "-1001234567890",
        "telegram_api_base": receiver.url,
        "webhook_url": format!("{}/webhook", receiver.url),
    });
    // A pair in the reference's form (`validator1`, `validator2`); more nodes as a `validators`
    // list in priority order.
    let nodes: Vec<Value> = endpoints
        .iter()
        .map(|(url, ip)| json!({"endpoint": url, "ip": ip.to_string()}))
        .collect();
    if let [first, second] = &nodes[..] {
        manager_config["validator1"] = first.clone();
        manager_config["validator2"] = second.clone();
    } else {
        manager_config["validators"] = Value::Array(nodes);
    }
    System {
        cluster,
        manager_pubkey: manager.pubkey().to_string(),
        dir,
        manager_key,
        agents,
        receiver,
        manager_config,
        etcd: None,
    }
}

/// Starts `failover-agent --config path` and waits until it listens.
pub async fn spawn_agent(config: &Path, url: String) -> AgentProcess {
    let mut child = Command::new(binary("failover-agent"))
        .arg("--config")
        .arg(config)
        .env(failover_agent::pause::ENV, "1")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("agent start-up")
            .unwrap()
            .expect("agent exited during start-up");
        // Text (`listening listen=…`) or JSON (`"message":"listening"`) logs.
        if line.contains(" listening listen=") || line.contains(r#""message":"listening""#) {
            break;
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    AgentProcess { child, url, log }
}

/// The manager running in-process until dropped.
pub struct RunningManager {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub state_dir: PathBuf,
}

impl RunningManager {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl System {
    pub fn manager_cfg(&self) -> failover_config::ManagerConfig {
        let path = self.dir.path().join("manager-config.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&self.manager_config).unwrap(),
        )
        .unwrap();
        failover_config::load_manager(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Signs as the manager does, with its key.
    pub fn signer(&self) -> failover_agent::CommandSigner {
        let key =
            Keypair::read_file(&self.manager_key, failover_identity::Permissions::Strict).unwrap();
        failover_agent::CommandSigner {
            key: Arc::new(key),
            staked: self.cluster.staked_pubkey(),
        }
    }

    /// A client for agent `i`, signing as the manager.
    pub fn agent_client(&self, i: usize) -> failover_agent::AgentClient {
        failover_agent::AgentClient::new(&self.agents[i].url, Some(self.signer()), PATIENCE)
    }

    /// Starts the manager's control loop in the background and waits until it is ready.
    pub async fn start_manager(&self) -> RunningManager {
        // The manager's log, shown by the test harness for a test that fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_target(false)
            .try_init();
        let cfg = self.manager_cfg();
        let state_dir = cfg.state_dir.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(failover_monitor::manager::run_with(
            cfg,
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready.send(());
            },
        ));
        tokio::time::timeout(PATIENCE, is_ready)
            .await
            .expect("the manager started")
            .expect("the manager started");
        RunningManager {
            stop: Some(stop),
            task,
            state_dir,
        }
    }

    /// Arms pause point `name` of agent `i` (`failover_agent::pause`).
    pub fn pause_point(&self, i: usize, name: &str) -> failover_sim::pause::PausePoint {
        let state_dir = self.dir.path().join(format!("agent{}", i + 1));
        failover_sim::pause::PausePoint::arm(&failover_agent::pause::dir(&state_dir), name).unwrap()
    }

    pub fn staked(&self) -> failover_identity::Pubkey {
        self.cluster.staked_pubkey()
    }

    /// Waits until node `i` holds the staked identity and votes land from it.
    pub async fn wait_active(&self, i: usize) {
        let staked = self.staked();
        self.cluster
            .wait_until(PATIENCE, |w| {
                w.holders(&staked) == vec![i] && w.vote.last_voter == Some(i)
            })
            .await
            .unwrap_or_else(|e| panic!("node {} never became the voting active: {e}", i + 1));
    }

    /// Waits `slots` slots (an event of the simulated cluster, not a sleep).
    pub async fn slots(&self, slots: u64) {
        let now = self.cluster.slot();
        self.cluster
            .wait_for_slot(now + slots, PATIENCE)
            .await
            .unwrap();
    }
}

/// Asks the manager running on `state_dir` for a planned switch that does not wait for a leader
/// gap (`--trigger-failover --now`) and returns its outcome once it succeeded.
pub async fn switch_now(state_dir: &Path, reason: &str) -> failover_monitor::switch::Outcome {
    let request = failover_monitor::control::ControlRequest::Trigger {
        to: None,
        reason: reason.into(),
        force: false,
        dry_run: false,
        now: true,
    };
    let outcome = failover_monitor::control::ask_running(state_dir, &request)
        .await
        .expect("a running manager")
        .expect("the switch ran");
    assert!(outcome.ok, "{}", outcome.summary());
    outcome
}

/// A real `failover-manager` process, stopped by its pid when dropped.
pub struct ManagerProcess {
    pub child: Child,
    pub config: PathBuf,
    /// Every line it logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ManagerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends `signal` (e.g. `-TERM`) to the process by its pid.
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.times_logged(needle) > 0
    }

    /// How many lines so far contain `needle`.
    pub fn times_logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (at most `within`) until the manager has logged `needle` `times` times in all.
    pub async fn wait_logged(&self, needle: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.times_logged(needle) < times {
            assert!(
                Instant::now() < deadline,
                "the manager did not log {needle:?} {times} times within {within:?}; its log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl System {
    /// Writes the manager config and starts `failover-manager --config` on it under `sh -c
    /// "<prefix>; exec …"` (e.g. `umask 000`); waits until its control socket is up.
    pub async fn spawn_manager(&self, prefix: &str) -> ManagerProcess {
        self.spawn_manager_with(&self.manager_config, "manager-config.json", prefix)
            .await
    }

    /// [`System::spawn_manager`] with `config`, written to `file` in the test's directory (one
    /// of several managers).
    pub async fn spawn_manager_with(
        &self,
        config: &Value,
        file: &str,
        prefix: &str,
    ) -> ManagerProcess {
        let config_value = config;
        let config = self.dir.path().join(file);
        std::fs::write(&config, serde_json::to_string_pretty(config_value).unwrap()).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{prefix}\nexec \"$0\" --config \"$1\""))
            .arg(binary("failover-manager"))
            .arg(&config)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = tokio::time::timeout(PATIENCE, lines.next_line())
                .await
                .expect("manager start-up")
                .unwrap()
                .unwrap_or_else(|| panic!("manager exited during start-up: {:?}", log));
            log.lock().unwrap().push(line.clone());
            if line.contains("manager running") {
                break;
            }
        }
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().unwrap().push(line);
            }
        });
        ManagerProcess { child, config, log }
    }

    pub fn manager_state_dir(&self) -> PathBuf {
        PathBuf::from(self.manager_config["state_dir"].as_str().unwrap())
    }
}
