//! Self-fencing both ways: an active cut off from the manager and the outside demotes itself; one
//! that can still reach the outside stays active.

mod support;

use std::time::Duration;

use support::{bed_with, fence_report, PATIENCE};

/// A loopback port on which nothing listens, held (bound, never listening) so that no other test
/// can take it while this one expects connections to be refused.
struct ClosedPort(#[allow(dead_code)] tokio::net::TcpSocket, String);

fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    ClosedPort(socket, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_active_demotes_itself() {
    let closed = [closed_port(), closed_port(), closed_port()];
    let targets: Vec<String> = closed.iter().map(|c| c.1.clone()).collect();
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "300ms".into();
        c["connectivity_targets"] = serde_json::json!(targets);
        c["connectivity_failures_to_fence"] = 2.into();
    })
    .await;
    let report = fence_report(&bed, 0).await;
    assert_eq!(report.outcome, "demoted", "{report:?}");
    assert_eq!(report.unreachable_targets.len(), 3);
    assert_ne!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
    // The passive agent never had anything to fence.
    assert!(bed.agents[1].agent.fence_reports().borrow().is_none());
    // The final tower waits for the manager in the next status.
    let status = bed.client(0).status(1).await.unwrap();
    assert!(status.tower_backup.is_some());
    assert_eq!(status.last_fence.unwrap().outcome, "demoted");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_active_that_reaches_the_outside_stays_active() {
    // Two of three targets answer: fewer failures than the two needed to fence.
    let up1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = closed_port();
    let targets = vec![
        up1.local_addr().unwrap().to_string(),
        up2.local_addr().unwrap().to_string(),
        closed.1.clone(),
    ];
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "300ms".into();
        c["connectivity_targets"] = serde_json::json!(targets);
        c["connectivity_failures_to_fence"] = 2.into();
    })
    .await;
    let report = fence_report(&bed, 0).await;
    assert_eq!(report.outcome, "stayed_active", "{report:?}");
    assert_eq!(report.unreachable_targets.len(), 1);
    // Still voting.
    let last = bed.cluster.vote_account().last_vote;
    bed.cluster
        .wait_until(Duration::from_secs(10), |w| w.vote.last_vote > last)
        .await
        .unwrap();
    assert_eq!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
    drop((up1, up2));
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_the_watchdog_quiet() {
    let closed = closed_port();
    let bed = bed_with(|_, c| {
        // 20 slots of this bed: a heartbeat each slot keeps it quiet also on a loaded 2-core CI
        // machine (with 500 ms a gap between two heartbeats exceeded it there once).
        c["manager_timeout"] = "2s".into();
        c["connectivity_targets"] = serde_json::json!([closed.1]);
        c["connectivity_failures_to_fence"] = 1.into();
    })
    .await;
    // Heartbeat every slot for a while (several manager_timeouts).
    let client = bed.client(0);
    let start = bed.cluster.slot();
    while bed.cluster.slot() < start + 80 {
        client.status(1).await.unwrap();
        let slot = bed.cluster.slot();
        bed.cluster.wait_for_slot(slot + 1, PATIENCE).await.unwrap();
    }
    assert!(bed.agents[0].agent.fence_reports().borrow().is_none());
    assert_eq!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
}
