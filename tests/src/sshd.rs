//! A real OpenSSH server for whole-system tests: `sshd` on loopback with its own host key, one
//! authorized client key and a known_hosts file pinning the host key, all in a directory the test
//! owns, so that code running commands over ssh can be tested against the real thing.
//!
//! It must not bind anything but 127.0.0.1, read or change the system's ssh configuration or keys
//! (only `/run/sshd`, which sshd insists on, is created if missing), wait for readiness by
//! sleeping, or signal any process but the one it started. Dropping the server stops that process
//! by its pid (also when a test panics); sessions already running are left to finish and are never
//! signalled.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::process::{free_loopback_ports, poll_until, OwnedProcess, PORT_ATTEMPTS};

/// sshd re-executes itself for each connection and so must be started by its absolute path.
const SSHD: &str = "/usr/sbin/sshd";

/// The host `sshd` listens on.
const HOST: &str = "127.0.0.1";

/// sshd's privilege separation directory; it refuses to start as root without it.
const PRIVSEP_DIR: &str = "/run/sshd";

/// How long `start` waits for the banner.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one banner probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The line that turns off OpenSSH 9.8's per-source penalties. Every test connects from
/// 127.0.0.1, and readiness probes and deliberately failed logins would otherwise get that
/// address refused for a while. Older sshd rejects the option, so it is only written when
/// `sshd -t` accepts it.
const NO_PENALTIES: &str = "PerSourcePenalties no";

/// An `sshd` on a free loopback port that accepts one client key, stopped when dropped.
pub struct SshServer {
    process: OwnedProcess,
    dir: PathBuf,
    port: u16,
    user: String,
    host_public_key_line: String,
}

impl SshServer {
    /// Writes keys, `authorized_keys`, `known_hosts` and `sshd_config` into `dir` (which must
    /// not already hold them), starts `sshd -D -e` with its log in `<dir>/sshd.log`, and returns
    /// once the port answers with an `SSH-2.0-` banner. Errors carry the tail of the log.
    pub async fn start(dir: &Path) -> anyhow::Result<SshServer> {
        ensure!(
            Path::new(SSHD).exists(),
            "sshd not found at {SSHD}: install the Debian package openssh-server"
        );
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = dir.to_path_buf();

        let host_key = dir.join("ssh_host_ed25519_key");
        generate_key(&host_key, "failover-test-host")?;
        let client_key = dir.join("client_key");
        generate_key(&client_key, "failover-test-client")?;
        fs::set_permissions(&client_key, fs::Permissions::from_mode(0o600))?;
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .context("write authorized_keys")?;
        let host_public_key_line = public_key_line(&host_key.with_extension("pub"))?;
        let user = current_user()?;
        ensure_privsep_dir();

        let mut port_taken = None;
        let mut penalties = true;
        for attempt in 0..PORT_ATTEMPTS {
            let [port] = free_loopback_ports::<1>()?;
            let config = dir.join("sshd_config");
            fs::write(&config, sshd_config(&dir, port, penalties))
                .with_context(|| format!("write {}", config.display()))?;
            if attempt == 0 {
                penalties = check_config(&dir, port)?;
            }
            fs::write(
                dir.join("known_hosts"),
                format!("[{HOST}]:{port} {host_public_key_line}\n"),
            )
            .context("write known_hosts")?;

            let mut command = Command::new(SSHD);
            command.arg("-D").arg("-e").arg("-f").arg(&config);
            let process = OwnedProcess::spawn(
                "sshd",
                command,
                &dir.join("sshd.log"),
                "sshd not found: install the Debian package openssh-server",
            )?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match poll_until(&process, START_TIMEOUT, || read_banner(addr)).await {
                Ok(()) => {
                    return Ok(SshServer {
                        process,
                        dir,
                        port,
                        user,
                        host_public_key_line,
                    })
                }
                Err(err) if process.exited() && process.log_mentions("address already in use") => {
                    port_taken = Some(err)
                }
                Err(err) => return Err(err.context(format!("start sshd on {addr}"))),
            }
        }
        Err(port_taken.expect("at least one attempt"))
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host sshd listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The user whose login the client key opens: the user running the tests.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The authorized client's private key (mode 0600); its public half is `<key>.pub`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// A known_hosts file holding exactly this server's host key, as `[127.0.0.1]:<port> <key>`,
    /// so that a client can check the host key strictly.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The host's public key as `ssh-ed25519 AAAA…` (no comment).
    pub fn host_public_key_line(&self) -> &str {
        &self.host_public_key_line
    }

    /// The pid of the sshd process this harness started (the listener, not the sessions).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where sshd's log goes (`<dir>/sshd.log`, `LogLevel VERBOSE`).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Stops sshd gracefully (SIGTERM, SIGKILL after a short grace) and reaps it; this is what
    /// dropping does, with errors reported instead of printed.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.process.stop().map(drop)
    }

    /// `ssh` set up to log in with the client key and to check the host key strictly against
    /// [`known_hosts`](Self::known_hosts); append the remote command.
    pub fn ssh_command(&self) -> Command {
        self.ssh_command_with(&self.client_key(), &self.known_hosts())
    }

    /// [`ssh_command`](Self::ssh_command) with another key or known_hosts file, for tests of
    /// what must be refused.
    pub fn ssh_command_with(&self, key: &Path, known_hosts: &Path) -> Command {
        let mut command = Command::new("ssh");
        // `-F /dev/null` keeps the user's and the system's client configuration out of it.
        command
            .args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            // Quoted: ssh splits this option's value into several files at spaces.
            .arg("-o")
            .arg(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "UpdateHostKeys=no"])
            .args(["-o", "ConnectTimeout=10"])
            .arg(format!("{}@{HOST}", self.user))
            .stdin(Stdio::null());
        command
    }
}

/// The configuration sshd runs with; nothing is inherited from `/etc/ssh`. Paths are quoted
/// because `AuthorizedKeysFile` would take a path with a space for two files.
fn sshd_config(dir: &Path, port: u16, penalties: bool) -> String {
    let dir = dir.display();
    let mut config = format!(
        "ListenAddress {HOST}\n\
         Port {port}\n\
         HostKey \"{dir}/ssh_host_ed25519_key\"\n\
         AuthorizedKeysFile \"{dir}/authorized_keys\"\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PidFile \"{dir}/sshd.pid\"\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         LogLevel VERBOSE\n"
    );
    if penalties {
        config.push_str(NO_PENALTIES);
        config.push('\n');
    }
    config
}

/// Checks the written configuration with `sshd -t`. Returns whether it may keep
/// [`NO_PENALTIES`]: when this sshd predates the option, the file is rewritten without it and
/// checked again.
fn check_config(dir: &Path, port: u16) -> anyhow::Result<bool> {
    let config = dir.join("sshd_config");
    let test = || {
        Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .context("run sshd -t")
    };
    let output = test()?;
    if output.status.success() {
        return Ok(true);
    }
    let mut complaint = String::from_utf8_lossy(&output.stderr).into_owned();
    if complaint.contains("Bad configuration option: PerSourcePenalties") {
        fs::write(&config, sshd_config(dir, port, false))?;
        let output = test()?;
        if output.status.success() {
            return Ok(false);
        }
        complaint = String::from_utf8_lossy(&output.stderr).into_owned();
    }
    bail!("sshd rejects {}: {}", config.display(), complaint.trim())
}

/// Creates an ed25519 key pair without passphrase at `path` and `path.pub`.
fn generate_key(path: &Path, comment: &str) -> anyhow::Result<()> {
    ensure!(
        !path.exists(),
        "{} already exists: give the harness a fresh directory",
        path.display()
    );
    let output = Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("ssh-keygen not found: install the Debian package openssh-client")
        }
        Err(e) => return Err(e).context("run ssh-keygen"),
    };
    ensure!(
        output.status.success(),
        "ssh-keygen for {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The `<type> <base64>` part of a public key file, without its comment.
fn public_key_line(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => bail!("{} is not a public key", path.display()),
    }
}

/// The name of the user running the tests: `id -un`, else `$USER`.
fn current_user() -> anyhow::Result<String> {
    if let Ok(output) = Command::new("id").arg("-un").stdin(Stdio::null()).output() {
        let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !name.is_empty() {
            return Ok(name);
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|name| !name.is_empty())
        .context("cannot tell the current user: `id -un` failed and USER is not set")
}

/// sshd running as root refuses to start without its privilege separation directory, which
/// containers often lack (the Debian service creates it at boot). Creating it needs root; when
/// that fails, `sshd -t` reports the missing directory.
fn ensure_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if !dir.exists() && fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// Connects once and reads the server's identification line; `Ok` if it is `SSH-2.0-…`.
async fn read_banner(addr: SocketAddr) -> anyhow::Result<()> {
    let banner = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut banner = Vec::new();
        let mut byte = [0u8; 1];
        // The identification line is at most 255 bytes and ends with CR LF.
        while banner.len() < 255 && stream.read(&mut byte).await? == 1 {
            banner.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        anyhow::Ok(banner)
    })
    .await
    .context("no banner in time")??;
    ensure!(
        banner.starts_with(b"SSH-2.0-"),
        "unexpected banner {:?}",
        String::from_utf8_lossy(&banner)
    );
    Ok(())
}
