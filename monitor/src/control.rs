//! The running manager's local doors: the state-dir lock that makes it the only manager on its
//! `state_dir` for as long as its process lives, and the control socket
//! (`<state_dir>/manager.sock`) through which `--trigger-failover` reaches it, so two switches
//! never race.
//!
//! The socket is created inside a fresh private directory, given mode 0600 and only then renamed
//! into place: no instant exists at which another local user could connect. Each connection must
//! come from the manager's own user or root (`SO_PEERCRED`), sends one request line of at most
//! [`MAX_LINE`] bytes within [`READ_DEADLINE`], and at most [`MAX_CLIENTS`] are served at once.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use crate::status::StatusReport;
use crate::switch::Outcome;

pub const CONTROL_SOCKET: &str = "manager.sock";
/// Held (`flock`) by the one manager process on a state dir, until it exits.
pub const LOCK_FILE: &str = "manager.lock";
/// Longest request line accepted on the control socket.
pub const MAX_LINE: usize = 64 * 1024;
/// A client must have sent its request line this long after connecting.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Control connections served at once; more are closed.
pub const MAX_CLIENTS: usize = 8;
/// Longest answer `ask_running` reads.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// A request on the control socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlRequest {
    /// A planned switchover; with `dry_run` only the plan, phase by phase.
    Trigger {
        reason: String,
        force: bool,
        #[serde(default)]
        dry_run: bool,
        /// Switch at once, without waiting for a moment the staked identity leads no slot.
        #[serde(default)]
        now: bool,
        /// The validator to move the staked identity to, by name; `None`: the engine's choice.
        #[serde(default)]
        to: Option<String>,
    },
    /// What `failover-manager status` shows, from the running manager's last heartbeat.
    Status,
}

/// The running manager's answer to a [`ControlRequest`] that it could carry out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAnswer {
    Switched(Outcome),
    Status(Box<StatusReport>),
}

pub type ControlReply = oneshot::Sender<Result<ControlAnswer, String>>;

/// The exclusive lock on a manager state dir. Dropping it (at process exit at the latest) lets
/// another manager start there.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, or says that another manager holds it.
    pub fn acquire(state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", state_dir.display()))?;
        let path = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another manager is running with state_dir {} (it holds {})",
                state_dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", path.display())
            }
        }
    }
}

/// Binds the control socket at `<state_dir>/manager.sock` with mode 0600 from its first instant.
/// Call with the [`StateLock`] held: a socket left by a dead manager is replaced.
pub fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = state_dir.join(CONTROL_SOCKET);
    let private = state_dir.join(format!(".{CONTROL_SOCKET}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", private.display()))?;
    let staged = private.join(CONTROL_SOCKET);
    let bound = (|| -> anyhow::Result<UnixListener> {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, &path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound.map_err(|e| anyhow::anyhow!("cannot create the control socket {}: {e}", path.display()))
}

/// Whether a peer may use the socket: the manager's own user, or root.
fn trusted_peer(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|cred| cred.uid() == me || cred.uid() == 0)
}

/// Serves control requests until the listener fails; each one is handed to the control loop.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<(ControlRequest, ControlReply)>) {
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    while let Ok((stream, _)) = listener.accept().await {
        let Ok(permit) = clients.clone().try_acquire_owned() else {
            warn!("control socket: too many clients at once; closing one");
            continue;
        };
        if !trusted_peer(&stream) {
            warn!("control socket: refused a client of another user");
            continue;
        }
        let requests = requests.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (read, mut write) = stream.into_split();
            let answer = match read_request(read).await {
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if requests.send((request, tx)).await.is_err() {
                        Err("the manager is stopping".to_string())
                    } else {
                        rx.await
                            .unwrap_or_else(|_| Err("the manager dropped the request".into()))
                    }
                }
                Err(e) => Err(e),
            };
            let text = serde_json::to_string(&answer).expect("answer serializes");
            let _ = write.write_all(format!("{text}\n").as_bytes()).await;
        });
    }
}

/// One request line, bounded in length and time.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<ControlRequest, String> {
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64 + 1));
    match tokio::time::timeout(READ_DEADLINE, reader.read_line(&mut line)).await {
        Err(_) => return Err(format!("no request line within {READ_DEADLINE:?}")),
        Ok(Err(e)) => return Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_LINE {
        return Err(format!("request longer than {MAX_LINE} bytes"));
    }
    serde_json::from_str(&line).map_err(|e| format!("bad control request: {e}"))
}

/// Asks a running manager for a switch (`request` is a [`ControlRequest::Trigger`]); `None`
/// when no manager is running there.
pub async fn ask_running(
    state_dir: &Path,
    request: &ControlRequest,
) -> Option<Result<Outcome, String>> {
    Some(match ask(state_dir, request).await? {
        Ok(ControlAnswer::Switched(outcome)) => Ok(outcome),
        Ok(other) => Err(format!("unexpected answer from the manager: {other:?}")),
        Err(e) => Err(e),
    })
}

/// Asks a running manager for its status; `None` when no manager is running there.
pub async fn ask_status(state_dir: &Path) -> Option<Result<StatusReport, String>> {
    Some(match ask(state_dir, &ControlRequest::Status).await? {
        Ok(ControlAnswer::Status(report)) => Ok(*report),
        Ok(other) => Err(format!("unexpected answer from the manager: {other:?}")),
        Err(e) => Err(e),
    })
}

async fn ask(state_dir: &Path, request: &ControlRequest) -> Option<Result<ControlAnswer, String>> {
    let stream = UnixStream::connect(socket_path(state_dir)).await.ok()?;
    let (read, mut write) = stream.into_split();
    let text = serde_json::to_string(request).expect("request serializes");
    write.write_all(format!("{text}\n").as_bytes()).await.ok()?;
    let mut line = String::new();
    BufReader::new(read.take(MAX_ANSWER))
        .read_line(&mut line)
        .await
        .ok()?;
    Some(
        serde_json::from_str(&line)
            .unwrap_or_else(|e| Err(format!("unreadable answer from the manager: {e}"))),
    )
}

/// Whether a manager answers on the control socket of `state_dir`.
pub async fn is_running(state_dir: &Path) -> bool {
    UnixStream::connect(socket_path(state_dir)).await.is_ok()
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CONTROL_SOCKET)
}
