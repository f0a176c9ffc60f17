//! The shared test harness: a scenario is a temp directory with the files a config refers to, plus
//! helpers to write a config into it and run the `failover-config` binary on it.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use failover_config::{parse_agent, parse_manager, ConfigErrors};
use serde_json::{json, Value};

/// The staked identity used throughout (the identity of the real tower fixture).
pub const IDENTITY: &str = "361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg";
/// The vote account used throughout.
pub const VOTE: &str = "CgGFt1fnRt8UXf8RTWeUp7JLPDKjFrgoPWhbi5G7noPg";
/// A manager signing public key.
pub const MANAGER_KEY: &str = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
/// The Telegram token of the examples; it must never be printed.
pub const TOKEN: &str = "123456789:ABCdefGHIjklMNOpqrsTUVwxyz";

/// Which config a file holds, and so which subcommand checks it.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Agent,
    Manager,
}

impl Kind {
    pub fn subcommand(self) -> &'static str {
        match self {
            Kind::Agent => "check-agent",
            Kind::Manager => "check-manager",
        }
    }
}

/// A temp directory holding a ledger directory, keypair files and an SSH key, as a validator or
/// manager server would. Configs written into it may say `$DIR` for its path.
pub struct Scenario {
    dir: tempfile::TempDir,
}

impl Scenario {
    pub fn new() -> Self {
        let scenario = Scenario {
            dir: tempfile::tempdir().expect("create temp dir"),
        };
        scenario.mkdir("ledger");
        scenario.private_file("keys/staked.json");
        scenario.private_file("keys/unstaked.json");
        scenario.private_file("keys/manager-signing.json");
        scenario.private_file("ssh/failover_key");
        scenario.file("ssh/known_hosts", 0o644);
        scenario.file("keys/loose.json", 0o644);
        scenario.file("firedancer/config.toml", 0o644);
        scenario
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(&path).expect("create dir");
        path
    }

    /// Writes a keypair-shaped file readable only by its owner.
    pub fn private_file(&self, relative: &str) -> PathBuf {
        self.file(relative, 0o600)
    }

    pub fn file(&self, relative: &str, mode: u32) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).expect("create parent");
        let bytes: Vec<u8> = (0..64).collect();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .expect("create file");
        file.write_all(serde_json::to_string(&bytes).unwrap().as_bytes())
            .expect("write file");
        path
    }

    /// Replaces `$DIR` with this scenario's directory.
    pub fn resolve(&self, text: &str) -> String {
        text.replace("$DIR", self.dir().to_str().expect("utf-8 temp dir"))
    }

    /// Writes a config (with `$DIR` resolved) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, self.resolve(text)).expect("write config");
        path
    }

    /// Runs `failover-config <args>` with HOME set to this scenario's directory.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_failover-config"))
            .args(args)
            .env("HOME", self.dir())
            .output()
            .expect("run failover-config");
        Run(output)
    }

    /// Writes `text` as a config of `kind` and checks it with the binary.
    pub fn check(&self, kind: Kind, text: &str) -> Run {
        let path = self.write("config.json", text);
        self.run(&[kind.subcommand(), path.to_str().unwrap()])
    }
}

/// What one run of the binary did.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().expect("exited normally")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

/// The text of a file in `config/examples/`.
pub fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The path of a file in `config/examples/`.
pub fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A valid agent config in native Agave mode, with paths under `$DIR`.
pub fn agent_base() -> Value {
    json!({
        "listen_addr": "127.0.0.1:8080",
        "allowed_ips": ["10.0.0.10"],
        "validator_identity": IDENTITY,
        "validator_client": "agave",
        "ledger_path": "$DIR/ledger",
        "staked_identity_keypair": "$DIR/keys/staked.json",
        "unstaked_identity_keypair": "$DIR/keys/unstaked.json",
        "manager_pubkeys": [MANAGER_KEY],
        "connectivity_targets": ["127.0.0.1:53", "127.0.0.2:53", "127.0.0.3:53"]
    })
}

/// A valid manager config, with paths under `$DIR`.
pub fn manager_base() -> Value {
    json!({
        "validator1": { "endpoint": "http://10.0.0.1:8080", "ip": "10.0.0.1", "ledger_path": "/home/solana/ledger" },
        "validator2": { "endpoint": "http://10.0.0.2:8080", "ip": "10.0.0.2", "ledger_path": "/home/solana/ledger" },
        "cluster_rpc": "http://127.0.0.1:8899",
        "staked_identity_pubkey": IDENTITY,
        "vote_account_pubkey": VOTE,
        "telegram_bot_token": TOKEN,
        "telegram_chat_id": "-1001234567890",
        "telegram_api_base": "http://127.0.0.1:9",
        "signing_keypair_path": "$DIR/keys/manager-signing.json"
    })
}

/// The secure-mode fields, with files that exist in a scenario.
pub fn enable_secure_mode(config: &mut Value) {
    let object = config.as_object_mut().unwrap();
    object.insert("secure_identity_mode".into(), json!(true));
    object.insert(
        "identity_keypair_path".into(),
        json!("$DIR/keys/staked.json"),
    );
    object.insert("ssh_user".into(), json!("solana"));
    object.insert("ssh_key_path".into(), json!("$DIR/ssh/failover_key"));
    object.insert(
        "ssh_set_identity_command".into(),
        json!("agave-validator --ledger {ledger} set-identity"),
    );
    object.insert(
        "ssh_authorized_voter_command".into(),
        json!("agave-validator --ledger {ledger} authorized-voter add"),
    );
}

/// One broken variant: a name, how to break the base config, and the problem expected.
pub struct Case {
    pub name: &'static str,
    pub mutate: fn(&mut Value),
    pub path: &'static str,
    pub fragment: &'static str,
}

/// A table row: see [`Case`].
pub const fn case(
    name: &'static str,
    mutate: fn(&mut Value),
    path: &'static str,
    fragment: &'static str,
) -> Case {
    Case {
        name,
        mutate,
        path,
        fragment,
    }
}

/// Removes a top-level field.
pub fn remove(config: &mut Value, field: &str) {
    config.as_object_mut().unwrap().remove(field);
}

/// Validates `text` as a config of `kind` in-process.
pub fn parse(kind: Kind, text: &str) -> Result<(), ConfigErrors> {
    let origin = Path::new("/etc/failover/config.json");
    match kind {
        Kind::Agent => parse_agent(text, origin).map(drop),
        Kind::Manager => parse_manager(text, origin).map(drop),
    }
}

/// Checks every case through the library and through the binary, reporting all failures.
pub fn run_cases(kind: Kind, base: fn() -> Value, cases: &[Case]) {
    let scenario = Scenario::new();
    // The base config itself must be valid, or the cases prove nothing.
    parse(kind, &scenario.resolve(&base().to_string())).expect("base config is valid");
    let mut failures = Vec::new();
    for case in cases {
        let mut config = base();
        (case.mutate)(&mut config);
        let text = scenario.resolve(&config.to_string());
        match parse(kind, &text) {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(errors) => {
                let found = errors
                    .problems
                    .iter()
                    .any(|p| p.path == case.path && p.message.contains(case.fragment));
                if !found {
                    failures.push(format!(
                        "{}: expected {}: ...{}..., got\n{errors}",
                        case.name, case.path, case.fragment
                    ));
                }
            }
        }
        let run = scenario.check(kind, &config.to_string());
        if run.code() != 2 || !run.stderr().contains(&format!("  {}: ", case.path)) {
            failures.push(format!(
                "{}: binary exited {} with stderr\n{}",
                case.name,
                run.code(),
                run.stderr()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
