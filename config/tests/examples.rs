//! The example files load, and every field has the typed value it should.

mod util;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use failover_config::{
    load_agent, load_manager, parse_agent, parse_manager, CommandClient, TowerStore,
    ValidatorClient,
};
use solana_pubkey::Pubkey;
use util::{
    enable_secure_mode, example, example_path, manager_base, Scenario, IDENTITY, TOKEN, VOTE,
};

fn pubkey(text: &str) -> Pubkey {
    Pubkey::from_str(text).unwrap()
}

fn warning_paths(warnings: &[failover_config::Problem]) -> Vec<&str> {
    warnings.iter().map(|w| w.path.as_str()).collect()
}

#[test]
fn reference_agent_example_loads_in_command_mode() {
    let config = load_agent(example_path("validator-config.reference.json")).unwrap();
    let bin = "/home/solana/.local/share/solana/install/active_release/bin";
    assert_eq!(
        config.listen_addr,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        config.allowed_ips,
        vec!["10.0.0.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(config.local_rpc.as_str(), "http://127.0.0.1:8899/");
    assert_eq!(config.process_name, "agave-validator");
    assert_eq!(config.manager_timeout, Duration::from_secs(30));
    assert!(!config.dry_run);
    assert_eq!(config.validator_identity, pubkey(IDENTITY));
    assert_eq!(
        config.log_file,
        Some(PathBuf::from("/home/solana/failover/agent.log"))
    );
    assert_eq!(
        config.tower_file,
        PathBuf::from(format!("/home/solana/ledger/tower-1_9-{IDENTITY}.bin"))
    );
    assert_eq!(config.tower_dir, PathBuf::from("/home/solana/ledger"));
    assert_eq!(
        config.validator_client,
        ValidatorClient::Command(CommandClient {
            identity_change_command: Some(format!(
                "{bin}/agave-validator  -l /home/solana/ledger set-identity /home/solana/keys/testnet-validator-keypair.json"
            )),
            identity_remove_command: format!(
                "{bin}/agave-validator  -l /home/solana/ledger set-identity /home/solana/keys/unstaked-identity.json"
            ),
            tower_backup_command: Some(
                "etcdctl put /solana/tower/active \"$(base64 -w0 /home/solana/ledger/tower-1_9-*.bin)\""
                    .to_string()
            ),
            tower_restore_command: Some(format!(
                "etcdctl get /solana/tower/active --print-value-only | base64 -d > /home/solana/ledger/tower-1_9-{IDENTITY}.bin"
            )),
            gossip_check_command: Some(format!("{bin}/solana -ut gossip | grep {{validator_identity}}")),
        })
    );
    let hooks = &config.hooks;
    assert_eq!(
        hooks.validator_restart_command.as_deref(),
        Some("sudo systemctl restart solana")
    );
    assert_eq!(
        hooks.agent_stop_command.as_deref(),
        Some("sudo systemctl stop failover-agent")
    );
    assert_eq!(
        hooks.active_identity_symlink_command.as_deref(),
        Some("ln -sf /home/solana/keys/testnet-validator-keypair.json /home/solana/keys/identity.json")
    );
    assert_eq!(
        hooks.passive_identity_symlink_command.as_deref(),
        Some("ln -sf /home/solana/keys/unstaked-identity.json /home/solana/keys/identity.json")
    );
    // Defaults of the new fields.
    assert_eq!(config.ledger_path, None);
    assert_eq!(config.staked_identity_keypair, None);
    assert!(config.require_tower);
    assert!(!config.add_authorized_voter);
    assert_eq!(config.tower_store, TowerStore::Embedded);
    assert!(!config.auth.require_signed_commands);
    assert!(config.auth.manager_pubkeys.is_empty());
    assert_eq!(config.auth.command_max_age, Duration::from_secs(30));
    let targets: Vec<String> = config
        .connectivity
        .targets
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(targets, ["1.1.1.1:53", "8.8.8.8:53", "9.9.9.9:53"]);
    assert_eq!(config.connectivity.failures_to_fence, 2);
    assert_eq!(config.connectivity.timeout, Duration::from_secs(1));
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/failover-agent"));
    assert_eq!(
        warning_paths(&config.warnings),
        ["validator_client", "require_signed_commands"]
    );
}

#[test]
fn reference_manager_example_loads_with_secure_mode_off() {
    let config = load_manager(example_path("manager-config.reference.json")).unwrap();
    for (v, n) in config.validators.iter().zip(1..) {
        assert_eq!(v.name, format!("validator{n}"));
        assert_eq!(v.endpoint.as_str(), format!("http://10.0.0.{n}:8080/"));
        assert_eq!(v.ip, format!("10.0.0.{n}").parse::<IpAddr>().unwrap());
        assert_eq!(v.ledger_path, Some(PathBuf::from("/home/solana/ledger")));
        assert_eq!(v.ssh_host, format!("10.0.0.{n}"));
        assert_eq!(v.ssh_port, 22);
    }
    assert_eq!(
        config.cluster_rpc.as_str(),
        "https://api.testnet.solana.com/"
    );
    assert_eq!(config.cluster_ws.as_str(), "wss://api.testnet.solana.com/");
    assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(config.misses_before_failover, 3);
    assert_eq!(config.slot_diff_threshold, 100);
    assert_eq!(config.request_timeout, Duration::from_secs(8));
    assert!(!config.dry_run);
    let telegram = config.telegram.as_ref().unwrap();
    assert_eq!(telegram.bot_token.expose(), TOKEN);
    assert_eq!(telegram.chat_id, "-1001234567890");
    assert_eq!(telegram.api_base.as_str(), "https://api.telegram.org/");
    assert_eq!(
        config.log_file,
        Some(PathBuf::from("/home/solana/failover/manager.log"))
    );
    assert_eq!(config.staked_identity_pubkey, pubkey(IDENTITY));
    assert_eq!(config.vote_account_pubkey, Some(pubkey(VOTE)));
    assert_eq!(config.stale_vote_slot_threshold, 75);
    assert_eq!(config.secure, None);
    // Defaults of the new fields.
    assert_eq!(config.status_report_interval, Duration::from_secs(4 * 3600));
    assert_eq!(config.signing_keypair_path, None);
    assert_eq!(config.tower_store, TowerStore::Embedded);
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/failover-manager"));
    assert_eq!(config.failover_cooldown, Duration::from_secs(600));
    assert_eq!(config.rpc_requests_per_second, 10);
    assert_eq!(
        warning_paths(&config.warnings),
        ["gossip_check_command", "sign_commands"]
    );
}

#[test]
fn reference_examples_pass_the_binary_with_warnings() {
    let scenario = Scenario::new();
    for (sub, file) in [
        ("check-agent", "validator-config.reference.json"),
        ("check-manager", "manager-config.reference.json"),
    ] {
        let run = scenario.run(&[sub, example_path(file).to_str().unwrap()]);
        assert_eq!(run.code(), 0, "{file}: {}", run.stderr());
        assert!(run.stdout().starts_with("ok: "), "{}", run.stdout());
        assert!(run.stdout().contains("\nwarning: "), "{}", run.stdout());
        assert!(!run.stdout().contains(TOKEN));
    }
}

/// The commented examples name files under /home/solana; they load once those exist.
fn commented_example(scenario: &Scenario, name: &str) -> String {
    scenario.mkdir("ledger");
    scenario.private_file("keys/staked-identity.json");
    scenario.private_file("keys/unstaked-identity.json");
    scenario.private_file("failover/manager-signing-keypair.json");
    example(name).replace("/home/solana", scenario.dir().to_str().unwrap())
}

#[test]
fn commented_agent_example_loads_without_warnings() {
    let scenario = Scenario::new();
    let text = commented_example(&scenario, "validator-config.example.jsonc");
    let config = parse_agent(&text, Path::new("validator-config.example.jsonc")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let ledger = scenario.path("ledger");
    assert_eq!(config.ledger_path.as_deref(), Some(ledger.as_path()));
    assert_eq!(
        config.tower_file,
        ledger.join(format!("tower-1_9-{IDENTITY}.bin"))
    );
    match &config.validator_client {
        ValidatorClient::Agave(agave) => {
            assert_eq!(agave.admin_socket, ledger.join("admin.rpc"));
            assert_eq!(
                agave.unstaked_identity_keypair,
                scenario.path("keys/unstaked-identity.json")
            );
        }
        other => panic!("expected agave, got {other:?}"),
    }
    assert!(config.auth.require_signed_commands);
    assert_eq!(config.auth.manager_pubkeys.len(), 1);
    assert_eq!(config.listen_addr.port(), 8080);
}

#[test]
fn commented_manager_example_loads_without_warnings() {
    let scenario = Scenario::new();
    let text = commented_example(&scenario, "manager-config.example.jsonc");
    let config = parse_manager(&text, Path::new("manager-config.example.jsonc")).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(
        config.signing_keypair_path,
        Some(scenario.path("failover/manager-signing-keypair.json"))
    );
    assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(config.stale_vote_slot_threshold, 8);
    assert_eq!(config.fence_margin, Duration::from_secs(2));
    assert_eq!(config.failover_cooldown, Duration::from_secs(600));
    assert_eq!(config.secure, None);
}

#[test]
fn commented_examples_pass_the_binary() {
    let scenario = Scenario::new();
    for (kind, file) in [
        (util::Kind::Agent, "validator-config.example.jsonc"),
        (util::Kind::Manager, "manager-config.example.jsonc"),
    ] {
        let run = scenario.check(kind, &commented_example(&scenario, file));
        assert_eq!(run.code(), 0, "{file}: {}", run.stderr());
        assert!(!run.stdout().contains("warning:"), "{}", run.stdout());
    }
}

#[test]
fn secure_mode_loads_when_its_files_exist() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    enable_secure_mode(&mut config);
    config["ssh_known_hosts"] = "$DIR/ssh/known_hosts".into();
    config["validator2"]["ssh_host"] = "validator-2.internal".into();
    config["validator2"]["ssh_port"] = 2222.into();
    let text = scenario.resolve(&config.to_string());
    let config = parse_manager(&text, Path::new("manager-config.json")).unwrap();
    let secure = config.secure.as_ref().expect("secure mode on");
    assert_eq!(
        secure.identity_keypair_path,
        scenario.path("keys/staked.json")
    );
    assert_eq!(secure.ssh_user, "solana");
    assert_eq!(secure.ssh_key_path, scenario.path("ssh/failover_key"));
    assert_eq!(
        secure.ssh_known_hosts,
        Some(scenario.path("ssh/known_hosts"))
    );
    assert_eq!(
        secure.ssh_set_identity_command,
        "agave-validator --ledger {ledger} set-identity"
    );
    assert_eq!(
        secure.ssh_authorized_voter_command.as_deref(),
        Some("agave-validator --ledger {ledger} authorized-voter add")
    );
    assert!(secure.ssh_require_tower);
    assert_eq!(config.validators[0].ssh_host, "10.0.0.1");
    assert_eq!(config.validators[1].ssh_host, "validator-2.internal");
    assert_eq!(config.validators[1].ssh_port, 2222);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn secure_mode_expands_the_home_directory_in_ssh_key_path() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    enable_secure_mode(&mut config);
    // The binary runs with HOME set to the scenario directory.
    config["ssh_key_path"] = "~/ssh/failover_key".into();
    let run = scenario.check(util::Kind::Manager, &config.to_string());
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stdout().contains("secure identity mode on"),
        "{}",
        run.stdout()
    );
}

#[test]
fn secure_fields_are_ignored_with_warnings_when_secure_mode_is_off() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    enable_secure_mode(&mut config);
    config["secure_identity_mode"] = false.into();
    config["validator1"]["ssh_port"] = 22.into();
    let config =
        parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap();
    assert_eq!(config.secure, None);
    let mut paths = warning_paths(&config.warnings);
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "identity_keypair_path",
            "ssh_authorized_voter_command",
            "ssh_key_path",
            "ssh_set_identity_command",
            "ssh_user",
            "validator1.ssh_port",
        ]
    );
}

#[test]
fn etcd_tower_store_is_typed() {
    let scenario = Scenario::new();
    let mut config = util::agent_base();
    config["tower_store"] = serde_json::json!({
        "kind": "etcd",
        "endpoints": ["http://127.0.0.1:2379", "127.0.0.1:22379"],
        "dial_timeout": "500ms"
    });
    let config = parse_agent(&scenario.resolve(&config.to_string()), Path::new("a.json")).unwrap();
    let TowerStore::Etcd(etcd) = &config.tower_store else {
        panic!("expected etcd, got {:?}", config.tower_store);
    };
    let endpoints: Vec<&str> = etcd.endpoints.iter().map(|u| u.as_str()).collect();
    assert_eq!(
        endpoints,
        ["http://127.0.0.1:2379/", "http://127.0.0.1:22379/"]
    );
    assert_eq!(etcd.key_prefix, "/solana/tower/active");
    assert_eq!(etcd.dial_timeout, Duration::from_millis(500));
}

/// Several managers share the vote state only through etcd: with the embedded tower store each
/// would keep its own copy, and a new leader would not have the last one's.
#[test]
fn an_election_is_typed_and_warns_without_the_etcd_tower_store() {
    let scenario = Scenario::new();
    let mut config = manager_base();
    config["election"] = serde_json::json!({"endpoints": ["127.0.0.1:2379"], "lease_ttl": "5s"});
    let embedded = parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let election = embedded.election.as_ref().expect("election read");
    assert_eq!(election.lease_ttl, Duration::from_secs(5));
    assert_eq!(election.key_prefix, "/solana/failover/manager");
    assert!(
        warning_paths(&embedded.warnings).contains(&"tower_store"),
        "{:?}",
        embedded.warnings
    );

    config["tower_store"] = serde_json::json!({"kind": "etcd", "endpoints": ["127.0.0.1:2379"]});
    let etcd = parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !warning_paths(&etcd.warnings).contains(&"tower_store"),
        "{:?}",
        etcd.warnings
    );
}

#[test]
fn cluster_ws_is_derived_from_an_explicit_rpc_port() {
    let scenario = Scenario::new();
    let config = manager_base();
    let config =
        parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap();
    assert_eq!(config.cluster_ws.as_str(), "ws://127.0.0.1:8900/");
}

/// `cluster_rpc` takes the solana CLI's monikers, like its `-u`.
#[test]
fn cluster_rpc_takes_the_solana_cli_monikers() {
    let scenario = Scenario::new();
    for (moniker, rpc, ws) in [
        (
            "testnet",
            "https://api.testnet.solana.com/",
            "wss://api.testnet.solana.com/",
        ),
        (
            "m",
            "https://api.mainnet-beta.solana.com/",
            "wss://api.mainnet-beta.solana.com/",
        ),
        ("l", "http://localhost:8899/", "ws://localhost:8900/"),
    ] {
        let mut config = manager_base();
        config["cluster_rpc"] = serde_json::json!(moniker);
        config.as_object_mut().unwrap().remove("cluster_ws");
        let config =
            parse_manager(&scenario.resolve(&config.to_string()), Path::new("m.json")).unwrap();
        assert_eq!(config.cluster_rpc.as_str(), rpc, "{moniker}");
        assert_eq!(config.cluster_ws.as_str(), ws, "{moniker}");
    }
}

#[test]
fn debug_output_never_contains_the_telegram_token() {
    let scenario = Scenario::new();
    let config = parse_manager(
        &scenario.resolve(&manager_base().to_string()),
        Path::new("m.json"),
    )
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains("ABCdefGHI"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!config.summary().contains("ABCdefGHI"));
}

/// What the reference design's Go code accepts beyond its README: fields its structs define,
/// `_comment…` keys, `""` for "not set", `0` for "the default", durations as nanosecond numbers,
/// and a renamed field — each loads, with a warning saying what it means here.
#[test]
fn a_reference_file_using_its_go_codes_fields_and_conventions_loads() {
    let mut agent: serde_json::Value =
        serde_json::from_str(&example("validator-config.reference.json")).unwrap();
    agent["is_active_on_start"] = true.into();
    agent["local_ip"] = "10.0.0.1".into();
    agent["identity_check_command"] = "curl -s {local_rpc}".into();
    agent["peer_endpoint"] = "http://10.0.0.2:8080".into();
    agent["_comment_fencing"] = "kept by the operator".into();
    agent["log_file"] = "".into();
    agent["manager_timeout"] = "0s".into();
    agent["tower_settle"] = serde_json::json!(500_000_000);
    let old_name = agent
        .as_object_mut()
        .unwrap()
        .remove("passive_identity_symlink_command");
    agent["identity_symlink_command"] = old_name.clone().unwrap_or("ln -sf a b".into());
    let config = parse_agent(&agent.to_string(), Path::new("validator-config.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.log_file, None);
    assert_eq!(config.manager_timeout, Duration::from_secs(3));
    assert_eq!(config.tower_settle, Duration::from_millis(500));
    assert_eq!(
        config.hooks.passive_identity_symlink_command.as_deref(),
        old_name
            .as_ref()
            .and_then(|v| v.as_str())
            .or(Some("ln -sf a b"))
    );
    let paths = warning_paths(&config.warnings);
    for field in [
        "is_active_on_start",
        "local_ip",
        "identity_check_command",
        "peer_endpoint",
        "manager_timeout",
        "tower_settle",
        "identity_symlink_command",
    ] {
        assert!(paths.contains(&field), "{field} not explained: {paths:?}");
    }

    let mut manager: serde_json::Value =
        serde_json::from_str(&example("manager-config.reference.json")).unwrap();
    manager["active_validator"] = "http://10.0.0.1:8080".into();
    manager["passive_validator"] = "http://10.0.0.2:8080".into();
    manager["slot_check_interval"] = "30s".into();
    manager["startup_grace_period"] = "2m".into();
    manager["_comment_secure_mode"] = "set secure_identity_mode to true to ...".into();
    manager["heartbeat_interval"] = "0s".into();
    manager["misses_before_failover"] = 0.into();
    manager["request_timeout"] = serde_json::json!(5_000_000_000u64);
    manager["vote_account_pubkey"] = "".into();
    let config = parse_manager(&manager.to_string(), Path::new("manager-config.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.startup_grace_period, Duration::from_secs(120));
    assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(config.misses_before_failover, 3);
    assert_eq!(config.request_timeout, Duration::from_secs(5));
    assert_eq!(config.vote_account_pubkey, None);
    let paths = warning_paths(&config.warnings);
    for field in [
        "active_validator",
        "passive_validator",
        "slot_check_interval",
        "heartbeat_interval",
        "misses_before_failover",
        "request_timeout",
    ] {
        assert!(paths.contains(&field), "{field} not explained: {paths:?}");
    }
    // A typo is still an error, with a suggestion.
    manager["startup_grace_periode"] = "1m".into();
    let err = parse_manager(&manager.to_string(), Path::new("manager-config.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("did you mean \"startup_grace_period\""),
        "{err}"
    );
}

#[test]
fn a_validators_list_names_its_nodes_in_priority_order() {
    let mut config = manager_base();
    let object = config.as_object_mut().unwrap();
    object.remove("validator1");
    object.remove("validator2");
    config["validators"] = serde_json::json!([
        { "endpoint": "http://10.0.0.1:8080", "ip": "10.0.0.1" },
        { "endpoint": "http://10.0.0.2:8080", "ip": "10.0.0.2", "name": "backup-fra" },
        { "endpoint": "http://10.0.0.3:8080", "ip": "10.0.0.3" },
    ]);
    let scenario = Scenario::new();
    let config = failover_config::parse_manager(
        &scenario.resolve(&config.to_string()),
        std::path::Path::new("/etc/failover/manager-config.json"),
    )
    .unwrap();
    let names: Vec<&str> = config.validators.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["validator1", "backup-fra", "validator3"]);
    assert_eq!(
        config.validators[2].ip,
        "10.0.0.3".parse::<IpAddr>().unwrap()
    );
}
