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

#[cfg(test)]
mod tests {
    use super::*;

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
