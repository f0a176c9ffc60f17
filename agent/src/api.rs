//! The agent's HTTP API: paths, request and response bodies. Defined once here and used by both the
//! agent's handlers and the typed client the manager uses.
//!
//! Endpoints (the reference design's, plus `/health`):
//! - `POST /status` (signed) — the manager's heartbeat; answers [`StatusResponse`].
//! - `POST /failover` (signed) — `become_active` / `become_passive`; answers [`FailoverResponse`].
//! - `POST /shutdown` (signed) — stop the agent.
//! - `GET /identity` — the validator's current identity.
//! - `GET /health` — the agent is up (for systemd and monitoring).

use base64::Engine;
use failover_identity::VoteStateKind;
use serde::{Deserialize, Serialize};

use crate::consensus::Consensus;

pub const PATH_STATUS: &str = "/status";
pub const PATH_FAILOVER: &str = "/failover";
pub const PATH_SHUTDOWN: &str = "/shutdown";
pub const PATH_IDENTITY: &str = "/identity";
pub const PATH_HEALTH: &str = "/health";
/// The staked tower as it is now, for the manager's embedded backup between heartbeats.
pub const PATH_TOWER: &str = "/tower";
/// Prometheus metrics (GET, unsigned: a scrape changes nothing).
pub const PATH_METRICS: &str = "/metrics";

/// Largest request body the agent reads: a tower (~2.3 KB, ~3.1 KB as base64) plus envelope.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The manager's heartbeat. `term` is the manager's current fencing term.
///
/// The heartbeat is also the agent's lease (`lease.rs`): `seq` numbers it, and `acked` names the
/// last heartbeat whose answer reached the manager within its request timeout. Only an acked
/// heartbeat renews the lease, from the instant the agent admitted it — never later than the
/// manager received the answer, so the manager's "last answer + fence_after" is an upper bound of
/// the agent's fence.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusRequest {
    #[serde(default)]
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
}

/// Asks for the staked tower unless it is still the one the manager holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TowerRequest {
    #[serde(default)]
    pub term: u64,
    /// SHA-256 (hex) of the tower the manager already holds.
    #[serde(default)]
    pub known_sha256: Option<String>,
    /// Hold the answer up to this long (at most [`TOWER_WAIT_MAX_MS`]) until the tower differs
    /// from `known_sha256`: the manager learns of each vote within milliseconds of its save.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The longest a `/tower` request may be held.
pub const TOWER_WAIT_MAX_MS: u64 = 5_000;

/// The staked tower on this server, when it verifies and differs from the one the manager holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TowerResponse {
    pub tower: Option<VoteStateBlob>,
}

/// Whether this validator holds the staked identity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Active,
    Passive,
    /// The validator's identity could not be read.
    Unknown,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Active => "Active",
            Role::Passive => "Passive",
            Role::Unknown => "role unknown",
        })
    }
}

/// The validator's health as its own RPC reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Ok,
    Behind { slots: Option<u64> },
    Unknown { error: String },
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ok => f.write_str("healthy"),
            Health::Behind { slots: Some(n) } => write!(f, "behind by {n} slots"),
            Health::Behind { slots: None } => f.write_str("behind"),
            Health::Unknown { error } => write!(f, "health unknown ({error})"),
        }
    }
}

/// A vote-state file (tower or vote history) in transit, with what identifies it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VoteStateBlob {
    /// The identity it belongs to (base58).
    pub identity: String,
    /// Tower or vote history (absent in what agents before vote histories sent: a tower).
    #[serde(default)]
    pub kind: VoteStateKind,
    /// SHA-256 of the file bytes, hex.
    pub sha256: String,
    pub last_vote: Option<u64>,
    pub root: Option<u64>,
    /// The file, base64.
    pub bytes_base64: String,
}

impl VoteStateBlob {
    pub fn new(
        identity: String,
        kind: VoteStateKind,
        bytes: &[u8],
        last_vote: Option<u64>,
        root: Option<u64>,
    ) -> Self {
        Self {
            identity,
            kind,
            sha256: failover_identity::tower_hash(bytes),
            last_vote,
            root,
            bytes_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The file bytes, if the base64 is valid.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.bytes_base64)
            .ok()
    }
}

/// The vote-state file (the consensus's kind) as the agent sees it on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VoteStateStatus {
    #[serde(default)]
    pub kind: VoteStateKind,
    pub path: String,
    pub present: bool,
    pub last_vote: Option<u64>,
    pub root: Option<u64>,
    pub sha256: Option<String>,
    /// Why the file is present but unusable.
    pub error: Option<String>,
}

/// What the watchdog did when the manager went silent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FenceReport {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub reason: String,
    /// `stayed_active` (with evidence that its votes land), `demoted` (votes paused, then the full
    /// demotion), `paused` (votes paused, the full demotion failed), `killed` (the validator did
    /// not answer: its process was killed), `fence_failed` (none of that worked), or `dry_run`.
    pub outcome: String,
    pub unreachable_targets: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusResponse {
    pub agent_version: String,
    pub validator_client: String,
    /// The validator's current identity (admin RPC `contactInfo`, or RPC `getIdentity`).
    pub identity: Option<String>,
    pub identity_error: Option<String>,
    pub staked_identity: String,
    pub role: Role,
    /// What this validator's RPC says its cluster runs.
    #[serde(default)]
    pub consensus: Consensus,
    pub process_name: String,
    pub process_running: Option<bool>,
    pub process_uptime_secs: Option<u64>,
    /// The validator's processed slot.
    pub slot: Option<u64>,
    pub health: Health,
    pub tower: VoteStateStatus,
    /// Embedded tower store: the active's current tower, for the manager to keep.
    pub tower_backup: Option<VoteStateBlob>,
    /// The highest fencing term this agent has accepted.
    pub term: u64,
    /// This agent process's id (as in `/health`).
    #[serde(default)]
    pub agent_id: String,
    /// Why this server could not be promoted now (a keypair it would switch with is missing,
    /// unreadable or not the expected identity); `None` when it could.
    #[serde(default)]
    pub not_promotable: Option<String>,
    pub last_fence: Option<FenceReport>,
    /// The lease's one published number: an active whose agent the manager last heard at T has
    /// stopped voting by T + this, unless its votes kept landing, and then by this after the last
    /// of them landed. The manager waits at least this (plus a margin) from both before promoting
    /// the other node without this one.
    pub fence_after_ms: u64,
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FailoverAction {
    BecomeActive,
    BecomePassive,
}

impl FailoverAction {
    /// As on the wire: `become_active`, `become_passive`.
    pub fn name(&self) -> &'static str {
        match self {
            FailoverAction::BecomeActive => "become_active",
            FailoverAction::BecomePassive => "become_passive",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailoverRequest {
    pub action: FailoverAction,
    /// The fencing term of this switch; older than one already seen is refused.
    pub term: u64,
    /// The switch this command belongs to (random per switch): a term is one switch's, and a
    /// command of the same term from another switch (a second manager that computed the same
    /// term) is refused. Absent in a reference manager's commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_id: Option<String>,
    /// Secure mode: install the tower but leave the identity to the manager (SSH).
    #[serde(default)]
    pub skip_identity: bool,
    #[serde(default)]
    pub reason: String,
    /// `become_active` with the embedded store: the tower to install.
    #[serde(default)]
    pub tower: Option<VoteStateBlob>,
    /// `become_active`: the hash the installed tower must have (from `become_passive`).
    #[serde(default)]
    pub tower_sha256: Option<String>,
    /// What the manager believes the cluster runs: the agent refuses a switch when its own
    /// validator says otherwise.
    #[serde(default)]
    pub consensus: Option<Consensus>,
    /// `become_active` during the migration to Alpenglow (no genesis certificate yet), which is
    /// refused without this (`--force`).
    #[serde(default)]
    pub allow_migration: bool,
    /// `become_active`: the newest vote of the staked identity the manager has seen land on chain.
    /// A tower whose last vote is older is refused — as is one older than what this agent's own
    /// validator shows for the vote account.
    #[serde(default)]
    pub min_last_vote: Option<u64>,
    /// `become_active` under Alpenglow when the old active's final vote history could not be
    /// had (it was unreachable): the slot its votes may have reached. The agent takes the staked
    /// identity only once its validator's finalized root is at least this — votor ignores every
    /// slot at or below its root, so X then casts no vote for a slot the old active may have
    /// voted on (a notarize here against its skip there is slashable).
    #[serde(default)]
    pub min_root: Option<u64>,
    /// The old active was fenced by time and the vote state offered is older than the chain's
    /// last vote (it was cut off before its final one reached anyone): every vote it may have cast
    /// beyond the chain has lost its lockout by this slot. The agent then accepts a vote state
    /// older than the chain, but votes only from a bank past this slot (its processed slot under
    /// TowerBFT, its finalized root under Alpenglow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past_lockouts: Option<u64>,
}

/// One timed step of a switch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailoverResponse {
    pub ok: bool,
    pub action: FailoverAction,
    pub term: u64,
    /// The validator's identity after the action.
    pub identity: Option<String>,
    /// `become_passive`: the final staked tower (its hash is what `become_active` must install).
    pub tower: Option<VoteStateBlob>,
    pub phases: Vec<Phase>,
    pub dry_run: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShutdownRequest {
    #[serde(default)]
    pub term: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityResponse {
    pub identity: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthResponse {
    pub ok: bool,
    pub agent_version: String,
    /// This agent process's id, drawn at random when it started: signed commands must be addressed
    /// to it (see `auth.rs`), so none captured elsewhere or before a restart is accepted here.
    #[serde(default)]
    pub agent_id: String,
    /// The staked identity this agent serves (base58).
    #[serde(default)]
    pub validator_identity: String,
}

/// Every refusal is a JSON body with the reason, and for the refusals a client acts on, a code.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    pub error: String,
    /// `wrong_audience` (re-read `/health` and sign again), `stale_term` (see `term`), or the
    /// kind of authentication failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// With `stale_term`: the term this agent has accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// With `wrong_audience`: this agent's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

impl ErrorResponse {
    pub fn new(error: String) -> Self {
        Self {
            error,
            ..Self::default()
        }
    }
}

/// Refusal codes a client branches on.
pub const CODE_WRONG_AUDIENCE: &str = "wrong_audience";
pub const CODE_STALE_TERM: &str = "stale_term";
