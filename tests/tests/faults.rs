//! Faults on demand, each observed the way an agent or manager would observe it.

mod support;

use std::time::Duration;

use failover_identity::{AdminRpcClient, AdminRpcError, Timeouts};
use failover_sim::Fault;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::ErrorKind;
use solana_rpc_client_api::request::RpcError;
use support::{start, PATIENCE};

const SHORT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread")]
async fn crash_closes_every_socket_and_leaves_gossip_and_restart_brings_it_back() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    let info = sim.cluster.info().clone();
    let admin = sim.admin(0);
    assert_eq!(admin.identity().await.unwrap(), staked);

    sim.cluster.fault(0, Fault::Crash).await.unwrap();
    // The admin socket is gone, so the next call cannot connect.
    match admin.identity().await {
        Err(AdminRpcError::ConnectionLost { .. } | AdminRpcError::Connect { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(!info.nodes[0].admin_socket.exists());
    // RPC: connection refused.
    let rpc = RpcClient::new_with_timeout(info.nodes[0].rpc_url.clone(), SHORT);
    assert!(rpc.get_slot().await.is_err());
    // Gossip no longer shows the staked identity anywhere, and nobody votes.
    let nodes = sim.cluster_rpc().get_cluster_nodes().await.unwrap();
    assert!(nodes.iter().all(|n| n.pubkey != staked.to_string()));
    let last = sim.cluster.vote_account().last_vote;
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 3, PATIENCE).await.unwrap();
    assert_eq!(sim.cluster.vote_account().last_vote, last);

    // Restart: it comes back with its startup identity, says it is starting, then runs and votes.
    sim.cluster
        .fault(0, Fault::Restart { startup_slots: 3 })
        .await
        .unwrap();
    let fresh = AdminRpcClient::new(&info.nodes[0].admin_socket, Timeouts::LOCAL);
    match fresh.contact_info().await {
        Err(AdminRpcError::StartupNotComplete { .. }) => {}
        other => panic!("expected start-up answer, got {other:?}"),
    }
    assert_eq!(fresh.start_progress().await.unwrap(), "ProcessingLedger");
    sim.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > last)
        .await
        .unwrap();
    assert_eq!(fresh.start_progress().await.unwrap(), "Running");
    assert_eq!(fresh.identity().await.unwrap(), staked);
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_node_accepts_connections_but_answers_nothing_until_it_resumes() {
    let sim = start().await;
    let info = sim.cluster.info().clone();
    sim.cluster.fault(0, Fault::Hang).await.unwrap();
    let rpc = RpcClient::new_with_timeout(info.nodes[0].rpc_url.clone(), SHORT);
    assert!(rpc.get_slot().await.is_err());
    let admin = AdminRpcClient::new(
        &info.nodes[0].admin_socket,
        Timeouts {
            connect: SHORT,
            call: SHORT,
        },
    );
    match admin.identity().await {
        Err(AdminRpcError::Timeout { sent: true, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    let last = sim.cluster.vote_account().last_vote;
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 3, PATIENCE).await.unwrap();
    assert_eq!(
        sim.cluster.vote_account().last_vote,
        last,
        "a hung node voted"
    );

    sim.cluster.fault(0, Fault::Unhang).await.unwrap();
    assert!(rpc.get_slot().await.is_ok());
    assert_eq!(admin.identity().await.unwrap(), sim.cluster.staked_pubkey());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_node_reports_node_is_behind() {
    let sim = start().await;
    sim.cluster
        .fault(1, Fault::Behind { slots: 200 })
        .await
        .unwrap();
    let err = sim.node_rpc(1).get_health().await.unwrap_err();
    match err.kind() {
        ErrorKind::RpcError(RpcError::RpcResponseError { code, message, .. }) => {
            assert_eq!(*code, -32005);
            assert_eq!(message, "Node is behind by 200 slots");
        }
        other => panic!("unexpected {other:?}"),
    }
    let node = sim
        .node_rpc(1)
        .get_slot_with_commitment(solana_commitment_config::CommitmentConfig::processed())
        .await
        .unwrap();
    assert!(node + 200 <= sim.cluster.slot());
    sim.cluster
        .fault(1, Fault::Behind { slots: 0 })
        .await
        .unwrap();
    sim.node_rpc(1).get_health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_voting_keeps_the_node_up_but_the_vote_account_goes_stale() {
    let sim = start().await;
    sim.cluster.fault(0, Fault::StopVoting).await.unwrap();
    let last = sim.cluster.vote_account().last_vote;
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 4, PATIENCE).await.unwrap();
    assert_eq!(sim.cluster.vote_account().last_vote, last);
    assert_eq!(
        sim.admin(0).identity().await.unwrap(),
        sim.cluster.staked_pubkey()
    );
    sim.node_rpc(0).get_health().await.unwrap();
    sim.cluster.fault(0, Fault::ResumeVoting).await.unwrap();
    sim.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > last)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_admin_socket_outlasts_a_short_deadline() {
    let sim = start().await;
    sim.cluster
        .fault(1, Fault::SlowAdmin { millis: 2_000 })
        .await
        .unwrap();
    let impatient = AdminRpcClient::new(
        &sim.cluster.info().nodes[1].admin_socket,
        Timeouts {
            connect: SHORT,
            call: SHORT,
        },
    );
    assert!(matches!(
        impatient.identity().await,
        Err(AdminRpcError::Timeout { sent: true, .. })
    ));
    sim.cluster.fault(1, Fault::Heal).await.unwrap();
    // The delayed answer to the timed-out call arrives later and is discarded; new calls work.
    let patient = sim.admin(1);
    assert_eq!(
        patient.identity().await.unwrap(),
        sim.cluster.unstaked_pubkey(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_set_identity_changes_nothing() {
    let sim = start().await;
    sim.cluster
        .fault(0, Fault::RefuseSetIdentity { refuse: true })
        .await
        .unwrap();
    let admin = sim.admin(0);
    match admin.set_identity(&sim.unstaked_keypair(0), false).await {
        Err(AdminRpcError::Rpc { code, .. }) => assert_eq!(code, -32603),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(admin.identity().await.unwrap(), sim.cluster.staked_pubkey());
    sim.cluster
        .fault(0, Fault::RefuseSetIdentity { refuse: false })
        .await
        .unwrap();
    admin
        .set_identity(&sim.unstaked_keypair(0), false)
        .await
        .unwrap();
    assert_eq!(
        admin.identity().await.unwrap(),
        sim.cluster.unstaked_pubkey(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_exit_stops_the_validator() {
    let sim = start().await;
    let info = sim.cluster.info().clone();
    let admin = sim.admin(1);
    admin.exit().await.unwrap();
    sim.cluster
        .wait_until(PATIENCE, |w| w.nodes[1].faults.crashed)
        .await
        .unwrap();
    assert!(!info.nodes[1].admin_socket.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_comes_back_with_the_identity_its_symlink_names() {
    let sim = start().await;
    let info = sim.cluster.info().clone();
    // Demoted as the reference does it: the identity link now names the unstaked key.
    sim.admin(0)
        .set_identity(&info.nodes[0].unstaked_keypair, false)
        .await
        .unwrap();
    std::fs::remove_file(&info.nodes[0].identity_link).unwrap();
    std::os::unix::fs::symlink(
        &info.nodes[0].unstaked_keypair,
        &info.nodes[0].identity_link,
    )
    .unwrap();
    sim.cluster
        .fault(0, Fault::Restart { startup_slots: 0 })
        .await
        .unwrap();
    assert_eq!(
        sim.cluster.identity(0),
        Some(sim.cluster.unstaked_pubkey(0))
    );
    sim.cluster.safety().assert_safe();
}
