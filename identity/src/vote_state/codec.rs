//! The bincode-compatible byte layout both of Agave's vote-state files use (bincode 1.x for the
//! tower, wincode's default configuration for the vote history — the same thing): fixed-width
//! little-endian integers, u64 lengths before sequences and maps, a u8 for `Option`/`bool`, plus the
//! compact forms the tower's last vote uses (Solana's short-vec length and LEB128 varints).
//!
//! The reader never trusts a length: a count that the remaining bytes could not hold is refused
//! before anything is allocated.

use solana_pubkey::Pubkey;

use super::{VoteStateError, VoteStateKind};

/// Reads one file's bytes; errors name the kind of file.
pub(crate) struct Reader<'a> {
    kind: VoteStateKind,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(kind: VoteStateKind, buf: &'a [u8]) -> Self {
        Self { kind, buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// A malformed-data error at this point.
    pub fn malformed(&self, detail: &str) -> VoteStateError {
        VoteStateError::Malformed {
            kind: self.kind,
            detail: format!("{detail} (at byte {})", self.pos),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], VoteStateError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(VoteStateError::Truncated {
                kind: self.kind,
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], VoteStateError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8, VoteStateError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, VoteStateError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.malformed(&format!("bool byte {b}"))),
        }
    }

    pub fn u16(&mut self) -> Result<u16, VoteStateError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, VoteStateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, VoteStateError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn pubkey(&mut self) -> Result<Pubkey, VoteStateError> {
        Ok(Pubkey::new_from_array(self.array()?))
    }

    pub fn option_u64(&mut self) -> Result<Option<u64>, VoteStateError> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    /// A u64 element count, refused when the remaining bytes cannot hold that many elements of at
    /// least `min_elem` bytes (so a corrupt length cannot make us allocate gigabytes).
    pub fn len(&mut self, min_elem: usize) -> Result<usize, VoteStateError> {
        let at = self.pos;
        let n = self.u64()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_elem.max(1) as u64) > remaining {
            return Err(VoteStateError::Truncated {
                kind: self.kind,
                offset: at,
                needed: n.saturating_mul(min_elem as u64) as usize,
                len: self.buf.len(),
            });
        }
        Ok(n as usize)
    }

    /// Solana's compact-u16 ("short_vec") length.
    pub fn short_len(&mut self) -> Result<usize, VoteStateError> {
        let mut len = 0usize;
        for i in 0..3 {
            let byte = self.u8()?;
            len |= ((byte & 0x7f) as usize) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(len);
            }
        }
        Err(self.malformed("compact length longer than 3 bytes"))
    }

    pub fn varint(&mut self) -> Result<u64, VoteStateError> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    /// Whether every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

pub(crate) fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_option_u64(w: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => w.push(0),
        Some(v) => {
            w.push(1);
            put_u64(w, v);
        }
    }
}

pub(crate) fn put_option_i64(w: &mut Vec<u8>, v: Option<i64>) {
    put_option_u64(w, v.map(|v| v as u64));
}

/// Solana's compact-u16 ("short_vec") length: 7 bits a byte, high bit set when more follow.
pub(crate) fn put_short_len(w: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            byte |= 0x80;
        }
        w.push(byte);
        if len == 0 {
            break;
        }
    }
}

pub(crate) fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            w.push(byte);
            break;
        }
        w.push(byte | 0x80);
    }
}
