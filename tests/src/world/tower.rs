//! A node's tower under TowerBFT: the lockouts it holds in memory for its current identity, and
//! Agave's way of loading one from `tower-1_9-<identity>.bin` (with its error strings).

use std::path::Path;

use failover_identity::tower::{
    BlockTimestamp, LastVote, Lockout, Tower, TowerFile, TowerVoteState,
};
use failover_identity::{Pubkey, VoteStateError};
use sha2::{Digest, Sha256};

use super::unix_now;

/// Agave keeps at most 31 lockouts (`MAX_LOCKOUT_HISTORY`).
const MAX_LOCKOUT_HISTORY: usize = 31;

/// The tower a node holds in memory for its current identity.
#[derive(Clone, Debug)]
pub(crate) struct NodeTower {
    pub identity: Pubkey,
    pub lockouts: Vec<Lockout>,
    pub root: Option<u64>,
    /// Slots at or below this are never voted on again (a fresh tower starts at the on-chain vote).
    floor: Option<u64>,
}

impl NodeTower {
    pub fn fresh(identity: Pubkey, floor: Option<u64>) -> Self {
        Self {
            identity,
            lockouts: Vec::new(),
            root: None,
            floor,
        }
    }

    pub fn from_tower(tower: &Tower) -> Self {
        Self {
            identity: tower.node_pubkey,
            lockouts: tower.vote_state.votes.clone(),
            root: tower.root(),
            floor: tower.last_voted_slot(),
        }
    }

    pub fn last_vote(&self) -> Option<u64> {
        self.lockouts.last().map(|l| l.slot).or(self.floor)
    }

    /// Records a vote on `slot`: the newest lockout has one confirmation, each older one more;
    /// the oldest falls off into the root once there are more than 31.
    pub fn push(&mut self, slot: u64) {
        self.lockouts.push(Lockout {
            slot,
            confirmation_count: 1,
        });
        if self.lockouts.len() > MAX_LOCKOUT_HISTORY {
            let rooted = self.lockouts.remove(0);
            self.root = Some(rooted.slot);
        }
        let n = self.lockouts.len();
        for (i, l) in self.lockouts.iter_mut().enumerate() {
            l.confirmation_count = (n - i) as u32;
        }
        self.floor = Some(slot);
    }

    pub fn to_tower(&self, slot: u64) -> Tower {
        let hash: [u8; 32] = Sha256::digest(slot.to_le_bytes()).into();
        let block_id: [u8; 32] = Sha256::digest((slot ^ u64::MAX).to_le_bytes()).into();
        let now = unix_now();
        Tower {
            node_pubkey: self.identity,
            threshold_depth: 8,
            threshold_size: 2.0 / 3.0,
            vote_state: TowerVoteState::new(self.lockouts.clone(), self.root),
            last_vote: LastVote::TowerSync {
                lockouts: self.lockouts.clone(),
                root: self.root,
                hash,
                timestamp: Some(now),
                block_id,
            },
            last_timestamp: BlockTimestamp {
                slot,
                timestamp: now,
            },
        }
    }
}

/// Why a tower file could not be loaded, displayed as Agave's `TowerError`.
#[derive(Debug)]
pub(crate) enum LoadTowerError {
    Missing(std::io::Error),
    Io(std::io::Error),
    Invalid(VoteStateError),
}

impl std::fmt::Display for LoadTowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Agave's strings (solana-core consensus.rs `TowerError`).
        match self {
            LoadTowerError::Missing(e) | LoadTowerError::Io(e) => write!(f, "IO Error: {e}"),
            LoadTowerError::Invalid(VoteStateError::BadSignature { .. }) => {
                write!(f, "The signature on the saved tower is invalid")
            }
            LoadTowerError::Invalid(VoteStateError::WrongIdentity {
                expected, found, ..
            }) => write!(
                f,
                "The tower does not match this validator: node_pubkey is {expected:?} but found tower for {found:?}"
            ),
            LoadTowerError::Invalid(e) => write!(f, "Serialization Error: {e}"),
        }
    }
}

pub(crate) fn load_tower(path: &Path, identity: &Pubkey) -> Result<Tower, LoadTowerError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadTowerError::Missing(e),
        _ => LoadTowerError::Io(e),
    })?;
    let file = TowerFile::parse(&bytes).map_err(LoadTowerError::Invalid)?;
    file.verify(identity).map_err(LoadTowerError::Invalid)?;
    Ok(file.tower)
}
