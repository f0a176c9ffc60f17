//! The keys this agent would switch with, checked before they are needed: at start-up (a key that
//! cannot promote refuses the start, and `--check-config` says so the same way) and again for each
//! status, so that a key file broken later shows as "not promotable" instead of failing the first
//! promotion.

use failover_config::{AgentConfig, ValidatorClient};
use failover_identity::{Keypair, Permissions};

/// Loads every keypair the config names. `Ok` lists what was found (pubkeys only); `Err` lists
/// every problem, each with its field.
pub fn check(cfg: &AgentConfig) -> Result<Vec<String>, Vec<String>> {
    let staked = cfg.validator_identity;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    if let Some(path) = &cfg.staked_identity_keypair {
        match Keypair::read_file(path, Permissions::Strict) {
            Ok(key) if key.pubkey() == staked => {
                found.push(format!("staked_identity_keypair holds {staked}"))
            }
            Ok(key) => problems.push(format!(
                "staked_identity_keypair: {} holds {}, not validator_identity {staked}: this \
                 server could never be promoted",
                path.display(),
                key.pubkey()
            )),
            Err(e) => problems.push(format!("staked_identity_keypair: {e}")),
        }
    }
    if let Some(path) = &cfg.authorized_voter_keypair {
        match Keypair::read_file(path, Permissions::Strict) {
            Ok(key) => found.push(format!("authorized_voter_keypair holds {}", key.pubkey())),
            Err(e) => problems.push(format!("authorized_voter_keypair: {e}")),
        }
    }
    let unstaked = match &cfg.validator_client {
        ValidatorClient::Agave(agave) => Some(&agave.unstaked_identity_keypair),
        ValidatorClient::Firedancer(fd) => Some(&fd.unstaked_identity_keypair),
        ValidatorClient::Command(_) => None,
    };
    if let Some(path) = unstaked {
        match Keypair::read_file(path, Permissions::Strict) {
            Ok(key) if key.pubkey() == staked => problems.push(format!(
                "unstaked_identity_keypair: {} is the staked identity {staked} itself: a demotion \
                 would not demote",
                path.display()
            )),
            Ok(key) => found.push(format!("unstaked_identity_keypair holds {}", key.pubkey())),
            Err(e) => problems.push(format!("unstaked_identity_keypair: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}
