//! The manager on an Alpenglow cluster (the simulator's Agave 4.2 mode): it knows the consensus,
//! leaves a healthy active alone although `lastVote` trails the tip by the certificate delay,
//! fails over for each unhealthy reason moving the vote history, and holds during the migration.

mod e2e_support;

use e2e_support::{alpenglow_system, system_on};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_sim::{Consensus, Fault, SimConfig};

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_alpenglow_active_is_left_alone_although_its_last_vote_trails_the_tip() {
    let sys = alpenglow_system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    // 150 slots (15 s at 100 ms): with TowerBFT's 8-slot threshold it would have failed over at
    // once, as the issue measured on a real 4.2.2 cluster.
    sys.slots(20).await;
    let lag = sys.cluster.with_world(|w| w.slot - w.vote.last_vote);
    assert!(
        lag >= 8,
        "the simulator's lastVote trails by the certificate delay ({lag})"
    );
    sys.slots(130).await;
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    assert_eq!(sys.receiver.inbox.count("Failover complete"), 0);
    assert!(
        manager.logged("the cluster runs Alpenglow"),
        "{:?}",
        manager.log.lock().unwrap()
    );
    let out = tokio::process::Command::new(e2e_support::binary("failover-manager"))
        .arg("--config")
        .arg(&manager.config)
        .arg("--status")
        .output()
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("cluster: Alpenglow (genesis slot"),
        "{status}"
    );
    assert!(status.contains("stale above 24 slots"), "{status}");
    sys.cluster.safety().assert_safe();
}

async fn fails_over_after(fault: Fault, why: &str) {
    let mut sys = alpenglow_system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, fault).await.unwrap();
    sys.wait_active(1).await;
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains(why), "{text}");
    let staked = sys.staked();
    let history = sys.cluster.info().nodes[1]
        .ledger
        .join(format!("vote_history-{staked}.bin"));
    assert!(history.exists(), "the vote history moved");
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_alpenglow_validator_is_replaced_with_its_vote_history() {
    fails_over_after(Fault::Crash, "down").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alpenglow_validator_that_stops_voting_is_replaced() {
    fails_over_after(Fault::StopVoting, "last vote").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_alpenglow_switchover_moves_the_vote_history() {
    let sys = alpenglow_system(|_, _| {}).await;
    let manager = sys.start_manager().await;
    let outcome = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            reason: "maintenance".into(),
            force: false,
            dry_run: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(outcome.ok, "{}", outcome.summary());
    let tower = outcome.phases.iter().find(|p| p.name == "tower").unwrap();
    assert!(tower.detail.contains("last vote"), "{tower:?}");
    sys.wait_active(1).await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn during_the_migration_window_no_automatic_failover_and_no_unforced_switch() {
    let mut sys = system_on(
        |dir| {
            let mut sim = SimConfig::new(dir);
            sim.versions = vec!["4.2.2".into(); 2];
            sim.consensus = Consensus::Migrating { activated_at: 900 };
            sim
        },
        |_, _| {},
    )
    .await;
    let manager = sys.start_manager().await;
    let refused = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            reason: "maintenance".into(),
            force: false,
            dry_run: false,
        },
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(refused.contains("migrating to Alpenglow"), "{refused}");
    assert!(refused.contains("--force"), "{refused}");
    // The active stops voting: the manager holds, says why once, and nobody is promoted.
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    let (_, text) = sys.receiver.wait_for("nobody is voting").await;
    assert!(text.contains("migration"), "{text}");
    sys.slots(30).await;
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    assert_ne!(sys.cluster.identity(1), Some(sys.staked()));
    sys.cluster.fault(0, Fault::ResumeVoting).await.unwrap();
    // Forced, a planned switch goes.
    let forced = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            reason: "maintenance".into(),
            force: true,
            dry_run: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(forced.ok, "{}", forced.summary());
    sys.cluster.safety().assert_safe();
}
