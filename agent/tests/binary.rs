//! `failover-agent` as an operator starts it: config checks, refusing to start on a wrong admin
//! socket, and stopping cleanly on `/shutdown` and on SIGTERM.

mod support;

use std::process::Stdio;
use std::time::Duration;

use failover_agent::AgentClient;
use failover_identity::Keypair;
use failover_sim::{Cluster, SimConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_failover-agent");

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

struct Setup {
    dir: tempfile::TempDir,
    cluster: Cluster,
    manager: std::sync::Arc<Keypair>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new(dir.path().join("cluster"));
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    Setup {
        dir,
        cluster,
        manager: std::sync::Arc::new(Keypair::generate()),
    }
}

impl Setup {
    fn write_config(&self, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
        let mut config = support::agent_config(&self.cluster, self.dir.path(), &self.manager, 0);
        edit(&mut config);
        let path = self.dir.path().join("validator-config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        path
    }
}

/// Starts the agent and waits until it logs that it is listening.
async fn spawn_agent(config: &std::path::Path) -> Child {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("agent start-up")
            .unwrap()
            .expect("agent exited during start-up");
        if line.contains(" listening listen=") {
            break;
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_accepts_a_good_file_and_rejects_a_bad_one() {
    let s = setup().await;
    let good = s.write_config(|_| {});
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: agent for "));

    let bad = s.write_config(|c| {
        c["manager_timeout"] = "30".into();
        c["listen_adr"] = ":8080".into();
    });
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manager_timeout:") && err.contains("listen_adr:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_admin_socket_stops_the_start() {
    let s = setup().await;
    let config = s.write_config(|c| c["admin_socket"] = "/nonexistent/admin.rpc".into());
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("admin socket /nonexistent/admin.rpc does not exist although"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_command_and_sigterm_stop_it_cleanly() {
    let s = setup().await;
    let port = free_port().await;
    let config = s.write_config(|c| c["listen_addr"] = format!("127.0.0.1:{port}").into());
    let mut child = spawn_agent(&config).await;
    let client = AgentClient::new(
        &format!("http://127.0.0.1:{port}"),
        Some(failover_agent::CommandSigner {
            key: s.manager.clone(),
            staked: s.cluster.staked_pubkey(),
        }),
        Duration::from_secs(10),
    );
    assert!(client.health().await.unwrap().ok);
    client.shutdown(0).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let mut child = spawn_agent(&config).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Neither stop touched the validator.
    assert_eq!(s.cluster.identity(0), Some(s.cluster.staked_pubkey()));
}
