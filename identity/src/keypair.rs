//! Solana keypair files: loading, validating, generating, signing.
//!
//! A Solana keypair file is a JSON array of 64 integers: the 32-byte ed25519 secret seed followed by
//! the 32-byte public key. We parse it by hand (not through `serde_json::Value`) so that the secret
//! bytes only ever live in buffers we zeroize, and we check with ed25519-dalek that the stored public
//! half is the one the secret half derives — a file whose halves disagree would make a validator
//! vote under a key it cannot sign for.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use solana_pubkey::Pubkey;
use zeroize::{Zeroize, Zeroizing};

/// Length of a Solana keypair: 32 secret-seed bytes followed by 32 public-key bytes.
pub const KEYPAIR_LEN: usize = 64;

/// Largest keypair file we read. A real one is about 230 bytes; anything far bigger is not a keypair.
const MAX_FILE_LEN: u64 = 16 * 1024;

/// An ed25519 keypair whose secret is zeroized on drop and never printed.
pub struct Keypair {
    // `SigningKey` zeroizes its secret on drop (ed25519-dalek's `zeroize` feature).
    secret: SigningKey,
}

/// Whether a keypair file readable by group or others may be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permissions {
    /// Refuse files with any group/other permission bits (the default everywhere).
    Strict,
    /// Load anyway; only for operators who explicitly asked for it.
    AllowInsecure,
}

/// Why a keypair could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", path.as_ref().map(|p| format!("keypair file {}: ", p.display())).unwrap_or_default())]
pub struct KeypairError {
    /// The file, when the keypair came from one.
    pub path: Option<PathBuf>,
    pub kind: KeypairErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum KeypairErrorKind {
    #[error("no such file")]
    NotFound,
    #[error("cannot read: {0}")]
    Unreadable(#[source] io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error("too large ({0} bytes) to be a keypair file")]
    TooLarge(u64),
    #[error(
        "readable by group or others (mode {mode:04o}); run `chmod 600` on it, \
         a staked identity must be readable only by its owner"
    )]
    InsecurePermissions { mode: u32 },
    /// Where the text stops being JSON; never what it says there (it may be secret bytes).
    #[error("not JSON (syntax error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("not a keypair: expected a JSON array of 64 integers 0-255, {0}")]
    NotAnArray(String),
    #[error("wrong length: {0} bytes, a keypair has 64")]
    WrongLength(usize),
    #[error("element {index} is an integer outside 0-255")]
    ByteOutOfRange { index: usize },
    #[error(
        "the public half ({stored}) is not the key derived from the secret half ({derived}); \
         the file is corrupt or was assembled from two different keys"
    )]
    MismatchedHalves { stored: Pubkey, derived: Pubkey },
    #[error("the public half is not a valid ed25519 point")]
    InvalidPublicKey,
}

impl KeypairError {
    fn new(path: Option<&Path>, kind: KeypairErrorKind) -> Self {
        Self {
            path: path.map(Path::to_path_buf),
            kind,
        }
    }
}

/// A detached ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// A signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{0} is not a valid ed25519 public key")]
    InvalidPublicKey(Pubkey),
    #[error("signature does not verify for {0}")]
    Mismatch(Pubkey),
}

impl Keypair {
    /// Generates a new keypair from the operating system's random source.
    pub fn generate() -> Self {
        Self {
            secret: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// Builds a keypair from the 64 bytes of a Solana keypair, checking that the halves agree.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeypairError> {
        Self::from_bytes_at(bytes, None)
    }

    fn from_bytes_at(bytes: &[u8], path: Option<&Path>) -> Result<Self, KeypairError> {
        let err = |kind| KeypairError::new(path, kind);
        if bytes.len() != KEYPAIR_LEN {
            return Err(err(KeypairErrorKind::WrongLength(bytes.len())));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let secret = SigningKey::from_bytes(&seed);
        let stored: [u8; 32] = bytes[32..].try_into().expect("length checked above");
        let derived = secret.verifying_key();
        if derived.to_bytes() != stored {
            return Err(err(KeypairErrorKind::MismatchedHalves {
                stored: Pubkey::new_from_array(stored),
                derived: Pubkey::new_from_array(derived.to_bytes()),
            }));
        }
        Ok(Self { secret })
    }

    /// Loads and validates a Solana keypair file.
    pub fn read_file(path: &Path, permissions: Permissions) -> Result<Self, KeypairError> {
        let err = |kind| KeypairError::new(Some(path), kind);
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => err(KeypairErrorKind::NotFound),
            _ => err(KeypairErrorKind::Unreadable(e)),
        })?;
        if !meta.is_file() {
            return Err(err(KeypairErrorKind::NotAFile));
        }
        let mode = meta.mode() & 0o7777;
        if permissions == Permissions::Strict && mode & 0o077 != 0 {
            return Err(err(KeypairErrorKind::InsecurePermissions { mode }));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(err(KeypairErrorKind::TooLarge(meta.len())));
        }
        let text =
            Zeroizing::new(fs::read(path).map_err(|e| err(KeypairErrorKind::Unreadable(e)))?);
        let bytes = parse_keypair_json(&text).map_err(err)?;
        Self::from_bytes_at(&bytes[..], Some(path))
    }

    /// Parses the JSON text of a keypair (as piped on stdin to `agave-validator set-identity`).
    pub fn from_json(text: &[u8]) -> Result<Self, KeypairError> {
        let bytes = parse_keypair_json(text).map_err(|kind| KeypairError::new(None, kind))?;
        Self::from_bytes(&bytes[..])
    }

    /// Writes the keypair as a new file readable only by its owner (mode 0600). Refuses to overwrite
    /// an existing file: losing a staked identity is not recoverable.
    pub fn write_new_file(&self, path: &Path) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(self.to_json().as_bytes())?;
        file.sync_all()
    }

    pub fn pubkey(&self) -> Pubkey {
        Pubkey::new_from_array(self.secret.verifying_key().to_bytes())
    }

    /// The 64 keypair bytes (secret seed then public key), zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEYPAIR_LEN]> {
        Zeroizing::new(self.secret.to_keypair_bytes())
    }

    /// The keypair in Solana's file format (`[n,n,…]`), zeroized when dropped.
    pub fn to_json(&self) -> Zeroizing<String> {
        let bytes = self.to_bytes();
        let mut out = Zeroizing::new(String::with_capacity(4 * KEYPAIR_LEN + 2));
        push_byte_array(&mut out, &bytes[..]);
        out
    }

    /// Signs a message with ed25519.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.secret.sign(message).to_bytes()
    }
}

/// Appends `[b0,b1,…]` to `out`. Writing digits ourselves keeps secret bytes out of any buffer we do
/// not own (the caller passes a zeroizing string).
pub(crate) fn push_byte_array(out: &mut String, bytes: &[u8]) {
    out.push('[');
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut n = *b;
        let mut digits = [0u8; 3];
        let mut len = 0;
        loop {
            digits[len] = b'0' + n % 10;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in digits[..len].iter().rev() {
            out.push(*d as char);
        }
        digits.zeroize();
    }
    out.push(']');
}

/// Verifies an ed25519 signature over `message` by `pubkey`.
pub fn verify_signature(
    pubkey: &Pubkey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(&pubkey.to_bytes())
        .map_err(|_| SignatureError::InvalidPublicKey(*pubkey))?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    // Strict verification (no small-order keys, canonical encodings), as Agave checks towers.
    key.verify_strict(message, &signature)
        .map_err(|_| SignatureError::Mismatch(*pubkey))
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.pubkey())
    }
}

/// Parses `[n, n, …]` into bytes without going through an intermediate JSON value.
fn parse_keypair_json(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeypairErrorKind> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEYPAIR_LEN));
    let mut pos = 0;
    let skip_ws = |pos: &mut usize| {
        while *pos < text.len() && text[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
    };
    skip_ws(&mut pos);
    if text.get(pos) != Some(&b'[') {
        return Err(not_an_array(text, "the file does not start with '['"));
    }
    pos += 1;
    skip_ws(&mut pos);
    if text.get(pos) == Some(&b']') {
        pos += 1;
    } else {
        loop {
            skip_ws(&mut pos);
            let start = pos;
            while pos < text.len()
                && matches!(text[pos], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                pos += 1;
            }
            let token = &text[start..pos];
            if token.is_empty() {
                return Err(not_an_array(
                    text,
                    &format!("element {} is not a number", bytes.len()),
                ));
            }
            match std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse::<u8>().ok())
            {
                Some(b) => bytes.push(b),
                // The element itself is never quoted: its neighbours are secret bytes, and so may it be.
                None => {
                    let is_integer =
                        std::str::from_utf8(token).is_ok_and(|t| t.parse::<i128>().is_ok());
                    return Err(if is_integer {
                        KeypairErrorKind::ByteOutOfRange { index: bytes.len() }
                    } else {
                        KeypairErrorKind::NotAnArray(format!(
                            "element {} is not an integer",
                            bytes.len()
                        ))
                    });
                }
            }
            skip_ws(&mut pos);
            match text.get(pos) {
                Some(b',') => pos += 1,
                Some(b']') => {
                    pos += 1;
                    break;
                }
                _ => return Err(not_an_array(text, "the array is not closed with ']'")),
            }
        }
    }
    skip_ws(&mut pos);
    if pos != text.len() {
        return Err(not_an_array(text, "there is text after the closing ']'"));
    }
    if bytes.len() != KEYPAIR_LEN {
        return Err(KeypairErrorKind::WrongLength(bytes.len()));
    }
    Ok(bytes)
}

/// Distinguishes text that is not JSON at all from JSON of the wrong shape, for a useful message.
fn not_an_array(text: &[u8], detail: &str) -> KeypairErrorKind {
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Err(e) => KeypairErrorKind::NotJson {
            line: e.line(),
            column: e.column(),
        },
        Ok(_) => KeypairErrorKind::NotAnArray(detail.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> String {
        let mut s = String::new();
        push_byte_array(&mut s, bytes);
        s
    }

    #[test]
    fn round_trips_through_solana_json() {
        let kp = Keypair::generate();
        let json = kp.to_json();
        // Matches what `serde_json` would print for the byte array.
        let expected = serde_json::to_string(&kp.to_bytes().to_vec()).unwrap();
        assert_eq!(*json, expected);
        let back = Keypair::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.pubkey(), kp.pubkey());
    }

    #[test]
    fn accepts_whitespace_and_newlines() {
        let kp = Keypair::generate();
        let spaced = kp.to_json().replace(',', " ,\n ");
        let back = Keypair::from_json(format!("  {spaced}\n").as_bytes()).unwrap();
        assert_eq!(back.pubkey(), kp.pubkey());
    }

    #[test]
    fn rejects_mismatched_halves() {
        let a = Keypair::generate();
        let b = Keypair::generate();
        let mut bytes = a.to_bytes().to_vec();
        bytes[32..].copy_from_slice(&b.pubkey().to_bytes());
        let err = Keypair::from_bytes(&bytes).unwrap_err();
        match err.kind {
            KeypairErrorKind::MismatchedHalves { stored, derived } => {
                assert_eq!(stored, b.pubkey());
                assert_eq!(derived, a.pubkey());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classifies_malformed_text() {
        let kp = Keypair::generate();
        let good = kp.to_bytes();
        let cases: Vec<(&str, String)> = vec![
            ("not json", "hello".to_string()),
            ("not json", "[1,2,".to_string()),
            ("not an array", r#"{"secret":[1,2,3]}"#.to_string()),
            ("not an array", "[1.5,2]".to_string()),
            ("wrong length", "[1,2,3]".to_string()),
            ("wrong length", json_of(&good[..63])),
            ("wrong length", "[]".to_string()),
            ("out of range", json_of(&good[..63]).replace(']', ",256]")),
            ("out of range", "[-1]".to_string()),
        ];
        for (want, text) in cases {
            let kind = Keypair::from_json(text.as_bytes()).unwrap_err().kind;
            let got = match kind {
                KeypairErrorKind::NotJson { .. } => "not json",
                KeypairErrorKind::NotAnArray(_) => "not an array",
                KeypairErrorKind::WrongLength(_) => "wrong length",
                KeypairErrorKind::ByteOutOfRange { .. } => "out of range",
                ref other => panic!("{text}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "for {text:?}");
        }
    }

    #[test]
    fn debug_shows_only_the_pubkey() {
        let kp = Keypair::generate();
        let debug = format!("{kp:?}");
        assert_eq!(debug, format!("Keypair({})", kp.pubkey()));
        let bytes = kp.to_bytes();
        assert!(!debug.contains(&json_of(&bytes[..8])[1..]));
    }

    #[test]
    fn signs_and_verifies() {
        let kp = Keypair::generate();
        let sig = kp.sign(b"become_active term=7");
        verify_signature(&kp.pubkey(), b"become_active term=7", &sig).unwrap();
        assert_eq!(
            verify_signature(&kp.pubkey(), b"become_active term=8", &sig),
            Err(SignatureError::Mismatch(kp.pubkey()))
        );
        let other = Keypair::generate();
        assert!(verify_signature(&other.pubkey(), b"become_active term=7", &sig).is_err());
    }
}
