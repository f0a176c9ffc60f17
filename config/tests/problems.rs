//! How problems are reported: all at once, with suggestions, located syntax errors, secrets kept
//! out of messages, and the binary's exit codes.

mod util;

use std::path::Path;

use failover_config::{parse_agent, parse_manager, LoadError};
use serde_json::json;
use util::{manager_base, remove, Kind, Scenario, IDENTITY, TOKEN};

#[test]
fn every_problem_is_reported_at_once() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    config["validator1"]["endpoint"] = json!("htp:/x");
    config["misses_before_failover"] = json!("3");
    config["heartbeat_intervall"] = json!("5s");
    config["vote_account_pubkey"] = json!(IDENTITY);
    config["request_timeout"] = json!("8 seconds");
    remove(&mut config, "telegram_chat_id");
    let errors = parse_manager(
        &scenario.resolve(&config.to_string()),
        Path::new("/etc/m.json"),
    )
    .unwrap_err();
    let mut paths: Vec<&str> = errors.problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "heartbeat_intervall",
            "misses_before_failover",
            "request_timeout",
            "telegram_chat_id",
            "validator1.endpoint",
            "vote_account_pubkey",
        ]
    );
    let shown = errors.to_string();
    assert!(
        shown.starts_with("invalid config /etc/m.json: 6 problems\n  "),
        "{shown}"
    );
    assert!(shown.contains(
        "\n  validator1.endpoint: \"htp:/x\" is not a URL (expected http:// or https://)"
    ));
    assert!(shown
        .contains("\n  misses_before_failover: expected a non-negative integer, got string \"3\""));

    let run = scenario.check(Kind::Manager, &config.to_string());
    assert_eq!(run.code(), 2);
    for path in paths {
        assert!(
            run.stderr().contains(&format!("\n  {path}: ")),
            "{path} in\n{}",
            run.stderr()
        );
    }
}

#[test]
fn unknown_fields_get_suggestions_only_when_close() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    config["heartbeat_intervall"] = json!("5s");
    config["heartbeat"] = json!("5s");
    config["colour"] = json!("blue");
    let errors =
        parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap_err();
    let message = |path: &str| {
        errors
            .problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("no problem for {path}: {errors}"))
    };
    assert_eq!(
        message("heartbeat_intervall"),
        "unknown field; did you mean \"heartbeat_interval\"?"
    );
    assert_eq!(
        message("heartbeat"),
        "unknown field; did you mean \"heartbeat_interval\"?"
    );
    assert_eq!(message("colour"), "unknown field");
}

#[test]
fn syntax_errors_are_located_by_line_and_column() {
    let scenario = Scenario::new();
    let text = "{\n  // the identity\n  \"validator_identity\": \"x\",\n  \"dry_run\": tru\n}\n";
    let errors = parse_agent(text, Path::new("a.json")).unwrap_err();
    assert_eq!(errors.problems.len(), 1, "{errors}");
    assert_eq!(errors.problems[0].path, "line 4, column 17");
    assert!(
        errors.problems[0].message.starts_with("invalid JSON: "),
        "{errors}"
    );
    let run = scenario.check(Kind::Agent, text);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("line 4, column 17: invalid JSON"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_field_given_twice_is_a_problem() {
    let text = format!(
        r#"{{"validator_identity": "{IDENTITY}", "dry_run": false, "dry_run": true, "identity_remove_command": "x"}}"#
    );
    let errors = parse_agent(&text, Path::new("a.json")).unwrap_err();
    assert!(errors.has_path("dry_run"), "{errors}");
    assert!(
        errors
            .to_string()
            .contains("dry_run: field given more than once"),
        "{errors}"
    );
}

#[test]
fn the_top_level_must_be_an_object() {
    let errors = parse_manager("[1, 2]", Path::new("m.json")).unwrap_err();
    assert_eq!(errors.problems[0].path, "(top level)");
    assert!(errors.problems[0].message.contains("got an array"));
}

#[test]
fn secret_values_are_not_repeated_in_problems() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    config["telegram_bot_token"] = json!("not a token: hunter2");
    let errors =
        parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap_err();
    assert!(errors.has_path("telegram_bot_token"));
    assert!(!errors.to_string().contains("hunter2"), "{errors}");
    config["telegram_bot_token"] = json!(1234567);
    let errors =
        parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap_err();
    assert!(!errors.to_string().contains("1234567"), "{errors}");
}

#[test]
fn unreadable_files_are_their_own_error_and_exit_1() {
    let scenario = Scenario::new();
    let missing = scenario.path("missing.json");
    match failover_config::load_manager(&missing) {
        Err(LoadError::Read { path, error }) => {
            assert_eq!(path, missing);
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    let run = scenario.run(&["check-manager", missing.to_str().unwrap()]);
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr().contains("cannot read config file"),
        "{}",
        run.stderr()
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    remove(&mut config, "vote_account_pubkey");
    config["dry_run"] = json!(true);
    let run = scenario.check(Kind::Manager, &config.to_string());
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let stdout = run.stdout();
    assert!(stdout.starts_with("ok: manager for "), "{stdout}");
    assert!(stdout
        .contains("\nwarning: vote_account_pubkey: not set: vote-staleness checks are disabled"));
    assert!(stdout.contains("\nwarning: dry_run: "));
    assert!(!stdout.contains(TOKEN));
}

#[test]
fn help_explains_the_purpose() {
    let run = Scenario::new().run(&["--help"]);
    assert_eq!(run.code(), 0);
    assert!(run.stdout().contains("check-agent"));
    assert!(run
        .stdout()
        .contains("Every problem in the file is reported at once"));
}
