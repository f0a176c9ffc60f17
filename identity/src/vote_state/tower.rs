//! Agave's tower file: its codec, its signature check, and its atomic write.
//!
//! The tower is a validator's vote lockout history. Installing a wrong one makes the validator exit;
//! installing an old one lets it vote against its own lockouts. So a tower is only ever accepted
//! after its ed25519 signature verifies for the identity it will be used with and its embedded node
//! pubkey is that identity.
//!
//! File `tower-1_9-<base58 pubkey>.bin` (solana-core 3.1 `consensus/tower_storage.rs`), bincode 1.x
//! with fixed-width little-endian integers and u64 lengths. Byte map of the real fixture
//! `fixtures/agave-3.1.12/tower-1_9-361jfy1w….bin` (2319 bytes):
//!
//! ```text
//! offset  len   field
//!      0    4   SavedTowerVersions tag: u32 1 = Current (0 = the pre-1.9 layout, not supported)
//!      4   64   signature: ed25519 by the node identity over `data` (bytes 76..)
//!     68    8   data length: u64 (2243)
//!     76   32   data: Tower1_14_11.node_pubkey
//!    108    8         threshold_depth: u64 (8)
//!    116    8         threshold_size: f64 (0.666…)
//!    124   32         vote_state.node_pubkey (zero in a tower)
//!    156   32         vote_state.authorized_withdrawer (zero)
//!    188    1         vote_state.commission: u8
//!    189    8         vote_state.votes: u64 count (31), then per lockout
//!    197  372           slot: u64, confirmation_count: u32
//!    569    9         vote_state.root_slot: Option<u64> (tag byte 1 + u64 165)
//!    578    8         vote_state.authorized_voters: u64 count (0), then (epoch u64, pubkey 32)
//!    586 1536         vote_state.prior_voters.buf: 32 × (pubkey 32, u64, u64), no length prefix
//!   2122    8         vote_state.prior_voters.idx: u64 (31)
//!   2130    1         vote_state.prior_voters.is_empty: bool (1)
//!   2131    8         vote_state.epoch_credits: u64 count (0), then (u64, u64, u64)
//!   2139   16         vote_state.last_timestamp: slot u64, timestamp i64
//!   2155    4         last_vote: VoteTransaction tag u32 (3 = TowerSync)
//!   2159    8           root: u64 (u64::MAX = none) (165)
//!   2167    1           lockout count: compact-u16 (31)
//!   2168   62           per lockout: slot offset varint (LEB128) from the previous slot
//!                       (the first from root), confirmation_count u8
//!   2230   32           hash
//!   2262    9           timestamp: Option<i64>
//!   2271   32           block_id
//!   2303   16         last_timestamp: slot u64, timestamp i64
//! ```
//!
//! VoteTransaction tags: 0 Vote { slots: Vec<u64>, hash, timestamp: Option<i64> },
//! 1 VoteStateUpdate { lockouts: Vec<(u64, u32)>, root: Option<u64>, hash, timestamp },
//! 2 CompactVoteStateUpdate (compact form as above, no block_id), 3 TowerSync (as above).

use std::fs;
use std::path::{Path, PathBuf};

use solana_pubkey::Pubkey;

use super::codec::{put_option_i64, put_option_u64, put_short_len, put_u64, put_varint, Reader};
use super::{VoteStateError, VoteStateKind};
use crate::keypair::{Keypair, Signature};

const KIND: VoteStateKind = VoteStateKind::Tower;

/// The tower file name Agave uses for `identity`.
pub fn tower_file_name(identity: &Pubkey) -> String {
    format!("tower-1_9-{identity}.bin")
}

/// The tower file path for `identity` in `dir`.
pub fn tower_path(dir: &Path, identity: &Pubkey) -> PathBuf {
    dir.join(tower_file_name(identity))
}

/// Largest tower file we read: a real one is about 2.3 KB.
pub const MAX_TOWER_LEN: usize = 64 * 1024;

/// One vote lockout: a slot and how many votes have stacked on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    pub slot: u64,
    pub confirmation_count: u32,
}

/// A block timestamp as the vote program records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockTimestamp {
    pub slot: u64,
    pub timestamp: i64,
}

/// The validator's last vote, in whichever of Agave's four forms it was cast.
#[derive(Clone, Debug, PartialEq)]
pub enum LastVote {
    Vote {
        slots: Vec<u64>,
        hash: [u8; 32],
        timestamp: Option<i64>,
    },
    VoteStateUpdate {
        lockouts: Vec<Lockout>,
        root: Option<u64>,
        hash: [u8; 32],
        timestamp: Option<i64>,
    },
    CompactVoteStateUpdate {
        lockouts: Vec<Lockout>,
        root: Option<u64>,
        hash: [u8; 32],
        timestamp: Option<i64>,
    },
    TowerSync {
        lockouts: Vec<Lockout>,
        root: Option<u64>,
        hash: [u8; 32],
        timestamp: Option<i64>,
        block_id: [u8; 32],
    },
}

impl LastVote {
    /// The newest slot this vote votes on (Agave's `Tower::last_voted_slot`).
    pub fn last_slot(&self) -> Option<u64> {
        match self {
            LastVote::Vote { slots, .. } => slots.last().copied(),
            LastVote::VoteStateUpdate { lockouts, .. }
            | LastVote::CompactVoteStateUpdate { lockouts, .. }
            | LastVote::TowerSync { lockouts, .. } => lockouts.last().map(|l| l.slot),
        }
    }
}

/// The parts of `VoteState1_14_11` a tower carries. Agave fills the rest with defaults; we keep
/// them verbatim so that re-encoding a parsed tower reproduces its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TowerVoteState {
    pub node_pubkey: Pubkey,
    pub authorized_withdrawer: Pubkey,
    pub commission: u8,
    pub votes: Vec<Lockout>,
    pub root_slot: Option<u64>,
    pub authorized_voters: Vec<(u64, Pubkey)>,
    /// `CircBuf<(Pubkey, u64, u64)>` of 32 entries, its index, and its emptiness flag.
    pub prior_voters: Vec<(Pubkey, u64, u64)>,
    pub prior_voters_idx: u64,
    pub prior_voters_is_empty: bool,
    pub epoch_credits: Vec<(u64, u64, u64)>,
    pub last_timestamp: BlockTimestamp,
}

const PRIOR_VOTERS_LEN: usize = 32;

impl TowerVoteState {
    /// The vote state of a tower with these lockouts, other fields as Agave's defaults.
    pub fn new(votes: Vec<Lockout>, root_slot: Option<u64>) -> Self {
        Self {
            node_pubkey: Pubkey::default(),
            authorized_withdrawer: Pubkey::default(),
            commission: 0,
            votes,
            root_slot,
            authorized_voters: Vec::new(),
            prior_voters: vec![(Pubkey::default(), 0, 0); PRIOR_VOTERS_LEN],
            prior_voters_idx: PRIOR_VOTERS_LEN as u64 - 1,
            prior_voters_is_empty: true,
            epoch_credits: Vec::new(),
            last_timestamp: BlockTimestamp::default(),
        }
    }
}

/// Agave's `Tower1_14_11`: what a tower file's signed data decodes to.
#[derive(Clone, Debug, PartialEq)]
pub struct Tower {
    pub node_pubkey: Pubkey,
    pub threshold_depth: u64,
    pub threshold_size: f64,
    pub vote_state: TowerVoteState,
    pub last_vote: LastVote,
    pub last_timestamp: BlockTimestamp,
}

impl Tower {
    /// The newest slot this tower has voted on.
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.last_vote.last_slot()
    }

    /// The tower's root slot.
    pub fn root(&self) -> Option<u64> {
        self.vote_state.root_slot
    }

    /// The bincode bytes Agave signs and stores as `data`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(2400);
        w.extend_from_slice(&self.node_pubkey.to_bytes());
        put_u64(&mut w, self.threshold_depth);
        w.extend_from_slice(&self.threshold_size.to_le_bytes());
        let vs = &self.vote_state;
        w.extend_from_slice(&vs.node_pubkey.to_bytes());
        w.extend_from_slice(&vs.authorized_withdrawer.to_bytes());
        w.push(vs.commission);
        put_u64(&mut w, vs.votes.len() as u64);
        for l in &vs.votes {
            put_u64(&mut w, l.slot);
            w.extend_from_slice(&l.confirmation_count.to_le_bytes());
        }
        put_option_u64(&mut w, vs.root_slot);
        put_u64(&mut w, vs.authorized_voters.len() as u64);
        for (epoch, voter) in &vs.authorized_voters {
            put_u64(&mut w, *epoch);
            w.extend_from_slice(&voter.to_bytes());
        }
        for (voter, start, end) in &vs.prior_voters {
            w.extend_from_slice(&voter.to_bytes());
            put_u64(&mut w, *start);
            put_u64(&mut w, *end);
        }
        put_u64(&mut w, vs.prior_voters_idx);
        w.push(vs.prior_voters_is_empty as u8);
        put_u64(&mut w, vs.epoch_credits.len() as u64);
        for (epoch, credits, prev) in &vs.epoch_credits {
            put_u64(&mut w, *epoch);
            put_u64(&mut w, *credits);
            put_u64(&mut w, *prev);
        }
        put_timestamp(&mut w, vs.last_timestamp);
        encode_last_vote(&mut w, &self.last_vote);
        put_timestamp(&mut w, self.last_timestamp);
        w
    }

    /// Decodes the signed `data` of a tower file.
    pub fn decode(data: &[u8]) -> Result<Self, VoteStateError> {
        let mut r = Reader::new(KIND, data);
        let node_pubkey = r.pubkey()?;
        let threshold_depth = r.u64()?;
        let threshold_size = f64::from_le_bytes(r.array()?);
        let vs_node = r.pubkey()?;
        let authorized_withdrawer = r.pubkey()?;
        let commission = r.u8()?;
        let count = r.len(12)?;
        let mut votes = Vec::with_capacity(count);
        for _ in 0..count {
            votes.push(Lockout {
                slot: r.u64()?,
                confirmation_count: r.u32()?,
            });
        }
        let root_slot = r.option_u64()?;
        let count = r.len(40)?;
        let mut authorized_voters = Vec::with_capacity(count);
        for _ in 0..count {
            authorized_voters.push((r.u64()?, r.pubkey()?));
        }
        let mut prior_voters = Vec::with_capacity(PRIOR_VOTERS_LEN);
        for _ in 0..PRIOR_VOTERS_LEN {
            prior_voters.push((r.pubkey()?, r.u64()?, r.u64()?));
        }
        let prior_voters_idx = r.u64()?;
        let prior_voters_is_empty = r.bool()?;
        let count = r.len(24)?;
        let mut epoch_credits = Vec::with_capacity(count);
        for _ in 0..count {
            epoch_credits.push((r.u64()?, r.u64()?, r.u64()?));
        }
        let vs_last_timestamp = read_timestamp(&mut r)?;
        let last_vote = decode_last_vote(&mut r)?;
        let last_timestamp = read_timestamp(&mut r)?;
        if r.pos() != data.len() {
            return Err(VoteStateError::TrailingBytes {
                kind: KIND,
                count: data.len() - r.pos(),
            });
        }
        Ok(Tower {
            node_pubkey,
            threshold_depth,
            threshold_size,
            vote_state: TowerVoteState {
                node_pubkey: vs_node,
                authorized_withdrawer,
                commission,
                votes,
                root_slot,
                authorized_voters,
                prior_voters,
                prior_voters_idx,
                prior_voters_is_empty,
                epoch_credits,
                last_timestamp: vs_last_timestamp,
            },
            last_vote,
            last_timestamp,
        })
    }
}

/// A tower file as stored on disk: the signed data, its signature, and what it decodes to.
#[derive(Clone, Debug)]
pub struct TowerFile {
    pub signature: Signature,
    pub data: Vec<u8>,
    pub tower: Tower,
}

impl TowerFile {
    /// Parses a tower file's bytes (not yet trusted: call [`TowerFile::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, VoteStateError> {
        if bytes.len() > MAX_TOWER_LEN {
            return Err(VoteStateError::TooLarge {
                kind: KIND,
                len: bytes.len(),
            });
        }
        let mut r = Reader::new(KIND, bytes);
        let tag = r.u32()?;
        if tag != 1 {
            return Err(VoteStateError::UnsupportedVersion {
                kind: KIND,
                tag,
                expected: 1,
            });
        }
        let signature: Signature = r.array()?;
        let len = r.len(1)?;
        let data = r.take(len)?.to_vec();
        if r.pos() != bytes.len() {
            return Err(VoteStateError::TrailingBytes {
                kind: KIND,
                count: bytes.len() - r.pos(),
            });
        }
        let tower = Tower::decode(&data)?;
        Ok(Self {
            signature,
            data,
            tower,
        })
    }

    /// Reads and parses the tower file at `path`.
    pub fn read(path: &Path) -> Result<Self, VoteStateError> {
        let bytes = fs::read(path).map_err(|source| VoteStateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Checks what Agave checks on load: the signature verifies for `identity` over the data, and
    /// the data's node pubkey is `identity`.
    pub fn verify(&self, identity: &Pubkey) -> Result<(), VoteStateError> {
        super::check_signed(
            KIND,
            identity,
            &self.data,
            &self.signature,
            self.tower.node_pubkey,
        )
    }

    /// Signs `tower` with `identity` and returns the file bytes.
    pub fn sign(tower: &Tower, identity: &Keypair) -> Vec<u8> {
        let data = tower.encode();
        let signature = identity.sign(&data);
        let mut out = Vec::with_capacity(data.len() + 76);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&signature);
        put_u64(&mut out, data.len() as u64);
        out.extend_from_slice(&data);
        out
    }
}

fn put_timestamp(w: &mut Vec<u8>, t: BlockTimestamp) {
    put_u64(w, t.slot);
    w.extend_from_slice(&t.timestamp.to_le_bytes());
}

fn read_timestamp(r: &mut Reader) -> Result<BlockTimestamp, VoteStateError> {
    Ok(BlockTimestamp {
        slot: r.u64()?,
        timestamp: r.u64()? as i64,
    })
}

fn encode_last_vote(w: &mut Vec<u8>, vote: &LastVote) {
    match vote {
        LastVote::Vote {
            slots,
            hash,
            timestamp,
        } => {
            w.extend_from_slice(&0u32.to_le_bytes());
            put_u64(w, slots.len() as u64);
            for s in slots {
                put_u64(w, *s);
            }
            w.extend_from_slice(hash);
            put_option_i64(w, *timestamp);
        }
        LastVote::VoteStateUpdate {
            lockouts,
            root,
            hash,
            timestamp,
        } => {
            w.extend_from_slice(&1u32.to_le_bytes());
            put_u64(w, lockouts.len() as u64);
            for l in lockouts {
                put_u64(w, l.slot);
                w.extend_from_slice(&l.confirmation_count.to_le_bytes());
            }
            put_option_u64(w, *root);
            w.extend_from_slice(hash);
            put_option_i64(w, *timestamp);
        }
        LastVote::CompactVoteStateUpdate {
            lockouts,
            root,
            hash,
            timestamp,
        } => {
            w.extend_from_slice(&2u32.to_le_bytes());
            encode_compact(w, lockouts, *root, hash, *timestamp);
        }
        LastVote::TowerSync {
            lockouts,
            root,
            hash,
            timestamp,
            block_id,
        } => {
            w.extend_from_slice(&3u32.to_le_bytes());
            encode_compact(w, lockouts, *root, hash, *timestamp);
            w.extend_from_slice(block_id);
        }
    }
}

fn encode_compact(
    w: &mut Vec<u8>,
    lockouts: &[Lockout],
    root: Option<u64>,
    hash: &[u8; 32],
    timestamp: Option<i64>,
) {
    put_u64(w, root.unwrap_or(u64::MAX));
    put_short_len(w, lockouts.len());
    let mut prev = root.unwrap_or(0);
    for l in lockouts {
        put_varint(w, l.slot.saturating_sub(prev));
        w.push(l.confirmation_count.min(u8::MAX as u32) as u8);
        prev = l.slot;
    }
    w.extend_from_slice(hash);
    put_option_i64(w, timestamp);
}

fn decode_last_vote(r: &mut Reader) -> Result<LastVote, VoteStateError> {
    let tag = r.u32()?;
    Ok(match tag {
        0 => {
            let count = r.len(8)?;
            let mut slots = Vec::with_capacity(count);
            for _ in 0..count {
                slots.push(r.u64()?);
            }
            LastVote::Vote {
                slots,
                hash: r.array()?,
                timestamp: r.option_u64()?.map(|v| v as i64),
            }
        }
        1 => {
            let count = r.len(12)?;
            let mut lockouts = Vec::with_capacity(count);
            for _ in 0..count {
                lockouts.push(Lockout {
                    slot: r.u64()?,
                    confirmation_count: r.u32()?,
                });
            }
            LastVote::VoteStateUpdate {
                lockouts,
                root: r.option_u64()?,
                hash: r.array()?,
                timestamp: r.option_u64()?.map(|v| v as i64),
            }
        }
        2 | 3 => {
            let root = match r.u64()? {
                u64::MAX => None,
                root => Some(root),
            };
            let count = r.short_len()?;
            let mut lockouts = Vec::with_capacity(count);
            let mut slot = root.unwrap_or(0);
            for _ in 0..count {
                let offset = r.varint()?;
                slot = slot
                    .checked_add(offset)
                    .ok_or_else(|| r.malformed("lockout slot overflows"))?;
                lockouts.push(Lockout {
                    slot,
                    confirmation_count: r.u8()? as u32,
                });
            }
            let hash = r.array()?;
            let timestamp = r.option_u64()?.map(|v| v as i64);
            if tag == 2 {
                LastVote::CompactVoteStateUpdate {
                    lockouts,
                    root,
                    hash,
                    timestamp,
                }
            } else {
                LastVote::TowerSync {
                    lockouts,
                    root,
                    hash,
                    timestamp,
                    block_id: r.array()?,
                }
            }
        }
        other => return Err(r.malformed(&format!("unknown last-vote kind {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote_state::{tower_hash, write_atomic};

    const FIXTURE_NAME: &str = "tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin";

    fn fixture() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/agave-3.1.12")
            .join(FIXTURE_NAME);
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn fixture_identity() -> Pubkey {
        "361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg"
            .parse()
            .unwrap()
    }

    #[test]
    fn real_agave_tower_parses_and_verifies() {
        let bytes = fixture();
        let file = TowerFile::parse(&bytes).unwrap();
        file.verify(&fixture_identity()).unwrap();
        let t = &file.tower;
        assert_eq!(t.node_pubkey, fixture_identity());
        assert_eq!(t.threshold_depth, 8);
        assert_eq!(t.vote_state.votes.len(), 31);
        assert_eq!(t.root(), Some(165));
        assert_eq!(t.last_voted_slot(), Some(196));
        assert!(matches!(t.last_vote, LastVote::TowerSync { .. }));
        assert_eq!(t.last_timestamp.slot, 195);
        // Re-encoding reproduces Agave's bytes exactly.
        assert_eq!(t.encode(), file.data);
    }

    #[test]
    fn real_tower_is_refused_for_another_identity_and_when_tampered() {
        let bytes = fixture();
        let other = Keypair::generate().pubkey();
        let file = TowerFile::parse(&bytes).unwrap();
        assert!(matches!(
            file.verify(&other),
            Err(VoteStateError::BadSignature { .. })
        ));

        // Flip one bit of the last-vote block: still parses, no longer verifies.
        let mut tampered = bytes.clone();
        tampered[2230] ^= 1;
        let file = TowerFile::parse(&tampered).unwrap();
        assert!(matches!(
            file.verify(&fixture_identity()),
            Err(VoteStateError::BadSignature { .. })
        ));
    }

    #[test]
    fn truncated_and_padded_files_are_rejected() {
        let bytes = fixture();
        for cut in [0, 3, 70, 100, 2000, bytes.len() - 1] {
            assert!(
                TowerFile::parse(&bytes[..cut]).is_err(),
                "accepted a file cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            TowerFile::parse(&padded),
            Err(VoteStateError::TrailingBytes { count: 1, .. })
        ));
        let mut legacy = bytes;
        legacy[0] = 0;
        assert!(matches!(
            TowerFile::parse(&legacy),
            Err(VoteStateError::UnsupportedVersion { tag: 0, .. })
        ));
    }

    #[test]
    fn a_signed_tower_round_trips_in_every_vote_form() {
        let identity = Keypair::generate();
        let lockouts: Vec<Lockout> = (0..31)
            .map(|i| Lockout {
                slot: 1000 + i,
                confirmation_count: 31 - i as u32,
            })
            .collect();
        let forms = [
            LastVote::Vote {
                slots: vec![1029, 1030],
                hash: [7; 32],
                timestamp: Some(1_795_684_455),
            },
            LastVote::VoteStateUpdate {
                lockouts: lockouts.clone(),
                root: Some(999),
                hash: [8; 32],
                timestamp: None,
            },
            LastVote::CompactVoteStateUpdate {
                lockouts: lockouts.clone(),
                root: None,
                hash: [9; 32],
                timestamp: Some(-1),
            },
            LastVote::TowerSync {
                lockouts: lockouts.clone(),
                root: Some(999),
                hash: [10; 32],
                timestamp: Some(5),
                block_id: [11; 32],
            },
        ];
        for last_vote in forms {
            let tower = Tower {
                node_pubkey: identity.pubkey(),
                threshold_depth: 8,
                threshold_size: 2.0 / 3.0,
                vote_state: TowerVoteState::new(lockouts.clone(), Some(999)),
                last_vote,
                last_timestamp: BlockTimestamp {
                    slot: 1030,
                    timestamp: 1_795_684_455,
                },
            };
            let bytes = TowerFile::sign(&tower, &identity);
            let file = TowerFile::parse(&bytes).unwrap();
            file.verify(&identity.pubkey()).unwrap();
            assert_eq!(file.tower, tower);
            assert_eq!(file.tower.last_voted_slot(), Some(1030));
        }
    }

    #[test]
    fn a_tower_signed_by_its_identity_but_naming_another_node_is_refused() {
        let identity = Keypair::generate();
        let bytes = fixture();
        let mut tower = TowerFile::parse(&bytes).unwrap().tower;
        tower.node_pubkey = fixture_identity();
        let forged = TowerFile::sign(&tower, &identity);
        let file = TowerFile::parse(&forged).unwrap();
        assert!(matches!(
            file.verify(&identity.pubkey()),
            Err(VoteStateError::WrongIdentity { .. })
        ));
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = tower_path(dir.path(), &fixture_identity());
        write_atomic(&path, &fixture()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), fixture());
        assert!(!path.with_extension("bin.new").exists());
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), FIXTURE_NAME);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            tower_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
