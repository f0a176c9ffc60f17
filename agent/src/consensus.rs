//! Which consensus a cluster runs, read at run time from a node's RPC — never from the feature id
//! alone, which differs between Agave 4.2 (`a1penGLz…`) and 4.3 (`A1pengvu…`):
//!
//! - `getAgGenesisCert` (solana-rpc 4.2 `rpc.rs`, no params, finalized bank) answers the Alpenglow
//!   genesis certificate once Alpenglow runs, `null` before; a node older than 4.2 does not know
//!   the method: TowerBFT.
//! - With no certificate, the Alpenglow feature account (its id chosen by the node's version line)
//!   tells whether the migration has begun: bincode `Feature { activated_at: Option<u64> }`. Active
//!   but no certificate yet is the **migration window** (TowerBFT until `activated_at + 5000`, then
//!   vote-only blocks until the genesis certificate; agave-votor-messages `MIGRATION_SLOT_OFFSET`):
//!   no failover then — a 4.2 node persists its genesis vote nowhere.
//!
//! The manager asks the cluster's RPC, each agent its own validator's; both say what they saw in
//! `--status`, `/status` and the logs.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::request::RpcRequest;

use failover_identity::VoteStateKind;

/// The Alpenglow feature of the Agave 4.2 line.
pub const ALPENGLOW_FEATURE_4_2: &str = "a1penGLz8Vm2QHYB3JPefBiU4BY3Z6JkW2k3Scw5GWP";
/// The Alpenglow feature from Agave 4.3 on.
pub const ALPENGLOW_FEATURE_4_3: &str = "A1pengvuM6JEcyNuTnMqepBKhwHE3N6PmUrdATGawhJS";
/// Slots from the feature's activation to the migration slot.
pub const MIGRATION_SLOT_OFFSET: u64 = 5000;

/// What a node says its cluster runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Consensus {
    TowerBft,
    /// The Alpenglow feature is active; the genesis certificate is not final yet.
    Migrating {
        activated_at: u64,
        migration_slot: u64,
    },
    /// Alpenglow runs (from `genesis_slot`, when known).
    Alpenglow {
        genesis_slot: Option<u64>,
    },
    /// Not known (yet): the node did not answer.
    #[default]
    Unknown,
}

impl Consensus {
    /// The vote-state file a voting node of this consensus keeps; `None` in the migration window
    /// (no handover then) and when unknown.
    pub fn vote_state_kind(self) -> Option<VoteStateKind> {
        match self {
            Consensus::TowerBft => Some(VoteStateKind::Tower),
            Consensus::Alpenglow { .. } => Some(VoteStateKind::VoteHistory),
            Consensus::Migrating { .. } | Consensus::Unknown => None,
        }
    }

    pub fn is_alpenglow(self) -> bool {
        matches!(self, Consensus::Alpenglow { .. })
    }

    /// A stable one-word name (logs, metrics, config).
    pub fn name(self) -> &'static str {
        match self {
            Consensus::TowerBft => "tower",
            Consensus::Migrating { .. } => "migrating",
            Consensus::Alpenglow { .. } => "alpenglow",
            Consensus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Consensus::TowerBft => f.write_str("TowerBFT"),
            Consensus::Migrating {
                activated_at,
                migration_slot,
            } => write!(
                f,
                "migrating to Alpenglow (feature active at slot {activated_at}, migration slot \
                 {migration_slot}, no genesis certificate yet)"
            ),
            Consensus::Alpenglow {
                genesis_slot: Some(slot),
            } => write!(f, "Alpenglow (genesis slot {slot})"),
            Consensus::Alpenglow { genesis_slot: None } => f.write_str("Alpenglow"),
            Consensus::Unknown => f.write_str("unknown consensus"),
        }
    }
}

/// The configured choice (`consensus: auto|tower|alpenglow`) applied: a forced value is taken as
/// it is, `auto` asks `rpc`.
pub async fn resolve(setting: failover_config::ConsensusSetting, rpc: &RpcClient) -> Consensus {
    use failover_config::ConsensusSetting;
    match setting {
        ConsensusSetting::Tower => Consensus::TowerBft,
        ConsensusSetting::Alpenglow => Consensus::Alpenglow { genesis_slot: None },
        ConsensusSetting::Auto => detect(rpc).await.unwrap_or(Consensus::Unknown),
    }
}

/// Asks a node's RPC which consensus its cluster runs.
pub async fn detect(rpc: &RpcClient) -> Result<Consensus, String> {
    let version = rpc
        .get_version()
        .await
        .map_err(|e| format!("RPC getVersion: {e}"))?
        .solana_core;
    let Some((major, minor)) = major_minor(&version) else {
        return Err(format!("unreadable version {version:?}"));
    };
    if (major, minor) < (4, 2) {
        return Ok(Consensus::TowerBft);
    }
    let cert: Value = rpc
        .send(
            RpcRequest::Custom {
                method: "getAgGenesisCert",
            },
            json!([]),
        )
        .await
        .map_err(|e| format!("RPC getAgGenesisCert: {e}"))?;
    if !cert.is_null() {
        return Ok(Consensus::Alpenglow {
            genesis_slot: cert["block"]["slot"].as_u64(),
        });
    }
    let feature = if (major, minor) == (4, 2) {
        ALPENGLOW_FEATURE_4_2
    } else {
        ALPENGLOW_FEATURE_4_3
    };
    let account: Value = rpc
        .send(
            RpcRequest::GetAccountInfo,
            json!([feature, {"encoding": "base64"}]),
        )
        .await
        .map_err(|e| format!("RPC getAccountInfo {feature}: {e}"))?;
    Ok(match feature_activation(&account) {
        Some(at) => Consensus::Migrating {
            activated_at: at,
            migration_slot: at.saturating_add(MIGRATION_SLOT_OFFSET),
        },
        None => Consensus::TowerBft,
    })
}

/// `Feature { activated_at: Option<u64> }` from a `getAccountInfo` answer (base64): the slot it
/// was activated at, `None` when the account is missing or the activation pending.
fn feature_activation(answer: &Value) -> Option<u64> {
    use base64::Engine;
    let data = answer["value"]["data"][0].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    match bytes.as_slice() {
        [1, rest @ ..] if rest.len() >= 8 => {
            Some(u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")))
        }
        _ => None,
    }
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_feature_account_and_the_version() {
        let active = json!({"value": {"data": ["AQoAAAAAAAAA", "base64"]}});
        assert_eq!(feature_activation(&active), Some(10));
        let pending = json!({"value": {"data": ["AA==", "base64"]}});
        assert_eq!(feature_activation(&pending), None);
        assert_eq!(feature_activation(&json!({"value": null})), None);
        assert_eq!(major_minor("4.2.2"), Some((4, 2)));
        assert_eq!(major_minor("4.3.0-beta.1"), Some((4, 3)));
        assert_eq!(major_minor("x"), None);
        assert_eq!(
            Consensus::TowerBft.vote_state_kind(),
            Some(VoteStateKind::Tower)
        );
        assert_eq!(
            Consensus::Migrating {
                activated_at: 1,
                migration_slot: 5001
            }
            .vote_state_kind(),
            None
        );
    }
}
