//! The manager on an Alpenglow cluster (the simulator's Agave 4.2 mode): it knows the consensus,
//! leaves a healthy active alone although `lastVote` trails the tip by the certificate delay,
//! fails over for each unhealthy reason moving the vote history, and holds during the migration.

mod e2e_support;

use e2e_support::{alpenglow_system, system_on};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_sim::{Consensus, Fault, SimConfig};
use serde_json::json;

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
    // On failure, what the manager said and did.
    let said = || {
        format!(
            "{:#?}\n{:#?}",
            sys.receiver.inbox.all(),
            manager.log.lock().unwrap()
        )
    };
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()), "{}", said());
    assert_eq!(
        sys.receiver.inbox.count("Failover complete"),
        0,
        "{}",
        said()
    );
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

/// The agents' lease for these tests: long enough that a loaded machine (a heartbeat slower than
/// the default 1 s of the test systems) does not let an active whose votes stopped fence itself
/// first — safe too, but then the manager replaces a node nobody holds X on, not the one this
/// test stops, and the reason differs. (Seen under load: "From: nobody".)
const LEASE: &str = "5s";

async fn fails_over_after(fault: Fault, why: &str) {
    let mut sys = alpenglow_system(|_, config| config["manager_timeout"] = json!(LEASE)).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, fault).await.unwrap();
    sys.wait_active(1).await;
    sys.cluster.safety().assert_safe();
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
            to: None,
            reason: "maintenance".into(),
            force: false,
            dry_run: false,
            now: false,
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
        // The active's votes stop below: a lease that expires on a loaded machine would have
        // its agent fence it, which is not what this test watches.
        |_, config| config["manager_timeout"] = json!(LEASE),
    )
    .await;
    let manager = sys.start_manager().await;
    let refused = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            to: None,
            reason: "maintenance".into(),
            force: false,
            dry_run: false,
            now: false,
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
            to: None,
            reason: "maintenance".into(),
            force: true,
            dry_run: false,
            now: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(forced.ok, "{}", forced.summary());
    sys.cluster.safety().assert_safe();
}

/// The active cut off under Alpenglow while the passive replays behind: the cut-off node votes
/// on for a while (its votes reach nobody) until its agent fences it, so neither the manager's
/// newest vote history nor X's lastVote shows those last slots. Promoted at once, the lagging
/// passive would vote on them again — a real 4.2.2 drill showed its notarize votes against the
/// cut-off node's skip votes, which Alpenglow slashes; it must first wait until its root passes
/// them.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_active_is_replaced_without_voting_its_last_slots_again() {
    let mut sys = alpenglow_system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.cluster
        .fault(1, Fault::Behind { slots: 30 })
        .await
        .unwrap();
    sys.slots(10).await;
    // Cut off: its votes reach nobody, and a moment later its agent is out of the manager's
    // reach too (gone, here) — its last vote history backup already has votes the chain lacks.
    sys.cluster.fault(0, Fault::CutOff).await.unwrap();
    sys.slots(3).await;
    sys.agents[0].kill().await;
    sys.slots(5).await;
    // Its agent's self-fence (done here through the same admin RPC): unstaked, it votes no more.
    let node = &sys.cluster.info().nodes[0];
    failover_identity::AdminRpcClient::new(&node.admin_socket, failover_identity::Timeouts::LOCAL)
        .set_identity(&node.unstaked_keypair, false)
        .await
        .unwrap();
    let fenced_at = sys.cluster.with_world(|w| w.slot);
    let staked = sys.staked();
    let became = sys
        .cluster
        .wait_until(e2e_support::PATIENCE, |w| {
            w.holders(&staked) == vec![1] && w.vote.last_voter == Some(1)
        })
        .await;
    assert!(
        became.is_ok(),
        "not promoted: {:#?}\nagent 2: {}",
        sys.receiver.inbox.all(),
        sys.agents[1].log.lock().unwrap().join("\n")
    );
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("To: validator2"), "{text}");
    sys.slots(10).await;
    sys.cluster.safety().assert_safe();
    let first = sys
        .cluster
        .with_world(|w| w.safety.first_vote_after(1, fenced_at.saturating_sub(60)));
    assert!(
        first.is_some_and(|s| s > fenced_at),
        "the new active's first vote {first:?}; the cut-off node voted up to {fenced_at}"
    );
    let agent_log = sys.agents[1].log.lock().unwrap().join("\n");
    assert!(
        agent_log.contains("X votes on no slot the old active may have voted on"),
        "the promotion waited for the root: {agent_log}"
    );
}
