//! Reading and changing the local validator's identity, for each validator kind:
//! - `agave`: the admin RPC socket (`contactInfo`, `setIdentity`, `addAuthorizedVoter`);
//! - `firedancer`: `fdctl set-identity --config CFG - [--require-tower]` with the keypair on stdin
//!   (never Agave's admin RPC, which Frankendancer does not serve); identity from RPC `getIdentity`;
//! - `command`: the reference design's shell commands; identity from RPC `getIdentity`.
//!
//! Also the validator's slot and health from its own RPC. This module does not decide anything
//! and does not know about dry-run: the service calls it only for real actions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use failover_config::{AgentConfig, ValidatorClient};
use failover_identity::{
    AdminRpcClient, AdminRpcError, Keypair, Permissions, Pubkey, Require, SetIdentityArity,
    Timeouts, VoteStateKind,
};
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::config::RpcGetVoteAccountsConfig;

use crate::api::Health;
use crate::commands::run_shell;

/// Longest an identity command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

enum Kind {
    Agave {
        admin: AdminRpcClient,
        unstaked: PathBuf,
    },
    Firedancer {
        fdctl: PathBuf,
        config: PathBuf,
        unstaked: PathBuf,
    },
    Command {
        change: Option<String>,
        remove: String,
    },
}

/// The local validator.
pub struct Validator {
    kind: Kind,
    rpc: RpcClient,
}

impl Validator {
    pub fn new(cfg: &AgentConfig) -> Self {
        let kind = match &cfg.validator_client {
            ValidatorClient::Agave(agave) => Kind::Agave {
                admin: AdminRpcClient::new(&agave.admin_socket, Timeouts::LOCAL),
                unstaked: agave.unstaked_identity_keypair.clone(),
            },
            ValidatorClient::Firedancer(fd) => Kind::Firedancer {
                fdctl: fd.fdctl_path.clone(),
                config: fd.firedancer_config.clone(),
                unstaked: fd.unstaked_identity_keypair.clone(),
            },
            ValidatorClient::Command(c) => Kind::Command {
                change: c.identity_change_command.clone(),
                remove: c.identity_remove_command.clone(),
            },
        };
        let rpc = RpcClient::new_with_timeout(cfg.local_rpc.to_string(), Duration::from_secs(3));
        Self { kind, rpc }
    }

    /// Whether this kind reads the identity from an admin socket that must exist.
    pub fn admin_socket(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Agave { admin, .. } => Some(admin.socket_path()),
            _ => None,
        }
    }

    /// Picks the `setIdentity` arity from the validator's version, when it answers `getVersion`.
    pub async fn learn_version(&self) -> Option<String> {
        let version = self.rpc.get_version().await.ok()?.solana_core;
        if let Kind::Agave { admin, .. } = &self.kind {
            if let Some(arity) = SetIdentityArity::for_version(&version) {
                admin.set_identity_arity(arity);
            }
        }
        Some(version)
    }

    /// The validator's current identity.
    pub async fn identity(&self) -> Result<Pubkey, String> {
        match &self.kind {
            Kind::Agave { admin, .. } => admin.identity().await.map_err(|e| e.to_string()),
            _ => self
                .rpc
                .get_identity()
                .await
                .map_err(|e| format!("RPC getIdentity: {e}")),
        }
    }

    /// The validator's own RPC (consensus detection).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Switches to the unstaked identity.
    pub async fn demote(&self) -> Result<String, String> {
        match &self.kind {
            Kind::Agave { admin, unstaked } => {
                set_identity_converging(admin, unstaked, Require::both(false))
                    .await
                    .map(|tries| format!("setIdentity {} (admin RPC){tries}", unstaked.display()))
            }
            Kind::Firedancer {
                fdctl,
                config,
                unstaked,
            } => fdctl_set_identity(fdctl, config, unstaked, Require::both(false)).await,
            Kind::Command { remove, .. } => run_shell(remove, None, COMMAND_TIMEOUT)
                .await
                .map(|_| format!("ran identity_remove_command: {remove}")),
        }
    }

    /// Switches to the staked identity with `kind`'s file required (the tower when
    /// `require_tower`; the vote history under Alpenglow). `staked` is the keypair file on this
    /// machine; the command kind's own command names its keypair, so it needs none.
    pub async fn promote(
        &self,
        staked: Option<&Path>,
        kind: VoteStateKind,
        require_tower: bool,
    ) -> Result<String, String> {
        let require = match kind {
            VoteStateKind::Tower => Require::both(require_tower),
            VoteStateKind::VoteHistory => Require::vote_history(),
        };
        let need_file = || {
            staked.ok_or_else(|| {
                "no staked_identity_keypair on this server: promote with skip_identity (secure mode)"
                    .to_string()
            })
        };
        match &self.kind {
            Kind::Agave { admin, .. } => {
                let file = need_file()?;
                set_identity_converging(admin, file, require)
                    .await
                    .map(|tries| {
                        format!(
                            "setIdentity {} require_tower={} require_vote_history={} (admin \
                             RPC){tries}",
                            file.display(),
                            require.tower,
                            require.vote_history
                        )
                    })
            }
            Kind::Firedancer { fdctl, config, .. } => {
                fdctl_set_identity(fdctl, config, need_file()?, require).await
            }
            Kind::Command { change, .. } => match change {
                Some(change) => run_shell(change, None, COMMAND_TIMEOUT)
                    .await
                    .map(|_| format!("ran identity_change_command: {change}")),
                None => Err(
                    "no identity_change_command configured: this agent can only be \
                             promoted with skip_identity (secure mode)"
                        .into(),
                ),
            },
        }
    }

    /// Adds the staked key as an authorized voter (Agave only; "already present" is success).
    pub async fn add_authorized_voter(&self, staked: &Path) -> Result<String, String> {
        match &self.kind {
            Kind::Agave { admin, .. } => match admin.add_authorized_voter(staked).await {
                Ok(()) => Ok("addAuthorizedVoter".into()),
                Err(AdminRpcError::Rpc { message, .. })
                    if message.contains("Authorized voter already present") =>
                {
                    Ok("authorized voter already present".into())
                }
                Err(e) => Err(e.to_string()),
            },
            _ => Ok("not applicable to this validator kind".into()),
        }
    }

    /// Empties the validator's authorized-voter list (Agave only: `None` for other kinds). Agave
    /// signs each vote with a key from that list, read under a lock the admin call waits for, so
    /// when this returns no vote can be signed any more: not the straggler the replay loop casts
    /// with the identity it held before `setIdentity`, and not one it would cast after an
    /// isolation heals (solana-core 3.1 `replay_stage.rs`, `generate_vote_tx`).
    pub async fn remove_voters(&self) -> Result<Option<String>, String> {
        match &self.kind {
            Kind::Agave { admin, .. } => admin
                .remove_all_authorized_voters()
                .await
                .map(|()| Some("removeAllAuthorizedVoters".to_string()))
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    }

    /// Whether authorized voters are managed through the admin RPC (Agave).
    pub fn manages_voters(&self) -> bool {
        matches!(self.kind, Kind::Agave { .. })
    }

    /// The validator's processed slot, if its RPC answers.
    pub async fn slot(&self) -> Option<u64> {
        self.rpc
            .get_slot_with_commitment(CommitmentConfig::processed())
            .await
            .ok()
    }

    /// The validator's finalized slot: under Alpenglow, votor's root, at or below which it
    /// casts no vote (solana-core 4.2 `commitment_service.rs` sets it when votor roots a block).
    pub async fn finalized_slot(&self) -> Result<u64, String> {
        self.rpc
            .get_slot_with_commitment(CommitmentConfig::finalized())
            .await
            .map_err(|e| format!("getSlot (finalized): {e}"))
    }

    /// The vote account whose node is `staked` (`known` when already found) and its last vote, as
    /// this validator sees it at `commitment`; `None` when there is no such account.
    pub async fn vote_account_last_vote(
        &self,
        staked: &Pubkey,
        known: Option<Pubkey>,
        commitment: CommitmentConfig,
    ) -> Result<Option<(Pubkey, u64)>, String> {
        let config = RpcGetVoteAccountsConfig {
            vote_pubkey: known.map(|k| k.to_string()),
            commitment: Some(commitment),
            keep_unstaked_delinquents: Some(true),
            ..Default::default()
        };
        let accounts = self
            .rpc
            .get_vote_accounts_with_config(config)
            .await
            .map_err(|e| format!("RPC getVoteAccounts: {e}"))?;
        let staked = staked.to_string();
        Ok(accounts
            .current
            .iter()
            .chain(accounts.delinquent.iter())
            .find(|a| match known {
                Some(k) => a.vote_pubkey == k.to_string(),
                None => a.node_pubkey == staked,
            })
            .and_then(|a| Some((a.vote_pubkey.parse().ok()?, a.last_vote))))
    }

    /// `getHealth` from the validator's own RPC.
    pub async fn health(&self) -> Health {
        match self.rpc.get_health().await {
            Ok(()) => Health::Ok,
            Err(e) => {
                let text = e.to_string();
                match behind_slots(&text) {
                    Some(slots) => Health::Behind { slots: Some(slots) },
                    None if text.contains("Node is unhealthy") => Health::Behind { slots: None },
                    None => Health::Unknown { error: text },
                }
            }
        }
    }
}

/// "Node is behind by N slots" → N.
fn behind_slots(text: &str) -> Option<u64> {
    let rest = text.split("Node is behind by ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `setIdentity`, asked again while Agave 4.3 reports a partial switch ("Failed to apply new
/// identity to …": some of its parts took the new key, nothing else did yet; its own advice is to
/// retry until it converges). Returns a note on the retries, empty when there were none.
async fn set_identity_converging(
    admin: &AdminRpcClient,
    keypair: &Path,
    require: Require,
) -> Result<String, String> {
    const ATTEMPTS: u32 = 3;
    let mut partial = Vec::new();
    for attempt in 1..=ATTEMPTS {
        match admin.set_identity_requiring(keypair, require).await {
            Ok(()) if partial.is_empty() => return Ok(String::new()),
            Ok(()) => {
                return Ok(format!(
                    "; converged on attempt {attempt} after a partial switch ({})",
                    partial.join("; ")
                ))
            }
            Err(AdminRpcError::PartialIdentityChange { message, .. }) if attempt < ATTEMPTS => {
                let now = admin
                    .identity()
                    .await
                    .map_or_else(|e| format!("identity unreadable: {e}"), |id| id.to_string());
                tracing::warn!(attempt, reads = %now, "partial identity change: {message}; asking again");
                partial.push(message);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(describe_admin_error(e)),
        }
    }
    Err(format!(
        "the identity change stayed partial after {ATTEMPTS} attempts: {}",
        partial.join("; ")
    ))
}

fn describe_admin_error(e: AdminRpcError) -> String {
    match e {
        AdminRpcError::Timeout { sent: true, .. } => {
            format!("{e}; the validator may have switched — re-read its identity")
        }
        other => other.to_string(),
    }
}

/// `fdctl set-identity --config CFG - [--require-tower] [--do-not-require-vote-history]`, the
/// keypair piped on stdin so it never appears in a process argument list. When fdctl reports an
/// abandoned switch ("already in the process of switching keys"), it is asked once more with
/// `--force`, as its message says (Firedancer `set_identity.c`).
async fn fdctl_set_identity(
    fdctl: &Path,
    config: &Path,
    keypair_path: &Path,
    require: Require,
) -> Result<String, String> {
    let keypair =
        Keypair::read_file(keypair_path, Permissions::Strict).map_err(|e| e.to_string())?;
    let json = keypair.to_json();
    let mut command = format!(
        "{} set-identity --config {} -",
        shell_quote(&fdctl.to_string_lossy()),
        shell_quote(&config.to_string_lossy())
    );
    if require.tower {
        command.push_str(" --require-tower");
    }
    if !require.vote_history {
        command.push_str(" --do-not-require-vote-history");
    }
    let switched = |forced: &str| {
        format!(
            "fdctl set-identity {} (keypair on stdin){forced}",
            keypair.pubkey()
        )
    };
    match run_shell(&command, Some(json.as_bytes()), COMMAND_TIMEOUT).await {
        Ok(_) => Ok(switched("")),
        Err(e) if e.contains("already in the process of switching keys") => {
            command.push_str(" --force");
            run_shell(&command, Some(json.as_bytes()), COMMAND_TIMEOUT)
                .await
                .map(|_| switched("; with --force after an abandoned switch"))
        }
        Err(e) => Err(e),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_behind_count_from_agave_errors() {
        assert_eq!(
            behind_slots("RPC response error -32005: Node is behind by 170 slots; "),
            Some(170)
        );
        assert_eq!(behind_slots("connection refused"), None);
    }
}
