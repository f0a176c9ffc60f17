//! How the manager authenticates its commands to an agent: an ed25519 signature (the identity
//! crate's) over the command's audience, method, path, a timestamp, a one-time nonce and the body's
//! SHA-256, carried in five headers.
//!
//! The **audience** binds a command to the one agent it was made for: the agent's id, drawn at
//! random each time the agent process starts (learned by the manager from `GET /health`), and the
//! staked identity it serves. A command seen on the wire is therefore worthless anywhere else — on
//! the other agent of the pair, on another pair trusting the same manager key, and on the same agent
//! after a restart (whose nonce memory, in RAM, started empty).
//!
//! The agent accepts a command only if the audience is its own, the key is one it trusts, the
//! timestamp is within `command_max_age` of its clock, the nonce has not been seen, and the
//! signature verifies — checked in that order, cheapest first, and with a per-source budget for
//! signatures that fail, so a flood of forgeries cannot take the CPU the manager's heartbeat needs.
//! The IP allow-list stays in front of all this (at accept) as a second layer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use failover_identity::{verify_signature, Keypair, Pubkey};
use rand_core::RngCore;
use sha2::{Digest, Sha256};

pub const HEADER_KEY: &str = "x-failover-key";
pub const HEADER_AUDIENCE: &str = "x-failover-audience";
pub const HEADER_TIMESTAMP: &str = "x-failover-timestamp";
pub const HEADER_NONCE: &str = "x-failover-nonce";
pub const HEADER_SIGNATURE: &str = "x-failover-signature";

/// Binds a signature to this protocol so it can never be replayed as anything else.
const DOMAIN: &str = "solana-failover/agent-command/v2";

/// Most nonces remembered at once; old ones expire after twice the timestamp window.
const MAX_REMEMBERED_NONCES: usize = 100_000;

/// Signatures that may fail per source address before it is throttled, and how fast that budget
/// comes back. A manager never sends a bad signature; an attacker with the trusted pubkey and random
/// signatures gets this many checks, then a cheap refusal.
const FAILURE_BURST: u32 = 20;
const FAILURE_REFILL_PER_SEC: u32 = 5;
/// Source addresses whose failure budget is tracked at once (allowed addresses only reach it).
const MAX_TRACKED_SOURCES: usize = 1024;

/// Who a command is for: one agent process, serving one staked identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    /// The agent's id: random per agent process start (`GET /health` tells it).
    pub agent_id: String,
    /// The staked identity that agent's validator votes with.
    pub staked: Pubkey,
}

impl Audience {
    /// A fresh random agent id (128 bits, hex).
    pub fn new_agent_id() -> String {
        let mut raw = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut raw);
        hex(&raw)
    }
}

/// The authentication headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub key: Pubkey,
    pub audience: String,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: [u8; 64],
}

impl Signed {
    /// The header name/value pairs to send.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_KEY, self.key.to_string()),
            (HEADER_AUDIENCE, self.audience.clone()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, bs58::encode(self.signature).into_string()),
        ]
    }
}

/// The bytes that are signed.
pub fn message(
    audience: &Audience,
    method: &str,
    path: &str,
    timestamp_ms: u64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "{DOMAIN}\n{}\n{}\n{method}\n{path}\n{timestamp_ms}\n{nonce}\n{}",
        audience.agent_id,
        audience.staked,
        hex(&Sha256::digest(body))
    )
    .into_bytes()
}

/// Signs a request for `audience` with a fresh nonce.
pub fn sign(
    keypair: &Keypair,
    audience: &Audience,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
) -> Signed {
    let mut raw = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut raw);
    let nonce = hex(&raw);
    let signature = keypair.sign(&message(audience, method, path, now_ms, &nonce, body));
    Signed {
        key: keypair.pubkey(),
        audience: audience.agent_id.clone(),
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
    #[error(
        "command addressed to agent {addressed}, but this is agent {mine}: a command captured \
         elsewhere, or one signed before this agent restarted (the manager re-reads GET /health)"
    )]
    WrongAudience { addressed: String, mine: String },
    #[error("command signed by {0}, which is not in manager_pubkeys")]
    UnknownKey(Pubkey),
    #[error("command timestamp is {age_ms} ms old, more than the {max_ms} ms allowed (clock skew or replay)")]
    Stale { age_ms: u64, max_ms: u64 },
    #[error("command timestamp is {ahead_ms} ms in the future, more than the {max_ms} ms allowed")]
    FromTheFuture { ahead_ms: u64, max_ms: u64 },
    #[error(
        "signature does not verify (forged or altered command, or signed for another staked \
         identity than this agent's)"
    )]
    BadSignature,
    #[error("nonce already used: replayed command")]
    Replay,
    #[error("too many commands in the timestamp window")]
    Flooded,
    #[error("too many bad signatures from this address: try again in a few seconds")]
    Throttled,
}

impl AuthError {
    /// A stable name for the kind of refusal (for clients and for rate-limited logs).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing(_) => "unsigned",
            AuthError::Malformed(..) => "malformed",
            AuthError::WrongAudience { .. } => "wrong_audience",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::Stale { .. } => "stale_timestamp",
            AuthError::FromTheFuture { .. } => "future_timestamp",
            AuthError::BadSignature => "bad_signature",
            AuthError::Replay => "replay",
            AuthError::Flooded => "flooded",
            AuthError::Throttled => "throttled",
        }
    }

    /// Whether the refusal is about load, not about the command (HTTP 429).
    pub fn is_throttle(&self) -> bool {
        matches!(self, AuthError::Flooded | AuthError::Throttled)
    }
}

/// A token bucket of signature failures per source address.
#[derive(Clone, Copy, Debug)]
struct Budget {
    tokens: u32,
    refilled_ms: u64,
}

impl Budget {
    fn full(now_ms: u64) -> Self {
        Self {
            tokens: FAILURE_BURST,
            refilled_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        let earned = elapsed.saturating_mul(u64::from(FAILURE_REFILL_PER_SEC)) / 1000;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens).saturating_add(earned))
                .min(u64::from(FAILURE_BURST)) as u32;
            self.refilled_ms = now_ms;
        }
    }
}

/// Checks commands against the trusted manager keys, remembers nonces and throttles sources of bad
/// signatures.
pub struct Verifier {
    trusted: Vec<Pubkey>,
    audience: Audience,
    max_age_ms: u64,
    /// (key, nonce) → expiry in unix ms.
    seen: Mutex<HashMap<(Pubkey, String), u64>>,
    failures: Mutex<HashMap<IpAddr, Budget>>,
}

impl Verifier {
    pub fn new(trusted: Vec<Pubkey>, max_age: Duration, audience: Audience) -> Self {
        Self {
            trusted,
            audience,
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            seen: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies a request from `source`; on success returns the manager key that signed it.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        source: IpAddr,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Pubkey, AuthError> {
        let signed = parse_headers(headers)?;
        if signed.audience != self.audience.agent_id {
            return Err(AuthError::WrongAudience {
                addressed: signed.audience,
                mine: self.audience.agent_id.clone(),
            });
        }
        if !self.trusted.contains(&signed.key) {
            return Err(AuthError::UnknownKey(signed.key));
        }
        // Checked arithmetic: the timestamp is the sender's, any u64 at all.
        let age_ms = now_ms.saturating_sub(signed.timestamp_ms);
        if age_ms > self.max_age_ms {
            return Err(AuthError::Stale {
                age_ms,
                max_ms: self.max_age_ms,
            });
        }
        let ahead_ms = signed.timestamp_ms.saturating_sub(now_ms);
        if ahead_ms > self.max_age_ms {
            return Err(AuthError::FromTheFuture {
                ahead_ms,
                max_ms: self.max_age_ms,
            });
        }
        let nonce_key = (signed.key, signed.nonce);
        if self
            .seen
            .lock()
            .expect("nonce memory")
            .contains_key(&nonce_key)
        {
            return Err(AuthError::Replay);
        }
        self.spend_failure_budget(source, now_ms, false)?;
        let msg = message(
            &self.audience,
            method,
            path,
            signed.timestamp_ms,
            &nonce_key.1,
            body,
        );
        if verify_signature(&signed.key, &msg, &signed.signature).is_err() {
            // A failure costs the source a token; an empty budget refuses without checking.
            let _ = self.spend_failure_budget(source, now_ms, true);
            return Err(AuthError::BadSignature);
        }
        // Only a valid signature may occupy the nonce memory, so forgeries cannot flood it.
        let mut seen = self.seen.lock().expect("nonce memory");
        if seen.len() >= MAX_REMEMBERED_NONCES {
            seen.retain(|_, expires| *expires > now_ms);
            if seen.len() >= MAX_REMEMBERED_NONCES {
                return Err(AuthError::Flooded);
            }
        }
        let expires = signed
            .timestamp_ms
            .saturating_add(self.max_age_ms.saturating_mul(2));
        if seen.insert(nonce_key.clone(), expires).is_some() {
            return Err(AuthError::Replay);
        }
        Ok(nonce_key.0)
    }

    /// With `spend`, takes a token from `source`'s failure budget; without, only checks that one
    /// is left. `Throttled` when the budget is empty.
    fn spend_failure_budget(
        &self,
        source: IpAddr,
        now_ms: u64,
        spend: bool,
    ) -> Result<(), AuthError> {
        let mut budgets = self.failures.lock().expect("failure budgets");
        if !budgets.contains_key(&source) {
            if !spend {
                return Ok(());
            }
            if budgets.len() >= MAX_TRACKED_SOURCES {
                budgets.retain(|_, b| {
                    b.refill(now_ms);
                    b.tokens < FAILURE_BURST
                });
            }
            budgets.insert(source, Budget::full(now_ms));
        }
        let budget = budgets.get_mut(&source).expect("inserted above");
        budget.refill(now_ms);
        if budget.tokens == 0 {
            return Err(AuthError::Throttled);
        }
        if spend {
            budget.tokens -= 1;
        }
        Ok(())
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
    let audience = get(HEADER_AUDIENCE)?.to_string();
    if audience.len() != 32 || !audience.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(
            HEADER_AUDIENCE,
            "expected the agent id (32 hex digits, from GET /health)".into(),
        ));
    }
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
        audience,
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
    const FROM: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn headers_of(signed: &Signed) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in signed.headers() {
            h.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        h
    }

    fn audience() -> Audience {
        Audience {
            agent_id: Audience::new_agent_id(),
            staked: Keypair::generate().pubkey(),
        }
    }

    fn setup() -> (Keypair, Audience, Verifier) {
        let manager = Keypair::generate();
        let audience = audience();
        let verifier = Verifier::new(
            vec![manager.pubkey()],
            Duration::from_secs(30),
            audience.clone(),
        );
        (manager, audience, verifier)
    }

    const BODY: &[u8] = br#"{"action":"become_active","term":3}"#;

    #[test]
    fn a_signed_command_is_accepted_once() {
        let (manager, to, v) = setup();
        let signed = sign(&manager, &to, "POST", "/failover", BODY, NOW);
        let h = headers_of(&signed);
        assert_eq!(
            v.verify(&h, FROM, "POST", "/failover", BODY, NOW + 5),
            Ok(manager.pubkey())
        );
        assert_eq!(
            v.verify(&h, FROM, "POST", "/failover", BODY, NOW + 6),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn a_command_for_another_agent_or_another_staked_identity_is_refused() {
        let (manager, to, v) = setup();
        // The other agent of the pair: same staked identity, its own id.
        let other_agent = Audience {
            agent_id: Audience::new_agent_id(),
            ..to.clone()
        };
        let h = headers_of(&sign(
            &manager,
            &other_agent,
            "POST",
            "/failover",
            BODY,
            NOW,
        ));
        assert!(matches!(
            v.verify(&h, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::WrongAudience { .. })
        ));
        // Another pair whose agent claims this agent's id (it cannot know it, but even so).
        let other_pair = Audience {
            staked: Keypair::generate().pubkey(),
            ..to.clone()
        };
        let h = headers_of(&sign(&manager, &other_pair, "POST", "/failover", BODY, NOW));
        assert_eq!(
            v.verify(&h, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn each_forgery_is_named() {
        let (manager, to, v) = setup();
        let h = headers_of(&sign(&manager, &to, "POST", "/failover", BODY, NOW));
        // Altered body, path or method.
        assert_eq!(
            v.verify(
                &h,
                FROM,
                "POST",
                "/failover",
                br#"{"action":"become_active","term":4}"#,
                NOW
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&h, FROM, "POST", "/shutdown", BODY, NOW),
            Err(AuthError::BadSignature)
        );
        // A stranger's key.
        let stranger = Keypair::generate();
        let h2 = headers_of(&sign(&stranger, &to, "POST", "/failover", BODY, NOW));
        assert_eq!(
            v.verify(&h2, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::UnknownKey(stranger.pubkey()))
        );
        // The trusted key claimed, but signed by the stranger.
        let mut forged = sign(&stranger, &to, "POST", "/failover", BODY, NOW);
        forged.key = manager.pubkey();
        assert_eq!(
            v.verify(&headers_of(&forged), FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::BadSignature)
        );
        // Too old, and from the future.
        let old = headers_of(&sign(
            &manager,
            &to,
            "POST",
            "/failover",
            BODY,
            NOW - 31_000,
        ));
        assert!(matches!(
            v.verify(&old, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::Stale { .. })
        ));
        let future = headers_of(&sign(
            &manager,
            &to,
            "POST",
            "/failover",
            BODY,
            NOW + 31_000,
        ));
        assert!(matches!(
            v.verify(&future, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::FromTheFuture { .. })
        ));
        // Unsigned and malformed.
        assert_eq!(
            v.verify(&HeaderMap::new(), FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::Missing(HEADER_KEY))
        );
        let mut bad = h.clone();
        bad.insert(HEADER_SIGNATURE, HeaderValue::from_static("notbase58!"));
        assert!(matches!(
            v.verify(&bad, FROM, "POST", "/failover", BODY, NOW),
            Err(AuthError::Malformed(..))
        ));
    }

    #[test]
    fn timestamps_at_the_ends_of_u64_are_refused_not_a_panic() {
        let (manager, to, v) = setup();
        for ts in [u64::MAX, u64::MAX - 1, 0] {
            let mut signed = sign(&manager, &to, "POST", "/status", b"{}", NOW);
            signed.timestamp_ms = ts;
            let result = v.verify(&headers_of(&signed), FROM, "POST", "/status", b"{}", NOW);
            assert!(
                matches!(
                    result,
                    Err(AuthError::Stale { .. } | AuthError::FromTheFuture { .. })
                ),
                "{ts}: {result:?}"
            );
        }
        // And an agent whose own clock reads the extremes.
        let signed = sign(&manager, &to, "POST", "/status", b"{}", u64::MAX);
        assert!(v
            .verify(
                &headers_of(&signed),
                FROM,
                "POST",
                "/status",
                b"{}",
                u64::MAX
            )
            .is_ok());
        let huge_window = Verifier::new(vec![manager.pubkey()], Duration::MAX, to.clone());
        let signed = sign(&manager, &to, "POST", "/status", b"{}", u64::MAX);
        assert!(huge_window
            .verify(&headers_of(&signed), FROM, "POST", "/status", b"{}", 0)
            .is_ok());
    }

    #[test]
    fn a_source_of_bad_signatures_is_throttled_without_checking_and_others_are_not() {
        let (manager, to, v) = setup();
        let attacker: IpAddr = "127.0.0.6".parse().unwrap();
        let forged = |now: u64| {
            let mut s = sign(&manager, &to, "POST", "/status", b"{}", now);
            s.signature = [7u8; 64];
            headers_of(&s)
        };
        for _ in 0..FAILURE_BURST {
            assert_eq!(
                v.verify(&forged(NOW), attacker, "POST", "/status", b"{}", NOW),
                Err(AuthError::BadSignature)
            );
        }
        assert_eq!(
            v.verify(&forged(NOW), attacker, "POST", "/status", b"{}", NOW),
            Err(AuthError::Throttled)
        );
        // The manager, from its own address, is unaffected.
        let genuine = headers_of(&sign(&manager, &to, "POST", "/status", b"{}", NOW));
        assert!(v
            .verify(&genuine, FROM, "POST", "/status", b"{}", NOW)
            .is_ok());
        // The budget comes back with time.
        let later = NOW + 1000;
        assert_eq!(
            v.verify(&forged(later), attacker, "POST", "/status", b"{}", later),
            Err(AuthError::BadSignature)
        );
    }
}
