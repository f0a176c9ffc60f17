//! Prometheus for the metrics tests: `promtool check metrics` on an exposition, and a real
//! Prometheus server (Debian's `prometheus` 2.x) on loopback that scrapes the given targets every
//! 500 ms, answers PromQL, and is stopped by its pid when dropped (also when a test panics).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{free_loopback_ports, poll_until, OwnedProcess};

/// How long `start` waits for `/-/ready`. Prometheus is usually ready within a second.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `promtool check metrics` on `text`: `Ok` only when it exits 0 and says nothing (its lint
/// findings — a counter without `_total`, a missing HELP — are errors here).
pub fn promtool_check_metrics(text: &str) -> anyhow::Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "promtool not found: install the Debian package prometheus (scripts/setup test)",
        )?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}",
        out.status
    );
    Ok(())
}

/// Runs `promtool ARGS…` (`check rules F`, `test rules F`): `Ok` with its output when it exits
/// 0, else an error carrying that output.
pub fn promtool(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("promtool").args(args).output().context(
        "promtool not found: install the Debian package prometheus (scripts/setup test)",
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {args:?} ({}): {said}",
        out.status
    );
    Ok(said)
}

/// A Prometheus server scraping fixed targets, stopped when dropped.
pub struct PrometheusServer {
    process: OwnedProcess,
    addr: SocketAddr,
}

impl PrometheusServer {
    /// Starts Prometheus with its config, data and log in `dir`, scraping each job's targets
    /// (`(job name, ["host:port", …])`, path `/metrics`) and evaluating `rule_files` every
    /// 500 ms, and returns once it is ready.
    pub async fn start(
        dir: &Path,
        jobs: &[(&str, Vec<String>)],
        rule_files: &[&Path],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let [port] = free_loopback_ports::<1>()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut yaml = String::from(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  \
             evaluation_interval: 500ms\nrule_files:\n",
        );
        for rules in rule_files {
            yaml += &format!("  - {:?}\n", rules.display().to_string());
        }
        yaml += "scrape_configs:\n";
        for (job, targets) in jobs {
            let list = targets
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            yaml +=
                &format!("  - job_name: {job}\n    static_configs:\n      - targets: [{list}]\n");
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, yaml)?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let process = OwnedProcess::spawn(
            "prometheus",
            command,
            &dir.join("prometheus.log"),
            "prometheus not found: install the Debian package prometheus (scripts/setup test)",
        )?;
        poll_until(&process, START_TIMEOUT, || async {
            let (status, _) = http_get(addr, "/-/ready").await?;
            ensure!(status == 200, "/-/ready answered {status}");
            Ok(())
        })
        .await
        .with_context(|| format!("start prometheus on {addr}"))?;
        Ok(Self { process, addr })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// An instant PromQL query: the `data.result` array.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .await
            .with_context(|| format!("query {promql}"))?;
        data["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("query {promql}: no result array in {data}"))
    }

    /// The `data` of a successful answer of the HTTP API at `path` (`/api/v1/rules`, …).
    pub async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = http_get(self.addr, path).await?;
        let mut answer: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))?;
        ensure!(answer["status"] == "success", "{path}: {answer}");
        Ok(answer["data"].take())
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET (so the answer is never chunked); the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| anyhow!("no full answer from {addr} within 5 s"))??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer from {addr}"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status line in the answer from {addr}: {head}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}
