//! Cutting one node of the loopback cluster off the network with nftables, for the isolation
//! drill. Each node has its own loopback address, so "the server is isolated" is: every packet
//! from or to that address is dropped, and so is the node's connectivity-check target (its uplink
//! to the outside). What stays is what never leaves a real server: the validator's admin socket
//! (a Unix socket) and its RPC port for the agent beside it.
//!
//! Only a table of our own (named after this process) is created, and it is deleted on heal or drop.

use std::process::Command;

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
    /// RPC), and every TCP connection to `uplink_port`.
    pub fn start(ip: &str, own_rpc_port: u16, uplink_port: u16) -> anyhow::Result<Self> {
        let table = format!("failover_drill_{}", std::process::id());
        nft(&format!(
            "add table inet {table}
             add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}
             add rule inet {table} out ip daddr {ip} tcp dport {own_rpc_port} accept
             add rule inet {table} out ip saddr {ip} tcp sport {own_rpc_port} accept
             add rule inet {table} out ip saddr {ip} drop
             add rule inet {table} out ip daddr {ip} drop
             add rule inet {table} out tcp dport {uplink_port} drop
            "
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

impl Drop for Isolation {
    fn drop(&mut self) {
        if !self.healed {
            let _ = nft(&format!("delete table inet {}\n", self.table));
        }
    }
}
