//! One harness for the simulator's tests: a cluster in a temp dir with fast slots, and clients.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use failover_identity::tower::{tower_path, TowerFile};
use failover_identity::{AdminRpcClient, Pubkey, Timeouts};
use failover_sim::{Cluster, SimConfig};
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slots are fast in tests; nothing here depends on wall-clock timing, only on slot events.
pub const SLOT: Duration = Duration::from_millis(100);

/// Generous bound for anything that should happen within a few slots.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Sim {
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Sim {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimConfig::new(dir.path());
    config.slot_time = SLOT;
    tweak(&mut config);
    let cluster = Cluster::start(config)
        .await
        .expect("start simulated cluster");
    Sim { cluster, dir }
}

impl Sim {
    pub fn admin(&self, i: usize) -> AdminRpcClient {
        AdminRpcClient::new(&self.cluster.info().nodes[i].admin_socket, Timeouts::LOCAL)
    }

    pub fn cluster_rpc(&self) -> RpcClient {
        RpcClient::new(self.cluster.info().rpc_url.clone())
    }

    pub fn node_rpc(&self, i: usize) -> RpcClient {
        RpcClient::new(self.cluster.info().nodes[i].rpc_url.clone())
    }

    pub fn staked_keypair(&self) -> PathBuf {
        self.cluster.info().staked_keypair.clone()
    }

    pub fn unstaked_keypair(&self, i: usize) -> PathBuf {
        self.cluster.info().nodes[i].unstaked_keypair.clone()
    }

    pub fn ledger(&self, i: usize) -> PathBuf {
        self.cluster.info().nodes[i].ledger.clone()
    }

    pub fn tower_file(&self, i: usize, identity: &Pubkey) -> PathBuf {
        tower_path(&self.ledger(i), identity)
    }

    /// The last voted slot in node `i`'s tower file for `identity`, verified.
    pub fn tower_last_vote(&self, i: usize, identity: &Pubkey) -> Option<u64> {
        let file = TowerFile::read(&self.tower_file(i, identity)).ok()?;
        file.verify(identity).ok()?;
        file.tower.last_voted_slot()
    }

    /// Waits until the staked tower on node `i` has not changed for two whole slots: after a
    /// demotion, the replay race may still add one vote.
    pub async fn wait_tower_quiet(&self, i: usize) -> Option<u64> {
        failover_sim::drill::wait_tower_settled(&self.cluster, i, 2)
            .await
            .unwrap()
    }

    /// The manual procedure of DESIGN.md §2, done right (the drill's switch).
    pub async fn manual_switch(&self, from: usize, to: usize) {
        failover_sim::drill::switch(&self.cluster, from, to, 2)
            .await
            .unwrap();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body as sent.
pub async fn http(
    method: &str,
    url: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// POSTs a JSON-RPC body to `/`.
pub async fn http_post(url: &str, body: &str, content_type: &str) -> (u16, String) {
    http("POST", url, "/", content_type, body).await
}
