//! Broken agent configs: each case breaks one thing in a valid `validator-config.json` and names
//! the problem it must produce. Every case is checked through the library and through the binary.

mod util;

use serde_json::json;
use util::{agent_base, case, remove, run_cases, Case, Kind};

const AGENT_CASES: &[Case] = &[
    case(
        "listen address with a host name",
        |c| c["listen_addr"] = json!("localhost:8080"),
        "listen_addr",
        "is not a listen address",
    ),
    case(
        "allowed IP out of range",
        |c| c["allowed_ips"] = json!(["10.0.0.1", "10.0.0.300"]),
        "allowed_ips[1]",
        "\"10.0.0.300\" is not an IP address",
    ),
    case(
        "local RPC with a bad scheme",
        |c| c["local_rpc"] = json!("htp:/x"),
        "local_rpc",
        "\"htp:/x\" is not a URL (expected http:// or https://)",
    ),
    case(
        "duration without a unit",
        |c| c["manager_timeout"] = json!("30"),
        "manager_timeout",
        "did you mean \"30s\"?",
    ),
    case(
        "zero tower settle",
        |c| c["tower_settle"] = json!("0s"),
        "tower_settle",
        "must be greater than 0",
    ),
    case(
        "missing identity",
        |c| remove(c, "validator_identity"),
        "validator_identity",
        "required field is missing",
    ),
    case(
        "identity placeholder left in",
        |c| c["validator_identity"] = json!("IDENTITY"),
        "validator_identity",
        "is not a base58 public key",
    ),
    case(
        "misspelt validator client",
        |c| c["validator_client"] = json!("agav"),
        "validator_client",
        "did you mean \"agave\"?",
    ),
    case(
        "ledger that does not exist",
        |c| c["ledger_path"] = json!("$DIR/no-such-ledger"),
        "ledger_path",
        "does not exist",
    ),
    case(
        "ledger that is a file",
        |c| c["ledger_path"] = json!("$DIR/keys/staked.json"),
        "ledger_path",
        "is not a directory",
    ),
    case(
        "agave without an unstaked keypair",
        |c| remove(c, "unstaked_identity_keypair"),
        "unstaked_identity_keypair",
        "required when validator_client is \"agave\"",
    ),
    case(
        "keypair readable by others",
        |c| c["staked_identity_keypair"] = json!("$DIR/keys/loose.json"),
        "staked_identity_keypair",
        "run `chmod 600` on it",
    ),
    case(
        "authorized voter keypair readable by others",
        |c| c["authorized_voter_keypair"] = json!("$DIR/keys/loose.json"),
        "authorized_voter_keypair",
        "run `chmod 600` on it",
    ),
    case(
        "authorized voter keypair missing",
        |c| c["authorized_voter_keypair"] = json!("$DIR/keys/no-such-voter.json"),
        "authorized_voter_keypair",
        "does not exist",
    ),
    case(
        "signed commands without manager keys",
        |c| c["manager_pubkeys"] = json!([]),
        "manager_pubkeys",
        "at least one manager public key",
    ),
    case(
        "bad manager key",
        |c| c["manager_pubkeys"] = json!([util::MANAGER_KEY, "not-a-key"]),
        "manager_pubkeys[1]",
        "is not a base58 public key",
    ),
    case(
        "etcd without endpoints",
        |c| c["tower_store"] = json!({"kind": "etcd"}),
        "tower_store.endpoints",
        "required when tower_store.kind is \"etcd\"",
    ),
    case(
        "bad etcd endpoint",
        |c| {
            c["tower_store"] =
                json!({"kind": "etcd", "endpoints": ["http://127.0.0.1:2379", "etcd one"]})
        },
        "tower_store.endpoints[1]",
        "is not an etcd endpoint",
    ),
    case(
        "etcd key prefix without a slash",
        |c| {
            c["tower_store"] =
                json!({"kind": "etcd", "endpoints": ["127.0.0.1:2379"], "key_prefix": "solana"})
        },
        "tower_store.key_prefix",
        "must start with '/'",
    ),
    case(
        "unknown tower store",
        |c| c["tower_store"] = json!({"kind": "etc"}),
        "tower_store.kind",
        "did you mean \"etcd\"?",
    ),
    case(
        "etcd fields on the embedded store",
        |c| c["tower_store"] = json!({"kind": "embedded", "dial_timeout": "2s"}),
        "tower_store.dial_timeout",
        "only used when tower_store.kind is \"etcd\"",
    ),
    case(
        "more failures to fence than targets",
        |c| c["connectivity_failures_to_fence"] = json!(4),
        "connectivity_failures_to_fence",
        "must be between 1 and 3",
    ),
    case(
        "failures to fence as a string",
        |c| c["connectivity_failures_to_fence"] = json!("2"),
        "connectivity_failures_to_fence",
        "expected a non-negative integer, got string \"2\"",
    ),
    case(
        "connectivity target without a port",
        |c| c["connectivity_targets"] = json!(["1.1.1.1"]),
        "connectivity_targets[0]",
        "is not host:port",
    ),
    case(
        "firedancer without its config",
        |c| c["validator_client"] = json!("firedancer"),
        "firedancer_config",
        "required when validator_client is \"firedancer\"",
    ),
    case(
        "command mode without a remove command",
        |c| c["validator_client"] = json!("command"),
        "identity_remove_command",
        "required when validator_client is \"command\"",
    ),
    case(
        "dry run as a string",
        |c| c["dry_run"] = json!("false"),
        "dry_run",
        "expected true or false, got string \"false\"",
    ),
    case(
        "tower file elsewhere than the validator reads it",
        |c| c["tower_file_path"] = json!("/tmp/tower-1_9-{validator_identity}.bin"),
        "tower_file_path",
        "but the validator reads the tower from",
    ),
    case(
        "manager field in the agent config",
        |c| c["heartbeat_interval"] = json!("5s"),
        "heartbeat_interval",
        "unknown field; it belongs in manager-config.json",
    ),
];

#[test]
fn broken_agent_configs_are_rejected_with_the_field_named() {
    assert!(AGENT_CASES.len() >= 20);
    run_cases(Kind::Agent, agent_base, AGENT_CASES);
}
