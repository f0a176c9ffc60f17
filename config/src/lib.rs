//! Typed, validated configuration for `failover-agent` (`validator-config.json`) and
//! `failover-manager` (`manager-config.json`).
//!
//! Operators already have these files from the reference (Go) design, so every reference field is
//! accepted with its name and meaning; the fields this design adds have documented defaults. A file
//! is JSON, optionally with `//` and `/* */` comments. It is read in one place, field by field, into
//! rich types (`Duration`, `Pubkey`, `SocketAddr`, `Url`, `PathBuf`, enums), and every problem is
//! reported at once with the path of the field it concerns; nothing downstream re-parses a string.
//! A config that loads may still carry warnings (ignored legacy fields, risky settings).
//!
//! This crate must not do network IO or run anything. Its only IO is reading the config file and
//! looking at the metadata of paths the config names (that they exist, their kind, and that key
//! files are private). It knows nothing of how the agent or manager use the values.

mod agent;
pub mod cli;
mod duration;
mod election;
mod errors;
mod fields;
mod jsonc;
mod manager;
mod paths;
mod secure;
mod switch_hooks;
mod tower_store;
mod types;

use std::path::Path;

use serde_json::Value;

pub use agent::{
    AgaveClient, AgentConfig, CommandAuth, CommandClient, ConnectivityCheck, FiredancerClient,
    Hooks, ValidatorClient, DEFAULT_AGENT_STATE_DIR, DEFAULT_COMMAND_MAX_AGE,
    DEFAULT_CONNECTIVITY_FAILURES_TO_FENCE, DEFAULT_CONNECTIVITY_TARGETS,
    DEFAULT_CONNECTIVITY_TIMEOUT, DEFAULT_FDCTL_PATH, DEFAULT_LISTEN_ADDR, DEFAULT_LOCAL_RPC,
    DEFAULT_MANAGER_TIMEOUT, DEFAULT_PROCESS_NAME, DEFAULT_TOWER_SETTLE, TOWER_FILE_PLACEHOLDER,
};
pub use duration::{format_duration, parse_duration};
pub use election::{
    Election, DEFAULT_ELECTION_KEY_PREFIX, DEFAULT_ELECTION_LEASE_TTL, MAX_ELECTION_LEASE_TTL,
    MIN_ELECTION_LEASE_TTL,
};
pub use errors::{ConfigErrors, LoadError, Problem};
pub use manager::{
    ManagerConfig, Telegram, ValidatorEndpoint, DEFAULT_ALPENGLOW_STALE_VOTE_SLOT_THRESHOLD,
    DEFAULT_FAILOVER_COOLDOWN, DEFAULT_FENCE_MARGIN, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MANAGER_STATE_DIR, DEFAULT_MISSES_BEFORE_FAILOVER, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RPC_REQUESTS_PER_SECOND, DEFAULT_SLOT_DIFF_THRESHOLD, DEFAULT_SSH_PORT,
    DEFAULT_STALE_VOTE_SLOT_THRESHOLD, DEFAULT_STATUS_REPORT_INTERVAL, DEFAULT_TELEGRAM_API_BASE,
    MAX_VALIDATORS,
};
pub use secure::{SecureMode, LEDGER_PLACEHOLDER};
pub use switch_hooks::{SwitchHooks, DEFAULT_HOOK_TIMEOUT};
pub use tower_store::{EtcdStore, TowerStore, DEFAULT_ETCD_DIAL_TIMEOUT, DEFAULT_ETCD_KEY_PREFIX};
pub use types::{ConsensusSetting, HostPort, LogFormat, Secret};

use fields::{Diagnostics, Field};

/// Reads and validates an agent config file (`validator-config.json`).
pub fn load_agent(path: impl AsRef<Path>) -> Result<AgentConfig, LoadError> {
    let path = path.as_ref();
    Ok(parse_agent(&read_file(path)?, path)?)
}

/// Reads and validates a manager config file (`manager-config.json`).
pub fn load_manager(path: impl AsRef<Path>) -> Result<ManagerConfig, LoadError> {
    let path = path.as_ref();
    Ok(parse_manager(&read_file(path)?, path)?)
}

/// Validates the text of an agent config; `origin` is the file it came from, used in messages.
/// Paths named by the config are checked on this machine.
pub fn parse_agent(text: &str, origin: &Path) -> Result<AgentConfig, ConfigErrors> {
    let (mut config, warnings) = parse_document(text, origin, agent::read)?;
    config.warnings = warnings;
    Ok(config)
}

/// Validates the text of a manager config; `origin` is the file it came from, used in messages.
/// Paths named by the config are checked on this machine.
pub fn parse_manager(text: &str, origin: &Path) -> Result<ManagerConfig, ConfigErrors> {
    let (mut config, warnings) = parse_document(text, origin, manager::read)?;
    config.warnings = warnings;
    Ok(config)
}

/// The largest config file read. A real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads a config file as text: a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO, a device
/// such as `/dev/zero` or a directory is refused without blocking or reading it). Content that is
/// not UTF-8 is a problem of the config, not a read error, so that it is reported like any other
/// problem.
fn read_file(path: &Path) -> Result<String, LoadError> {
    let bytes = read_bounded(path).map_err(|error| LoadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let text = std::str::from_utf8(&error.as_bytes()[..valid]).unwrap_or_default();
        let (line, column) = jsonc::line_column(text, valid);
        LoadError::Invalid(ConfigErrors {
            file: Some(path.to_path_buf()),
            problems: vec![Problem::new(
                format!("line {line}, column {column}"),
                "the file is not valid UTF-8",
            )],
        })
    })
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking open: opening a FIFO with no writer would otherwise wait forever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a config cannot be a directory, FIFO or device)",
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes: larger than the {MAX_CONFIG_BYTES} bytes a config may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than the {MAX_CONFIG_BYTES} bytes a config may have"
        )));
    }
    Ok(bytes)
}

/// The steps shared by both configs: strip comments, parse JSON, read the fields with `read`, and
/// turn the collected problems into an error. Returns the config and its warnings.
fn parse_document<T>(
    text: &str,
    origin: &Path,
    read: fn(&Value, &mut Diagnostics) -> Option<T>,
) -> Result<(T, Vec<Problem>), ConfigErrors> {
    let errors = |problems| ConfigErrors {
        file: Some(origin.to_path_buf()),
        problems,
    };
    let stripped = jsonc::strip_comments(text).map_err(|p| errors(vec![p]))?;
    let (value, duplicates) = jsonc::parse(&stripped).map_err(|p| errors(vec![p]))?;
    let mut diag = Diagnostics {
        problems: duplicates,
        warnings: Vec::new(),
    };
    let config = read(&value, &mut diag);
    match config {
        Some(config) if diag.problems.is_empty() => Ok((config, diag.warnings)),
        // Every reader that gives up reports why, so there is always a problem here; the fallback
        // keeps a missed report from ever turning into an accepted config.
        _ if diag.problems.is_empty() => Err(errors(vec![Problem::new(
            "(top level)",
            "the config could not be read (internal error: no problem was reported)",
        )])),
        _ => Err(errors(diag.problems)),
    }
}

/// Reads an optional field with `read`, or gives `default` when it is absent (or `null`).
/// `None` means the field was present but invalid, and a problem was reported.
/// [`or_default`] for the reference fields where Go reads a zero (`0`, `"0s"`) as "use the
/// default": an operator's file keeps working, with a warning that says so.
pub(crate) fn zero_is_default<'a, T: std::fmt::Display>(
    field: Option<Field<'a>>,
    default: T,
    diag: &mut Diagnostics,
    read: impl FnOnce(&Field<'a>, &mut Diagnostics) -> Option<T>,
) -> Option<T> {
    let is_zero = |field: &Field<'_>| match field.value {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => parse_duration(s).is_ok_and(|d| d.is_zero()),
        _ => false,
    };
    match field {
        Some(field) if is_zero(&field) => {
            diag.warn(
                &field.path,
                format!("0 means the default ({default}), as in the reference design"),
            );
            Some(default)
        }
        Some(field) => read(&field, diag),
        None => Some(default),
    }
}

pub(crate) fn or_default<'a, T>(
    field: Option<Field<'a>>,
    default: T,
    read: impl FnOnce(&Field<'a>) -> Option<T>,
) -> Option<T> {
    match field {
        Some(field) => read(&field),
        None => Some(default),
    }
}
