//! A node's vote history under Alpenglow, as agave-votor 4.2 keeps it: per slot it votes, a
//! notarize vote for the slot's block and then a finalize vote, each rewriting
//! `vote_history-<identity>.bin` atomically in the signed format (two rewrites a slot, as votor's
//! voting service writes after every vote it signs); everything below the root is pruned. Loading
//! one follows votor's `VoteHistory::restore` and its error strings (`vote_history.rs`).

use std::path::Path;

use failover_identity::vote_history::{Block, VoteHistory, VoteHistoryFile, VotePayload};
use failover_identity::{Keypair, Pubkey, VoteStateError};
use sha2::{Digest, Sha256};

/// The block id the simulated cluster gives slot `slot` (one block per slot, no forks).
pub fn block_id(slot: u64) -> [u8; 32] {
    Sha256::digest([b"block".as_slice(), &slot.to_le_bytes()].concat()).into()
}

/// The history a node holds in memory for its current identity.
#[derive(Clone, Debug)]
pub(crate) struct NodeHistory {
    pub history: VoteHistory,
    /// Slots at or below this are never voted on again (a fresh history starts at the chain's).
    floor: Option<u64>,
}

impl NodeHistory {
    pub fn fresh(identity: Pubkey, floor: Option<u64>) -> Self {
        Self {
            history: VoteHistory {
                node_pubkey: identity,
                root: floor.unwrap_or(0),
                ..VoteHistory::default()
            },
            floor,
        }
    }

    pub fn from_history(history: VoteHistory) -> Self {
        let floor = history.latest_voted_slot();
        Self { history, floor }
    }

    pub fn identity(&self) -> Pubkey {
        self.history.node_pubkey
    }

    pub fn latest(&self) -> Option<u64> {
        self.history.latest_voted_slot().or(self.floor)
    }

    /// Votes on `slot`: notarize, then finalize; `persist` writes the file after each vote.
    pub fn vote(
        &mut self,
        slot: u64,
        persist: &mut dyn FnMut(&VoteHistory) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let block = Block {
            slot,
            block_id: block_id(slot),
        };
        let h = &mut self.history;
        h.voted.push(slot);
        h.voted_notar.push((slot, block.block_id));
        h.notarized_blocks.push(block);
        h.votes_cast.push((
            slot,
            vec![VotePayload::Notar {
                block,
                shred_version: 0,
            }],
        ));
        persist(h)?;
        h.its_over.push(slot);
        if let Some((_, votes)) = h.votes_cast.iter_mut().find(|(s, _)| *s == slot) {
            votes.push(VotePayload::Finalize {
                slot,
                shred_version: 0,
            });
        }
        // The previous slot is final and rooted: everything below it is pruned, as `set_root`.
        let root = slot.saturating_sub(1).max(h.root);
        h.root = root;
        h.voted.retain(|s| *s >= root);
        h.voted_notar.retain(|(s, _)| *s >= root);
        h.notarized_blocks.retain(|b| b.slot >= root);
        h.its_over.retain(|s| *s >= root);
        h.votes_cast.retain(|(s, _)| *s >= root);
        h.parent_ready_slots.retain(|(s, _)| *s >= root);
        h.parent_ready_slots.push((
            slot,
            vec![Block {
                slot: slot.saturating_sub(1),
                block_id: block_id(slot.saturating_sub(1)),
            }],
        ));
        self.floor = Some(slot);
        persist(h)
    }
}

/// Signs `history` with `identity` as votor stores it.
pub(crate) fn sign(history: &VoteHistory, identity: &Keypair) -> Vec<u8> {
    VoteHistoryFile::sign(history, identity)
}

/// Why a vote history could not be loaded, displayed as agave-votor's `VoteHistoryError`.
#[derive(Debug)]
pub(crate) enum LoadHistoryError {
    Io(std::io::Error),
    Invalid(VoteStateError),
}

impl std::fmt::Display for LoadHistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadHistoryError::Io(e) => write!(f, "IO Error: {e}"),
            LoadHistoryError::Invalid(VoteStateError::BadSignature { .. }) => {
                write!(f, "The signature on the saved vote history is invalid")
            }
            LoadHistoryError::Invalid(VoteStateError::WrongIdentity {
                expected, found, ..
            }) => write!(
                f,
                "The vote history does not match this validator: node_pubkey is {expected:?} but \
                 found vote history for {found:?}"
            ),
            LoadHistoryError::Invalid(e) => write!(f, "Deserialization Error: {e}"),
        }
    }
}

pub(crate) fn load_history(
    path: &Path,
    identity: &Pubkey,
) -> Result<VoteHistory, LoadHistoryError> {
    let bytes = std::fs::read(path).map_err(LoadHistoryError::Io)?;
    let file = VoteHistoryFile::parse(&bytes).map_err(LoadHistoryError::Invalid)?;
    file.verify(identity).map_err(LoadHistoryError::Invalid)?;
    Ok(file.history)
}
