//! Logs as a log shipper reads them: with `log_format: "json"` every line the manager and the
//! agents write is one JSON object, and the lines of a switch carry its term, nodes, reason and
//! phase as fields. Bad `--log-format`, `--log-level` or `RUST_LOG` values stop the start with
//! a clear error.

mod e2e_support;

use e2e_support::{binary, system};
use serde_json::{json, Value};

fn parse_all(lines: &[String], who: &str) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{who} wrote a line that is not JSON ({e}): {l}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{who}: {l}"
            );
            assert!(v["message"].is_string(), "{who}: {l}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_switch_s_term_nodes_reason_and_phase() {
    let mut sys = system(|_, config| config["log_format"] = json!("json")).await;
    sys.manager_config["log_format"] = json!("json");
    let manager = sys.spawn_manager(":").await;
    sys.wait_active(0).await;
    let outcome = e2e_support::switch_now(&sys.manager_state_dir(), "kernel upgrade").await;
    sys.wait_active(1).await;

    let lines = manager.log.lock().unwrap().clone();
    let events = parse_all(&lines, "the manager");
    let phases: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "switch phase done")
        .collect();
    for phase in ["demote", "promote"] {
        let line = phases
            .iter()
            .find(|e| e["phase"] == phase)
            .unwrap_or_else(|| panic!("no {phase} line in {lines:#?}"));
        let span = &line["span"];
        assert_eq!(span["name"], "switch", "{line}");
        assert_eq!(span["term"], outcome.term, "{line}");
        assert_eq!(span["reason"], "kernel upgrade", "{line}");
        assert_eq!(span["to"], outcome.to.as_str(), "{line}");
        assert!(line["ms"].is_u64(), "{line}");
    }

    // The agents: the promotion's lines carry the step and its term.
    let lines = sys.agents[1].log.lock().unwrap().clone();
    let events = parse_all(&lines, "agent 2");
    assert!(
        events
            .iter()
            .any(|e| e["span"]["step"] == "become_active" && e["span"]["term"] == outcome.term),
        "{lines:#?}"
    );
    drop(manager);
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_log_options_stop_the_start_with_a_clear_error() {
    let sys = system(|_, _| {}).await;
    let config = sys.dir.path().join("manager-config.json");
    let write = |cfg: &Value| std::fs::write(&config, cfg.to_string()).unwrap();
    write(&sys.manager_config);
    let run = |args: &[&str], rust_log: Option<&str>| {
        let mut command = std::process::Command::new(binary("failover-manager"));
        command.arg("--config").arg(&config).args(args);
        match rust_log {
            Some(v) => command.env("RUST_LOG", v),
            None => command.env_remove("RUST_LOG"),
        };
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, said) = run(&["--log-format", "yaml"], None);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a log format"), "{said}");
    let (code, said) = run(&["--log-level", "info,failover_monitor=loud"], None);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("--log-level"), "{said}");
    let (code, said) = run(&[], Some("failover_monitor=loud"));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("RUST_LOG"), "{said}");
    // In the config: listed with its field name, like every other problem.
    let mut cfg = sys.manager_config.clone();
    cfg["log_format"] = json!("xml");
    write(&cfg);
    let (code, said) = run(&[], None);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("log_format") && said.contains("not a log format"),
        "{said}"
    );
    // Nothing started: no control socket was left behind.
    assert!(!sys.manager_state_dir().join("manager.sock").exists());
}
