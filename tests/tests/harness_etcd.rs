//! The etcd harness starts a real etcd, its fault hooks act on that process, and it never outlives
//! the test: not after `kill`, not after drop, not after a panic.

use std::time::Duration;

use failover_sim::etcd::EtcdServer;

/// Generous bound for etcd to (re)gain health; it usually takes well under 100 ms.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a health check may take before a paused etcd counts as silent.
const SHORT: Duration = Duration::from_millis(300);

/// Whether `pid` is still an etcd child of this test process (running or a zombie). A pid that
/// was reaped and given to an unrelated process does not count.
fn still_our_etcd(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ppid …`; comm may hold spaces, so split after the last parenthesis.
    let (head, tail) = stat.rsplit_once(')').expect("a /proc stat line");
    let comm = head.split_once('(').map(|(_, comm)| comm).unwrap_or("");
    let ppid: u32 = tail.split_whitespace().nth(1).unwrap().parse().unwrap();
    comm == "etcd" && ppid == std::process::id()
}

#[tokio::test]
async fn etcd_answers_health_pause_silences_it_and_resume_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.expect("start etcd");
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    assert!(dir.path().join("etcd.log").exists());
    etcd.health(PATIENCE).await.expect("healthy after start");

    etcd.pause().unwrap();
    let err = etcd.health(SHORT).await.expect_err("a paused etcd answers");
    assert!(format!("{err:#}").contains("did not answer"), "{err:#}");

    etcd.resume().unwrap();
    etcd.wait_healthy(PATIENCE)
        .await
        .expect("healthy after resume");

    let pid = etcd.pid();
    assert!(still_our_etcd(pid));
    drop(etcd);
    assert!(!still_our_etcd(pid), "etcd {pid} outlived its harness");
}

#[tokio::test]
async fn kill_ends_etcd_at_once_and_reaps_it() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.expect("start etcd");
    let pid = etcd.pid();
    etcd.kill().unwrap();
    assert!(!still_our_etcd(pid));
    etcd.health(SHORT).await.expect_err("a killed etcd answers");
    assert!(etcd.pause().is_err(), "signalled a reaped pid");
    // Dropping after a kill has nothing left to do.
    drop(etcd);
}

#[tokio::test]
async fn a_paused_etcd_is_still_stopped_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.expect("start etcd");
    let pid = etcd.pid();
    etcd.pause().unwrap();
    drop(etcd);
    assert!(
        !still_our_etcd(pid),
        "paused etcd {pid} outlived its harness"
    );
}

#[tokio::test]
async fn a_panicking_test_still_stops_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let test = tokio::spawn(async move {
        let etcd = EtcdServer::start(&path).await.expect("start etcd");
        pid_tx.send(etcd.pid()).unwrap();
        panic!("the test fails while etcd runs");
    });
    assert!(test.await.unwrap_err().is_panic());
    let pid = pid_rx.recv().unwrap();
    assert!(!still_our_etcd(pid), "etcd {pid} outlived a panicking test");
}
