//! The manager and the agent as an operator meets them in the first hour: a dry-run trigger that
//! never acts, one-shot flags that exclude each other, `--check-config` refusing what the start
//! would refuse, a standby whose keys could not promote it, and SIGHUP from logrotate.

mod e2e_support;

use std::path::Path;
use std::time::{Duration, Instant};

use e2e_support::{binary, system, PATIENCE};
use tokio::process::Command;

async fn manager_cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("failover-manager"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_trigger_returns_the_running_managers_plan_and_changes_nothing() {
    let sys = system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    let staked = sys.staked();
    let before = sys.cluster.safety().identity_changes.len();
    let out = manager_cli(
        &manager.config,
        &["--trigger-failover", "--dry-run", "--reason", "rehearsal"],
    )
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("planned (dry run: nothing was changed)"),
        "{all}"
    );
    for phase in ["term", "demote", "tower", "promote", "confirm", "gossip"] {
        assert!(
            all.lines()
                .any(|l| l.trim_start().starts_with(phase) && l.contains("would ")),
            "no {phase} phase: {all}"
        );
    }
    // Nothing moved: the identity stayed, no agent heard a new term, nobody was demoted.
    sys.slots(10).await;
    assert_eq!(sys.cluster.identity(0), Some(staked));
    assert_ne!(sys.cluster.identity(1), Some(staked));
    let changes = sys.cluster.safety().identity_changes;
    assert_eq!(changes.len(), before, "{changes:?}");
    for agent in &sys.agents {
        let health = failover_agent::AgentClient::new(&agent.url, None, PATIENCE)
            .health()
            .await
            .unwrap();
        assert!(health.ok);
    }
    assert!(manager.logged("manager running"));
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shot_flags_that_conflict_are_refused_and_shutdown_waits_for_the_manager() {
    let sys = system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    for args in [
        vec!["--status", "--trigger-failover"],
        vec!["--reason", "alone"],
        vec!["--force"],
        vec!["--dry-run", "--status"],
        vec!["--shutdown-agent", "--check-config"],
    ] {
        let out = manager_cli(&manager.config, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("error:"), "{args:?}: {}", text(&out));
    }
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    // With a manager running, --shutdown-agent would leave it without agents.
    let out = manager_cli(&manager.config, &["--shutdown-agent"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("a manager is running"),
        "{}",
        text(&out)
    );
    for agent in &sys.agents {
        let client = failover_agent::AgentClient::new(&agent.url, None, PATIENCE);
        assert!(client.health().await.unwrap().ok, "an agent was stopped");
    }
    let out = manager_cli(&manager.config, &["--shutdown-agent", "--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_refuses_what_the_start_would_refuse() {
    let mut sys = system(|_, _| {}).await;
    let dir = sys.dir.path().to_path_buf();
    let config = dir.join("manager-config.json");
    let write = |value: &serde_json::Value| {
        std::fs::write(&config, serde_json::to_string_pretty(value).unwrap()).unwrap();
    };
    // A state_dir nobody can create, and a log_file under a file.
    let good = sys.manager_config.clone();
    sys.manager_config["state_dir"] = "/etc/passwd/failover".into();
    sys.manager_config["log_file"] = "/etc/hostname/manager.log".into();
    write(&sys.manager_config);
    let out = manager_cli(&config, &["--check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("state_dir:"), "{}", text(&out));
    assert!(text(&out).contains("log_file:"), "{}", text(&out));
    // A secure-mode keypair that is not the staked identity.
    let other = dir.join("other-identity.json");
    failover_identity::Keypair::generate()
        .write_new_file(&other)
        .unwrap();
    let ssh_key = dir.join("ssh-key");
    std::fs::write(&ssh_key, "not a real key").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut secure = good.clone();
    secure["secure_identity_mode"] = true.into();
    secure["identity_keypair_path"] = other.to_str().unwrap().into();
    secure["ssh_user"] = "solana".into();
    secure["ssh_key_path"] = ssh_key.to_str().unwrap().into();
    for v in ["validator1", "validator2"] {
        secure[v]["ledger_path"] = dir.to_str().unwrap().into();
    }
    write(&secure);
    let out = manager_cli(&config, &["--check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("identity_keypair_path:")
            && text(&out).contains("not staked_identity_pubkey"),
        "{}",
        text(&out)
    );
    // The start refuses the same, the same way.
    let out = manager_cli(&config, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("identity_keypair_path:"),
        "{}",
        text(&out)
    );
    // A log_file in a directory that does not exist yet, written with ~: checked, then created.
    let mut home_log = good.clone();
    home_log["log_file"] = "~/logs/manager.log".into();
    write(&home_log);
    let out = Command::new(binary("failover-manager"))
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .env("HOME", &dir)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_staked_keypair_is_not_the_identity_refuses_to_start() {
    let sys = system(|_, _| {}).await;
    let dir = sys.dir.path();
    let wrong = dir.join("wrong-staked.json");
    failover_identity::Keypair::generate()
        .write_new_file(&wrong)
        .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("validator-config-2.json")).unwrap(),
    )
    .unwrap();
    config["staked_identity_keypair"] = wrong.to_str().unwrap().into();
    config["listen_addr"] = "127.0.0.1:0".into();
    let path = dir.join("validator-config-wrong.json");
    std::fs::write(&path, config.to_string()).unwrap();
    for args in [vec!["--check-config"], vec![]] {
        let out = Command::new(binary("failover-agent"))
            .arg("--config")
            .arg(&path)
            .args(&args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("staked_identity_keypair:")
                && text(&out).contains("could never be promoted"),
            "{}",
            text(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_whose_key_breaks_later_is_shown_held_and_said_once() {
    let mut sys = system(|_, _| {}).await;
    sys.manager_config["failover_cooldown"] = "1s".into();
    let manager = sys.spawn_manager(":").await;
    // The staked keypair file becomes readable by others: every agent's loader refuses it now,
    // and each re-checks its keys for every status.
    let staked_key = sys.cluster.info().staked_keypair.clone();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staked_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, alert) = sys.receiver.wait_for("could not take over").await;
    assert!(alert.contains("validator2"), "{alert}");
    let out = manager_cli(&manager.config, &["--status"]).await;
    assert!(text(&out).contains("NOT PROMOTABLE"), "{}", text(&out));
    // The active stops voting: the switch is held for the standby's keys, said once as critical.
    sys.cluster
        .fault(0, failover_sim::Fault::StopVoting)
        .await
        .unwrap();
    let (_, critical) = sys.receiver.wait_for("nobody is voting").await;
    assert!(critical.contains("could not be promoted"), "{critical}");
    sys.slots(30).await;
    assert_eq!(
        sys.receiver.inbox.count("nobody is voting"),
        2,
        "telegram + webhook, once each"
    );
    assert_eq!(sys.receiver.inbox.count("could not take over"), 2);
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    std::fs::set_permissions(&staked_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_the_log_file_and_both_services_keep_running() {
    let mut sys = system(|_, _| {}).await;
    let logs = sys.dir.path().join("logs-not-yet-there");
    let log = logs.join("manager.log");
    sys.manager_config["log_file"] = log.to_str().unwrap().into();
    let manager = sys.spawn_manager(":").await;
    assert!(log.exists(), "the log directory was created");
    let rotated = logs.join("manager.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    manager.signal("-HUP").await;
    let deadline = Instant::now() + PATIENCE;
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new log file after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It still answers, and writes to the new file.
    let out = manager_cli(&manager.config, &["--trigger-failover", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert!(fresh.contains("SIGHUP: log file reopened"), "{fresh}");
    assert!(fresh.contains("switch decided"), "{fresh}");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("SIGHUP"));

    // The agent likewise: a restart with a log_file, then SIGHUP.
    let agent_log = logs.join("agent.log");
    let config_path = sys.dir.path().join("validator-config-2.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["log_file"] = agent_log.to_str().unwrap().into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    sys.agents[1].kill().await;
    let url = sys.agents[1].url.clone();
    sys.agents[1] = e2e_support::spawn_agent(&config_path, url.clone()).await;
    let pid = sys.agents[1].child.id().unwrap().to_string();
    std::fs::rename(&agent_log, logs.join("agent.log.1")).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap()
        .success());
    let deadline = Instant::now() + PATIENCE;
    while !agent_log.exists() {
        assert!(Instant::now() < deadline, "no new agent log after SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = failover_agent::AgentClient::new(&url, None, PATIENCE);
    assert!(client.health().await.unwrap().ok);
    assert!(sys.agents[1].child.try_wait().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_whose_promotion_is_refused_is_rolled_back_and_reported_so() {
    let mut sys = system(|_, _| {}).await;
    let manager = sys.start_manager().await;
    sys.cluster
        .fault(1, failover_sim::Fault::RefuseSetIdentity { refuse: true })
        .await
        .unwrap();
    let before = sys.cluster.vote_account().last_vote;
    let outcome = failover_monitor::control::ask_running(
        &manager.state_dir,
        &failover_monitor::control::ControlRequest::Trigger {
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
    assert!(!outcome.ok);
    assert!(outcome.rolled_back, "{}", outcome.summary());
    assert!(
        outcome.summary().contains("FAILED and ROLLED BACK"),
        "{}",
        outcome.summary()
    );
    // The old active votes again, from after its own last vote.
    let staked = sys.staked();
    sys.cluster
        .wait_until(PATIENCE, |w| {
            w.holders(&staked) == vec![0]
                && w.vote.last_voter == Some(0)
                && w.vote.last_vote > before
        })
        .await
        .unwrap();
    let (_, failed) = sys.receiver.wait_for("rolled back").await;
    assert!(!failed.contains("Failover complete"), "{failed}");
    assert_eq!(sys.receiver.inbox.count("Failover complete"), 0);
    sys.cluster.safety().assert_safe();
}

/// Log lines that read like Rust instead of like an operator's log.
fn rust_speak(line: &str) -> bool {
    ["Some(", "None,", "Url {", "Ok(", "Err(", " { ", "\"}"]
        .iter()
        .any(|p| line.contains(p))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_planned_switch_logs_no_warning_and_no_rust() {
    let sys = system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    let started = manager.log.lock().unwrap().len();
    let agents_started: Vec<usize> = sys
        .agents
        .iter()
        .map(|a| a.log.lock().unwrap().len())
        .collect();
    let out = manager_cli(
        &manager.config,
        &["--trigger-failover", "--reason", "maintenance"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    sys.wait_active(1).await;
    sys.slots(10).await;
    let manager_lines = manager.log.lock().unwrap()[started..].to_vec();
    assert!(manager_lines.iter().any(|l| l.contains("switch term")));
    for (who, lines) in std::iter::once(("manager", manager_lines)).chain(
        sys.agents
            .iter()
            .zip(agents_started)
            .map(|(a, from)| ("agent", a.log.lock().unwrap()[from..].to_vec())),
    ) {
        for line in &lines {
            assert!(
                !line.contains(" WARN "),
                "{who} warned in a healthy switch: {line}"
            );
            assert!(!rust_speak(line), "{who} logged Rust: {line}");
        }
    }
    // Nor anything the manager said at start-up, config warnings aside.
    for line in manager.log.lock().unwrap()[..started].iter() {
        assert!(!rust_speak(line), "manager logged Rust: {line}");
    }
}

/// `status` beside a running manager: its own view (last heartbeat, holds, the last switch with
/// its phases), as a table or as JSON (`--output json`, and `--json` as the older spelling); once
/// the manager has stopped, the command observes itself and still shows the last switch.
#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_running_managers_view_and_the_last_switch_as_table_or_json() {
    let sys = system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    sys.wait_active(0).await;
    let outcome = e2e_support::switch_now(&sys.manager_state_dir(), "status drill").await;
    sys.wait_active(1).await;

    let json = |out: &std::process::Output| -> serde_json::Value {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
    };
    let config = manager.config.to_str().unwrap().to_string();
    let report = json(
        &Command::new(binary("failover-manager"))
            .args(["status", "-c", &config, "--output", "json"])
            .output()
            .await
            .unwrap(),
    );
    assert_eq!(report["source"], "running manager", "{report}");
    assert_eq!(report["term"], outcome.term, "{report}");
    assert_eq!(report["last_switch"]["term"], outcome.term, "{report}");
    assert_eq!(report["last_switch"]["reason"], "status drill", "{report}");
    assert_eq!(
        report["last_switch"]["phases"].as_array().unwrap().len(),
        outcome.phases.len()
    );
    // The view of the heartbeat after the switch: the roles swapped.
    let started = Instant::now();
    let mut report = report;
    while report["nodes"][1]["role"] != "active" {
        assert!(started.elapsed() < PATIENCE, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = json(&manager_cli(&manager.config, &["--status", "--json"]).await);
    }
    assert_eq!(report["nodes"][0]["role"], "passive", "{report}");

    let out = manager_cli(&manager.config, &["--status"]).await;
    let table = text(&out);
    assert!(table.contains("last switch: switch term"), "{table}");
    assert!(table.contains("status drill"), "{table}");
    assert!(table.contains("holds: none"), "{table}");
    // --output belongs to the status; alone it is refused.
    let out = manager_cli(&manager.config, &["--output", "json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Stopped (SIGTERM, awaited): the next status observes itself.
    let config = manager.config.clone();
    let mut manager = manager;
    manager.signal("-TERM").await;
    manager.child.wait().await.unwrap();
    let report = json(&manager_cli(&config, &["--status", "--output", "json"]).await);
    assert!(
        report["source"]
            .as_str()
            .unwrap()
            .starts_with("this command"),
        "{report}"
    );
    assert_eq!(
        report["last_switch"]["term"], outcome.term,
        "kept in the state dir: {report}"
    );
    sys.cluster.safety().assert_safe();
}
