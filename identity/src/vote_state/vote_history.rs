//! Agave's Alpenglow vote history file: its codec and its signature check.
//!
//! Under Alpenglow a voting node writes `<ledger>/vote_history-<base58 identity>.bin` (agave-votor
//! 4.2 `vote_history_storage.rs`) after each vote it signs — `.bin.new`, then rename, no fsync. On
//! disk, wincode with its default (bincode-compatible) configuration: fixed-width little-endian
//! integers, u32 enum tags except where a type says otherwise, u64 lengths before every sequence,
//! set and map (sets and maps in their in-memory iteration order, so not sorted):
//!
//! ```text
//! offset  len  field
//!      0    4  SavedVoteHistoryVersions tag: u32 0 = Current
//!      4   64  signature: ed25519 by the node identity over `data`
//!     68    8  data length: u64
//!     76    …  data: VoteHistory
//!                node_pubkey: Pubkey (32)
//!                voted: HashSet<Slot>                       slots with a notarize or skip vote
//!                voted_notar: HashMap<Slot, Hash>           slot → notarized block id
//!                voted_notar_fallback: HashMap<Slot, HashSet<Hash>>
//!                voted_skip_fallback: HashSet<Slot>
//!                skipped: HashSet<Slot>                     skip, skip-fallback or notar-fallback
//!                its_over: HashSet<Slot>                    slots with a finalize vote
//!                votes_cast: HashMap<Slot, Vec<VotePayloadToSign>>
//!                notarized_blocks: HashSet<Block>           Block = { slot u64, block_id [32] }
//!                parent_ready_slots: HashMap<Slot, HashSet<Block>>
//!                root: Slot
//! ```
//!
//! `VotePayloadToSign` has a **u8** tag (`#[wincode(tag_encoding = "u8")]`): 1 Notar {block,
//! shred_version u16}, 2 Finalize {slot, shred_version}, 3 Skip, 4 NotarFallback {block, …},
//! 5 SkipFallback, 6 Genesis {block, …}. The real file in `fixtures/agave-4.2.2/` (576 bytes, 500 of
//! data) decodes and re-encodes byte for byte.
//!
//! Agave's loader checks the signature against the identity it loads for and that `node_pubkey` is
//! that identity — and where votor restores it on `setIdentity`, any error silently gives an empty
//! history (the way to double votes), so a file is installed only after it verifies here.

use std::path::{Path, PathBuf};

use solana_pubkey::Pubkey;

use super::codec::{put_u64, Reader};
use super::{VoteStateError, VoteStateKind};
use crate::keypair::{Keypair, Signature};

const KIND: VoteStateKind = VoteStateKind::VoteHistory;

/// The vote history file path for `identity` in the ledger directory.
pub fn vote_history_path(ledger: &Path, identity: &Pubkey) -> PathBuf {
    ledger.join(KIND.file_name(identity))
}

/// A block: a slot and its block id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub slot: u64,
    pub block_id: [u8; 32],
}

/// One vote as votor keeps it to re-sign (its shred version is always 0 in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VotePayload {
    Notar { block: Block, shred_version: u16 },
    Finalize { slot: u64, shred_version: u16 },
    Skip { slot: u64, shred_version: u16 },
    NotarFallback { block: Block, shred_version: u16 },
    SkipFallback { slot: u64, shred_version: u16 },
    Genesis { block: Block, shred_version: u16 },
}

impl VotePayload {
    pub fn slot(&self) -> u64 {
        match self {
            VotePayload::Notar { block, .. }
            | VotePayload::NotarFallback { block, .. }
            | VotePayload::Genesis { block, .. } => block.slot,
            VotePayload::Finalize { slot, .. }
            | VotePayload::Skip { slot, .. }
            | VotePayload::SkipFallback { slot, .. } => *slot,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            VotePayload::Notar { .. } => 1,
            VotePayload::Finalize { .. } => 2,
            VotePayload::Skip { .. } => 3,
            VotePayload::NotarFallback { .. } => 4,
            VotePayload::SkipFallback { .. } => 5,
            VotePayload::Genesis { .. } => 6,
        }
    }
}

/// agave-votor's `VoteHistory`: what a vote history file's signed data decodes to. Sets and maps
/// are kept as the file lists them, so that re-encoding reproduces the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteHistory {
    pub node_pubkey: Pubkey,
    pub voted: Vec<u64>,
    pub voted_notar: Vec<(u64, [u8; 32])>,
    pub voted_notar_fallback: Vec<(u64, Vec<[u8; 32]>)>,
    pub voted_skip_fallback: Vec<u64>,
    pub skipped: Vec<u64>,
    pub its_over: Vec<u64>,
    pub votes_cast: Vec<(u64, Vec<VotePayload>)>,
    pub notarized_blocks: Vec<Block>,
    pub parent_ready_slots: Vec<(u64, Vec<Block>)>,
    pub root: u64,
}

/// Two votes of one kind for one slot that disagree, across two vote histories of one identity:
/// the Alpenglow form of "two voters" (slashable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Notarize votes for two different blocks of one slot.
    TwoBlocks { slot: u64 },
    /// A notarize vote and a skip vote for one slot.
    NotarAndSkip { slot: u64 },
}

impl VoteHistory {
    /// The newest slot with any vote of this identity.
    pub fn latest_voted_slot(&self) -> Option<u64> {
        self.voted
            .iter()
            .chain(self.skipped.iter())
            .chain(self.its_over.iter())
            .chain(self.voted_notar.iter().map(|(s, _)| s))
            .chain(self.votes_cast.iter().map(|(s, _)| s))
            .copied()
            .max()
    }

    /// The block this history notarized at `slot`, if any.
    pub fn notarized(&self, slot: u64) -> Option<[u8; 32]> {
        self.voted_notar
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, id)| *id)
    }

    /// The slots of a first-round skip vote: in `voted` (which only a notarize or a skip vote
    /// sets) without a notarize vote. Not `skipped`: votor puts the skip-fallback and
    /// notarize-fallback votes there too, which an honest node casts after notarizing the slot
    /// (agave-votor `vote_history.rs`, `add_vote`).
    pub fn first_round_skips(&self) -> impl Iterator<Item = u64> + '_ {
        self.voted
            .iter()
            .copied()
            .filter(|slot| self.notarized(*slot).is_none())
    }

    /// Whether this history cast a skip vote (or its fallback) for `slot`.
    pub fn skipped_slot(&self, slot: u64) -> bool {
        self.skipped.contains(&slot) || self.voted_skip_fallback.contains(&slot)
    }

    /// Every slot at which this history and `other` hold votes of one kind that disagree.
    pub fn conflicts_with(&self, other: &VoteHistory) -> Vec<Conflict> {
        let mut found = Vec::new();
        for (slot, mine) in &self.voted_notar {
            match other.notarized(*slot) {
                Some(theirs) if theirs != *mine => found.push(Conflict::TwoBlocks { slot: *slot }),
                None if other.skipped.contains(slot) => {
                    found.push(Conflict::NotarAndSkip { slot: *slot })
                }
                _ => {}
            }
        }
        for (slot, _) in &other.voted_notar {
            if self.skipped.contains(slot) && self.notarized(*slot).is_none() {
                found.push(Conflict::NotarAndSkip { slot: *slot });
            }
        }
        found
    }

    /// The bytes votor signs and stores as `data`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(512);
        w.extend_from_slice(&self.node_pubkey.to_bytes());
        put_slots(&mut w, &self.voted);
        put_u64(&mut w, self.voted_notar.len() as u64);
        for (slot, id) in &self.voted_notar {
            put_u64(&mut w, *slot);
            w.extend_from_slice(id);
        }
        put_u64(&mut w, self.voted_notar_fallback.len() as u64);
        for (slot, ids) in &self.voted_notar_fallback {
            put_u64(&mut w, *slot);
            put_u64(&mut w, ids.len() as u64);
            for id in ids {
                w.extend_from_slice(id);
            }
        }
        put_slots(&mut w, &self.voted_skip_fallback);
        put_slots(&mut w, &self.skipped);
        put_slots(&mut w, &self.its_over);
        put_u64(&mut w, self.votes_cast.len() as u64);
        for (slot, votes) in &self.votes_cast {
            put_u64(&mut w, *slot);
            put_u64(&mut w, votes.len() as u64);
            for v in votes {
                put_payload(&mut w, v);
            }
        }
        put_blocks(&mut w, &self.notarized_blocks);
        put_u64(&mut w, self.parent_ready_slots.len() as u64);
        for (slot, blocks) in &self.parent_ready_slots {
            put_u64(&mut w, *slot);
            put_blocks(&mut w, blocks);
        }
        put_u64(&mut w, self.root);
        w
    }

    /// Decodes the signed `data` of a vote history file.
    pub fn decode(data: &[u8]) -> Result<Self, VoteStateError> {
        let mut r = Reader::new(KIND, data);
        let node_pubkey = r.pubkey()?;
        let voted = read_slots(&mut r)?;
        let n = r.len(40)?;
        let mut voted_notar = Vec::with_capacity(n);
        for _ in 0..n {
            voted_notar.push((r.u64()?, r.array()?));
        }
        let n = r.len(16)?;
        let mut voted_notar_fallback = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = r.u64()?;
            let m = r.len(32)?;
            let mut ids = Vec::with_capacity(m);
            for _ in 0..m {
                ids.push(r.array()?);
            }
            voted_notar_fallback.push((slot, ids));
        }
        let voted_skip_fallback = read_slots(&mut r)?;
        let skipped = read_slots(&mut r)?;
        let its_over = read_slots(&mut r)?;
        let n = r.len(16)?;
        let mut votes_cast = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = r.u64()?;
            let m = r.len(11)?;
            let mut votes = Vec::with_capacity(m);
            for _ in 0..m {
                votes.push(read_payload(&mut r)?);
            }
            votes_cast.push((slot, votes));
        }
        let notarized_blocks = read_blocks(&mut r)?;
        let n = r.len(16)?;
        let mut parent_ready_slots = Vec::with_capacity(n);
        for _ in 0..n {
            parent_ready_slots.push((r.u64()?, read_blocks(&mut r)?));
        }
        let root = r.u64()?;
        if !r.at_end() {
            return Err(VoteStateError::TrailingBytes {
                kind: KIND,
                count: r.remaining(),
            });
        }
        Ok(Self {
            node_pubkey,
            voted,
            voted_notar,
            voted_notar_fallback,
            voted_skip_fallback,
            skipped,
            its_over,
            votes_cast,
            notarized_blocks,
            parent_ready_slots,
            root,
        })
    }
}

fn put_slots(w: &mut Vec<u8>, slots: &[u64]) {
    put_u64(w, slots.len() as u64);
    for s in slots {
        put_u64(w, *s);
    }
}

fn put_block(w: &mut Vec<u8>, b: &Block) {
    put_u64(w, b.slot);
    w.extend_from_slice(&b.block_id);
}

fn put_blocks(w: &mut Vec<u8>, blocks: &[Block]) {
    put_u64(w, blocks.len() as u64);
    for b in blocks {
        put_block(w, b);
    }
}

fn put_payload(w: &mut Vec<u8>, v: &VotePayload) {
    w.push(v.tag());
    match v {
        VotePayload::Notar {
            block,
            shred_version,
        }
        | VotePayload::NotarFallback {
            block,
            shred_version,
        }
        | VotePayload::Genesis {
            block,
            shred_version,
        } => {
            put_block(w, block);
            w.extend_from_slice(&shred_version.to_le_bytes());
        }
        VotePayload::Finalize {
            slot,
            shred_version,
        }
        | VotePayload::Skip {
            slot,
            shred_version,
        }
        | VotePayload::SkipFallback {
            slot,
            shred_version,
        } => {
            put_u64(w, *slot);
            w.extend_from_slice(&shred_version.to_le_bytes());
        }
    }
}

fn read_slots(r: &mut Reader) -> Result<Vec<u64>, VoteStateError> {
    let n = r.len(8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.u64()?);
    }
    Ok(out)
}

fn read_block(r: &mut Reader) -> Result<Block, VoteStateError> {
    Ok(Block {
        slot: r.u64()?,
        block_id: r.array()?,
    })
}

fn read_blocks(r: &mut Reader) -> Result<Vec<Block>, VoteStateError> {
    let n = r.len(40)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(read_block(r)?);
    }
    Ok(out)
}

fn read_payload(r: &mut Reader) -> Result<VotePayload, VoteStateError> {
    let tag = r.u8()?;
    let block_vote =
        |r: &mut Reader| -> Result<(Block, u16), VoteStateError> { Ok((read_block(r)?, r.u16()?)) };
    let slot_vote =
        |r: &mut Reader| -> Result<(u64, u16), VoteStateError> { Ok((r.u64()?, r.u16()?)) };
    Ok(match tag {
        1 => {
            let (block, shred_version) = block_vote(r)?;
            VotePayload::Notar {
                block,
                shred_version,
            }
        }
        2 => {
            let (slot, shred_version) = slot_vote(r)?;
            VotePayload::Finalize {
                slot,
                shred_version,
            }
        }
        3 => {
            let (slot, shred_version) = slot_vote(r)?;
            VotePayload::Skip {
                slot,
                shred_version,
            }
        }
        4 => {
            let (block, shred_version) = block_vote(r)?;
            VotePayload::NotarFallback {
                block,
                shred_version,
            }
        }
        5 => {
            let (slot, shred_version) = slot_vote(r)?;
            VotePayload::SkipFallback {
                slot,
                shred_version,
            }
        }
        6 => {
            let (block, shred_version) = block_vote(r)?;
            VotePayload::Genesis {
                block,
                shred_version,
            }
        }
        other => return Err(r.malformed(&format!("unknown vote kind {other}"))),
    })
}

/// A vote history file as stored on disk.
#[derive(Clone, Debug)]
pub struct VoteHistoryFile {
    pub signature: Signature,
    pub data: Vec<u8>,
    pub history: VoteHistory,
}

impl VoteHistoryFile {
    /// Parses a file's bytes (not yet trusted: verify before use).
    pub fn parse(bytes: &[u8]) -> Result<Self, VoteStateError> {
        if bytes.len() > KIND.max_len() {
            return Err(VoteStateError::TooLarge {
                kind: KIND,
                len: bytes.len(),
            });
        }
        let mut r = Reader::new(KIND, bytes);
        let tag = r.u32()?;
        if tag != 0 {
            return Err(VoteStateError::UnsupportedVersion {
                kind: KIND,
                tag,
                expected: 0,
            });
        }
        let signature: Signature = r.array()?;
        let len = r.len(1)?;
        let data = r.take(len)?.to_vec();
        if !r.at_end() {
            return Err(VoteStateError::TrailingBytes {
                kind: KIND,
                count: r.remaining(),
            });
        }
        let history = VoteHistory::decode(&data)?;
        Ok(Self {
            signature,
            data,
            history,
        })
    }

    /// Checks what Agave checks on load.
    pub fn verify(&self, identity: &Pubkey) -> Result<(), VoteStateError> {
        super::check_signed(
            KIND,
            identity,
            &self.data,
            &self.signature,
            self.history.node_pubkey,
        )
    }

    /// Signs `history` with `identity` and returns the file bytes.
    pub fn sign(history: &VoteHistory, identity: &Keypair) -> Vec<u8> {
        let data = history.encode();
        let signature = identity.sign(&data);
        let mut out = Vec::with_capacity(data.len() + 76);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&signature);
        put_u64(&mut out, data.len() as u64);
        out.extend_from_slice(&data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const FIXTURE: &str = "vote_history-92xGceEvXZw9ytyTefYt2fAG91sDJZGGGPcJWxHAipQX.bin";

    fn fixture() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/agave-4.2.2")
            .join(FIXTURE);
        std::fs::read(path).unwrap()
    }

    fn identity() -> Pubkey {
        Pubkey::from_str("92xGceEvXZw9ytyTefYt2fAG91sDJZGGGPcJWxHAipQX").unwrap()
    }

    #[test]
    fn the_real_agave_vote_history_parses_verifies_and_re_encodes_byte_for_byte() {
        let bytes = fixture();
        assert_eq!(bytes.len(), 576);
        let file = VoteHistoryFile::parse(&bytes).unwrap();
        file.verify(&identity()).unwrap();
        let h = &file.history;
        assert_eq!(h.node_pubkey, identity());
        assert_eq!(h.root, 345);
        assert_eq!(h.latest_voted_slot(), Some(346));
        let mut voted = h.voted.clone();
        voted.sort();
        assert_eq!(voted, [345, 346]);
        assert_eq!(h.voted_notar.len(), 2);
        let mut its_over = h.its_over.clone();
        its_over.sort();
        assert_eq!(its_over, [345, 346]);
        for (slot, votes) in &h.votes_cast {
            assert!(
                matches!(votes[..], [VotePayload::Notar { block, shred_version: 0 }, VotePayload::Finalize { slot: f, shred_version: 0 }] if block.slot == *slot && f == *slot)
            );
        }
        assert_eq!(h.parent_ready_slots.len(), 1);
        assert_eq!(h.parent_ready_slots[0].0, 345);
        assert_eq!(h.parent_ready_slots[0].1[0].slot, 344);
        assert_eq!(h.encode(), file.data, "data re-encodes byte for byte");
    }

    /// From a drill on real Agave 4.2.2 (the old active's final history at a planned switch): X
    /// notarized slots 92 and 93 and then cast skip-fallback votes for them, so `skipped` holds
    /// them — legal, and no first-round skip.
    #[test]
    fn fallback_votes_after_a_notarize_vote_are_not_first_round_skips() {
        let name = "4DLFgvCexG2nuSMcEkELk8GtxkEfTV5VWw5VkpeTqCNi";
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/agave-4.2.2")
            .join(format!("vote_history-{name}.bin"));
        let bytes = std::fs::read(path).unwrap();
        let file = VoteHistoryFile::parse(&bytes).unwrap();
        file.verify(&Pubkey::from_str(name).unwrap()).unwrap();
        let h = &file.history;
        assert_eq!(h.encode(), file.data, "data re-encodes byte for byte");
        for slot in [92, 93] {
            assert!(h.notarized(slot).is_some(), "{h:?}");
            assert!(h.skipped.contains(&slot) && h.voted_skip_fallback.contains(&slot));
        }
        let mut first_round: Vec<u64> = h.first_round_skips().collect();
        first_round.sort();
        assert_eq!(first_round, [94, 95], "{h:?}");
        assert!(h.conflicts_with(h).is_empty());
    }

    /// Captured right after X moved to a node that had not seen the last blocks: its first votes
    /// were skip votes (`scripts/agave/capture-fixtures`).
    #[test]
    fn a_real_vote_history_with_skip_votes_parses_verifies_and_re_encodes_byte_for_byte() {
        let name = "edDaLThumVHiNX5uwKKWZunXy8vhGWHprTdNyDBZY55";
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/agave-4.2.2")
            .join(format!("vote_history-{name}.bin"));
        let bytes = std::fs::read(path).unwrap();
        let file = VoteHistoryFile::parse(&bytes).unwrap();
        let x = Pubkey::from_str(name).unwrap();
        file.verify(&x).unwrap();
        let h = &file.history;
        assert_eq!(h.skipped.len(), 2, "{h:?}");
        assert!(h
            .skipped
            .iter()
            .all(|s| h.skipped_slot(*s) && h.notarized(*s).is_none()));
        assert!(h
            .votes_cast
            .iter()
            .flat_map(|(_, v)| v)
            .any(|v| matches!(v, VotePayload::Skip { .. })));
        assert_eq!(h.latest_voted_slot(), Some(123));
        assert_eq!(h.encode(), file.data, "data re-encodes byte for byte");
    }

    #[test]
    fn a_tampered_foreign_truncated_or_padded_file_is_refused() {
        let bytes = fixture();
        let mut tampered = bytes.clone();
        tampered[200] ^= 1;
        let file = VoteHistoryFile::parse(&tampered).unwrap();
        assert!(matches!(
            file.verify(&identity()),
            Err(VoteStateError::BadSignature { .. })
        ));
        let file = VoteHistoryFile::parse(&bytes).unwrap();
        let other = Keypair::generate().pubkey();
        assert!(file.verify(&other).is_err());
        for cut in [3, 70, 80, 575] {
            assert!(
                VoteHistoryFile::parse(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            VoteHistoryFile::parse(&padded),
            Err(VoteStateError::TrailingBytes { count: 1, .. })
        ));
        let mut tower_tag = bytes.clone();
        tower_tag[0] = 1;
        assert!(matches!(
            VoteHistoryFile::parse(&tower_tag),
            Err(VoteStateError::UnsupportedVersion { tag: 1, .. })
        ));
        // A length that the file could never hold is refused before any allocation.
        let mut huge = bytes.clone();
        huge[68..76].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            VoteHistoryFile::parse(&huge),
            Err(VoteStateError::Truncated { .. })
        ));
    }

    #[test]
    fn a_history_signed_by_its_identity_round_trips_and_one_naming_another_node_is_refused() {
        let key = Keypair::generate();
        let block = |slot| Block {
            slot,
            block_id: [slot as u8; 32],
        };
        let history = VoteHistory {
            node_pubkey: key.pubkey(),
            voted: vec![10, 11],
            voted_notar: vec![(10, [10; 32])],
            voted_notar_fallback: vec![(11, vec![[1; 32], [2; 32]])],
            voted_skip_fallback: vec![11],
            skipped: vec![11],
            its_over: vec![10],
            votes_cast: vec![
                (
                    10,
                    vec![
                        VotePayload::Notar {
                            block: block(10),
                            shred_version: 0,
                        },
                        VotePayload::Finalize {
                            slot: 10,
                            shred_version: 0,
                        },
                    ],
                ),
                (
                    11,
                    vec![
                        VotePayload::Skip {
                            slot: 11,
                            shred_version: 0,
                        },
                        VotePayload::NotarFallback {
                            block: block(11),
                            shred_version: 0,
                        },
                        VotePayload::SkipFallback {
                            slot: 11,
                            shred_version: 0,
                        },
                        VotePayload::Genesis {
                            block: block(0),
                            shred_version: 0,
                        },
                    ],
                ),
            ],
            notarized_blocks: vec![block(10)],
            parent_ready_slots: vec![(11, vec![block(10)])],
            root: 9,
        };
        let bytes = VoteHistoryFile::sign(&history, &key);
        let file = VoteHistoryFile::parse(&bytes).unwrap();
        file.verify(&key.pubkey()).unwrap();
        assert_eq!(file.history, history);
        assert_eq!(history.latest_voted_slot(), Some(11));
        let liar = VoteHistory {
            node_pubkey: Keypair::generate().pubkey(),
            ..history
        };
        let file = VoteHistoryFile::parse(&VoteHistoryFile::sign(&liar, &key)).unwrap();
        assert!(matches!(
            file.verify(&key.pubkey()),
            Err(VoteStateError::WrongIdentity { .. })
        ));
    }

    #[test]
    fn conflicting_votes_of_one_kind_for_one_slot_are_found() {
        let mut a = VoteHistory::default();
        let mut b = VoteHistory::default();
        a.voted_notar = vec![(5, [1; 32]), (6, [6; 32]), (7, [7; 32])];
        b.voted_notar = vec![(5, [2; 32]), (6, [6; 32])];
        b.skipped = vec![7];
        a.skipped = vec![8];
        b.voted_notar.push((8, [8; 32]));
        let mut found = a.conflicts_with(&b);
        found.sort_by_key(|c| match c {
            Conflict::TwoBlocks { slot } | Conflict::NotarAndSkip { slot } => *slot,
        });
        assert_eq!(
            found,
            vec![
                Conflict::TwoBlocks { slot: 5 },
                Conflict::NotarAndSkip { slot: 7 },
                Conflict::NotarAndSkip { slot: 8 },
            ]
        );
        assert!(a.conflicts_with(&a).is_empty());
    }
}
