//! Drills against REAL Agave validators (started by `scripts/agave/cluster.sh`): real
//! `failover-agent` processes on nodes A and B and a real `failover-manager`, and a safety sampler
//! that reads both validators' identity through their admin RPC every 25 ms, the vote account of X
//! from the network node every 100 ms, and the X tower file on both ledgers.
//!
//! Asserted in every drill: X is never held by both nodes at any sampled instant; the last-vote slot
//! of X's tower never goes backwards (wherever the tower lives); X's votes resume from the new node.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use failover_identity::tower::{tower_path, TowerFile};
use failover_identity::{AdminRpcClient, Keypair, Pubkey, Timeouts};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::demo::{free_port, sibling, start_agent, start_manager, AgentSetup, Proc};

/// One node of the real cluster, as `cluster.json` describes it.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub name: String,
    pub rpc_url: String,
    pub ledger: PathBuf,
    pub admin_socket: PathBuf,
    pub unstaked_keypair: PathBuf,
    pub pid: Option<u32>,
}

/// The real cluster.
#[derive(Clone, Debug)]
pub struct RealCluster {
    pub cluster_rpc: String,
    pub cluster_ws: String,
    pub x_keypair: PathBuf,
    pub x: Pubkey,
    pub vote_account: Pubkey,
    pub a: RealNode,
    pub b: RealNode,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> anyhow::Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .with_context(|| format!("cluster.json has no {}", path.join(".")))?;
    }
    Ok(cur)
}

fn text(v: &Value, path: &[&str]) -> anyhow::Result<String> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("cluster.json: {} is not a string", path.join(".")))
}

impl RealCluster {
    /// Reads the cluster description the cluster script writes.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let node = |name: &str| -> anyhow::Result<RealNode> {
            let n = field(&v, &["nodes", name])?;
            let ledger = PathBuf::from(text(n, &["ledger"])?);
            Ok(RealNode {
                name: name.to_string(),
                rpc_url: text(n, &["rpc_url"])?,
                admin_socket: n
                    .get("admin_socket")
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| ledger.join("admin.rpc")),
                unstaked_keypair: PathBuf::from(text(
                    &v,
                    &[&format!("{name}_unstaked"), "keypair"],
                )?),
                pid: n.get("pid").and_then(Value::as_u64).map(|p| p as u32),
                ledger,
            })
        };
        let rpc = text(&v, &["cluster_rpc"])?;
        let ws = v
            .get("cluster_pubsub")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| ws_of(&rpc));
        Ok(Self {
            cluster_rpc: rpc,
            cluster_ws: ws,
            x_keypair: PathBuf::from(text(&v, &["x", "keypair"])?),
            x: text(&v, &["x", "pubkey"])?.parse()?,
            vote_account: text(&v, &["x", "vote_pubkey"])?.parse()?,
            a: node("a")?,
            b: node("b")?,
        })
    }

    pub fn node(&self, i: usize) -> &RealNode {
        if i == 0 {
            &self.a
        } else {
            &self.b
        }
    }
}

/// Agave's pubsub is on the RPC port + 1.
fn ws_of(rpc: &str) -> String {
    let url: url_lite::Url = rpc.into();
    format!("ws://{}:{}", url.host, url.port + 1)
}

mod url_lite {
    pub struct Url {
        pub host: String,
        pub port: u16,
    }

    impl From<&str> for Url {
        fn from(s: &str) -> Self {
            let rest = s.split("://").nth(1).unwrap_or(s).trim_end_matches('/');
            let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "80"));
            Url {
                host: host.to_string(),
                port: port.parse().unwrap_or(80),
            }
        }
    }
}

/// What the sampler saw.
#[derive(Default, Debug)]
struct Samples {
    /// (when, node, holds X)
    identities: Vec<(Instant, usize, bool)>,
    both_held: u32,
    /// (when, lastVote of X's vote account)
    votes: Vec<(Instant, u64)>,
    /// (when, node, tower last vote)
    towers: Vec<(Instant, usize, u64)>,
    tower_backwards: Vec<String>,
}

/// Samples both validators and the vote account until stopped.
struct Sampler {
    samples: Arc<Mutex<Samples>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    fn start(cluster: &RealCluster) -> Self {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let mut tasks = Vec::new();
        // Identities, both nodes in the same tick, every 25 ms.
        {
            let samples = samples.clone();
            let x = cluster.x;
            let clients = [
                cluster.a.admin_socket.clone(),
                cluster.b.admin_socket.clone(),
            ]
            .map(|s| {
                AdminRpcClient::new(
                    s,
                    Timeouts {
                        connect: Duration::from_millis(200),
                        call: Duration::from_millis(500),
                    },
                )
            });
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                loop {
                    tick.tick().await;
                    let (a, b) = tokio::join!(clients[0].identity(), clients[1].identity());
                    let now = Instant::now();
                    let held = [
                        a.map(|i| i == x).unwrap_or(false),
                        b.map(|i| i == x).unwrap_or(false),
                    ];
                    let mut s = samples.lock().expect("samples");
                    for (i, h) in held.iter().enumerate() {
                        s.identities.push((now, i, *h));
                    }
                    if held[0] && held[1] {
                        s.both_held += 1;
                    }
                }
            }));
        }
        // X's last vote from the network node, every 100 ms.
        {
            let samples = samples.clone();
            let rpc = cluster.cluster_rpc.clone();
            let vote = cluster.vote_account.to_string();
            tasks.push(tokio::spawn(async move {
                let client = rpc_lite::Client::new(&rpc);
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    if let Some(last) = client.last_vote(&vote).await {
                        samples
                            .lock()
                            .expect("samples")
                            .votes
                            .push((Instant::now(), last));
                    }
                }
            }));
        }
        // X's tower on both ledgers, every 25 ms: its last vote must never go backwards.
        {
            let samples = samples.clone();
            let paths = [
                tower_path(&cluster.a.ledger, &cluster.x),
                tower_path(&cluster.b.ledger, &cluster.x),
            ];
            let x = cluster.x;
            tasks.push(tokio::spawn(async move {
                let mut newest = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                loop {
                    tick.tick().await;
                    for (i, path) in paths.iter().enumerate() {
                        let Ok(file) = TowerFile::read(path) else {
                            continue;
                        };
                        if file.verify(&x).is_err() {
                            continue;
                        }
                        let Some(last) = file.tower.last_voted_slot() else {
                            continue;
                        };
                        let mut s = samples.lock().expect("samples");
                        if last < newest {
                            let msg = format!(
                                "node {} tower last vote {last} after {newest} was seen",
                                i + 1
                            );
                            if !s.tower_backwards.contains(&msg) {
                                s.tower_backwards.push(msg);
                            }
                        }
                        newest = newest.max(last);
                        s.towers.push((Instant::now(), i, last));
                    }
                }
            }));
        }
        Self { samples, tasks }
    }

    fn stop(self) -> Samples {
        for t in &self.tasks {
            t.abort();
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// The one JSON-RPC call the sampler makes (`getVoteAccounts` at processed), over a plain
/// HTTP/1.1 connection: this crate links no HTTP client.
mod rpc_lite {
    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        addr: String,
    }

    impl Client {
        pub fn new(url: &str) -> Self {
            Self {
                addr: url
                    .split("://")
                    .nth(1)
                    .unwrap_or(url)
                    .trim_end_matches('/')
                    .to_string(),
            }
        }

        pub async fn last_vote(&self, vote: &str) -> Option<u64> {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "getVoteAccounts",
                "params": [{"votePubkey": vote, "commitment": "processed", "keepUnstakedDelinquents": true}]})
            .to_string();
            let mut stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
            let request = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            let (_, body) = response.split_once("\r\n\r\n")?;
            let v: Value = serde_json::from_str(body.trim()).ok()?;
            let result = &v["result"];
            result["current"]
                .as_array()?
                .iter()
                .chain(result["delinquent"].as_array()?.iter())
                .find(|a| a["votePubkey"] == vote)?["lastVote"]
                .as_u64()
        }
    }
}

/// The figures of one drill run.
#[derive(Clone, Debug, Serialize)]
pub struct DrillRun {
    pub drill: String,
    pub ok: bool,
    /// The manager's switch summary line (phases and decision → confirmed).
    pub summary: String,
    pub switch_ms: u64,
    /// Fault (or trigger) → X voting again from the other node.
    pub recovery_ms: u64,
    pub vote_gap_slots: u64,
    pub both_held_samples: u32,
    pub tower_backwards: Vec<String>,
    pub identity_samples: usize,
}

/// Agents, the manager and the sampler on a real cluster.
pub struct Bed {
    pub cluster: RealCluster,
    agents: Vec<Option<Proc>>,
    manager: Option<Proc>,
    manager_cfg: PathBuf,
    manager_bin: PathBuf,
}

impl Bed {
    /// Starts an agent per failover node and the manager.
    pub async fn start(cluster: RealCluster, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let agent_bin = sibling("failover-agent")?;
        let manager_bin = sibling("failover-manager")?;
        let key = Keypair::generate();
        let key_path = dir.join("manager-signing-keypair.json");
        let _ = std::fs::remove_file(&key_path);
        key.write_new_file(&key_path)?;
        let reachable = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let reachable_addr = reachable.local_addr()?.to_string();
        // Kept open for the bed's lifetime: the agents' connectivity check target.
        tokio::spawn(async move {
            loop {
                let _ = reachable.accept().await;
            }
        });
        let mut agents = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..2 {
            let node = cluster.node(i).clone();
            let port = free_port().await?;
            let agent = start_agent(
                &agent_bin,
                dir,
                AgentSetup {
                    name: &node.name,
                    port,
                    rpc_url: &node.rpc_url,
                    process_name: "agave-validator",
                    staked: &cluster.x,
                    ledger: &node.ledger,
                    staked_keypair: &cluster.x_keypair,
                    unstaked_keypair: &node.unstaked_keypair,
                    manager: &key.pubkey(),
                    reachable: &reachable_addr,
                    identity_link: None,
                },
            )
            .await?;
            agents.push(Some(agent));
            endpoints.push(format!("http://127.0.0.1:{port}"));
        }
        // Both validators gossip from 127.0.0.1 on this loopback cluster; the manager tells them
        // apart by their agents, and gossip confirmation compares addresses.
        let manager_config = json!({
            "validator1": {"endpoint": endpoints[0], "ip": "127.0.0.1"},
            "validator2": {"endpoint": endpoints[1], "ip": "127.0.0.2"},
            "cluster_rpc": cluster.cluster_rpc,
            "cluster_ws": cluster.cluster_ws,
            "staked_identity_pubkey": cluster.x.to_string(),
            "vote_account_pubkey": cluster.vote_account.to_string(),
            "signing_keypair_path": key_path,
            "state_dir": dir.join("manager"),
            "failover_cooldown": "5s",
        });
        let (manager, manager_cfg) = start_manager(&manager_bin, dir, &manager_config).await?;
        Ok(Self {
            cluster,
            agents,
            manager: Some(manager),
            manager_cfg,
            manager_bin,
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

    /// A planned switchover through `failover-manager --trigger-failover`, measured.
    pub async fn planned(&mut self) -> anyhow::Result<DrillRun> {
        let from = self.active().await?;
        let sampler = Sampler::start(&self.cluster);
        tokio::time::sleep(Duration::from_secs(2)).await; // a baseline of samples before the switch
        let started = Instant::now();
        let out = Command::new(&self.manager_bin)
            .args([
                "--config",
                self.manager_cfg.to_str().unwrap(),
                "--trigger-failover",
                "--reason",
                "drill: planned switchover",
            ])
            .output()
            .await?;
        let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = out.status.success();
        let recovered = self
            .wait_votes_from(1 - from, started, Duration::from_secs(60))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let samples = sampler.stop();
        Ok(self.run_report(
            "planned",
            ok && recovered.is_some(),
            summary,
            started,
            recovered,
            samples,
        ))
    }

    /// Waits until the other node holds X and the vote account advanced after `since`.
    async fn wait_votes_from(
        &self,
        node: usize,
        since: Instant,
        patience: Duration,
    ) -> Option<Instant> {
        let client = AdminRpcClient::new(&self.cluster.node(node).admin_socket, Timeouts::LOCAL);
        let votes = rpc_lite::Client::new(&self.cluster.cluster_rpc);
        let vote = self.cluster.vote_account.to_string();
        let mut holds_since: Option<u64> = None;
        while since.elapsed() < patience {
            if client.identity().await.ok() == Some(self.cluster.x) {
                let last = votes.last_vote(&vote).await;
                match (holds_since, last) {
                    (None, Some(l)) => holds_since = Some(l),
                    (Some(h), Some(l)) if l > h => return Some(Instant::now()),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn run_report(
        &self,
        drill: &str,
        ok: bool,
        summary: String,
        started: Instant,
        recovered: Option<Instant>,
        samples: Samples,
    ) -> DrillRun {
        let gap = samples
            .votes
            .windows(2)
            .filter(|w| w[1].0 >= started)
            .map(|w| w[1].1.saturating_sub(w[0].1).saturating_sub(1))
            .max()
            .unwrap_or(0);
        let switch_ms = summary
            .split(" in ")
            .nth(1)
            .and_then(|r| r.split(" ms").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        DrillRun {
            drill: drill.into(),
            ok: ok && samples.both_held == 0 && samples.tower_backwards.is_empty(),
            summary,
            switch_ms,
            recovery_ms: recovered
                .map(|r| (r - started).as_millis() as u64)
                .unwrap_or(0),
            vote_gap_slots: gap,
            both_held_samples: samples.both_held,
            tower_backwards: samples.tower_backwards,
            identity_samples: samples.identities.len(),
        }
    }

    /// Stops the manager and the agents (by pid).
    pub async fn stop(mut self) {
        if let Some(m) = self.manager.take() {
            m.stop().await;
        }
        for a in self.agents.iter_mut().filter_map(Option::take) {
            a.stop().await;
        }
    }
}
