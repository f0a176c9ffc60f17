//! The signed vote state a validator keeps beside its identity — the **tower** under TowerBFT, the
//! **vote history** under Alpenglow — modelled once: which kind a file is, where it lives, how it is
//! parsed and verified (Agave's own checks: the ed25519 signature of the identity over the data, and
//! the data's node pubkey), its newest vote, its hash while it travels, and its atomic write. Every
//! step of a handover (settle, transfer, verify, install) works on a [`VoteStateFile`] and never
//! needs to know which consensus runs, except where a rule truly differs.
//!
//! The two codecs live in [`tower`] and [`vote_history`]; [`codec`] is the byte layout they share.

pub(crate) mod codec;
pub mod tower;
pub mod vote_history;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use solana_pubkey::Pubkey;

use crate::keypair::Signature;
pub use tower::{Tower, TowerFile};
pub use vote_history::{VoteHistory, VoteHistoryFile};

/// Which file: the consensus decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteStateKind {
    /// TowerBFT: `tower-1_9-<identity>.bin` in the tower directory (`--tower`, default the ledger).
    #[default]
    Tower,
    /// Alpenglow: `vote_history-<identity>.bin`, always in the ledger directory.
    VoteHistory,
}

impl VoteStateKind {
    /// The file name Agave uses for `identity`.
    pub fn file_name(self, identity: &Pubkey) -> String {
        match self {
            VoteStateKind::Tower => format!("tower-1_9-{identity}.bin"),
            VoteStateKind::VoteHistory => format!("vote_history-{identity}.bin"),
        }
    }

    /// What an operator calls it.
    pub fn label(self) -> &'static str {
        match self {
            VoteStateKind::Tower => "tower",
            VoteStateKind::VoteHistory => "vote history",
        }
    }

    /// Largest file of this kind we read: a real tower is about 2.3 KB; a vote history a few
    /// hundred bytes (everything below the root is pruned), and Agave 4.2 itself loads at most
    /// 4 MiB of one.
    pub fn max_len(self) -> usize {
        match self {
            VoteStateKind::Tower => 64 * 1024,
            VoteStateKind::VoteHistory => 4 << 20,
        }
    }
}

impl std::fmt::Display for VoteStateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a vote-state file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VoteStateError {
    #[error("{kind} file truncated: needed {needed} bytes at offset {offset}, file has {len}")]
    Truncated {
        kind: VoteStateKind,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("{kind} file is {len} bytes, larger than any real {kind}")]
    TooLarge { kind: VoteStateKind, len: usize },
    #[error(
        "{kind} file has version tag {tag}; only the current format ({expected}) is supported"
    )]
    UnsupportedVersion {
        kind: VoteStateKind,
        tag: u32,
        expected: u32,
    },
    #[error("{kind} data has {count} trailing bytes")]
    TrailingBytes { kind: VoteStateKind, count: usize },
    #[error("{kind} data is malformed: {detail}")]
    Malformed { kind: VoteStateKind, detail: String },
    #[error("{kind} signature does not verify for {identity}")]
    BadSignature {
        kind: VoteStateKind,
        identity: Pubkey,
    },
    #[error("{kind} belongs to {found}, not {expected}")]
    WrongIdentity {
        kind: VoteStateKind,
        expected: Pubkey,
        found: Pubkey,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a vote-state file decodes to.
#[derive(Clone, Debug, PartialEq)]
pub enum VoteState {
    Tower(Tower),
    VoteHistory(VoteHistory),
}

/// A vote-state file as stored on disk: the signed data, its signature, and what it decodes to.
#[derive(Clone, Debug)]
pub struct VoteStateFile {
    pub signature: Signature,
    pub data: Vec<u8>,
    pub state: VoteState,
}

impl VoteStateFile {
    /// Parses a file's bytes (not yet trusted: call [`VoteStateFile::verify`]).
    pub fn parse(kind: VoteStateKind, bytes: &[u8]) -> Result<Self, VoteStateError> {
        Ok(match kind {
            VoteStateKind::Tower => {
                let f = TowerFile::parse(bytes)?;
                Self {
                    signature: f.signature,
                    data: f.data,
                    state: VoteState::Tower(f.tower),
                }
            }
            VoteStateKind::VoteHistory => {
                let f = VoteHistoryFile::parse(bytes)?;
                Self {
                    signature: f.signature,
                    data: f.data,
                    state: VoteState::VoteHistory(f.history),
                }
            }
        })
    }

    /// Reads and parses the file at `path`.
    pub fn read(kind: VoteStateKind, path: &Path) -> Result<Self, VoteStateError> {
        let bytes = fs::read(path).map_err(|source| VoteStateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(kind, &bytes)
    }

    pub fn kind(&self) -> VoteStateKind {
        match self.state {
            VoteState::Tower(_) => VoteStateKind::Tower,
            VoteState::VoteHistory(_) => VoteStateKind::VoteHistory,
        }
    }

    /// The identity the data names.
    pub fn node_pubkey(&self) -> Pubkey {
        match &self.state {
            VoteState::Tower(t) => t.node_pubkey,
            VoteState::VoteHistory(h) => h.node_pubkey,
        }
    }

    /// The newest slot it has voted on: a tower's last vote, a vote history's newest slot with
    /// any vote (notarize, skip, finalize, or their fallbacks).
    pub fn latest_vote(&self) -> Option<u64> {
        match &self.state {
            VoteState::Tower(t) => t.last_voted_slot(),
            VoteState::VoteHistory(h) => h.latest_voted_slot(),
        }
    }

    pub fn root(&self) -> Option<u64> {
        match &self.state {
            VoteState::Tower(t) => t.root(),
            VoteState::VoteHistory(h) => Some(h.root),
        }
    }

    /// What Agave checks on load: the signature verifies for `identity` over the data, and the
    /// data's node pubkey is `identity`.
    pub fn verify(&self, identity: &Pubkey) -> Result<(), VoteStateError> {
        check_signed(
            self.kind(),
            identity,
            &self.data,
            &self.signature,
            self.node_pubkey(),
        )
    }
}

/// Agave's load-time check, for either kind: `signature` is `identity`'s over `data`, and the
/// data names `identity` as its node.
pub(crate) fn check_signed(
    kind: VoteStateKind,
    identity: &Pubkey,
    data: &[u8],
    signature: &Signature,
    node_pubkey: Pubkey,
) -> Result<(), VoteStateError> {
    crate::keypair::verify_signature(identity, data, signature).map_err(|_| {
        VoteStateError::BadSignature {
            kind,
            identity: *identity,
        }
    })?;
    if node_pubkey != *identity {
        return Err(VoteStateError::WrongIdentity {
            kind,
            expected: *identity,
            found: node_pubkey,
        });
    }
    Ok(())
}

/// SHA-256 of a file's bytes, hex: how a vote-state file is named while it travels.
pub fn tower_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Writes `bytes` to `path` the way Agave does — `<path>.new` then rename — plus an fsync of the
/// file and of its directory, so that a reader never sees a partial file and a crash never leaves
/// an empty one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::durable::write_via(&path.with_extension("bin.new"), path, bytes)
}
