//! The handover on an Alpenglow cluster (the simulator's Agave 4.2 mode): the vote history moves
//! with the identity by the same steps as a tower, and every way of promoting onto a missing,
//! foreign-kind, or older vote history is refused. Agave 4.3's refusals and partial switches, and
//! the migration window, likewise.

mod support;

use failover_agent::api::{FailoverAction, Role};
use failover_agent::consensus::Consensus;
use failover_identity::{VoteHistoryFile, VoteStateKind};
use failover_sim::{Fault, SimConfig};
use support::{alpenglow_bed, bed_on, command, PATIENCE};

#[tokio::test(flavor = "multi_thread")]
async fn the_vote_history_moves_with_the_identity_and_back_safely() {
    let bed = alpenglow_bed(|_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let status = bed.client(0).status(1).await.unwrap();
    assert!(
        matches!(
            status.consensus,
            Consensus::Alpenglow {
                genesis_slot: Some(_)
            }
        ),
        "{:?}",
        status.consensus
    );
    assert_eq!(status.tower.kind, VoteStateKind::VoteHistory);
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    let final_history = passive.tower.clone().expect("the final vote history");
    assert_eq!(final_history.kind, VoteStateKind::VoteHistory);
    let names: Vec<&str> = passive.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["hook", "voters", "demote", "confirm", "settle", "tower", "remove"]
    );
    let names: Vec<&str> = active.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tower",
            "install",
            "root",
            "promote",
            "authorized_voter",
            "hook",
            "confirm"
        ]
    );
    assert!(
        active.phases[3]
            .detail
            .contains("require_vote_history=true")
            && active.phases[3].detail.contains("require_tower=false"),
        "{active:#?}"
    );
    // The new active votes from its vote history; the old one has none left to load.
    let voted_before = final_history.last_vote.unwrap();
    bed.cluster
        .wait_until(PATIENCE, |w| {
            w.vote.last_voter == Some(1) && w.vote.last_vote > voted_before
        })
        .await
        .unwrap();
    let ledger = |i: usize| bed.cluster.info().nodes[i].ledger.clone();
    let file = ledger(1).join(format!("vote_history-{staked}.bin"));
    let on_disk = VoteHistoryFile::parse(&std::fs::read(&file).unwrap()).unwrap();
    assert!(on_disk.history.latest_voted_slot() > Some(voted_before));
    assert!(!ledger(0)
        .join(format!("vote_history-{staked}.bin"))
        .exists());
    // No tower is ever written on Alpenglow.
    assert!(!ledger(1).join(format!("tower-1_9-{staked}.bin")).exists());
    let (_, back) = bed.switch(1, 0, 2).await;
    assert!(back.ok, "{back:#?}");
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_voter == Some(0))
        .await
        .unwrap();
    assert_eq!(bed.client(0).status(3).await.unwrap().role, Role::Active);
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_promotion_onto_a_missing_foreign_kind_or_older_vote_history() {
    let bed = alpenglow_bed(|_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let demoted = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    let history = demoted.tower.unwrap();
    // Nothing offered: the chain shows X's votes, so an empty history would be the way to double
    // votes (votor starts from one silently).
    let none = bed
        .client(1)
        .failover(&command(FailoverAction::BecomeActive, 2, None, None))
        .await
        .unwrap();
    assert!(!none.ok);
    assert!(
        none.error.unwrap().contains("no vote history to install"),
        "refused for the reason"
    );
    // A tower is not a vote history.
    let mut as_tower = history.clone();
    as_tower.kind = VoteStateKind::Tower;
    let wrong = bed
        .client(1)
        .failover(&command(
            FailoverAction::BecomeActive,
            2,
            Some(as_tower),
            Some(history.sha256.clone()),
        ))
        .await
        .unwrap();
    assert!(!wrong.ok);
    assert!(wrong.error.unwrap().contains("needs a vote history"));
    // Under the floor the manager states: refused too.
    let mut request = command(
        FailoverAction::BecomeActive,
        2,
        Some(history.clone()),
        Some(history.sha256.clone()),
    );
    request.min_last_vote = Some(history.last_vote.unwrap() + 10);
    let stale = bed.client(1).failover(&request).await.unwrap();
    assert!(!stale.ok);
    assert!(stale.error.unwrap().contains("could violate lockouts"));
    assert_ne!(bed.cluster.identity(1), Some(staked));
    // The honest one goes through.
    request.min_last_vote = None;
    let ok = bed.client(1).failover(&request).await.unwrap();
    assert!(ok.ok, "{ok:#?}");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_behind_the_vote_historys_root_takes_x_only_once_its_root_has_passed_it() {
    // A real 4.2.2 standby promoted with the old active's history rooted above its own root
    // aborted seconds later (votor's `assert!(slot >= self.root)` on a block it held below it).
    let bed = alpenglow_bed(|_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    bed.cluster
        .fault(1, Fault::Behind { slots: 6 })
        .await
        .unwrap();
    let demoted = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    let history = demoted.tower.unwrap();
    let history_root = history.root.expect("a rooted vote history");
    let promoted = bed
        .client(1)
        .failover(&command(
            FailoverAction::BecomeActive,
            2,
            Some(history.clone()),
            Some(history.sha256.clone()),
        ))
        .await
        .unwrap();
    assert!(promoted.ok, "{promoted:#?}");
    let root = promoted
        .phases
        .iter()
        .find(|p| p.name == "root")
        .expect("the promotion waited for the root");
    assert!(
        root.detail.contains(&format!("has reached {history_root}"))
            && root.detail.contains("vote history's root"),
        "{root:#?}"
    );
    assert_eq!(
        bed.cluster.identity(1),
        Some(staked),
        "the standby is alive and X"
    );
    bed.cluster
        .wait_until(PATIENCE, |w| {
            w.vote.last_voter == Some(1) && Some(w.vote.last_vote) > history.last_vote
        })
        .await
        .unwrap();
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recorder_catches_a_promotion_onto_an_empty_vote_history() {
    // What the agent refuses, done by hand: setIdentity without the vote-history requirement and
    // no file — votor starts from an empty history, and the recorder says the vote state went
    // backwards.
    let bed = alpenglow_bed(|_, _| {}).await;
    let demoted = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(demoted.ok);
    let staked = std::sync::Arc::new(
        failover_identity::Keypair::read_file(
            &bed.cluster.info().staked_keypair,
            failover_identity::Permissions::Strict,
        )
        .unwrap(),
    );
    // Its root well below X's last vote (a node behind): votor would vote again on slots the old
    // active voted on. (Once the root has passed every vote, an empty history is harmless: votor
    // ignores those slots — the recorder knows that too.)
    bed.cluster
        .fault(1, failover_sim::Fault::Behind { slots: 20 })
        .await
        .unwrap();
    bed.cluster
        .shared()
        .world()
        .set_identity(1, staked, false, false)
        .unwrap();
    let report = bed.cluster.safety();
    assert!(report.tower_went_backwards, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_during_the_migration_window_is_refused_unless_allowed() {
    let bed = bed_on(
        |dir| {
            let mut sim = SimConfig::new(dir);
            sim.slot_time = std::time::Duration::from_millis(100);
            sim.versions = vec!["4.2.2".into(); 2];
            sim.consensus = failover_sim::Consensus::Migrating { activated_at: 900 };
            sim
        },
        |_, _| {},
    )
    .await;
    let status = bed.client(0).status(1).await.unwrap();
    assert_eq!(
        status.consensus,
        Consensus::Migrating {
            activated_at: 900,
            migration_slot: 5900
        }
    );
    let demoted = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "demotion is always allowed: {demoted:#?}");
    let tower = demoted.tower.unwrap();
    assert_eq!(
        tower.kind,
        VoteStateKind::Tower,
        "TowerBFT still votes here"
    );
    let sha = Some(tower.sha256.clone());
    let mut request = command(FailoverAction::BecomeActive, 2, Some(tower), sha);
    let refused = bed.client(1).failover(&request).await.unwrap();
    assert!(!refused.ok);
    assert!(refused.error.unwrap().contains("migration"));
    request.allow_migration = true;
    let forced = bed.client(1).failover(&request).await.unwrap();
    assert!(forced.ok, "{forced:#?}");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_the_manager_thinks_is_on_another_consensus_is_refused() {
    let bed = alpenglow_bed(|_, _| {}).await;
    let demoted = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    let history = demoted.tower.unwrap();
    let sha = Some(history.sha256.clone());
    let mut request = command(FailoverAction::BecomeActive, 2, Some(history), sha);
    request.consensus = Some(Consensus::TowerBft);
    let refused = bed.client(1).failover(&request).await.unwrap();
    assert!(!refused.ok);
    assert!(refused.error.unwrap().contains("refusing until both agree"));
}

#[tokio::test(flavor = "multi_thread")]
async fn agave_4_3_a_partial_identity_change_is_asked_again_until_it_converges() {
    let bed = bed_on(
        |dir| {
            let mut sim = SimConfig::alpenglow(dir);
            sim.slot_time = std::time::Duration::from_millis(100);
            sim.versions = vec!["4.3.2".into(); 2];
            sim
        },
        |_, _| {},
    )
    .await;
    bed.cluster
        .fault(1, Fault::PartialSetIdentity { times: 1 })
        .await
        .unwrap();
    let (_, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    let promote = active.phases.iter().find(|p| p.name == "promote").unwrap();
    assert!(
        promote.detail.contains("converged on attempt 2"),
        "{promote:#?}"
    );
    // Two failures in a row past the retries are reported, not hidden.
    bed.cluster
        .fault(0, Fault::PartialSetIdentity { times: 5 })
        .await
        .unwrap();
    let (passive, _) = bed.switch(1, 0, 2).await;
    assert!(passive.ok);
    bed.cluster.safety().assert_safe();
}
