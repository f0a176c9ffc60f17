//! `failover-manager` as an operator runs it: --check-config, --status, --trigger-failover
//! (refused when the passive is unhealthy, unless --force), --shutdown-agent.

mod e2e_support;

use e2e_support::{binary, system};
use failover_sim::Fault;
use tokio::process::Command;

async fn manager(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("failover-manager"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap()
}

fn write(sys: &e2e_support::System) -> std::path::PathBuf {
    let path = sys.dir.path().join("manager-config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&sys.manager_config).unwrap(),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_and_status() {
    let mut sys = system(|_, _| {}).await;
    let config = write(&sys);
    let out = manager(&config, &["--check-config"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = manager(&config, &["--status"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // NODE is "validatorN (IP)": the role is the third word, promotable the last.
    assert_eq!(row("validator1 (127.0.0.2)")[2], "active", "{text}");
    assert_eq!(row("validator2 (127.0.0.3)")[2], "passive", "{text}");
    assert_eq!(row("validator2 (127.0.0.3)").last(), Some(&"yes"), "{text}");
    assert!(text.contains("no manager runs on this state_dir"), "{text}");

    sys.manager_config["heartbeat_interval"] = "1".into();
    sys.manager_config["validator2"]["endpoint"] = "ftp://x".into();
    let out = manager(&write(&sys), &["--check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("heartbeat_interval:") && err.contains("validator2.endpoint:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_refuses_an_unhealthy_passive_unless_forced() {
    let sys = system(|_, _| {}).await;
    let config = write(&sys);
    sys.cluster
        .fault(1, Fault::Behind { slots: 500 })
        .await
        .unwrap();
    let out = manager(&config, &["--trigger-failover", "--reason", "test"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing") && err.contains(" slots behind") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));

    sys.cluster
        .fault(1, Fault::Behind { slots: 0 })
        .await
        .unwrap();
    let out = manager(&config, &["--trigger-failover", "--reason", "test"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("validator1 (127.0.0.2) → validator2 (127.0.0.3) done"),
        "{summary}"
    );
    sys.wait_active(1).await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_agent_stops_both_agents() {
    let mut sys = system(|_, _| {}).await;
    let config = write(&sys);
    let out = manager(&config, &["--shutdown-agent"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for agent in sys.agents.iter_mut() {
        let status = tokio::time::timeout(e2e_support::PATIENCE, agent.child.wait())
            .await
            .expect("the agent stops")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
    // Stopping the agents leaves the validators as they were.
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    sys.cluster.safety().assert_safe();
}
