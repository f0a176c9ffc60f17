//! The operator's hooks around a switch, with real agents on the simulated cluster: the manager's
//! pre- and post-switch commands and each agent's role-change commands see the switch's facts in
//! their environment; a failing or hung must-succeed pre-hook cancels a planned switch with
//! nothing changed, and never an automatic failover.

mod e2e_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_support::{system, PATIENCE};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_sim::Fault;
use serde_json::json;

/// A hook that writes its `FAILOVER_*` variables to `path` (atomically, so a reader never sees
/// half a file).
fn recorder(path: &Path) -> String {
    format!(
        "env | grep '^FAILOVER_' | sort > {p}.tmp && mv {p}.tmp {p}",
        p = path.display()
    )
}

/// The variables a hook recorded, once it has run (hooks run beside the switch; their file is
/// the only event there is to wait for).
async fn recorded(path: &Path) -> Vec<(String, String)> {
    created(path).await;
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(vars: &'a [(String, String)], key: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing in {vars:?}"))
}

fn planned(reason: &str) -> ControlRequest {
    ControlRequest::Trigger {
        to: None,
        reason: reason.into(),
        force: false,
        dry_run: false,
        now: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hook_sees_the_facts_of_the_switch() {
    let files = tempfile::tempdir().unwrap();
    let at = |name: &str| -> PathBuf { files.path().join(name) };
    let (agent_pre, agent_post) = (at("agent-pre"), at("agent-post"));
    let mut sys = system(|i, config| {
        config["pre_role_change_command"] =
            json!(recorder(&agent_pre.with_extension(i.to_string())));
        config["post_role_change_command"] =
            json!(recorder(&agent_post.with_extension(i.to_string())));
    })
    .await;
    sys.manager_config["pre_switch_command"] = json!(recorder(&at("pre")));
    sys.manager_config["post_switch_command"] = json!(recorder(&at("post")));
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;
    let outcome = e2e_support::switch_now(&manager.state_dir, "kernel upgrade").await;
    sys.wait_active(1).await;

    let pre = recorded(&at("pre")).await;
    assert_eq!(get(&pre, "FAILOVER_HOOK"), "pre_switch");
    assert_eq!(get(&pre, "FAILOVER_KIND"), "planned");
    assert_eq!(get(&pre, "FAILOVER_FROM"), "validator1 (127.0.0.2)");
    assert_eq!(get(&pre, "FAILOVER_TO"), "validator2 (127.0.0.3)");
    assert_eq!(get(&pre, "FAILOVER_REASON"), "kernel upgrade");
    let post = recorded(&at("post")).await;
    assert_eq!(get(&post, "FAILOVER_OK"), "1");
    assert_eq!(get(&post, "FAILOVER_TERM"), outcome.term.to_string());
    assert_eq!(
        get(&post, "FAILOVER_TOTAL_MS"),
        outcome.total_ms.to_string()
    );
    for phase in &outcome.phases {
        let entry = format!("{}={}", phase.name, phase.ms);
        assert!(
            get(&post, "FAILOVER_PHASES").split(' ').any(|p| p == entry),
            "{post:?}"
        );
    }
    // Each agent, for its own step.
    let demoted = recorded(&agent_post.with_extension("0")).await;
    assert_eq!(get(&demoted, "FAILOVER_ROLE"), "passive");
    assert_eq!(get(&demoted, "FAILOVER_STEP"), "become_passive");
    assert_eq!(get(&demoted, "FAILOVER_OK"), "1");
    let promoted_pre = recorded(&agent_pre.with_extension("1")).await;
    assert_eq!(get(&promoted_pre, "FAILOVER_ROLE"), "active");
    assert_eq!(
        get(&promoted_pre, "FAILOVER_TERM"),
        outcome.term.to_string()
    );
    let promoted = recorded(&agent_post.with_extension("1")).await;
    assert!(
        get(&promoted, "FAILOVER_PHASES").contains("promote="),
        "{promoted:?}"
    );
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_hung_must_succeed_pre_hook_cancels_a_planned_switch_never_a_failover() {
    let mut sys = system(|_, _| {}).await;
    let files = tempfile::tempdir().unwrap();
    let flag = files.path().join("hang");
    // Fails at first; hangs once `flag` exists.
    sys.manager_config["pre_switch_command"] = json!(format!(
        "if [ -e {f} ]; then sleep 60; else echo 'not now' >&2; exit 3; fi",
        f = flag.display()
    ));
    sys.manager_config["pre_switch_must_succeed"] = json!(true);
    sys.manager_config["hook_timeout"] = json!("500ms");
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;
    let staked = sys.staked();
    let changes = sys.cluster.safety().identity_changes.len();

    let refused = ask_running(&manager.state_dir, &planned("maintenance"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        refused.contains("cancelled") && refused.contains("exit status: 3"),
        "{refused}"
    );
    std::fs::write(&flag, "").unwrap();
    let started = Instant::now();
    let refused = ask_running(&manager.state_dir, &planned("maintenance"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("did not finish"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Nothing changed: the same holder, no identity change, no new term at either agent.
    assert_eq!(sys.cluster.identity(0), Some(staked));
    assert_eq!(sys.cluster.safety().identity_changes.len(), changes);

    // The active's validator dies: the failover does not wait for (or heed) the hook.
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    sys.wait_active(1).await;
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// The agents' lease gauges, scraped from their `/metrics`.
async fn lease_expired(url: &str) -> bool {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("failover_agent_lease_expired "))
        .unwrap_or_else(|| panic!("no lease gauge in {text}"));
    line.ends_with(" 1")
}

/// A planned switch waits for its pre-hook (up to `hook_timeout`, 30 s by default), far longer
/// than an agent's lease: the manager keeps both leases beside the wait, or the active's agent
/// would be left to judge on its evidence alone (and fence itself on the first RPC hiccup)
/// before the switch has even begun.
#[tokio::test(flavor = "multi_thread")]
async fn the_agents_keep_their_leases_while_a_planned_switch_waits_for_its_pre_hook() {
    let mut sys = system(|_, _| {}).await;
    let files = tempfile::tempdir().unwrap();
    let (started, go) = (files.path().join("started"), files.path().join("go"));
    sys.manager_config["pre_switch_command"] = json!(format!(
        "touch {s}; while [ ! -e {g} ]; do sleep 0.05; done",
        s = started.display(),
        g = go.display()
    ));
    sys.manager_config["pre_switch_must_succeed"] = json!(true);
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;
    let state_dir = manager.state_dir.clone();
    let switch =
        tokio::spawn(async move { ask_running(&state_dir, &planned("maintenance")).await });
    created(&started).await;

    // Three lease lengths (the agents' manager_timeout is 1 s) inside the hook.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        for (i, agent) in sys.agents.iter().enumerate() {
            assert!(
                !lease_expired(&agent.url).await,
                "agent {} lost its lease {:?} into the pre-hook",
                i + 1,
                window.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&go, "").unwrap();
    let outcome = switch.await.unwrap().unwrap().unwrap();
    assert!(outcome.ok, "{outcome:?}");
    sys.wait_active(1).await;
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// The active's host dies while a planned switch waits for its pre-hook: the wait ends once its
/// agent misses `misses_before_failover` heartbeats — the switch is cancelled, nothing changed —
/// and the manager fails over as for any dead host, instead of judging it only when the hook
/// gives up (here after a minute).
#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_dies_while_a_planned_switch_waits_for_its_pre_hook_is_replaced_at_once() {
    let mut sys = system(|_, _| {}).await;
    let files = tempfile::tempdir().unwrap();
    let started = files.path().join("started");
    sys.manager_config["pre_switch_command"] =
        json!(format!("touch {s}; sleep 60", s = started.display()));
    sys.manager_config["hook_timeout"] = json!("60s");
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;
    let state_dir = manager.state_dir.clone();
    let switch =
        tokio::spawn(async move { ask_running(&state_dir, &planned("maintenance")).await });
    created(&started).await;

    // Power cut: validator1, then its agent.
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    sys.agents[0].kill().await;
    let answer = switch.await.unwrap().unwrap();
    let error = answer.expect_err("the switch cannot go on without the active's agent");
    assert!(
        error.contains("stopped answering during the pre-switch hook"),
        "{error}"
    );
    // The follower kept the tower through the hook's wait, so the manager holds the final one
    // and need not wait out the lockouts of votes it never saw (a minute and more).
    let staked = sys.staked();
    let active = sys
        .cluster
        .wait_until(PATIENCE, |w| {
            w.holders(&staked) == vec![1] && w.vote.last_voter == Some(1)
        })
        .await;
    assert!(
        active.is_ok(),
        "not replaced; messages: {:#?}",
        sys.receiver.inbox.all()
    );
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("active agent unreachable"), "{text}");
    assert!(
        !text.contains("lockouts"),
        "waited out the lockouts: {text}"
    );
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// Waits until a hook has created `path`.
async fn created(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < PATIENCE, "{} never ran", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
