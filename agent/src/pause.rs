//! Pause points, for fault tests: a way to hold a process at an exact step of its work, so that a
//! test can make a race happen in the order it wants — instead of hoping a sleep lands there.
//!
//! Off unless the process was started with `FAILOVER_PAUSE_POINTS=1` in its environment (which only
//! whoever starts it can set; the start-up log says so loudly), or a test running the agent in its
//! own process called [`enable`]. Then, each time the process reaches point `name` while a Unix
//! socket listens at `<state_dir>/pause/<name>.sock`, it connects, writes `name\n` and waits until
//! the test answers (one byte, or closing the connection) before going on. No socket there: it
//! goes on at once. A test can so hold the step, act on the system, and then release it — or kill
//! the process where it stands.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The environment variable that turns pause points on (`1`).
pub const ENV: &str = "FAILOVER_PAUSE_POINTS";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns pause points on in this process (for tests that run agents in-process).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether pause points are on.
pub fn enabled() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    ENABLED.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| v == "1"))
}

/// Where the points of a process with this state dir listen.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pause")
}

/// Holds here while a test listens at this point (see the module's doc); returns at once
/// otherwise.
pub async fn point(state_dir: &Path, name: &str) {
    if !enabled() {
        return;
    }
    let socket = dir(state_dir).join(format!("{name}.sock"));
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return;
    };
    if stream
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_ok()
    {
        let mut answer = [0u8; 1];
        let _ = stream.read(&mut answer).await;
    }
}
