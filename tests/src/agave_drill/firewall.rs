//! Cutting one node of the loopback cluster off the network with nftables, for the isolation
//! drill. Each node has its own loopback address, so "the server is isolated" is: every packet
//! from or to that address is dropped, and so is the node's connectivity-check target (its uplink
//! to the outside). What stays is what never leaves a real server: the validator's admin socket
//! (a Unix socket) and its RPC port for the agent beside it.
//!
//! Only a table of our own (named after this process) is created, and it is deleted on heal or drop.
//! A drill killed before either (SIGKILL, a machine restart) must not leave a node cut off for
//! every later test: each rule stops matching at a deadline (`meta time`), and every start deletes
//! the tables of drills whose process is gone.

use std::process::Command;
use std::time::{Duration, SystemTime};

const TABLE_PREFIX: &str = "failover_drill_";

/// An active isolation; healed by [`Isolation::heal`] or when dropped.
pub(super) struct Isolation {
    table: String,
    healed: bool,
}

fn nft(script: &str) -> anyhow::Result<()> {
    let out = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .map_err(|e| anyhow::anyhow!("cannot run nft: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Isolation {
    /// Whether this machine lets us filter loopback traffic (nft present, nf_tables usable).
    pub fn available() -> Result<(), String> {
        let probe = format!("failover_drill_probe_{}", std::process::id());
        nft(&format!(
            "add table inet {probe}\ndelete table inet {probe}\n"
        ))
        .map_err(|e| e.to_string())
    }

    /// Drops everything from or to `ip` except TCP on `own_rpc_port` (the agent's own validator
    /// RPC), and every TCP connection to `uplink_port`, for at most `longest`.
    pub fn start(
        ip: &str,
        own_rpc_port: u16,
        uplink_port: u16,
        longest: Duration,
    ) -> anyhow::Result<Self> {
        sweep_orphans();
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        let until = local_time(SystemTime::now() + longest)?;
        let rule = |r: &str| format!("add rule inet {table} out meta time < \"{until}\" {r}\n");
        nft(&format!(
            "add table inet {table}
             add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}
             {}{}{}{}{}",
            rule(&format!("ip daddr {ip} tcp dport {own_rpc_port} accept")),
            rule(&format!("ip saddr {ip} tcp sport {own_rpc_port} accept")),
            rule(&format!("ip saddr {ip} drop")),
            rule(&format!("ip daddr {ip} drop")),
            rule(&format!("tcp dport {uplink_port} drop")),
        ))?;
        Ok(Self {
            table,
            healed: false,
        })
    }

    /// Lets the node talk again.
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.healed = true;
        nft(&format!("delete table inet {}\n", self.table))
    }
}

/// `at` as nft reads a `meta time` string: local time, to the second (`date` knows the zone).
fn local_time(at: SystemTime) -> anyhow::Result<String> {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
    let out = Command::new("date")
        .args([format!("--date=@{secs}"), "+%Y-%m-%d %H:%M:%S".to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run date: {e}"))?;
    anyhow::ensure!(out.status.success(), "date failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Deletes the isolation tables of drill processes that no longer run (killed before they
/// healed). Tables of running drills, and every other table, are left alone.
fn sweep_orphans() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet ") else {
            continue;
        };
        let Some(pid) = name.strip_prefix(TABLE_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            eprintln!("deleting nftables table {name}: left by a drill that no longer runs");
            let _ = nft(&format!("delete table inet {name}\n"));
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        if !self.healed {
            let _ = nft(&format!("delete table inet {}\n", self.table));
        }
    }
}
