//! Running the operator's shell commands (the reference design's hooks and command-mode identity
//! commands) with a deadline, optional stdin, and their output kept for the log.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `command` with `sh -c`, feeding `stdin` if given. Ok with stdout when it exits 0; an error
/// with the exit status and stderr otherwise, or when it outlives `timeout` (then it is killed).
pub async fn run_shell(
    command: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|e| format!("cannot write to `{command}`: {e}"))?;
        drop(pipe);
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("`{command}` did not finish within {timeout:?}; killed"))?
        .map_err(|e| format!("`{command}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "`{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Longest part of each of a hook's output streams that is logged.
const HOOK_OUTPUT_LOGGED: usize = 4096;

/// Runs the operator's hook `command` (`name` says which, for the log) with `sh -c`, in its own
/// process group, with `env` added to its environment. Its output is logged line by line (stdout
/// at info, stderr at warn, at most [`HOOK_OUTPUT_LOGGED`] bytes of each). Ok when it exits 0;
/// an error saying how it failed otherwise — also when it outlives `timeout`: then its whole
/// process group is killed, so a `sleep` it started does not linger either.
pub async fn run_hook(
    name: &str,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut child = Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in env {
        child.env(key, value);
    }
    let child = child
        .spawn()
        .map_err(|e| format!("{name}: cannot run `{command}`: {e}"))?;
    let pid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| format!("{name}: {e}"))?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: killpg has no memory preconditions; the group is the hook's own
                // (process_group(0) made its pid the group id).
                unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
            }
            let error =
                format!("{name} did not finish within {timeout:?}; its process group was killed");
            tracing::warn!(hook = name, "{error}");
            return Err(error);
        }
    };
    let log = |bytes: &[u8], stderr: bool| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(HOOK_OUTPUT_LOGGED)]);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if stderr {
                tracing::warn!(hook = name, "stderr: {line}");
            } else {
                tracing::info!(hook = name, "stdout: {line}");
            }
        }
    };
    log(&output.stdout, false);
    log(&output.stderr, true);
    let ms = started.elapsed().as_millis() as u64;
    if output.status.success() {
        tracing::info!(hook = name, ms, "hook succeeded");
        Ok(())
    } else {
        let error = format!("{name} failed ({})", output.status);
        tracing::warn!(hook = name, ms, "{error}");
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hook_sees_its_environment_and_a_hung_one_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let env = [("FAILOVER_TERM", "7".to_string())];
        let command = format!("echo \"$FAILOVER_TERM\" > {}", out.display());
        run_hook("pre_switch_command", &command, &env, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "7\n");
        let err = run_hook("post", "exit 4", &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("exit status: 4"), "{err}");
        // A hook that hangs in a child: after the timeout, neither is left.
        let pids = dir.path().join("pids");
        let command = format!("sleep 30 & echo $! > {}; wait", pids.display());
        let err = run_hook("pre", &command, &[], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
        let child: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The process is dead once it is a zombie (waiting for whoever reaps orphans here) or
        // gone; the kill is sent, its exit follows within moments.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if matches!(state, None | Some("Z")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's sleep survived: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn reports_success_failure_and_timeouts() {
        assert_eq!(
            run_shell("echo hi", None, Duration::from_secs(5)).await,
            Ok("hi".into())
        );
        assert_eq!(
            run_shell("cat", Some(b"from stdin"), Duration::from_secs(5)).await,
            Ok("from stdin".into())
        );
        let err = run_shell("echo oops >&2; exit 3", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("oops"),
            "{err}"
        );
        let err = run_shell("sleep 5", None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
