//! Drills against REAL Agave validators (started by `scripts/agave/cluster.sh`), under TowerBFT or
//! Alpenglow: real `failover-agent` processes on nodes A and B and a real `failover-manager`, and a
//! safety sampler that reads both validators' identity through their admin RPC every 25 ms, the vote
//! account of X from the network node every 100 ms, and X's vote-state file (tower or vote history)
//! on both ledgers every 25 ms.
//!
//! Asserted in every drill: X is never held by both nodes at any sampled instant; the newest slot
//! X's vote state has voted on never goes backwards (wherever the file lives); under Alpenglow, no
//! two of X's votes for one slot disagree across the two nodes; X's votes resume from the new node.

mod bed;
mod drills;
mod firewall;
mod leaders;
mod mid_switch;
mod proxy;
mod sampler;

pub use bed::{Bed, Managers, Usage};
pub use drills::DrillRun;

/// Whether the isolation drill can run here (nftables on loopback); why not otherwise.
pub fn isolation_available() -> Result<(), String> {
    firewall::Isolation::available()
}

use std::path::{Path, PathBuf};

use anyhow::Context;
use failover_identity::{Pubkey, VoteStateKind};
use serde_json::Value;

/// One node of the real cluster, as `cluster.json` describes it.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub name: String,
    /// The address it gossips from.
    pub ip: String,
    pub rpc_url: String,
    pub ledger: PathBuf,
    pub admin_socket: PathBuf,
    pub unstaked_keypair: PathBuf,
}

/// The real cluster.
#[derive(Clone, Debug)]
pub struct RealCluster {
    /// `scripts/agave/cluster.sh`, which stops and restarts nodes for the drills.
    pub script: PathBuf,
    /// The cluster directory (`--dir` of the script).
    pub dir: PathBuf,
    pub cluster_rpc: String,
    pub cluster_ws: String,
    pub x_keypair: PathBuf,
    pub x: Pubkey,
    pub vote_account: Pubkey,
    /// The Agave version the nodes run.
    pub version: String,
    /// Which file X's vote state lives in: the cluster's consensus decides.
    pub kind: VoteStateKind,
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
                // Clusters written before nodes had their own addresses all used 127.0.0.1.
                ip: n
                    .get("ip")
                    .and_then(Value::as_str)
                    .unwrap_or("127.0.0.1")
                    .to_string(),
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
                ledger,
            })
        };
        let rpc = text(&v, &["cluster_rpc"])?;
        let ws = v
            .get("cluster_pubsub")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| ws_of(&rpc));
        // Clusters written before the script knew Alpenglow were all 3.1.12 under TowerBFT.
        let kind = match v.get("consensus").and_then(Value::as_str) {
            None | Some("tower") => VoteStateKind::Tower,
            Some("alpenglow") => VoteStateKind::VoteHistory,
            Some(other) => anyhow::bail!("cluster.json: unknown consensus {other:?}"),
        };
        Ok(Self {
            script: PathBuf::from(text(&v, &["script"]).context(
                "cluster.json predates the drills' restarts: run scripts/agave/cluster.sh up again",
            )?),
            dir: PathBuf::from(text(&v, &["dir"])?),
            cluster_rpc: rpc,
            cluster_ws: ws,
            x_keypair: PathBuf::from(text(&v, &["x", "keypair"])?),
            x: text(&v, &["x", "pubkey"])?.parse()?,
            vote_account: text(&v, &["x", "vote_pubkey"])?.parse()?,
            version: v
                .get("agave_version")
                .and_then(Value::as_str)
                .unwrap_or("3.1.12")
                .to_string(),
            kind,
            a: node("a")?,
            b: node("b")?,
        })
    }

    /// "TowerBFT" or "Alpenglow".
    pub fn consensus(&self) -> &'static str {
        match self.kind {
            VoteStateKind::Tower => "TowerBFT",
            VoteStateKind::VoteHistory => "Alpenglow",
        }
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

impl RealCluster {
    /// Runs `cluster.sh COMMAND NODE ARGS… --dir DIR` and fails with its output if it fails.
    pub async fn script(&self, command: &str, node: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&self.script)
            .arg(command)
            .arg(node)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "cluster.sh {command} {node} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}
