//! A real etcd for whole-system tests: a single-member etcd 3.4 on loopback ([`EtcdServer`]) or
//! three members forming one cluster ([`EtcdCluster`]), started in a directory the test owns,
//! each with fault hooks (pause, resume, kill) for the manager's store and election tests.
//!
//! It must not bind anything but 127.0.0.1, wait for readiness by sleeping, or signal any process
//! but the one it started: every signal goes to the pid it spawned, and only while that pid is its
//! own unreaped child, so the pid cannot have been reused. Dropping the server stops the process
//! (also when a test panics). The [`process`] module holds what the sshd harness shares with this
//! one.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{self, free_loopback_ports, poll_until, OwnedProcess};

/// The member name, also used in `--initial-cluster`.
const NAME: &str = "failover-test";

/// How long `start` waits for the first healthy answer. etcd usually answers within 100 ms.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one health probe may take while `start` waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Raft timing for a single member on loopback. With the defaults (100 ms / 1 s) etcd takes about
/// a second to elect itself; with these it is healthy in well under 100 ms.
const HEARTBEAT_MS: &str = "10";
const ELECTION_TIMEOUT_MS: &str = "100";

/// A single-member etcd listening on two free loopback ports, stopped when dropped.
pub struct EtcdServer {
    process: OwnedProcess,
    client: SocketAddr,
    data_dir: PathBuf,
}

impl EtcdServer {
    /// Starts etcd with its data in `<dir>/etcd` and its log in `<dir>/etcd.log`, and returns
    /// once `/health` answers `{"health":"true"}`. Errors carry the tail of the log.
    pub async fn start(dir: &Path) -> anyhow::Result<EtcdServer> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let data_dir = dir.join("etcd");
        ensure!(
            !data_dir.exists(),
            "{} already exists: give the harness a fresh directory",
            data_dir.display()
        );
        let mut port_taken = None;
        // Free ports are picked by binding and releasing them, so another process can take one in
        // between; etcd then exits at once, and another pair of ports is tried.
        for _ in 0..process::PORT_ATTEMPTS {
            match Self::start_once(dir).await? {
                Attempt::Ready(server) => return Ok(server),
                Attempt::PortTaken(err) => port_taken = Some(err),
            }
        }
        Err(port_taken.expect("at least one attempt"))
    }

    async fn start_once(dir: &Path) -> anyhow::Result<Attempt> {
        let [client_port, peer_port] = free_loopback_ports::<2>()?;
        let client = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
        let client_url = format!("http://{client}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data_dir = dir.join("etcd");
        // A member registered with other URLs would not start; only a failed attempt of ours
        // can have left one here (`start` checks that the directory is fresh).
        if data_dir.exists() {
            fs::remove_dir_all(&data_dir)
                .with_context(|| format!("remove {} left by a failed start", data_dir.display()))?;
        }

        let command = member_command(Member {
            name: NAME,
            data_dir: &data_dir,
            client: &client_url,
            peer: &peer_url,
            initial_cluster: &format!("{NAME}={peer_url}"),
            token: &format!("{NAME}-{client_port}"),
            timing: (HEARTBEAT_MS, ELECTION_TIMEOUT_MS),
        });
        let process = OwnedProcess::spawn(
            "etcd",
            command,
            &dir.join("etcd.log"),
            "etcd not found: install the Debian package etcd-server",
        )?;

        let ready = poll_until(&process, START_TIMEOUT, || probe_health(client)).await;
        match ready {
            Ok(()) => Ok(Attempt::Ready(EtcdServer {
                process,
                client,
                data_dir,
            })),
            Err(err) if process.exited() && process.log_mentions("address already in use") => {
                Ok(Attempt::PortTaken(err))
            }
            Err(err) => Err(err.context(format!("start etcd on {client_url}"))),
        }
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The client address (the same as [`endpoint`](Self::endpoint), unparsed).
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The pid of the etcd process this harness started.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where etcd keeps its data (`<dir>/etcd`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where etcd's output goes (`<dir>/etcd.log`).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Asks `/health` once. `Ok` only for `{"health":"true"}` within `timeout`; a paused,
    /// killed or unhealthy etcd is an error saying which.
    pub async fn health(&self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, get_health(self.client))
            .await
            .map_err(|_| {
                anyhow!(
                    "etcd at {} did not answer within {timeout:?}",
                    self.endpoint()
                )
            })?
    }

    /// Waits until `/health` answers healthy (after [`resume`](Self::resume), say), polling with
    /// a short backoff; fails at once if the process has exited.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client;
        poll_until(&self.process, timeout, || probe_health(client)).await
    }

    /// Freezes the process (SIGSTOP) and returns once every thread has stopped: connections are
    /// still accepted by the kernel, but nothing answers, as with a hung or partitioned store.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.process.signal("STOP")?;
        self.process.wait_stopped(true)
    }

    /// Lets a paused process run again (SIGCONT) and returns once its threads run; it may take a
    /// moment more to answer (see [`wait_healthy`](Self::wait_healthy)).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.process.signal("CONT")?;
        self.process.wait_stopped(false)
    }

    /// Kills the process at once (SIGKILL) and reaps it, as a crash would. Dropping afterwards
    /// does nothing more.
    pub fn kill(&self) -> anyhow::Result<()> {
        self.process.kill().map(drop)
    }

    /// Stops the process gracefully (SIGTERM, SIGKILL after a short grace) and reaps it; this is
    /// what dropping does, with errors reported instead of printed.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.process.stop().map(drop)
    }
}

/// What one member is started with.
struct Member<'a> {
    name: &'a str,
    data_dir: &'a Path,
    client: &'a str,
    peer: &'a str,
    initial_cluster: &'a str,
    token: &'a str,
    /// Raft's heartbeat interval and election timeout, in ms.
    timing: (&'a str, &'a str),
}

/// The `etcd` command line of one member, on loopback only.
fn member_command(m: Member<'_>) -> Command {
    let mut command = Command::new("etcd");
    command
        .arg("--name")
        .arg(m.name)
        .arg("--data-dir")
        .arg(m.data_dir)
        .args(["--listen-client-urls", m.client])
        .args(["--advertise-client-urls", m.client])
        .args(["--listen-peer-urls", m.peer])
        .args(["--initial-advertise-peer-urls", m.peer])
        .args(["--initial-cluster", m.initial_cluster])
        .args(["--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", m.token])
        .args(["--heartbeat-interval", m.timing.0])
        .args(["--election-timeout", m.timing.1])
        // zap is the structured logger of 3.4 (capnslog, the default, is deprecated); it
        // writes to stderr, which goes to the log file.
        .args([
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "info",
        ]);
    // etcd reads its flags from `ETCD_*` variables too: one left in the environment would
    // apply wherever no flag is given (TLS or auth settings, say).
    // `ETCD_UNSUPPORTED_ARCH` is kept: etcd 3.4 needs it to run on arm64.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("ETCD_") && key != "ETCD_UNSUPPORTED_ARCH" {
            command.env_remove(&*key);
        }
    }
    command
}

/// Raft timing for three members on loopback sharing two cores with a test: slower than a
/// single member's, so that a busy machine does not make them re-elect all the time.
const CLUSTER_HEARTBEAT_MS: &str = "25";
const CLUSTER_ELECTION_TIMEOUT_MS: &str = "500";

/// A three-member etcd cluster on loopback: each member an [`EtcdServer`] with its own fault
/// hooks, so a test can take one away (the cluster keeps its quorum) or two (it loses it).
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts three members with their data in `<dir>/etcd-<i>` and logs in `<dir>/etcd-<i>.log`,
    /// and returns once each answers `/health` healthy (which needs a raft leader).
    pub async fn start(dir: &Path) -> anyhow::Result<EtcdCluster> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut port_taken = None;
        for _ in 0..process::PORT_ATTEMPTS {
            match Self::start_once(dir).await? {
                Ok(cluster) => return Ok(cluster),
                Err(err) => port_taken = Some(err),
            }
        }
        Err(port_taken.expect("at least one attempt"))
    }

    /// `Ok(Err(..))`: a port was taken before a member bound it; the members started are gone.
    async fn start_once(dir: &Path) -> anyhow::Result<anyhow::Result<EtcdCluster>> {
        let ports = free_loopback_ports::<6>()?;
        let name = |i: usize| format!("{NAME}-{i}");
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = (0..3)
            .map(|i| format!("{}={}", name(i), peer(i)))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("{NAME}-cluster-{}", ports[0]);
        let mut members = Vec::new();
        for i in 0..3 {
            let client = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[2 * i]));
            let data_dir = dir.join(format!("etcd-{i}"));
            if data_dir.exists() {
                fs::remove_dir_all(&data_dir).with_context(|| {
                    format!("remove {} left by a failed start", data_dir.display())
                })?;
            }
            let command = member_command(Member {
                name: &name(i),
                data_dir: &data_dir,
                client: &format!("http://{client}"),
                peer: &peer(i),
                initial_cluster: &initial_cluster,
                token: &token,
                timing: (CLUSTER_HEARTBEAT_MS, CLUSTER_ELECTION_TIMEOUT_MS),
            });
            let process = OwnedProcess::spawn(
                "etcd",
                command,
                &dir.join(format!("etcd-{i}.log")),
                "etcd not found: install the Debian package etcd-server",
            )?;
            members.push(EtcdServer {
                process,
                client,
                data_dir,
            });
        }
        for member in &members {
            let client = member.client;
            if let Err(err) =
                poll_until(&member.process, START_TIMEOUT, || probe_health(client)).await
            {
                if members
                    .iter()
                    .any(|m| m.process.exited() && m.process.log_mentions("address already in use"))
                {
                    return Ok(Err(err));
                }
                return Err(err.context(format!("start the etcd member on {client}")));
            }
        }
        Ok(Ok(EtcdCluster { members }))
    }

    /// Every member's client URL, for a client that may use any of them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }
}

enum Attempt {
    Ready(EtcdServer),
    PortTaken(anyhow::Error),
}

#[derive(Deserialize)]
struct Health {
    health: String,
}

/// One health check while waiting for etcd, bounded by [`PROBE_TIMEOUT`].
async fn probe_health(client: SocketAddr) -> anyhow::Result<()> {
    tokio::time::timeout(PROBE_TIMEOUT, get_health(client))
        .await
        .map_err(|_| anyhow!("no answer within {PROBE_TIMEOUT:?}"))?
}

/// One `GET /health`: `Ok` when etcd says `"health":"true"`.
async fn get_health(addr: SocketAddr) -> anyhow::Result<()> {
    let (status, body) = http_get(addr, "/health").await?;
    let text = String::from_utf8_lossy(&body);
    let health: Health = serde_json::from_slice(&body)
        .with_context(|| format!("HTTP {status} with an unexpected body: {text}"))?;
    ensure!(
        status == 200 && health.health == "true",
        "etcd reports itself unhealthy: HTTP {status} {text}"
    );
    Ok(())
}

/// A minimal HTTP/1.1 GET with `Connection: close`; returns the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

/// Splits a complete HTTP/1.1 response (the connection was closed after it) into status and body,
/// honouring `Content-Length` and chunked transfer encoding.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = find(raw, b"\r\n\r\n").context("incomplete HTTP response header")?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP header is not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        ensure!(
            body.len() >= length,
            "HTTP body shorter than its Content-Length"
        );
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = find(rest, b"\r\n").context("truncated chunk size")?;
        let size = std::str::from_utf8(&rest[..end])?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(rest.len() >= size + 2, "truncated chunk");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("boom.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo boom >&2; exit 3"]);
        let process = OwnedProcess::spawn("sh", command, &log, "no sh").unwrap();
        let err = poll_until(&process, Duration::from_secs(10), || async {
            anyhow::Result::<()>::Err(anyhow!("not ready"))
        })
        .await
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("exit status: 3") && err.contains("boom"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_program_gets_the_given_advice() {
        let dir = tempfile::tempdir().unwrap();
        let command = Command::new("/nonexistent/etcd");
        let err = OwnedProcess::spawn("etcd", command, &dir.path().join("log"), "install it")
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "install it");
    }

    #[test]
    fn parses_a_plain_response() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"health\":\"true\"}";
        let (status, body) = parse_response(raw).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"health\":\"true\"}");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\n{\"hea\r\nd;x=y\r\nlth\":\"false\"}\r\n0\r\n\r\n";
        let (status, body) = parse_response(raw).unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, b"{\"health\":\"false\"}");
    }

    #[test]
    fn rejects_a_truncated_response() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }
}
