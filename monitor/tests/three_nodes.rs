//! One identity on three validators (a `validators` list in priority order) on the simulated
//! cluster, with real agent processes: the automatic failover skips a standby that is not fit,
//! and `--trigger-failover --to NODE` switches to the node named, or refuses with a reason and
//! changes nothing. Every test asserts the safety recorder's properties, "never two holders"
//! among them.

mod e2e_support;

use e2e_support::{system_of, System};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_monitor::notify::Notifier;
use failover_monitor::Manager;
use failover_sim::Fault;

fn trigger_to(node: &str) -> ControlRequest {
    ControlRequest::Trigger {
        to: Some(node.into()),
        reason: "maintenance".into(),
        force: false,
        dry_run: false,
        now: true,
    }
}

/// Node `i` never took the staked identity: no change the recorder saw gave it to `i`.
fn never_held(sys: &System, i: usize) {
    let staked = sys.staked().to_string();
    let report = sys.cluster.safety();
    let took: Vec<_> = report
        .identity_changes
        .iter()
        .filter(|c| c.node == i && c.identity.as_deref() == Some(staked.as_str()))
        .collect();
    assert!(
        took.is_empty(),
        "validator{} took the staked identity: {took:?}",
        i + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_of_three_nodes_are_reported_in_priority_order() {
    let sys = system_of(3).await;
    let mut manager = Manager::new(sys.manager_cfg(), Notifier::disabled())
        .await
        .unwrap();
    manager.observe().await;
    let lines = manager.status_lines();
    assert!(
        lines[0].starts_with("validator1 (127.0.0.2): Active"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("validator2 (127.0.0.3): Passive"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("validator3 (127.0.0.4): Passive"),
        "{lines:?}"
    );
    sys.cluster.safety().assert_safe();
}

/// The first standby replays 500 slots behind: when the active crashes, the third node takes
/// over and the lagging one is never promoted.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_active_goes_to_the_third_node_when_the_second_lags() {
    let mut sys = system_of(3).await;
    sys.cluster
        .fault(1, Fault::Behind { slots: 500 })
        .await
        .unwrap();
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    sys.wait_active(2).await;
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("To: validator3 (127.0.0.4)"), "{text}");
    sys.slots(10).await;
    never_held(&sys, 1);
    sys.cluster.safety().assert_safe();
}

/// `--to validator3` passes over the first standby; naming a node the config does not have, or
/// the node that is active, is refused with the reason and switches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switch_goes_to_the_node_named_and_refuses_bad_names() {
    let sys = system_of(3).await;
    let manager = sys.start_manager().await;
    sys.slots(3).await;

    let unknown = ask_running(&manager.state_dir, &trigger_to("validator9"))
        .await
        .expect("a running manager")
        .expect_err("no such node");
    assert!(
        unknown.contains("validator9") && unknown.contains("validator1, validator2, validator3"),
        "{unknown}"
    );
    let active = ask_running(&manager.state_dir, &trigger_to("validator1"))
        .await
        .expect("a running manager")
        .expect_err("already active");
    assert!(
        active.contains("already holds the staked identity"),
        "{active}"
    );
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));

    let outcome = ask_running(&manager.state_dir, &trigger_to("validator3"))
        .await
        .expect("a running manager")
        .expect("the switch ran");
    assert!(outcome.ok, "{}", outcome.summary());
    sys.wait_active(2).await;
    sys.slots(5).await;
    never_held(&sys, 1);
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}
