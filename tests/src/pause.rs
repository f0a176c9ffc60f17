//! The test's side of a process's pause points (`failover_agent::pause`): listen at a point, wait
//! until the process reaches it, act, then let it go on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A point a process will stop at, from when it is armed until it is dropped.
pub struct PausePoint {
    name: String,
    path: PathBuf,
    listener: UnixListener,
}

/// The process, held at a point until this is released or dropped.
pub struct Held {
    stream: UnixStream,
}

impl PausePoint {
    /// Arms `name` in `dir` (the directory the process got in `FAILOVER_PAUSE_POINTS`).
    pub fn arm(dir: &Path, name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&path);
        Ok(Self {
            name: name.into(),
            listener: UnixListener::bind(&path)?,
            path,
        })
    }

    /// Waits (at most `within`) until the process reaches the point, and holds it there.
    pub async fn reached(&self, within: Duration) -> Result<Held, String> {
        let (stream, _) = tokio::time::timeout(within, self.listener.accept())
            .await
            .map_err(|_| format!("pause point {} not reached within {within:?}", self.name))?
            .map_err(|e| format!("pause point {}: {e}", self.name))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("pause point {}: {e}", self.name))?;
        if line.trim() != self.name {
            return Err(format!("pause point {} was told {line:?}", self.name));
        }
        Ok(Held {
            stream: reader.into_inner(),
        })
    }
}

impl Drop for PausePoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Held {
    /// Lets the process go on from the point.
    pub async fn release(mut self) {
        let _ = self.stream.write_all(b"g").await;
    }
}
