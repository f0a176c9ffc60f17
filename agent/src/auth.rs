//! How the manager authenticates its commands to an agent: an ed25519 signature (the identity
//! crate's) over the method, path, a timestamp, a one-time nonce and the body's SHA-256, carried in
//! four headers. The agent accepts a command only if the key is one it trusts, the timestamp is
//! within `command_max_age` of its clock, the nonce has not been seen, and the signature verifies.
//! The IP allow-list stays in front of this as a second layer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use failover_identity::{verify_signature, Keypair, Pubkey};
use rand_core::RngCore;
use sha2::{Digest, Sha256};

pub const HEADER_KEY: &str = "x-failover-key";
pub const HEADER_TIMESTAMP: &str = "x-failover-timestamp";
pub const HEADER_NONCE: &str = "x-failover-nonce";
pub const HEADER_SIGNATURE: &str = "x-failover-signature";

/// Binds a signature to this protocol so it can never be replayed as anything else.
const DOMAIN: &str = "solana-failover/agent-command/v1";

/// Most nonces remembered at once; old ones expire after twice the timestamp window.
const MAX_REMEMBERED_NONCES: usize = 100_000;

/// The authentication headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub key: Pubkey,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: [u8; 64],
}

impl Signed {
    /// The header name/value pairs to send.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_KEY, self.key.to_string()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, bs58::encode(self.signature).into_string()),
        ]
    }
}

/// The bytes that are signed.
pub fn message(method: &str, path: &str, timestamp_ms: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "{DOMAIN}\n{method}\n{path}\n{timestamp_ms}\n{nonce}\n{}",
        hex(&Sha256::digest(body))
    )
    .into_bytes()
}

/// Signs a request with a fresh nonce.
pub fn sign(keypair: &Keypair, method: &str, path: &str, body: &[u8], now_ms: u64) -> Signed {
    let mut raw = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut raw);
    let nonce = hex(&raw);
    let signature = keypair.sign(&message(method, path, now_ms, &nonce, body));
    Signed {
        key: keypair.pubkey(),
        timestamp_ms: now_ms,
        nonce,
        signature,
    }
}

/// Why a command was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsigned command: header {0} missing")]
    Missing(&'static str),
    #[error("malformed header {0}: {1}")]
    Malformed(&'static str, String),
    #[error("command signed by {0}, which is not in manager_pubkeys")]
    UnknownKey(Pubkey),
    #[error("command timestamp is {age_ms} ms old, more than the {max_ms} ms allowed (clock skew or replay)")]
    Stale { age_ms: u64, max_ms: u64 },
    #[error("command timestamp is {ahead_ms} ms in the future, more than the {max_ms} ms allowed")]
    FromTheFuture { ahead_ms: u64, max_ms: u64 },
    #[error("signature does not verify (forged or altered command)")]
    BadSignature,
    #[error("nonce already used: replayed command")]
    Replay,
    #[error("too many commands in the timestamp window")]
    Flooded,
}

/// Checks commands against the trusted manager keys and remembers nonces.
pub struct Verifier {
    trusted: Vec<Pubkey>,
    max_age_ms: u64,
    /// (key, nonce) → expiry in unix ms.
    seen: Mutex<HashMap<(Pubkey, String), u64>>,
}

impl Verifier {
    pub fn new(trusted: Vec<Pubkey>, max_age: Duration) -> Self {
        Self {
            trusted,
            max_age_ms: max_age.as_millis() as u64,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies a request; on success returns the manager key that signed it.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Pubkey, AuthError> {
        let signed = parse_headers(headers)?;
        if !self.trusted.contains(&signed.key) {
            return Err(AuthError::UnknownKey(signed.key));
        }
        if signed.timestamp_ms + self.max_age_ms < now_ms {
            return Err(AuthError::Stale {
                age_ms: now_ms - signed.timestamp_ms,
                max_ms: self.max_age_ms,
            });
        }
        if signed.timestamp_ms > now_ms + self.max_age_ms {
            return Err(AuthError::FromTheFuture {
                ahead_ms: signed.timestamp_ms - now_ms,
                max_ms: self.max_age_ms,
            });
        }
        let msg = message(method, path, signed.timestamp_ms, &signed.nonce, body);
        verify_signature(&signed.key, &msg, &signed.signature)
            .map_err(|_| AuthError::BadSignature)?;
        // Only a valid signature may occupy the nonce memory, so forgeries cannot flood it.
        let mut seen = self.seen.lock().expect("nonce memory");
        if seen.len() >= MAX_REMEMBERED_NONCES {
            seen.retain(|_, expires| *expires > now_ms);
            if seen.len() >= MAX_REMEMBERED_NONCES {
                return Err(AuthError::Flooded);
            }
        }
        let expires = signed.timestamp_ms + 2 * self.max_age_ms;
        if seen.insert((signed.key, signed.nonce), expires).is_some() {
            return Err(AuthError::Replay);
        }
        Ok(signed.key)
    }
}

fn parse_headers(headers: &HeaderMap) -> Result<Signed, AuthError> {
    let get = |name: &'static str| -> Result<&str, AuthError> {
        headers
            .get(name)
            .ok_or(AuthError::Missing(name))?
            .to_str()
            .map_err(|_| AuthError::Malformed(name, "not ASCII".into()))
    };
    let key = get(HEADER_KEY)?
        .parse::<Pubkey>()
        .map_err(|_| AuthError::Malformed(HEADER_KEY, "not a base58 pubkey".into()))?;
    let timestamp_ms = get(HEADER_TIMESTAMP)?
        .parse::<u64>()
        .map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP, "not unix milliseconds".into()))?;
    let nonce = get(HEADER_NONCE)?.to_string();
    if nonce.len() < 16 || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(
            HEADER_NONCE,
            "expected 16-64 hex digits".into(),
        ));
    }
    let signature: [u8; 64] = bs58::decode(get(HEADER_SIGNATURE)?)
        .into_vec()
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            AuthError::Malformed(HEADER_SIGNATURE, "not a base58 ed25519 signature".into())
        })?;
    Ok(Signed {
        key,
        timestamp_ms,
        nonce,
        signature,
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const NOW: u64 = 1_795_684_479_000;

    fn headers_of(signed: &Signed) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in signed.headers() {
            h.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        h
    }

    fn setup() -> (Keypair, Verifier) {
        let manager = Keypair::generate();
        let verifier = Verifier::new(vec![manager.pubkey()], Duration::from_secs(30));
        (manager, verifier)
    }

    #[test]
    fn a_signed_command_is_accepted_once() {
        let (manager, v) = setup();
        let body = br#"{"action":"become_active","term":3}"#;
        let signed = sign(&manager, "POST", "/failover", body, NOW);
        let h = headers_of(&signed);
        assert_eq!(
            v.verify(&h, "POST", "/failover", body, NOW + 5),
            Ok(manager.pubkey())
        );
        assert_eq!(
            v.verify(&h, "POST", "/failover", body, NOW + 6),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn each_forgery_is_named() {
        let (manager, v) = setup();
        let body = br#"{"action":"become_active","term":3}"#;
        let h = headers_of(&sign(&manager, "POST", "/failover", body, NOW));
        // Altered body, path or method.
        assert_eq!(
            v.verify(
                &h,
                "POST",
                "/failover",
                br#"{"action":"become_active","term":4}"#,
                NOW
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&h, "POST", "/shutdown", body, NOW),
            Err(AuthError::BadSignature)
        );
        // A stranger's key.
        let stranger = Keypair::generate();
        let h2 = headers_of(&sign(&stranger, "POST", "/failover", body, NOW));
        assert_eq!(
            v.verify(&h2, "POST", "/failover", body, NOW),
            Err(AuthError::UnknownKey(stranger.pubkey()))
        );
        // The trusted key claimed, but signed by the stranger.
        let mut forged = sign(&stranger, "POST", "/failover", body, NOW);
        forged.key = manager.pubkey();
        assert_eq!(
            v.verify(&headers_of(&forged), "POST", "/failover", body, NOW),
            Err(AuthError::BadSignature)
        );
        // Too old, and from the future.
        let old = headers_of(&sign(&manager, "POST", "/failover", body, NOW - 31_000));
        assert!(matches!(
            v.verify(&old, "POST", "/failover", body, NOW),
            Err(AuthError::Stale { .. })
        ));
        let future = headers_of(&sign(&manager, "POST", "/failover", body, NOW + 31_000));
        assert!(matches!(
            v.verify(&future, "POST", "/failover", body, NOW),
            Err(AuthError::FromTheFuture { .. })
        ));
        // Unsigned and malformed.
        assert_eq!(
            v.verify(&HeaderMap::new(), "POST", "/failover", body, NOW),
            Err(AuthError::Missing(HEADER_KEY))
        );
        let mut bad = h.clone();
        bad.insert(HEADER_SIGNATURE, HeaderValue::from_static("notbase58!"));
        assert!(matches!(
            v.verify(&bad, "POST", "/failover", body, NOW),
            Err(AuthError::Malformed(..))
        ));
    }
}
