//! The agent's config, `validator-config.json`: every field of the reference design with the same
//! name and meaning, plus the fields the native (admin-RPC) identity switch, command signing,
//! the tower store and self-fencing need.

//!
//! This module holds the validated types and their defaults; `read` turns a parsed document into
//! them.

mod read;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use solana_pubkey::Pubkey;
use url::Url;

use crate::errors::Problem;
use crate::tower_store::TowerStore;
use crate::types::HostPort;

pub(crate) use read::read;

/// `listen_addr` default: Go's `":8080"`, every IPv4 interface.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
/// `local_rpc` default.
pub const DEFAULT_LOCAL_RPC: &str = "http://127.0.0.1:8899";
/// `process_name` default.
pub const DEFAULT_PROCESS_NAME: &str = "agave-validator";
/// `manager_timeout` default: the manager's lease. Past it, an active keeps voting only while its
/// votes land (confirmed) and the outside is reachable, and fences itself otherwise; it is also
/// the window in which a landed vote counts as evidence. Short, so that a dead host is replaced
/// quickly: a live cluster keeps a manager-less active voting anyway.
pub const DEFAULT_MANAGER_TIMEOUT: Duration = Duration::from_secs(3);
/// `command_max_age` default: the accepted age of a signed command's timestamp.
/// `tower_settle` default: how long the staked tower must stay unchanged after a demotion before it
/// is copied. Agave's replay loop may still cast one vote with the old identity after `setIdentity`
/// returns; two 400 ms slots cover it (the manual baseline in DESIGN.md waits 0.8 s).
pub const DEFAULT_TOWER_SETTLE: Duration = Duration::from_millis(800);
pub const DEFAULT_COMMAND_MAX_AGE: Duration = Duration::from_secs(30);
/// `connectivity_targets` default: Cloudflare, Google and Quad9 DNS, as in the reference design.
pub const DEFAULT_CONNECTIVITY_TARGETS: [&str; 3] = ["1.1.1.1:53", "8.8.8.8:53", "9.9.9.9:53"];
/// `connectivity_failures_to_fence` default (lowered to the number of targets when fewer are set).
pub const DEFAULT_CONNECTIVITY_FAILURES_TO_FENCE: usize = 2;
/// `connectivity_timeout` default.
pub const DEFAULT_CONNECTIVITY_TIMEOUT: Duration = Duration::from_secs(1);
/// `state_dir` default for the agent.
pub const DEFAULT_AGENT_STATE_DIR: &str = "/var/lib/failover-agent";
/// `fdctl_path` default: looked up on `PATH`.
pub const DEFAULT_FDCTL_PATH: &str = "fdctl";
/// The placeholder in `tower_file_path` that is replaced by `validator_identity`.
pub const TOWER_FILE_PLACEHOLDER: &str = "{validator_identity}";

/// The fields only the agent has, so that the manager config can say where they belong.
pub(crate) const AGENT_ONLY_FIELDS: &[&str] = &[
    "listen_addr",
    "allowed_ips",
    "local_rpc",
    "process_name",
    "manager_timeout",
    "tower_settle",
    "tower_backup_command",
    "tower_restore_command",
    "identity_change_command",
    "identity_remove_command",
    "validator_restart_command",
    "agent_stop_command",
    "active_identity_symlink_command",
    "passive_identity_symlink_command",
    "tower_file_path",
    "validator_identity",
    "validator_client",
    "admin_socket",
    "tower_dir",
    "staked_identity_keypair",
    "authorized_voter_keypair",
    "unstaked_identity_keypair",
    "require_tower",
    "add_authorized_voter",
    "fdctl_path",
    "firedancer_config",
    "manager_pubkeys",
    "require_signed_commands",
    "command_max_age",
    "connectivity_targets",
    "connectivity_failures_to_fence",
    "connectivity_timeout",
    "is_active_on_start",
    "local_ip",
    "identity_check_command",
    "peer_endpoint",
    "identity_symlink_command",
    "consensus",
    "pre_role_change_command",
    "post_role_change_command",
];

/// The validated agent config. Built only by [`crate::parse_agent`] / [`crate::load_agent`].
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `listen_addr` (reference): where the HTTP API listens. Default `:8080` (0.0.0.0:8080).
    pub listen_addr: SocketAddr,
    /// `allowed_ips` (reference): the IPs commands are accepted from; empty means any.
    pub allowed_ips: Vec<IpAddr>,
    /// `local_rpc` (reference): the local validator's RPC. Default `http://127.0.0.1:8899`.
    pub local_rpc: Url,
    /// `process_name` (reference): the validator process to look for. Default `agave-validator`.
    pub process_name: String,
    /// `manager_timeout` (reference): the lease: silence from the manager before the fencing
    /// check. Default 3s (the reference: 30s).
    pub manager_timeout: Duration,
    /// `tower_settle`: the staked tower must stay unchanged this long after a demotion before it
    /// is copied. Default 800ms.
    pub tower_settle: Duration,
    /// `dry_run` (reference): log what would be done without doing it. Default false.
    pub dry_run: bool,
    /// `validator_identity` (reference, required): the staked identity.
    pub validator_identity: Pubkey,
    /// `log_file` (reference): where to log; absent means standard error.
    pub log_file: Option<PathBuf>,
    /// `log_format`: `text` (default) or `json`; the `--log-format` flag overrides it.
    pub log_format: crate::LogFormat,
    /// `validator_client` and what that client needs to switch identity.
    pub validator_client: ValidatorClient,
    /// `ledger_path`: the validator's ledger directory (exists), when given.
    pub ledger_path: Option<PathBuf>,
    /// The directory the validator reads towers from: `tower_dir`, else `ledger_path`, else the
    /// directory of `tower_file_path`.
    pub tower_dir: PathBuf,
    /// The staked tower file: `tower_file_path` (reference) with `{validator_identity}` replaced,
    /// else `<tower_dir>/tower-1_9-<validator_identity>.bin`.
    pub tower_file: PathBuf,
    /// Alpenglow's vote history of the staked identity: `<ledger_path>/vote_history-<identity>.bin`
    /// (always the ledger, whatever `tower_dir` says); `None` without `ledger_path`.
    pub vote_history_file: Option<PathBuf>,
    /// `consensus`: `auto` (default: ask the validator), `tower` or `alpenglow`.
    pub consensus: crate::ConsensusSetting,
    /// `staked_identity_keypair`: the staked keypair on this server (exists, mode 0600). Absent
    /// means this agent is promoted only with `skip_identity` (secure identity mode).
    pub staked_identity_keypair: Option<PathBuf>,
    /// `authorized_voter_keypair`: the vote account's authorized voter when it is a key of its own
    /// (`--authorized-voter`; exists, mode 0600). A demotion removes every authorized voter; a
    /// promotion adds this one back (absent: the staked identity).
    pub authorized_voter_keypair: Option<PathBuf>,
    /// `require_tower`: promote with `require_tower=true`. Default true.
    pub require_tower: bool,
    /// `add_authorized_voter`: also add the staked identity as authorized voter. Default false.
    pub add_authorized_voter: bool,
    /// Reference shell commands that apply whatever the validator client.
    pub hooks: Hooks,
    /// `pre_role_change_command`, `post_role_change_command`, `hook_timeout`: the operator's
    /// commands around each switch step here. They never delay or block the step.
    pub switch_hooks: crate::SwitchHooks,
    /// How commands from the manager are authenticated.
    pub auth: CommandAuth,
    /// `tower_store`: where towers travel. Default embedded.
    pub tower_store: TowerStore,
    /// The self-fencing connectivity check.
    pub connectivity: ConnectivityCheck,
    /// `state_dir`: where the fencing term and newest tower seen are kept (need not exist yet).
    /// Default `/var/lib/failover-agent`.
    pub state_dir: PathBuf,
    /// Non-fatal findings: ignored legacy fields and risky settings.
    pub warnings: Vec<Problem>,
}

/// How this agent switches the validator's identity (`validator_client`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatorClient {
    /// `"agave"`: Agave's admin RPC socket. The default when `ledger_path` is set.
    Agave(AgaveClient),
    /// `"firedancer"`: `fdctl set-identity` (Frankendancer).
    Firedancer(FiredancerClient),
    /// `"command"`: the reference design's shell commands. The default without `ledger_path`.
    Command(CommandClient),
}

impl ValidatorClient {
    /// The name used in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            ValidatorClient::Agave(_) => "agave",
            ValidatorClient::Firedancer(_) => "firedancer",
            ValidatorClient::Command(_) => "command",
        }
    }
}

/// What the Agave client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgaveClient {
    /// `admin_socket`, default `<ledger_path>/admin.rpc`. Not checked: the validator may be down.
    pub admin_socket: PathBuf,
    /// `unstaked_identity_keypair` (required): the throwaway identity used while passive.
    pub unstaked_identity_keypair: PathBuf,
}

/// What the Frankendancer client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredancerClient {
    /// `fdctl_path`, default `fdctl` (looked up on `PATH`).
    pub fdctl_path: PathBuf,
    /// `firedancer_config` (required, exists): the config passed as `fdctl --config`.
    pub firedancer_config: PathBuf,
    /// `admin_socket` when given or derivable from `ledger_path`.
    pub admin_socket: Option<PathBuf>,
    /// `unstaked_identity_keypair` (required).
    pub unstaked_identity_keypair: PathBuf,
}

/// The reference design's identity and tower commands (all reference fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandClient {
    /// `identity_change_command`: switch to the staked identity. Absent means promotion only with
    /// `skip_identity` (secure identity mode).
    pub identity_change_command: Option<String>,
    /// `identity_remove_command` (required): switch to the unstaked identity.
    pub identity_remove_command: String,
    /// `tower_backup_command`: save the tower somewhere the other server can reach.
    pub tower_backup_command: Option<String>,
    /// `tower_restore_command`: fetch the saved tower into place.
    pub tower_restore_command: Option<String>,
    /// `gossip_check_command`: succeeds when `validator_identity` is this node in gossip.
    pub gossip_check_command: Option<String>,
}

/// Reference shell commands used in every mode. The empty string means "not set".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// `validator_restart_command` (reference).
    pub validator_restart_command: Option<String>,
    /// `agent_stop_command` (reference): run by the `/shutdown` endpoint.
    pub agent_stop_command: Option<String>,
    /// `active_identity_symlink_command` (reference): point the identity symlink at the staked key.
    pub active_identity_symlink_command: Option<String>,
    /// `passive_identity_symlink_command` (reference): point it at the unstaked key.
    pub passive_identity_symlink_command: Option<String>,
}

/// How commands from the manager are authenticated (the IP allow-list is a second layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandAuth {
    /// `manager_pubkeys`: the keys whose signatures are accepted; non-empty when signing is required.
    pub manager_pubkeys: Vec<Pubkey>,
    /// `require_signed_commands`: reject unsigned commands. Default true, except in a file that sets
    /// neither this nor `manager_pubkeys` (a reference-design file), which keeps the reference's
    /// unsigned commands with a loud warning.
    pub require_signed_commands: bool,
    /// `command_max_age`: the timestamp window of a signed command. Default 30s.
    pub command_max_age: Duration,
}

/// When the manager is silent, the agent checks outside connectivity and demotes itself if isolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectivityCheck {
    /// `connectivity_targets`: `host:port` endpoints to connect to. Default the reference's three.
    pub targets: Vec<HostPort>,
    /// `connectivity_failures_to_fence`: unreachable targets that mean "isolated" (1..=targets).
    pub failures_to_fence: usize,
    /// `connectivity_timeout`: per-target connect timeout. Default 1s.
    pub timeout: Duration,
}

impl AgentConfig {
    /// One line describing the config, for `failover-config check-agent`.
    pub fn summary(&self) -> String {
        let client = match &self.validator_client {
            ValidatorClient::Agave(agave) => {
                format!("agave via {}", agave.admin_socket.display())
            }
            ValidatorClient::Firedancer(fd) => {
                format!("firedancer via {}", fd.fdctl_path.display())
            }
            ValidatorClient::Command(_) => "command (reference shell commands)".to_string(),
        };
        let auth = if self.auth.require_signed_commands {
            format!("{} manager key(s)", self.auth.manager_pubkeys.len())
        } else {
            "unsigned commands accepted".to_string()
        };
        format!(
            "agent for {} listening on {}, client {client}, tower {}, tower store {}, {auth}",
            self.validator_identity,
            self.listen_addr,
            self.tower_file.display(),
            self.tower_store.describe(),
        )
    }
}
