//! Broken manager configs: each case breaks one thing in a valid `manager-config.json` and names
//! the problem it must produce. Every case is checked through the library and through the binary.

mod util;

use serde_json::json;
use util::{case, enable_secure_mode, manager_base, remove, run_cases, Case, Kind, IDENTITY};

/// Replaces `validator1`/`validator2` with a `validators` list of `n` nodes (10.0.0.1, …).
fn as_list(c: &mut serde_json::Value, n: usize) {
    remove(c, "validator1");
    remove(c, "validator2");
    c["validators"] = (1..=n)
        .map(|i| json!({ "endpoint": format!("http://10.0.0.{i}:8080"), "ip": format!("10.0.0.{i}") }))
        .collect();
}

const MANAGER_CASES: &[Case] = &[
    case(
        "endpoint with a bad scheme",
        |c| c["validator1"]["endpoint"] = json!("htp:/x"),
        "validator1.endpoint",
        "\"htp:/x\" is not a URL (expected http:// or https://)",
    ),
    case(
        "validator without an ip",
        |c| {
            c["validator2"]
                .as_object_mut()
                .unwrap()
                .remove("ip")
                .map(drop)
                .unwrap_or(())
        },
        "validator2.ip",
        "required field is missing",
    ),
    case(
        "both validators on one ip",
        |c| c["validator2"]["ip"] = json!("10.0.0.1"),
        "validator2.ip",
        "is also validator1.ip",
    ),
    case(
        "both validators on one endpoint",
        |c| c["validator2"]["endpoint"] = json!("http://10.0.0.1:8080"),
        "validator2.endpoint",
        "is also validator1.endpoint",
    ),
    case(
        "validator as a string",
        |c| c["validator1"] = json!("http://10.0.0.1:8080"),
        "validator1",
        "expected an object { ... }, got string",
    ),
    case(
        "a list of one validator",
        |c| as_list(c, 1),
        "validators",
        "names 1 validator(s); failover needs at least two",
    ),
    case(
        "a list of too many validators",
        |c| as_list(c, 17),
        "validators",
        "names 17 validators; at most 16",
    ),
    case(
        "a list beside validator1",
        |c| {
            as_list(c, 3);
            c["validator1"] = json!({ "endpoint": "http://10.0.0.1:8080", "ip": "10.0.0.1" });
        },
        "validator1",
        "set beside validators",
    ),
    case(
        "a list whose third node repeats the first's ip",
        |c| {
            as_list(c, 3);
            c["validators"][2]["ip"] = json!("10.0.0.1");
        },
        "validators[2].ip",
        "is also validators[0].ip",
    ),
    case(
        "a list whose nodes share a name",
        |c| {
            as_list(c, 3);
            c["validators"][1]["name"] = json!("validator3");
        },
        "validators[2].name",
        "\"validator3\" is also the name of validators[1]",
    ),
    case(
        "a list entry without an endpoint",
        |c| {
            as_list(c, 3);
            c["validators"][1].as_object_mut().unwrap().remove("endpoint");
        },
        "validators[1].endpoint",
        "required field is missing",
    ),
    case(
        "a list entry as a string",
        |c| {
            as_list(c, 2);
            c["validators"][1] = json!("http://10.0.0.2:8080");
        },
        "validators[1]",
        "expected an object { ... }, got string",
    ),
    case(
        "validators as an object",
        |c| {
            as_list(c, 2);
            c["validators"] = json!({});
        },
        "validators",
        "expected an array [ ... ]",
    ),
    case(
        "misses as a string",
        |c| c["misses_before_failover"] = json!("3"),
        "misses_before_failover",
        "expected a non-negative integer, got string \"3\"",
    ),
    case(
        "zero rate",
        |c| c["rpc_requests_per_second"] = json!(0),
        "rpc_requests_per_second",
        "must be at least 1, got 0",
    ),
    case(
        "negative rate",
        |c| c["rpc_requests_per_second"] = json!(-1),
        "rpc_requests_per_second",
        "expected a non-negative integer, got number -1",
    ),
    case(
        "zero status interval",
        |c| c["status_report_interval"] = json!("0"),
        "status_report_interval",
        "must be greater than 0",
    ),
    case(
        "duration as a number",
        |c| c["request_timeout"] = json!(1.5),
        "request_timeout",
        "expected a duration string such as \"30s\" (a number would be nanoseconds), got number 1.5",
    ),
    case(
        "misspelt field",
        |c| c["heartbeat_intervall"] = json!("5s"),
        "heartbeat_intervall",
        "unknown field; did you mean \"heartbeat_interval\"?",
    ),
    case(
        "token without a chat",
        |c| remove(c, "telegram_chat_id"),
        "telegram_chat_id",
        "required when telegram_bot_token is set",
    ),
    case(
        "chat without a token",
        |c| remove(c, "telegram_bot_token"),
        "telegram_bot_token",
        "required when telegram_chat_id is set",
    ),
    case(
        "malformed token",
        |c| c["telegram_bot_token"] = json!("BOT_TOKEN"),
        "telegram_bot_token",
        "is not a Telegram bot token",
    ),
    case(
        "vote account equal to the identity",
        |c| c["vote_account_pubkey"] = json!(IDENTITY),
        "vote_account_pubkey",
        "must differ from staked_identity_pubkey",
    ),
    case(
        "missing cluster RPC",
        |c| remove(c, "cluster_rpc"),
        "cluster_rpc",
        "required field is missing",
    ),
    case(
        "websocket URL with an http scheme",
        |c| c["cluster_ws"] = json!("http://127.0.0.1:8900"),
        "cluster_ws",
        "is not a URL (expected ws:// or wss://)",
    ),
    case(
        "missing signing keypair",
        |c| {
            remove(c, "signing_keypair_path");
            c["sign_commands"] = json!(true)
        },
        "signing_keypair_path",
        "required unless sign_commands is false",
    ),
    case(
        "signing keypair that does not exist",
        |c| c["signing_keypair_path"] = json!("$DIR/keys/nope.json"),
        "signing_keypair_path",
        "does not exist",
    ),
    case(
        "secure mode without an ssh user",
        |c| {
            enable_secure_mode(c);
            remove(c, "ssh_user")
        },
        "ssh_user",
        "required when secure_identity_mode is true",
    ),
    case(
        "secure mode with {ledger} but no ledger path",
        |c| {
            enable_secure_mode(c);
            c["validator1"]
                .as_object_mut()
                .unwrap()
                .remove("ledger_path");
        },
        "validator1.ledger_path",
        "required because ssh_set_identity_command uses {ledger}",
    ),
    case(
        "secure mode with a misspelt placeholder",
        |c| {
            enable_secure_mode(c);
            c["ssh_set_identity_command"] = json!("agave-validator --ledger {ledgr} set-identity");
        },
        "ssh_set_identity_command",
        "unknown placeholder {ledgr}",
    ),
    case(
        "secure mode with a missing ssh key",
        |c| {
            enable_secure_mode(c);
            c["ssh_key_path"] = json!("$DIR/ssh/none")
        },
        "ssh_key_path",
        "does not exist",
    ),
    case(
        "ssh port out of range",
        |c| c["validator1"]["ssh_port"] = json!(70000),
        "validator1.ssh_port",
        "70000 is too large",
    ),
    case(
        "unknown field in a validator",
        |c| c["validator1"]["endpiont"] = json!("http://10.0.0.1:8080"),
        "validator1.endpiont",
        "did you mean \"endpoint\"?",
    ),
    case(
        "a pre-hook that must succeed, but no pre-hook",
        |c| c["pre_switch_must_succeed"] = json!(true),
        "pre_switch_must_succeed",
        "true, but pre_switch_command is not set",
    ),
    case(
        "a zero hook timeout",
        |c| {
            c["post_switch_command"] = json!("true");
            c["hook_timeout"] = json!("0s")
        },
        "hook_timeout",
        "greater than 0",
    ),
    case(
        "an agent hook in the manager config",
        |c| c["post_role_change_command"] = json!("true"),
        "post_role_change_command",
        "unknown field; it belongs in validator-config.json",
    ),
    case(
        "election without endpoints",
        |c| c["election"] = json!({}),
        "election.endpoints",
        "required field is missing",
    ),
    case(
        "election lease shorter than etcd allows",
        |c| c["election"] = json!({"endpoints": ["127.0.0.1:2379"], "lease_ttl": "1500ms"}),
        "election.lease_ttl",
        "is not a whole number of seconds from 2s to 60s",
    ),
    case(
        "election on another etcd than the tower store",
        |c| {
            c["tower_store"] = json!({"kind": "etcd", "endpoints": ["127.0.0.1:2379"]});
            c["election"] = json!({"endpoints": ["127.0.0.2:2379"]});
        },
        "election.endpoints",
        "must be the same as tower_store.endpoints",
    ),
    case(
        "misspelt election field",
        |c| c["election"] = json!({"endpoints": ["127.0.0.1:2379"], "lease_tll": "3s"}),
        "election.lease_tll",
        "did you mean",
    ),
    case(
        "agent field in the manager config",
        |c| c["validator_identity"] = json!(IDENTITY),
        "validator_identity",
        "unknown field; it belongs in validator-config.json",
    ),
];

#[test]
fn broken_manager_configs_are_rejected_with_the_field_named() {
    assert!(MANAGER_CASES.len() >= 20);
    run_cases(Kind::Manager, manager_base, MANAGER_CASES);
}
