//! Client for Agave's admin RPC: JSON-RPC 2.0 over the Unix socket `<ledger>/admin.rpc`.
//!
//! Framing, as Agave 3.1 serves it: requests are streamed JSON objects (we end each with `\n`), each
//! response is one JSON line ending in `\n`, and several requests may be in flight on one connection
//! with responses in any order — so one reader task owns the read half and hands each response to
//! the caller waiting on its `id`. A connection that breaks fails every call in flight and the next
//! call dials again. Params are positional and counted strictly by the server.
//!
//! Every call has a deadline. A call that times out after its request was written has an unknown
//! outcome (`AdminRpcError::Timeout { sent: true, .. }`): callers that change state must re-read
//! `contactInfo` rather than assume either way.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use solana_pubkey::Pubkey;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, Mutex};
use zeroize::Zeroizing;

use crate::keypair::{push_byte_array, Keypair};

/// The admin socket's file name inside the ledger directory.
pub const ADMIN_SOCKET_NAME: &str = "admin.rpc";

/// JSON-RPC "invalid params", which Agave also uses for most of its own failures.
pub const INVALID_PARAMS: i64 = -32602;

/// Longest response line we accept; real answers are well under 1 KiB.
const MAX_RESPONSE_LEN: usize = 1 << 20;

/// Agave answers every admin call but `startProgress`/`exit`/`pid` with this until start-up is done
/// (validator/src/admin_rpc_service.rs).
const STARTUP_NOT_COMPLETE: &str = "Retry once validator start up is complete";
const TOWER_LOAD_FAILED: &str = "Unable to load tower file for identity";
/// agave-validator 4.2 `admin_rpc_service.rs` `set_identity_keypair`.
const VOTE_HISTORY_LOAD_FAILED: &str = "Unable to load vote history file for identity";
/// Agave 4.3: a switch from one staked identity straight to another is refused.
const STAKED_TO_STAKED: &str = "Changing identity from staked node";
/// Agave 4.3: a key updater failed after some took the new key; nothing else switched yet.
const PARTIAL_IDENTITY_CHANGE: &str = "Failed to apply new identity to";

/// Deadlines for the admin socket.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub call: Duration,
}

impl Timeouts {
    /// Deadlines suited to a local Unix socket: Agave answers `setIdentity` in 1–3 ms when healthy.
    pub const LOCAL: Timeouts = Timeouts {
        connect: Duration::from_secs(2),
        call: Duration::from_secs(10),
    };
}

/// How many params `setIdentity`/`setIdentityFromBytes` take on the validator we talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetIdentityArity {
    /// `[keypair, require_tower]`: Agave up to 4.1.
    Two,
    /// `[keypair, require_tower, require_vote_history]`: Agave 4.2 and later.
    Three,
}

impl SetIdentityArity {
    /// The arity for a validator reporting `version` (RPC `getVersion`'s `solana-core`, e.g. "3.1.12"
    /// or "4.2.0-beta.0"). `require_vote_history` became a required third param in Agave
    /// 4.2.0-beta.0 (validator/src/admin_rpc_service.rs). `None` when the version does not parse.
    pub fn for_version(version: &str) -> Option<Self> {
        let mut parts = version.trim().split(['.', '-']);
        let major: u64 = parts.next()?.parse().ok()?;
        let minor: u64 = parts.next()?.parse().ok()?;
        Some(if (major, minor) >= (4, 2) {
            SetIdentityArity::Three
        } else {
            SetIdentityArity::Two
        })
    }
}

/// Why an admin-RPC call failed. Callers branch on these.
#[derive(Debug, thiserror::Error)]
pub enum AdminRpcError {
    #[error("cannot connect to admin socket {path}: {source} (is the validator running with this ledger?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to admin socket {path} timed out after {after:?}")]
    ConnectTimeout { path: PathBuf, after: Duration },
    #[error("admin RPC {method} timed out after {after:?}{}", if *sent { " (request was sent: outcome unknown)" } else { "" })]
    Timeout {
        method: &'static str,
        after: Duration,
        /// The request reached the socket, so the validator may have acted on it.
        sent: bool,
    },
    #[error("admin RPC {method}: connection lost before an answer: {detail}")]
    ConnectionLost {
        method: &'static str,
        detail: String,
    },
    #[error("admin RPC {method}: malformed response: {detail}")]
    Protocol {
        method: &'static str,
        detail: String,
    },
    #[error("admin RPC {method}: validator is still starting up ({message})")]
    StartupNotComplete {
        method: &'static str,
        message: String,
    },
    #[error("admin RPC {method}: validator refused: tower not loadable: {message}")]
    TowerUnavailable {
        method: &'static str,
        message: String,
    },
    #[error("admin RPC {method}: validator refused: vote history not loadable: {message}")]
    VoteHistoryUnavailable {
        method: &'static str,
        message: String,
    },
    #[error(
        "admin RPC {method}: validator refused a switch between two staked identities: {message}"
    )]
    StakedToStaked {
        method: &'static str,
        message: String,
    },
    /// Agave 4.3: some of the validator's parts took the new key, the rest did not: read the
    /// identity back and ask again to converge.
    #[error("admin RPC {method}: the identity change was applied only in part: {message}")]
    PartialIdentityChange {
        method: &'static str,
        message: String,
    },
    #[error("admin RPC {method}: error {code}: {message}")]
    Rpc {
        method: &'static str,
        code: i64,
        message: String,
    },
}

impl AdminRpcError {
    fn from_rpc(method: &'static str, code: i64, message: String) -> Self {
        if message.contains(STARTUP_NOT_COMPLETE) {
            AdminRpcError::StartupNotComplete { method, message }
        } else if message.contains(TOWER_LOAD_FAILED) {
            AdminRpcError::TowerUnavailable { method, message }
        } else if message.contains(VOTE_HISTORY_LOAD_FAILED) {
            AdminRpcError::VoteHistoryUnavailable { method, message }
        } else if message.contains(STAKED_TO_STAKED) {
            AdminRpcError::StakedToStaked { method, message }
        } else if message.contains(PARTIAL_IDENTITY_CHANGE) {
            AdminRpcError::PartialIdentityChange { method, message }
        } else {
            AdminRpcError::Rpc {
                method,
                code,
                message,
            }
        }
    }

    /// True when the server rejected the number of params (Agave's serde tuple message).
    fn is_arity_mismatch(&self) -> bool {
        matches!(self, AdminRpcError::Rpc { code: INVALID_PARAMS, message, .. }
            if message.starts_with("Invalid params: invalid length"))
    }
}

/// What `setIdentity` requires to load for the new identity before it switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Require {
    /// `tower-1_9-<id>.bin` (TowerBFT; there is none under Alpenglow).
    pub tower: bool,
    /// `vote_history-<id>.bin` when the vote account has Alpenglow votes (Agave 4.2+; the two-
    /// parameter call of older Agave cannot express it).
    pub vote_history: bool,
}

impl Require {
    /// Both or neither: a demotion requires nothing; a TowerBFT promotion the tower, and the
    /// vote history too, which Agave only enforces on Alpenglow for the vote account's own node,
    /// so it is harmless on a Tower cluster.
    pub fn both(required: bool) -> Self {
        Self {
            tower: required,
            vote_history: required,
        }
    }

    /// An Alpenglow promotion: the vote history, no tower.
    pub fn vote_history() -> Self {
        Self {
            tower: false,
            vote_history: true,
        }
    }
}

/// What `contactInfo` tells us. Only `id` is parsed: the other fields change between versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactInfo {
    pub identity: Pubkey,
}

type Pending = Arc<StdMutex<HashMap<u64, oneshot::Sender<Result<Value, AdminRpcError>>>>>;

struct Connection {
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    /// Set by the reader task when the socket closes or breaks; the next call redials.
    broken: Arc<std::sync::atomic::AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A client for one validator's admin socket. Cheap to share behind an `Arc`; calls may run
/// concurrently and share one connection.
pub struct AdminRpcClient {
    path: PathBuf,
    timeouts: Timeouts,
    next_id: AtomicU64,
    conn: Mutex<Option<Arc<Connection>>>,
    /// 0 = not yet known (try two params first), 2 or 3 once known.
    arity: AtomicU8,
}

impl AdminRpcClient {
    /// A client for the socket at `path`. Nothing is dialled until the first call.
    pub fn new(path: impl Into<PathBuf>, timeouts: Timeouts) -> Self {
        Self {
            path: path.into(),
            timeouts,
            next_id: AtomicU64::new(1),
            conn: Mutex::new(None),
            arity: AtomicU8::new(0),
        }
    }

    /// A client for `<ledger>/admin.rpc`.
    pub fn for_ledger(ledger: &Path, timeouts: Timeouts) -> Self {
        Self::new(ledger.join(ADMIN_SOCKET_NAME), timeouts)
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Fixes the `setIdentity` arity (e.g. from the validator's `getVersion`) instead of probing.
    pub fn set_identity_arity(&self, arity: SetIdentityArity) {
        let n = match arity {
            SetIdentityArity::Two => 2,
            SetIdentityArity::Three => 3,
        };
        self.arity.store(n, Ordering::Relaxed);
    }

    /// The validator's current identity and contact info.
    pub async fn contact_info(&self) -> Result<ContactInfo, AdminRpcError> {
        #[derive(Deserialize)]
        struct Raw {
            id: String,
        }
        let method = "contactInfo";
        let value = self.call(method, "[]").await?;
        let raw: Raw = serde_json::from_value(value).map_err(|e| AdminRpcError::Protocol {
            method,
            detail: format!("no identity in contact info: {e}"),
        })?;
        let identity = raw.id.parse().map_err(|_| AdminRpcError::Protocol {
            method,
            detail: format!("identity {:?} is not a base58 pubkey", raw.id),
        })?;
        Ok(ContactInfo { identity })
    }

    /// The validator's current identity pubkey (from `contactInfo`).
    pub async fn identity(&self) -> Result<Pubkey, AdminRpcError> {
        Ok(self.contact_info().await?.identity)
    }

    /// Start-up progress: `"Running"` once the validator is up, otherwise the phase's name.
    pub async fn start_progress(&self) -> Result<String, AdminRpcError> {
        let method = "startProgress";
        match self.call(method, "[]").await? {
            Value::String(s) => Ok(s),
            // Phases with data serialize as `{"Phase": {...}}`; the name is what operators read.
            Value::Object(map) if map.len() == 1 => {
                Ok(map.keys().next().cloned().unwrap_or_default())
            }
            other => Err(AdminRpcError::Protocol {
                method,
                detail: format!("unexpected start progress {other}"),
            }),
        }
    }

    /// `setIdentity`: switch to the keypair at `keypair_path` (a path on the validator's machine).
    /// With `require_tower` Agave refuses unless `tower-1_9-<new pubkey>.bin` loads and verifies;
    /// from 4.2 the vote history is required alike (see [`Require::both`]).
    pub async fn set_identity(
        &self,
        keypair_path: &Path,
        require_tower: bool,
    ) -> Result<(), AdminRpcError> {
        self.set_identity_requiring(keypair_path, Require::both(require_tower))
            .await
    }

    /// [`AdminRpcClient::set_identity`] with the tower and the vote history required separately
    /// (Alpenglow: no tower, the vote history).
    pub async fn set_identity_requiring(
        &self,
        keypair_path: &Path,
        require: Require,
    ) -> Result<(), AdminRpcError> {
        let path = keypair_path
            .to_str()
            .ok_or_else(|| AdminRpcError::Protocol {
                method: "setIdentity",
                detail: format!("keypair path {} is not UTF-8", keypair_path.display()),
            })?;
        let first = Zeroizing::new(serde_json::to_string(path).expect("strings serialize"));
        self.set_identity_with("setIdentity", &first, require).await
    }

    /// `setIdentityFromBytes`: switch to `keypair` sent over the socket; no file on the validator.
    pub async fn set_identity_from_bytes(
        &self,
        keypair: &Keypair,
        require: Require,
    ) -> Result<(), AdminRpcError> {
        let mut first = Zeroizing::new(String::with_capacity(300));
        push_byte_array(&mut first, &keypair.to_bytes()[..]);
        self.set_identity_with("setIdentityFromBytes", &first, require)
            .await
    }

    async fn set_identity_with(
        &self,
        method: &'static str,
        first_param: &str,
        require: Require,
    ) -> Result<(), AdminRpcError> {
        let known = self.arity.load(Ordering::Relaxed);
        let mut arity = if known == 3 { 3 } else { 2 };
        let mut result = self
            .set_identity_once(method, first_param, require, arity)
            .await;
        if known == 0 && matches!(&result, Err(e) if e.is_arity_mismatch()) {
            // The server counts params strictly and rejected two before parsing anything, so
            // nothing changed: asking again with the vote-history flag is safe.
            arity = 3;
            result = self
                .set_identity_once(method, first_param, require, arity)
                .await;
        }
        if !matches!(&result, Err(e) if e.is_arity_mismatch()) {
            self.arity.store(arity, Ordering::Relaxed);
        }
        result
    }

    async fn set_identity_once(
        &self,
        method: &'static str,
        first_param: &str,
        require: Require,
        arity: u8,
    ) -> Result<(), AdminRpcError> {
        let mut params = Zeroizing::new(String::with_capacity(first_param.len() + 16));
        let extra = if arity == 3 {
            if require.vote_history {
                ",true"
            } else {
                ",false"
            }
        } else {
            ""
        };
        write!(params, "[{first_param},{}{extra}]", require.tower).expect("writing to a String");
        expect_null(method, self.call(method, &params).await?)
    }

    /// `addAuthorizedVoter`: add the keypair at `keypair_path` (on the validator's machine).
    pub async fn add_authorized_voter(&self, keypair_path: &Path) -> Result<(), AdminRpcError> {
        let method = "addAuthorizedVoter";
        let path = keypair_path
            .to_str()
            .ok_or_else(|| AdminRpcError::Protocol {
                method,
                detail: format!("keypair path {} is not UTF-8", keypair_path.display()),
            })?;
        let params = format!(
            "[{}]",
            serde_json::to_string(path).expect("strings serialize")
        );
        expect_null(method, self.call(method, &params).await?)
    }

    /// `addAuthorizedVoterFromBytes`: add `keypair` sent over the socket.
    pub async fn add_authorized_voter_from_bytes(
        &self,
        keypair: &Keypair,
    ) -> Result<(), AdminRpcError> {
        let method = "addAuthorizedVoterFromBytes";
        let mut params = Zeroizing::new(String::with_capacity(300));
        params.push('[');
        push_byte_array(&mut params, &keypair.to_bytes()[..]);
        params.push(']');
        expect_null(method, self.call(method, &params).await?)
    }

    /// `removeAllAuthorizedVoters`.
    pub async fn remove_all_authorized_voters(&self) -> Result<(), AdminRpcError> {
        let method = "removeAllAuthorizedVoters";
        expect_null(method, self.call(method, "[]").await?)
    }

    /// `exit`: ask the validator to shut down (Agave exits about 100 ms after answering).
    pub async fn exit(&self) -> Result<(), AdminRpcError> {
        let method = "exit";
        expect_null(method, self.call(method, "[]").await?)
    }

    /// Sends `method` with already-serialized positional `params` and waits for its answer.
    async fn call(&self, method: &'static str, params: &str) -> Result<Value, AdminRpcError> {
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending map").insert(id, tx);
        let forget = || {
            conn.pending.lock().expect("pending map").remove(&id);
        };
        // The reader marks the connection broken before it fails the calls in flight; a call
        // registered after that would wait for nothing.
        if conn.broken.load(Ordering::Acquire) {
            forget();
            return Err(AdminRpcError::ConnectionLost {
                method,
                detail: "connection closed".into(),
            });
        }

        let mut request = Zeroizing::new(String::with_capacity(params.len() + 80));
        write!(
            request,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#
        )
        .expect("writing to a String");
        request.push('\n');

        let deadline = tokio::time::Instant::now() + self.timeouts.call;
        let write = async {
            let mut writer = conn.writer.lock().await;
            writer.write_all(request.as_bytes()).await?;
            writer.flush().await
        };
        match tokio::time::timeout_at(deadline, write).await {
            Err(_) => {
                forget();
                return Err(AdminRpcError::Timeout {
                    method,
                    after: self.timeouts.call,
                    sent: false,
                });
            }
            Ok(Err(e)) => {
                forget();
                conn.broken.store(true, Ordering::Relaxed);
                return Err(AdminRpcError::ConnectionLost {
                    method,
                    detail: e.to_string(),
                });
            }
            Ok(Ok(())) => {}
        }
        drop(request);

        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                forget();
                Err(AdminRpcError::Timeout {
                    method,
                    after: self.timeouts.call,
                    sent: true,
                })
            }
            Ok(Err(_)) => Err(AdminRpcError::ConnectionLost {
                method,
                detail: "reader stopped".into(),
            }),
            Ok(Ok(answer)) => answer.map_err(|e| match e {
                AdminRpcError::Rpc { code, message, .. } => {
                    AdminRpcError::from_rpc(method, code, message)
                }
                AdminRpcError::ConnectionLost { detail, .. } => {
                    AdminRpcError::ConnectionLost { method, detail }
                }
                other => other,
            }),
        }
    }

    /// The live connection, dialling a new one when there is none or the last one broke.
    async fn connection(&self) -> Result<Arc<Connection>, AdminRpcError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.broken.load(Ordering::Relaxed) {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let stream = tokio::time::timeout(self.timeouts.connect, UnixStream::connect(&self.path))
            .await
            .map_err(|_| AdminRpcError::ConnectTimeout {
                path: self.path.clone(),
                after: self.timeouts.connect,
            })?
            .map_err(|source| AdminRpcError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let pending: Pending = Arc::default();
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = tokio::spawn(read_responses(read, pending.clone(), broken.clone()));
        let conn = Arc::new(Connection {
            writer: Mutex::new(write),
            pending,
            broken,
            reader,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Reads newline-terminated responses and hands each to the call waiting on its `id`.
async fn read_responses(
    read: tokio::net::unix::OwnedReadHalf,
    pending: Pending,
    broken: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let reason = loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_RESPONSE_LEN as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) => break "validator closed the admin socket".to_string(),
            Ok(_) if line.len() > MAX_RESPONSE_LEN => {
                break format!("response longer than {MAX_RESPONSE_LEN} bytes")
            }
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_response(&line) {
            Ok((id, answer)) => {
                if let Some(tx) = pending.lock().expect("pending map").remove(&id) {
                    let _ = tx.send(answer);
                }
                // An answer nobody waits for belongs to a call that already timed out.
            }
            Err(detail) => break format!("unreadable response: {detail}"),
        }
    };
    broken.store(true, Ordering::Release);
    for (_, tx) in pending.lock().expect("pending map").drain() {
        let _ = tx.send(Err(AdminRpcError::ConnectionLost {
            method: "",
            detail: reason.clone(),
        }));
    }
}

/// Splits one JSON-RPC response line into its id and its result or error.
fn parse_response(line: &[u8]) -> Result<(u64, Result<Value, AdminRpcError>), String> {
    #[derive(Deserialize)]
    struct RpcErrorObject {
        code: i64,
        message: String,
    }
    #[derive(Deserialize)]
    struct Response {
        id: Option<u64>,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<RpcErrorObject>,
    }
    let response: Response = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let id = response.id.ok_or("response without an id")?;
    let answer = match (response.error, response.result) {
        (Some(err), _) => Err(AdminRpcError::Rpc {
            method: "",
            code: err.code,
            message: err.message,
        }),
        // `"result": null` deserializes as `None`: that is the success value of setIdentity.
        (None, result) => Ok(result.unwrap_or(Value::Null)),
    };
    Ok((id, answer))
}

fn expect_null(method: &'static str, value: Value) -> Result<(), AdminRpcError> {
    match value {
        Value::Null => Ok(()),
        other => Err(AdminRpcError::Protocol {
            method,
            detail: format!("expected null, got {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_follows_the_agave_version() {
        use SetIdentityArity::*;
        for (version, want) in [
            ("3.1.12", Some(Two)),
            ("2.3.0", Some(Two)),
            ("4.1.2", Some(Two)),
            ("4.2.0-beta.0", Some(Three)),
            ("4.2.0", Some(Three)),
            ("4.5.0-alpha.4", Some(Three)),
            ("5.0.0", Some(Three)),
            ("garbage", None),
            ("", None),
        ] {
            assert_eq!(SetIdentityArity::for_version(version), want, "{version}");
        }
    }

    #[test]
    fn classifies_agave_error_strings() {
        let startup = AdminRpcError::from_rpc(
            "contactInfo",
            INVALID_PARAMS,
            "Retry once validator start up is complete".into(),
        );
        assert!(matches!(startup, AdminRpcError::StartupNotComplete { .. }));
        let tower = AdminRpcError::from_rpc("setIdentity", INVALID_PARAMS, "Unable to load tower file for identity FbvDJyLnKdD7W2adVfkNspCrE8Yp61saW9K4poktbsLC: IO Error: No such file or directory (os error 2)".into());
        assert!(matches!(tower, AdminRpcError::TowerUnavailable { .. }));
        let arity = AdminRpcError::from_rpc(
            "setIdentity",
            INVALID_PARAMS,
            "Invalid params: invalid length 2, expected a tuple of size 3.".into(),
        );
        assert!(arity.is_arity_mismatch());
        // Agave 4.2 under Alpenglow (captured from a real 4.2.2 node), and 4.3's two new refusals
        // (agave-validator 4.3.2 `admin_rpc_service.rs`).
        let history = AdminRpcError::from_rpc("setIdentity", INVALID_PARAMS, "Unable to load vote history file for identity 92xGceEvXZw9ytyTefYt2fAG91sDJZGGGPcJWxHAipQX: IO Error: No such file or directory (os error 2). The vote account 5D1Q2QXxTkGyKMnEyyf4hZuVjK6u8W6oq6FWnR2vxLqC has prior Alpenglow votes. Ensure the vote history file is present or (dangerous) use --do-not-require-vote-history if you know what you're doing".into());
        assert!(matches!(
            history,
            AdminRpcError::VoteHistoryUnavailable { .. }
        ));
        let staked = AdminRpcError::from_rpc("setIdentity", INVALID_PARAMS, "Changing identity from staked node 92xGceEvXZw9ytyTefYt2fAG91sDJZGGGPcJWxHAipQX to staked node FbvDJyLnKdD7W2adVfkNspCrE8Yp61saW9K4poktbsLC is not supported".into());
        assert!(matches!(staked, AdminRpcError::StakedToStaked { .. }));
        let partial = AdminRpcError::from_rpc(
            "setIdentity",
            -32603,
            "Failed to apply new identity to Votor: connection refused".into(),
        );
        assert!(matches!(
            partial,
            AdminRpcError::PartialIdentityChange { .. }
        ));
        let other = AdminRpcError::from_rpc("x", -32601, "Method not found".into());
        assert!(matches!(other, AdminRpcError::Rpc { code: -32601, .. }));
        assert!(!other.is_arity_mismatch());
    }
}
