//! Processes the simulator and the test harnesses start (etcd, sshd, each simulated node's
//! stand-in): spawned with their output in a log file (or discarded), signalled and stopped by
//! pid — SIGTERM, then SIGKILL after a grace period, always reaped — also when a test panics;
//! never by name. Also free loopback ports and readiness polling.

use std::fs::{self, File};
use std::future::Future;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// How often a start is retried when the picked port was taken before the server bound it.
pub(crate) const PORT_ATTEMPTS: usize = 3;

/// How long a stopping process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long `wait_stopped` waits for a stop or continue signal to take effect.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `wait_exec_named` waits for a new process to take its program's name.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

/// How many lines of the log an error shows.
const LOG_TAIL_LINES: usize = 30;

/// A child process that is stopped (SIGTERM, then SIGKILL) and reaped when dropped.
///
/// The `Child` is behind a mutex that every signal holds: a pid is only signalled while
/// `try_wait` says the child has not been reaped, and until it is reaped the kernel does not
/// give its pid to anyone else.
pub(crate) struct OwnedProcess {
    name: &'static str,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl OwnedProcess {
    /// Spawns `command` with stdin closed and stdout and stderr written to `log`. When the
    /// program does not exist the error is `missing`, which should say what to install.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
        missing: &str,
    ) -> anyhow::Result<Self> {
        // Truncated: what the log says must be about this process, not an earlier attempt.
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!("{missing}"),
            Err(e) => return Err(e).with_context(|| format!("spawn {name}")),
        };
        Ok(Self {
            name,
            pid: child.id(),
            child: Mutex::new(child),
            log: log.to_path_buf(),
        })
    }

    /// Spawns `command` with stdin, stdout and stderr all `/dev/null`, for a process whose output
    /// nobody reads; otherwise as [`OwnedProcess::spawn`].
    pub(crate) fn spawn_silent(
        name: &'static str,
        command: Command,
        missing: &str,
    ) -> anyhow::Result<Self> {
        // `File::create` on /dev/null opens it for writing; truncating it does nothing.
        Self::spawn(name, command, Path::new("/dev/null"), missing)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        // A panic while holding the lock leaves the `Child` itself intact.
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    pub(crate) fn exited(&self) -> bool {
        self.exit_status().is_some()
    }

    /// Sends `signal` (a name such as `STOP`) to the pid, if the process has not exited.
    pub(crate) fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let mut child = self.child();
        Self::signal_locked(&mut child, self.name, self.pid, signal)
    }

    fn signal_locked(child: &mut Child, name: &str, pid: u32, signal: &str) -> anyhow::Result<()> {
        if let Some(status) = child.try_wait()? {
            bail!("{name} (pid {pid}) has already exited ({status}); not sending SIG{signal}");
        }
        // There is no libc binding in this crate, so the signal goes through kill(1).
        let output = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .stdin(Stdio::null())
            .output()
            .context("run kill(1) (procps)")?;
        if !output.status.success() {
            bail!(
                "kill -s {signal} {pid} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Waits until every thread of the process is stopped (`stopped`) or none is, as
    /// `/proc/<pid>/task/*/stat` shows. A signal is delivered to a running multi-threaded
    /// process asynchronously: `kill` returns before the last thread of etcd has stopped,
    /// and a request can still be answered in between.
    pub(crate) fn wait_stopped(&self, stopped: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + SIGNAL_TIMEOUT;
        let mut backoff = Duration::from_micros(100);
        loop {
            // The lock keeps the child unreaped, so the pid in `/proc` is still this one.
            let mut child = self.child();
            if let Some(status) = child.try_wait()? {
                bail!("{} (pid {}) exited ({status})", self.name, self.pid);
            }
            let states = thread_states(self.pid)?;
            if !states.is_empty() && states.iter().all(|&s| (s == 'T') == stopped) {
                return Ok(());
            }
            drop(child);
            if Instant::now() >= deadline {
                let want = if stopped { "stop" } else { "run again" };
                bail!(
                    "{} (pid {}) did not {want} within {SIGNAL_TIMEOUT:?}: thread states {states:?}",
                    self.name,
                    self.pid
                );
            }
            // `pause` and `resume` are not async; this waits for the state change by polling.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits until `/proc/<pid>/comm` is `comm`, the name the process gets when its `execve`
    /// is done. `spawn` returns as soon as the kernel lets the parent go, which is before exec
    /// renames the child: until then comm is still the spawning thread's.
    pub(crate) fn wait_exec_named(&self, comm: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + EXEC_TIMEOUT;
        let mut backoff = Duration::from_micros(50);
        loop {
            // The lock keeps the child unreaped, so the pid in `/proc` is still this one.
            let mut child = self.child();
            if let Some(status) = child.try_wait()? {
                bail!("{} (pid {}) exited ({status})", self.name, self.pid);
            }
            let now = fs::read_to_string(format!("/proc/{}/comm", self.pid))
                .with_context(|| format!("read /proc/{}/comm", self.pid))?;
            let now = now.trim_end_matches('\n');
            if now == comm {
                return Ok(());
            }
            drop(child);
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) is still called {now:?}, not {comm:?}, after {EXEC_TIMEOUT:?}",
                    self.name,
                    self.pid
                );
            }
            // Called from synchronous code; the rename takes microseconds.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child();
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        child
            .kill()
            .with_context(|| format!("kill {}", self.name))?;
        Ok(child.wait()?)
    }

    /// SIGTERM (and SIGCONT, so that a paused process can act on it), then SIGKILL if it
    /// has not exited within a short grace; reaps it either way.
    pub(crate) fn stop(&self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child();
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let asked = Self::signal_locked(&mut child, self.name, self.pid, "TERM")
            .and_then(|()| Self::signal_locked(&mut child, self.name, self.pid, "CONT"));
        if asked.is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            let mut backoff = Duration::from_millis(5);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                // Drop cannot await, so this waits for the exit by polling the child.
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
        child
            .kill()
            .with_context(|| format!("kill {}", self.name))?;
        Ok(child.wait()?)
    }

    /// Whether the log contains `text` (case-insensitive).
    pub(crate) fn log_mentions(&self, text: &str) -> bool {
        fs::read_to_string(&self.log)
            .map(|log| log.to_lowercase().contains(&text.to_lowercase()))
            .unwrap_or(false)
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for OwnedProcess {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("stopping {} (pid {}): {err:#}", self.name, self.pid);
        }
    }
}

/// The state letter of each thread of `pid` (`R`, `S`, `T` for stopped, …).
fn thread_states(pid: u32) -> anyhow::Result<Vec<char>> {
    let tasks = format!("/proc/{pid}/task");
    let mut states = Vec::new();
    for task in fs::read_dir(&tasks).with_context(|| format!("read {tasks}"))? {
        // A thread that ended since the listing has no stat any more; it has no state either.
        let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state …`; comm may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        states.extend(state);
    }
    Ok(states)
}

/// The last lines of the file at `path`, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            format!(
                "last lines of {}:\n{}",
                path.display(),
                lines[from..].join("\n")
            )
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// `N` distinct free TCP ports on 127.0.0.1, found by binding port 0 and letting go.
pub(crate) fn free_loopback_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    // All listeners are held until every port is known, so the ports differ.
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("bind a free port on 127.0.0.1")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Runs `probe` until it succeeds, with a backoff from 10 ms to 200 ms, for at most `timeout`.
/// Fails at once if `process` exits; errors carry the last probe error and the log tail.
pub(crate) async fn poll_until<T, F, Fut>(
    process: &OwnedProcess,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(10);
    loop {
        if let Some(status) = process.exit_status() {
            return Err(anyhow!(
                "{} (pid {}) exited with {status}; {}",
                process.name,
                process.pid,
                process.log_tail()
            ));
        }
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(anyhow!(
                "{} (pid {}) not ready within {timeout:?}: {last:#}; {}",
                process.name,
                process.pid,
                process.log_tail()
            ));
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}
