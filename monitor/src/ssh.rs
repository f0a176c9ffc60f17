//! Secure identity mode's transport: the system OpenSSH client, in batch mode with strict host-key
//! checking, running a remote command with the staked keypair on its standard input.
//!
//! Why the system client and not an SSH crate: operators already manage `known_hosts`, keys and
//! `ssh_config` for it; it is the most scrutinised SSH implementation there is; and it costs no
//! build time. The keypair goes only through the pipe to `ssh`'s stdin: it is never written to a
//! file here or on the remote side, and never appears in an argument list.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct SshTarget {
    pub program: PathBuf,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: Option<PathBuf>,
    pub timeout: Duration,
}

/// Why a remote command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("cannot run {program}: {detail}")]
    Spawn { program: String, detail: String },
    #[error("SSH to {target}: host key not trusted (check known_hosts): {stderr}")]
    HostKey { target: String, stderr: String },
    #[error("SSH to {target}: authentication refused: {stderr}")]
    AuthRefused { target: String, stderr: String },
    #[error("SSH to {target}: unreachable: {stderr}")]
    Unreachable { target: String, stderr: String },
    #[error("SSH to {target}: `{command}` failed with exit code {code}: {stderr}")]
    RemoteFailed {
        target: String,
        command: String,
        code: i32,
        stderr: String,
    },
    #[error("SSH to {target}: `{command}` did not finish within {after:?}; killed")]
    Timeout {
        target: String,
        command: String,
        after: Duration,
    },
}

impl SshTarget {
    fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The `ssh` invocation: everything but the key, which only ever goes to stdin.
    pub fn args(&self, remote: &str) -> Vec<String> {
        let mut args = vec![
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={}", self.timeout.as_secs().clamp(1, 30)),
        ];
        if let Some(known_hosts) = &self.known_hosts {
            args.push("-o".into());
            args.push(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()));
        }
        args.push(format!("{}@{}", self.user, self.host));
        args.push("--".into());
        args.push(remote.to_string());
        args
    }

    /// Runs `remote` on the target with `stdin` piped in; returns its stdout and stderr.
    pub async fn run(
        &self,
        remote: &str,
        stdin: Option<&[u8]>,
    ) -> Result<(String, String), SshError> {
        let mut child = Command::new(&self.program)
            .args(self.args(remote))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SshError::Spawn {
                program: self.program.display().to_string(),
                detail: e.to_string(),
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A remote side that never reads would block us: the write is under the deadline too.
            let write = async move {
                let _ = pipe.write_all(input).await;
                let _ = pipe.shutdown().await;
            };
            if tokio::time::timeout(self.timeout, write).await.is_err() {
                return Err(SshError::Timeout {
                    target: self.target(),
                    command: remote.into(),
                    after: self.timeout,
                });
            }
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| SshError::Timeout {
                target: self.target(),
                command: remote.into(),
                after: self.timeout,
            })?
            .map_err(|e| SshError::Spawn {
                program: self.program.display().to_string(),
                detail: e.to_string(),
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let code = output.status.code().unwrap_or(-1);
        if code == 0 {
            return Ok((stdout, stderr));
        }
        let target = self.target();
        // ssh itself exits 255; anything else is the remote command's own status.
        Err(if code == 255 {
            if stderr.contains("Host key verification failed")
                || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            {
                SshError::HostKey { target, stderr }
            } else if stderr.contains("Permission denied") {
                SshError::AuthRefused { target, stderr }
            } else {
                SshError::Unreachable { target, stderr }
            }
        } else {
            SshError::RemoteFailed {
                target,
                command: remote.into(),
                code,
                stderr,
            }
        })
    }
}

/// The remote command for a validator: `{ledger}` replaced, `--require-tower` appended when asked
/// for and not already there.
pub fn remote_command(
    template: &str,
    ledger: Option<&std::path::Path>,
    require_tower: bool,
) -> String {
    let mut command = match ledger {
        Some(ledger) => template.replace("{ledger}", &ledger.display().to_string()),
        None => template.to_string(),
    };
    if require_tower && !command.contains("--require-tower") {
        command.push_str(" --require-tower");
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_get_the_ledger_and_the_tower_requirement() {
        let t = "agave-validator --ledger {ledger} set-identity";
        assert_eq!(
            remote_command(t, Some(std::path::Path::new("/mnt/ledger")), true),
            "agave-validator --ledger /mnt/ledger set-identity --require-tower"
        );
        assert_eq!(
            remote_command(&format!("{t} --require-tower"), None, true)
                .matches("--require-tower")
                .count(),
            1
        );
        assert_eq!(remote_command(t, None, false), t);
    }

    #[test]
    fn batch_mode_and_strict_host_keys_always() {
        let target = SshTarget {
            program: "ssh".into(),
            user: "solana".into(),
            host: "10.0.0.2".into(),
            port: 2222,
            key: "/home/m/.ssh/failover_key".into(),
            known_hosts: Some("/etc/failover/known hosts".into()),
            timeout: Duration::from_secs(10),
        };
        let args = target.args("agave-validator set-identity");
        let joined = args.join(" ");
        assert!(
            joined.contains("BatchMode=yes") && joined.contains("StrictHostKeyChecking=yes"),
            "{joined}"
        );
        assert!(
            joined.contains("UserKnownHostsFile=\"/etc/failover/known hosts\""),
            "{joined}"
        );
        assert_eq!(
            &args[args.len() - 3..],
            ["solana@10.0.0.2", "--", "agave-validator set-identity"]
        );
    }
}
