//! The tower handed over through a real etcd (Debian's etcd-server, started by the test on a
//! loopback port), with writes fenced by the term.

mod support;

use std::time::Duration;

use failover_agent::api::{FailoverAction, FailoverRequest, Role};
use failover_agent::store::{Claim, EtcdTowers, StoreError};
use failover_config::EtcdStore;
use failover_sim::etcd::EtcdServer;
use failover_sim::pause::PausePoint;
use support::{bed_with, command, PATIENCE};

fn store_config(endpoint: &str) -> EtcdStore {
    EtcdStore {
        endpoints: vec![endpoint.parse().unwrap()],
        key_prefix: "/solana/tower/active".into(),
        dial_timeout: Duration::from_secs(2),
    }
}

fn request(action: FailoverAction, term: u64, sha: Option<String>) -> FailoverRequest {
    command(action, term, None, sha)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tower_travels_through_etcd_fenced_by_the_term() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.unwrap();
    let endpoint = etcd.endpoint();
    let bed = bed_with(|_, c| {
        c["tower_store"] = serde_json::json!({"kind": "etcd", "endpoints": [endpoint], "key_prefix": "/solana/tower/active"});
    })
    .await;
    // The manager's move: raise the term in etcd before the switch.
    let store = EtcdTowers::connect(&store_config(&etcd.endpoint()))
        .await
        .unwrap();
    assert_eq!(store.claim_term(1, []).await.unwrap(), Claim::Taken);

    // A heartbeat finds the node active: from then on each tower it saves goes to etcd.
    let status = bed.client(0).status(1).await.unwrap();
    assert_eq!(status.role, Role::Active);
    assert!(
        status.tower_backup.is_none(),
        "etcd store: the tower is not relayed"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let backed_up = loop {
        if let Some(record) = store.get_tower().await.unwrap() {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "no tower in etcd");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(backed_up.term, 1);
    assert!(
        backed_up.tower.last_vote >= status.tower.last_vote,
        "etcd holds last vote {:?}, the heartbeat saw {:?}",
        backed_up.tower.last_vote,
        status.tower.last_vote
    );

    // Demote: the final tower goes to etcd; promote: it comes from etcd, checked by its hash.
    let passive = bed
        .client(0)
        .failover(&request(FailoverAction::BecomePassive, 1, None))
        .await
        .unwrap();
    assert!(passive.ok, "{passive:#?}");
    assert!(passive.phases.iter().any(|p| p.name == "store"));
    let sha = passive.tower.unwrap().sha256;
    assert_eq!(store.get_tower().await.unwrap().unwrap().tower.sha256, sha);
    let active = bed
        .client(1)
        .failover(&request(FailoverAction::BecomeActive, 1, Some(sha)))
        .await
        .unwrap();
    assert!(active.ok, "{active:#?}");
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_voter == Some(1))
        .await
        .unwrap();
    bed.cluster.safety().assert_safe();

    // Fencing: once etcd's term is 5, a writer holding term 1 cannot overwrite the tower.
    assert_eq!(store.claim_term(5, []).await.unwrap(), Claim::Taken);
    let record = store.get_tower().await.unwrap().unwrap();
    match store.put_tower(1, &record).await {
        Err(StoreError::Fenced {
            current: 5,
            mine: 1,
        }) => {}
        other => panic!("expected fencing, got {other:?}"),
    }
    // And the term never goes down.
    assert_eq!(
        store.claim_term(2, []).await.unwrap(),
        Claim::Lost { current: 5 }
    );
}

/// Two managers that computed the same next term (each from what it saw, `max + 1`) both claim it
/// through etcd at once: exactly one gets it, the other learns the term it lost to. The etcd raise
/// used to report "etcd holds my term" to both, and both switched in one term.
#[tokio::test(flavor = "multi_thread")]
async fn of_two_managers_claiming_the_same_term_exactly_one_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.unwrap();
    let config = store_config(&etcd.endpoint());
    let (a, b) = (
        EtcdTowers::connect(&config).await.unwrap(),
        EtcdTowers::connect(&config).await.unwrap(),
    );
    for term in 1..=20 {
        let (x, y) = tokio::join!(a.claim_term(term, []), b.claim_term(term, []));
        let mut claims = [x.unwrap(), y.unwrap()];
        claims.sort_by_key(|c| matches!(c, Claim::Lost { .. }));
        assert_eq!(
            claims,
            [Claim::Taken, Claim::Lost { current: term }],
            "term {term}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_etcd_promotion_fails_cleanly_and_the_node_stays_passive() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.unwrap();
    let endpoint = etcd.endpoint();
    let bed = bed_with(|_, c| {
        c["tower_store"] =
            serde_json::json!({"kind": "etcd", "endpoints": [endpoint], "dial_timeout": "500ms"});
    })
    .await;
    etcd.kill().unwrap();
    let active = bed
        .client(1)
        .failover(&request(
            FailoverAction::BecomeActive,
            1,
            Some("ab".repeat(32)),
        ))
        .await
        .unwrap();
    assert!(!active.ok);
    assert_eq!(active.phases[0].name, "tower");
    assert_ne!(bed.cluster.identity(1), Some(bed.cluster.staked_pubkey()));
    bed.cluster.safety().assert_safe();
}

/// A heartbeat's backup and a demotion of the same term, the backup's write arriving last — the
/// watchdog's own fence demotes at the agent's current term, beside a heartbeat that is slow to
/// finish: etcd keeps the demotion's final vote state (a promotion would otherwise install an
/// older one), and the demotion does not wait for the backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_arrives_after_the_demotion_leaves_the_final_vote_state_in_etcd() {
    failover_agent::pause::enable();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start(dir.path()).await.unwrap();
    let endpoint = etcd.endpoint();
    let bed = bed_with(|_, c| {
        c["tower_store"] = serde_json::json!({"kind": "etcd", "endpoints": [endpoint], "key_prefix": "/solana/tower/active"});
    })
    .await;
    let store = EtcdTowers::connect(&store_config(&etcd.endpoint()))
        .await
        .unwrap();
    assert_eq!(store.claim_term(1, []).await.unwrap(), Claim::Taken);

    // A heartbeat finds the node active; its backup task has read the vote state and is about
    // to write it to etcd.
    let points = failover_agent::pause::dir(&bed.agents[0].state_dir);
    let write = PausePoint::arm(&points, "etcd_backup").unwrap();
    let written = PausePoint::arm(&points, "etcd_backup_done").unwrap();
    let client = bed.client(0);
    let heartbeat = tokio::spawn(async move { client.status(1).await });
    let held = write.reached(PATIENCE).await.unwrap();
    // The validator votes on, so that the final vote state is not the one the backup read.
    let read = bed.cluster.vote_account().last_vote;
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > read + 1)
        .await
        .unwrap();

    // The demotion of the same term stores the final vote state meanwhile.
    let passive = tokio::time::timeout(
        Duration::from_secs(10),
        bed.client(0)
            .failover(&request(FailoverAction::BecomePassive, 1, None)),
    )
    .await
    .expect("the demotion waited for the backup")
    .unwrap();
    assert!(passive.ok, "{passive:#?}");
    let last = passive.tower.unwrap();
    assert_eq!(
        store.get_tower().await.unwrap().unwrap().tower.sha256,
        last.sha256
    );

    // Then the backup's write arrives.
    held.release().await;
    written.reached(PATIENCE).await.unwrap().release().await;
    heartbeat.await.unwrap().unwrap();
    let stored = store.get_tower().await.unwrap().unwrap();
    assert_eq!(
        stored.tower.sha256, last.sha256,
        "etcd holds a vote state of last vote {:?}, not the final one of {:?}",
        stored.tower.last_vote, last.last_vote
    );
    bed.cluster.safety().assert_safe();
}
