//! The manager's config, `manager-config.json`: every field of the reference design (including
//! Secure Identity Mode) with the same name and meaning, plus command signing, the tower store,
//! the pubsub endpoint and the rate and cooldown limits.

//!
//! This module holds the validated types and their defaults; `read` turns a parsed document into
//! them.

mod read;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use solana_pubkey::Pubkey;
use url::Url;

use crate::errors::Problem;
use crate::secure::SecureMode;
use crate::tower_store::TowerStore;
use crate::types::Secret;

pub(crate) use read::read;

/// `heartbeat_interval` default. Faster than the reference's 5 s so that a crashed validator is
/// detected within 3 s (two samples); an operator's explicit interval is respected.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// `misses_before_failover` default.
pub const DEFAULT_MISSES_BEFORE_FAILOVER: u32 = 3;
/// `slot_diff_threshold` default.
pub const DEFAULT_SLOT_DIFF_THRESHOLD: u64 = 100;
/// `request_timeout` default: a status answer slower than this counts as a miss. The reference's
/// example sets 8 s; with one-second heartbeats a shorter default keeps misses meaningful.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// `stale_vote_slot_threshold` default: slots the vote account's last vote may lag the tip, in two
/// consecutive samples, before the active counts as not voting. With one-second samples (2.5
/// slots) this detects an up-but-silent active within about 12 slots; the reference's example
/// uses 75, which an operator's file keeps.
pub const DEFAULT_STALE_VOTE_SLOT_THRESHOLD: u64 = 8;
/// `alpenglow_stale_vote_slot_threshold` default: under Alpenglow the vote account's lastVote is
/// moved by reward certificates for the slot 8 below each block (and by finalization
/// certificates), so a healthy node's lastVote trails the tip by ~8 slots (median, measured on a
/// real 4.2.2 cluster). Without `alpenglow_stale_vote_slot_threshold`, the larger of this and
/// `stale_vote_slot_threshold` applies.
pub const DEFAULT_ALPENGLOW_STALE_VOTE_SLOT_THRESHOLD: u64 = 24;
/// `fence_margin` default: added to an agent's published `fence_after` (counted from its last
/// answer and from the last landed vote) before the manager may promote the other node while that
/// agent is unreachable. It covers the time between the manager and the agent seeing the same
/// vote land, and scheduling.
pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_secs(2);
/// `telegram_api_base` default.
pub const DEFAULT_TELEGRAM_API_BASE: &str = "https://api.telegram.org";
/// `status_report_interval` default: the reference design's four-hourly status message.
pub const DEFAULT_STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// `state_dir` default for the manager.
pub const DEFAULT_MANAGER_STATE_DIR: &str = "/var/lib/failover-manager";
/// `failover_cooldown` default: the minimum time between two automatic failovers.
pub const DEFAULT_FAILOVER_COOLDOWN: Duration = Duration::from_secs(600);
/// `planned_switch_leader_slots` default: a planned switch starts when the staked identity leads
/// none of this many upcoming slots. Agave skips its leader slots after an identity change until
/// a vote cast since has been rooted (`wait_for_vote_to_start_leader`, solana-core
/// `replay_stage.rs`): about 32 slots past the first vote under TowerBFT.
pub const DEFAULT_PLANNED_SWITCH_LEADER_SLOTS: u64 = 40;
/// `planned_switch_leader_wait` default: how long a planned switch waits for such a moment.
pub const DEFAULT_PLANNED_SWITCH_LEADER_WAIT: Duration = Duration::from_secs(30);
/// `rpc_requests_per_second` default: the cap on requests to `cluster_rpc`.
pub const DEFAULT_RPC_REQUESTS_PER_SECOND: u32 = 10;
/// The most nodes one `validators` list may name: each is polled every heartbeat.
pub const MAX_VALIDATORS: usize = 16;
/// `validatorN.ssh_port` default.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// The fields only the manager has, so that the agent config can say where they belong.
pub(crate) const MANAGER_ONLY_FIELDS: &[&str] = &[
    "validators",
    "validator1",
    "validator2",
    "cluster_rpc",
    "cluster_ws",
    "heartbeat_interval",
    "misses_before_failover",
    "slot_diff_threshold",
    "request_timeout",
    "telegram_bot_token",
    "telegram_chat_id",
    "telegram_api_base",
    "staked_identity_pubkey",
    "vote_account_pubkey",
    "stale_vote_slot_threshold",
    "secure_identity_mode",
    "identity_keypair_path",
    "ssh_user",
    "ssh_key_path",
    "ssh_set_identity_command",
    "ssh_authorized_voter_command",
    "ssh_known_hosts",
    "ssh_program",
    "ssh_require_tower",
    "status_report_interval",
    "signing_keypair_path",
    "sign_commands",
    "failover_cooldown",
    "planned_switch_leader_slots",
    "planned_switch_leader_wait",
    "rpc_requests_per_second",
    "webhook_url",
    "metrics_listen_addr",
    "pre_switch_command",
    "post_switch_command",
    "pre_switch_must_succeed",
    "fence_margin",
    "active_validator",
    "passive_validator",
    "slot_check_interval",
    "startup_grace_period",
    "consensus",
    "alpenglow_stale_vote_slot_threshold",
    "election",
];

/// The validated manager config. Built only by [`crate::parse_manager`] / [`crate::load_manager`].
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The validators that may hold the staked identity, at least two, in standby priority order:
    /// `validators`, or the reference's `validator1` and `validator2`. Which one is active is
    /// read from them, not configured.
    pub validators: Vec<ValidatorEndpoint>,
    /// `cluster_rpc` (reference, required): an RPC node of the cluster.
    pub cluster_rpc: Url,
    /// `cluster_ws`: the cluster's pubsub endpoint. Default derived from `cluster_rpc` (http→ws,
    /// https→wss, an explicit port plus one, as Agave's pubsub listens on RPC port + 1).
    pub cluster_ws: Url,
    /// `heartbeat_interval` (reference): time between status polls. Default 1s (the reference: 5s).
    pub heartbeat_interval: Duration,
    /// `misses_before_failover` (reference): failed polls before failover. Default 3.
    pub misses_before_failover: u32,
    /// `slot_diff_threshold` (reference): slots behind the cluster that count as unhealthy. Default 100.
    pub slot_diff_threshold: u64,
    /// `request_timeout` (reference): timeout of a request to an agent. Default 2s (the
    /// reference's example: 8s).
    pub request_timeout: Duration,
    /// `dry_run` (reference): decide and log, but do not switch. Default false.
    pub dry_run: bool,
    /// `telegram_bot_token` + `telegram_chat_id` (reference) and `telegram_api_base`; absent when
    /// neither token nor chat id is set.
    pub telegram: Option<Telegram>,
    /// `status_report_interval`: time between status messages. Default 4h.
    pub status_report_interval: Duration,
    /// `log_file` (reference): where to log; absent means standard error.
    pub log_file: Option<PathBuf>,
    /// `log_format`: `text` (default) or `json`; the `--log-format` flag overrides it.
    pub log_format: crate::LogFormat,
    /// `alpenglow_stale_vote_slot_threshold`: `stale_vote_slot_threshold` on an Alpenglow cluster.
    pub alpenglow_stale_vote_slot_threshold: u64,
    /// `consensus`: `auto` (default: ask cluster_rpc), `tower` or `alpenglow`.
    pub consensus: crate::ConsensusSetting,
    /// `startup_grace_period` (reference): no automatic switch this long after the manager starts
    /// (a planned one still goes). Default 0: decisions already wait for a complete view.
    pub startup_grace_period: Duration,
    /// `staked_identity_pubkey` (reference, required): the identity moved between the validators.
    pub staked_identity_pubkey: Pubkey,
    /// `vote_account_pubkey` (reference): the shared vote account; absent disables vote-staleness
    /// checks.
    pub vote_account_pubkey: Option<Pubkey>,
    /// `stale_vote_slot_threshold` (reference): slots the last vote may lag. Default 8 (the
    /// reference's example: 75).
    pub stale_vote_slot_threshold: u64,
    /// Secure identity mode (reference), present only when `secure_identity_mode` is true.
    pub secure: Option<SecureMode>,
    /// `signing_keypair_path`: the ed25519 keypair commands to agents are signed with (exists,
    /// mode 0600). `None` exactly when `sign_commands` is false. `sign_commands` defaults to true,
    /// except in a file that sets neither it nor `signing_keypair_path` (a reference-design file),
    /// which keeps the reference's unsigned commands with a loud warning.
    pub signing_keypair_path: Option<PathBuf>,
    /// `tower_store`: where towers travel. Default embedded.
    pub tower_store: TowerStore,
    /// `state_dir`: where the manager keeps towers and the fencing term (need not exist yet).
    /// Default `/var/lib/failover-manager`.
    pub state_dir: PathBuf,
    /// `failover_cooldown`: the minimum time between automatic failovers. Default 10m.
    pub failover_cooldown: Duration,
    /// `planned_switch_leader_slots`: a planned switch (`--trigger-failover` without `--now`)
    /// starts when the staked identity leads none of this many upcoming slots, so that no block
    /// of its own is skipped (the new active skips its leader slots until a vote of its own has
    /// rooted, ~32 slots). Default 40. Automatic failovers never wait.
    pub planned_switch_leader_slots: u64,
    /// `planned_switch_leader_wait`: the longest a planned switch waits for that; then it
    /// switches anyway, saying so. "0s" never waits. Default 30s.
    pub planned_switch_leader_wait: Duration,
    /// `rpc_requests_per_second`: the cap on requests to `cluster_rpc`. Default 10.
    pub rpc_requests_per_second: u32,
    /// `webhook_url`: a Slack/Discord-compatible webhook receiving the same messages as Telegram
    /// (JSON `{"text": …, "content": …}`). Optional.
    pub webhook_url: Option<Url>,
    /// `metrics_listen_addr`: where the manager serves Prometheus metrics (`GET /metrics`), as
    /// `IP:PORT` or `:PORT` (all addresses). Absent: no metrics listener.
    pub metrics_listen_addr: Option<std::net::SocketAddr>,
    /// `pre_switch_command`, `post_switch_command`, `pre_switch_must_succeed`, `hook_timeout`:
    /// the operator's commands around each switch.
    pub switch_hooks: crate::SwitchHooks,
    /// `fence_margin`: added to an unreachable agent's self-fence timeout before the other node
    /// may be promoted. Default 2s.
    pub fence_margin: Duration,
    /// `election`: several managers, one leading through etcd. Absent: this manager is the only
    /// one and always acts.
    pub election: Option<crate::Election>,
    /// Non-fatal findings: ignored legacy fields and risky settings.
    pub warnings: Vec<Problem>,
}

/// One validator server as the manager sees it (an entry of `validators`, or `validator1` /
/// `validator2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorEndpoint {
    /// `name`: used in logs, alerts and `--to`. Default `validatorN`, N its place (from 1).
    pub name: String,
    /// `endpoint` (reference, required): the agent's HTTP API.
    pub endpoint: Url,
    /// `ip` (reference, required): the validator's IP, as seen in gossip.
    pub ip: IpAddr,
    /// `ledger_path` (reference): the ledger directory on that server, for `{ledger}`.
    pub ledger_path: Option<PathBuf>,
    /// `ssh_host`: where secure mode connects. Default `ip`.
    pub ssh_host: String,
    /// `ssh_port`: default 22.
    pub ssh_port: u16,
}

/// Where alerts go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Telegram {
    /// `telegram_bot_token`: secret; never printed.
    pub bot_token: Secret,
    /// `telegram_chat_id`: a (usually negative) number or `@channel`; a JSON number is accepted too.
    pub chat_id: String,
    /// `telegram_api_base`: default `https://api.telegram.org`; tests point it at loopback.
    pub api_base: Url,
}

impl ManagerConfig {
    /// One line describing the config, for `failover-config check-manager`.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self
            .validators
            .iter()
            .map(|e| format!("{} {} ({})", e.name, e.endpoint, e.ip))
            .collect();
        format!(
            "manager for {}: {}, cluster {}, secure identity mode {}, tower store {}, commands {}",
            self.staked_identity_pubkey,
            nodes.join(", "),
            self.cluster_rpc,
            if self.secure.is_some() { "on" } else { "off" },
            self.tower_store.describe(),
            if self.signing_keypair_path.is_some() {
                "signed"
            } else {
                "UNSIGNED"
            },
        )
    }
}
