//! Moving the staked identity through the admin RPC, with the identity crate's own client, and the
//! safety recorder catching each way of getting it wrong.

mod support;

use failover_identity::tower::TowerFile;
use failover_identity::AdminRpcError;
use support::{start, start_with, PATIENCE};

#[tokio::test(flavor = "multi_thread")]
async fn the_active_node_votes_and_writes_real_agave_towers() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    let start_vote = sim.cluster.vote_account().last_vote;
    sim.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote >= start_vote + 3)
        .await
        .unwrap();
    let bytes = std::fs::read(sim.tower_file(0, &staked)).unwrap();
    let file = TowerFile::parse(&bytes).unwrap();
    file.verify(&staked).unwrap();
    assert_eq!(file.tower.node_pubkey, staked);
    assert_eq!(file.tower.vote_state.votes.len(), 31);
    assert!(file.tower.last_voted_slot().unwrap() > start_vote);
    // The same layout as Agave's: tag 1, 64-byte signature, u64 length, data.
    assert_eq!(&bytes[..4], &1u32.to_le_bytes());
    assert_eq!(
        u64::from_le_bytes(bytes[68..76].try_into().unwrap()) as usize,
        bytes.len() - 76
    );
    // A tampered copy is refused by the project's own tower check.
    let mut tampered = bytes.clone();
    tampered[300] ^= 1;
    assert!(TowerFile::parse(&tampered)
        .unwrap()
        .verify(&staked)
        .is_err());
    // The passive node, a hot spare, writes no tower at all.
    assert!(!sim.tower_file(1, &staked).exists());
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_careful_switchover_moves_the_votes_and_stays_safe() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    sim.manual_switch(0, 1).await;
    let switched_at = sim.cluster.vote_account().last_vote;
    sim.cluster
        .wait_until(PATIENCE, |w| {
            w.vote.last_voter == Some(1) && w.vote.last_vote > switched_at + 2
        })
        .await
        .unwrap();
    assert_eq!(sim.cluster.identity(1), Some(staked));
    assert_ne!(sim.cluster.identity(0), Some(staked));
    // And back again.
    sim.manual_switch(1, 0).await;
    let back_at = sim.cluster.vote_account().last_vote;
    sim.cluster
        .wait_until(PATIENCE, |w| {
            w.vote.last_voter == Some(0) && w.vote.last_vote > back_at
        })
        .await
        .unwrap();
    let report = sim.cluster.safety();
    report.assert_safe();
    assert_eq!(report.identity_changes.len(), 2 + 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demoted_node_casts_one_straggler_vote_then_its_tower_settles() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    let admin = sim.admin(0);
    let slot_before = sim.cluster.slot();
    admin
        .set_identity(&sim.unstaked_keypair(0), false)
        .await
        .unwrap();
    let slot_after = sim.cluster.slot();
    let at_demotion = sim.tower_last_vote(0, &staked).unwrap();
    let settled = sim.wait_tower_quiet(0).await.unwrap();
    // Agave's replay race: one more vote with the identity just left, in the next slot, and
    // nothing after it.
    assert!(settled > at_demotion, "no straggler vote");
    assert!(
        (slot_before + 1..=slot_after + 1).contains(&settled),
        "straggler voted {settled}, demoted during slot {slot_before}..={slot_after}"
    );
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_without_demoting_is_recorded_as_two_holders_and_double_votes() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    std::fs::copy(sim.tower_file(0, &staked), sim.tower_file(1, &staked)).unwrap();
    sim.admin(1)
        .set_identity(&sim.staked_keypair(), true)
        .await
        .unwrap();
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 3, PATIENCE).await.unwrap();
    let report = sim.cluster.safety();
    assert!(report.staked_held_twice, "{report:?}");
    assert!(report.double_votes, "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn copying_the_tower_before_it_settles_is_recorded_as_a_stale_tower() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    // The reference design's order: back up the tower, then demote. The votes cast in between
    // are missing from the copy.
    std::fs::copy(sim.tower_file(0, &staked), sim.tower_file(1, &staked)).unwrap();
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 2, PATIENCE).await.unwrap();
    sim.admin(0)
        .set_identity(&sim.unstaked_keypair(0), false)
        .await
        .unwrap();
    sim.admin(1)
        .set_identity(&sim.staked_keypair(), true)
        .await
        .unwrap();
    let report = sim.cluster.safety();
    assert!(report.tower_went_backwards, "{report:?}");
    assert!(!report.staked_held_twice);
}

#[tokio::test(flavor = "multi_thread")]
async fn require_tower_refuses_missing_tampered_and_foreign_towers() {
    let sim = start_with(|c| c.straggler_votes = false).await;
    let staked = sim.cluster.staked_pubkey();
    let passive = sim.admin(1);
    let unstaked1 = sim.cluster.unstaked_pubkey(1);

    // Missing: Agave's exact message.
    match passive.set_identity(&sim.staked_keypair(), true).await {
        Err(AdminRpcError::TowerUnavailable { message, .. }) => assert_eq!(
            message,
            format!(
                "Unable to load tower file for identity {staked}: IO Error: No such file or directory (os error 2)"
            )
        ),
        other => panic!("unexpected {other:?}"),
    }

    // Tampered.
    let mut bytes = std::fs::read(sim.tower_file(0, &staked)).unwrap();
    bytes[400] ^= 1;
    std::fs::write(sim.tower_file(1, &staked), &bytes).unwrap();
    match passive.set_identity(&sim.staked_keypair(), true).await {
        Err(AdminRpcError::TowerUnavailable { message, .. }) => {
            assert!(
                message.ends_with(": The signature on the saved tower is invalid"),
                "{message}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    // Foreign: node2's own unstaked tower renamed as the staked one.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/agave-3.1.12/tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin",
    );
    std::fs::copy(&fixture, sim.tower_file(1, &staked)).unwrap();
    match passive.set_identity(&sim.staked_keypair(), true).await {
        Err(AdminRpcError::TowerUnavailable { message, .. }) => {
            assert!(
                message.contains("signature on the saved tower is invalid"),
                "{message}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    // Nothing changed.
    assert_eq!(passive.identity().await.unwrap(), unstaked1);
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_vote_authority_does_not_vote() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    let active = sim.admin(0);
    active.remove_all_authorized_voters().await.unwrap();
    let slot = sim.cluster.slot();
    sim.cluster.wait_for_slot(slot + 2, PATIENCE).await.unwrap();
    let stopped_at = sim.cluster.vote_account().last_vote;
    sim.cluster.wait_for_slot(slot + 5, PATIENCE).await.unwrap();
    assert_eq!(sim.cluster.vote_account().last_vote, stopped_at);
    assert_eq!(active.identity().await.unwrap(), staked);

    // Giving the authority back resumes voting.
    let staked_keypair = failover_identity::Keypair::read_file(
        &sim.staked_keypair(),
        failover_identity::Permissions::Strict,
    )
    .unwrap();
    active
        .add_authorized_voter_from_bytes(&staked_keypair)
        .await
        .unwrap();
    sim.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > stopped_at)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn agave_4_2_nodes_take_the_three_param_set_identity() {
    let sim = start_with(|c| c.versions = vec!["4.2.0".into(), "4.2.0".into()]).await;
    let version = sim.node_rpc(1).get_version().await.unwrap();
    assert_eq!(version.solana_core, "4.2.0");
    // The identity crate's client negotiates the arity by itself.
    sim.manual_switch(0, 1).await;
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drill_switches_back_and_forth_and_reports_each_phase() {
    let sim = start().await;
    let report = failover_sim::drill::run(&sim.cluster, 3, 2).await.unwrap();
    report.safety.assert_safe();
    assert_eq!(report.switches.len(), 3);
    let names: Vec<(&str, &str)> = report
        .switches
        .iter()
        .map(|s| (s.from.as_str(), s.to.as_str()))
        .collect();
    assert_eq!(
        names,
        [("node1", "node2"), ("node2", "node1"), ("node1", "node2")]
    );
    for s in &report.switches {
        // The new active resumed after the old one's last vote, never on or before it.
        assert!(s.first_new_vote > s.last_old_vote, "{s:?}");
    }
    assert_eq!(sim.cluster.identity(1), Some(sim.cluster.staked_pubkey()));
}
