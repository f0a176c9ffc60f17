//! The real Solana client crates against the simulator: if `solana-rpc-client` and
//! `solana-pubsub-client` can read it, the manager can.

mod support;

use futures_util::StreamExt;
use solana_commitment_config::CommitmentConfig;
use solana_pubsub_client::nonblocking::pubsub_client::PubsubClient;
use solana_rpc_client_api::config::RpcGetVoteAccountsConfig;
use support::{start, PATIENCE};

#[tokio::test(flavor = "multi_thread")]
async fn rpc_client_reads_the_cluster_endpoint() {
    let sim = start().await;
    let rpc = sim.cluster_rpc();
    let info = sim.cluster.info();

    let version = rpc.get_version().await.unwrap();
    assert_eq!(version.solana_core, "3.1.12");
    assert_eq!(version.feature_set, Some(4_140_108_451));
    rpc.get_health().await.unwrap();

    let processed = rpc
        .get_slot_with_commitment(CommitmentConfig::processed())
        .await
        .unwrap();
    let confirmed = rpc
        .get_slot_with_commitment(CommitmentConfig::confirmed())
        .await
        .unwrap();
    let finalized = rpc.get_slot().await.unwrap();
    assert!(
        finalized < confirmed && confirmed <= processed,
        "{finalized} {confirmed} {processed}"
    );

    let epoch = rpc.get_epoch_info().await.unwrap();
    assert_eq!(epoch.slots_in_epoch, 432_000);
    // Finalized by default, so about 32 slots behind the tip.
    assert!(epoch.absolute_slot + 40 >= processed && epoch.absolute_slot <= processed);

    // Gossip shows the staked identity at node1's address.
    let nodes = rpc.get_cluster_nodes().await.unwrap();
    assert_eq!(nodes.len(), 3);
    let staked = nodes
        .iter()
        .find(|n| n.pubkey == info.staked_pubkey)
        .expect("staked identity in gossip");
    assert_eq!(staked.rpc, Some(info.nodes[0].rpc_addr));
    assert_eq!(staked.gossip.unwrap().ip(), info.nodes[0].ip);

    let accounts = rpc
        .get_vote_accounts_with_config(RpcGetVoteAccountsConfig {
            vote_pubkey: Some(info.vote_pubkey.clone()),
            commitment: Some(CommitmentConfig::processed()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(accounts.current.len(), 1);
    assert!(accounts.delinquent.is_empty());
    let account = &accounts.current[0];
    assert_eq!(account.node_pubkey, info.staked_pubkey);
    assert!(account.last_vote >= 999 && account.root_slot < account.last_vote);
    assert_eq!(account.epoch_credits.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_node_reports_its_own_identity_and_slot() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    assert_eq!(sim.node_rpc(0).get_identity().await.unwrap(), staked);
    assert_eq!(
        sim.node_rpc(1).get_identity().await.unwrap(),
        sim.cluster.unstaked_pubkey(1)
    );
    assert!(sim.node_rpc(1).get_slot().await.unwrap() > 900);
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_client_gets_slot_and_root_notifications() {
    let sim = start().await;
    let pubsub = PubsubClient::new(sim.cluster.info().pubsub_url.as_str())
        .await
        .unwrap();
    let (mut slots, unsubscribe_slots) = pubsub.slot_subscribe().await.unwrap();
    let first = tokio::time::timeout(PATIENCE, slots.next())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(PATIENCE, slots.next())
        .await
        .unwrap()
        .unwrap();
    assert!(second.slot > first.slot);
    assert_eq!(first.parent, first.slot - 1);
    assert!(first.root < first.slot);

    let (mut roots, unsubscribe_roots) = pubsub.root_subscribe().await.unwrap();
    let a = tokio::time::timeout(PATIENCE, roots.next())
        .await
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(PATIENCE, roots.next())
        .await
        .unwrap()
        .unwrap();
    assert!(b > a);
    drop((slots, roots));
    unsubscribe_slots().await;
    unsubscribe_roots().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_pubsub_follows_the_node_slot() {
    let sim = start().await;
    sim.cluster
        .fault(1, failover_sim::Fault::Behind { slots: 300 })
        .await
        .unwrap();
    let pubsub = PubsubClient::new(sim.cluster.info().nodes[1].pubsub_url.as_str())
        .await
        .unwrap();
    let (mut slots, _unsubscribe) = pubsub.slot_subscribe().await.unwrap();
    let seen = tokio::time::timeout(PATIENCE, slots.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen.slot + 290 <= sim.cluster.slot(),
        "{} vs {}",
        seen.slot,
        sim.cluster.slot()
    );
}
