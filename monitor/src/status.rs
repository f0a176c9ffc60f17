//! `failover-manager status`: what an operator asks first — who holds the staked identity, can the
//! other take over, how far behind is everyone, what happened last and what is being held back.
//! One [`StatusReport`], printed as a table for people or as JSON for scripts; a running manager
//! answers it from its last heartbeat over the control socket, otherwise the command observes
//! once itself.

use serde::{Deserialize, Serialize};

use crate::switch::Outcome;

/// Where the last switch's outcome is kept in the state dir, for a status without a manager.
pub const LAST_SWITCH_FILE: &str = "last-switch.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// `running manager` (its last heartbeat) or `this command` (one observation, no manager runs
    /// on this state dir).
    pub source: String,
    pub term: u64,
    pub nodes: Vec<NodeStatus>,
    pub cluster: ClusterStatus,
    /// The last switch (not dry runs), with its phases.
    pub last_switch: Option<Outcome>,
    /// What the running manager held back on its last heartbeat, each with why.
    pub holds: Vec<String>,
    /// With an `election`: who leads and who stands by, as etcd last told the answering manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managers: Option<Managers>,
}

/// The managers of an `election`, from their registrations in etcd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Managers {
    /// The manager that answered.
    pub me: String,
    /// `None`: nobody holds the leader key (an election under way, or etcd without quorum).
    pub leader: Option<String>,
    /// Every other registered manager, in name order.
    pub followers: Vec<String>,
    /// `false`: etcd has not answered within a lease; the names are its last answer.
    pub current: bool,
}

impl Managers {
    /// One line for the table.
    pub fn line(&self) -> String {
        let this = |name: &str| {
            if name == self.me {
                format!("{name} (this one)")
            } else {
                name.to_string()
            }
        };
        let followers = if self.followers.is_empty() {
            "none".to_string()
        } else {
            self.followers
                .iter()
                .map(|f| this(f))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "managers: leader {}; followers {followers}{}\n",
            self.leader.as_deref().map_or("NONE".to_string(), this),
            if self.current {
                ""
            } else {
                " (etcd not answering: its last answer)"
            }
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `validator1 (10.0.0.1)`.
    pub name: String,
    pub endpoint: String,
    /// Whether its agent answered the last heartbeat.
    pub reachable: bool,
    pub error: Option<String>,
    /// `active`, `passive` or `unknown`.
    pub role: String,
    pub identity: Option<String>,
    pub slot: Option<u64>,
    /// Slots behind the cluster's tip.
    pub lag: Option<u64>,
    /// The last vote in its vote-state file (tower or vote history).
    pub last_vote: Option<u64>,
    pub health: Option<String>,
    pub process_running: Option<bool>,
    /// Whether it could take the staked identity now; `not_promotable` says why not.
    pub promotable: bool,
    pub not_promotable: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `TowerBFT`, `Alpenglow (genesis slot N)`, …
    pub consensus: String,
    pub tip: Option<u64>,
    /// The vote account's last vote, and how far it trails the tip.
    pub last_vote: Option<u64>,
    pub vote_lag: Option<u64>,
    /// A vote lag above this counts as "not voting".
    pub stale_above: u64,
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl StatusReport {
    /// The table for people.
    pub fn table(&self) -> String {
        let mut out = format!("term {} (from the {})\n", self.term, self.source);
        if let Some(managers) = &self.managers {
            out += &managers.line();
        }
        let c = &self.cluster;
        out += &format!(
            "cluster: {}; tip {}, vote account last vote {} (lag {}, stale above {} slots)\n\n",
            c.consensus,
            or_dash(c.tip),
            or_dash(c.last_vote),
            or_dash(c.vote_lag),
            c.stale_above
        );
        let header = [
            "NODE",
            "ROLE",
            "IDENTITY",
            "SLOT",
            "LAG",
            "LAST VOTE",
            "HEALTH",
            "PROCESS",
            "PROMOTABLE",
        ];
        let rows: Vec<[String; 9]> = self
            .nodes
            .iter()
            .map(|n| {
                [
                    n.name.clone(),
                    if n.reachable {
                        n.role.clone()
                    } else {
                        "UNREACHABLE".into()
                    },
                    n.identity.clone().unwrap_or_else(|| "-".into()),
                    or_dash(n.slot),
                    or_dash(n.lag),
                    or_dash(n.last_vote),
                    n.health.clone().unwrap_or_else(|| "-".into()),
                    match n.process_running {
                        Some(true) => "running".into(),
                        Some(false) => "NOT running".into(),
                        None => "-".into(),
                    },
                    if n.promotable {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l += cell;
                } else {
                    l += &format!("{cell:<w$}  ", w = widths[i]);
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out += &line(header.to_vec());
        for (row, node) in rows.iter().zip(&self.nodes) {
            out += &line(row.iter().map(String::as_str).collect());
            if let Some(e) = node.error.as_deref().filter(|_| !node.reachable) {
                out += &format!("  {}: {e}\n", node.name);
            }
            if let Some(why) = &node.not_promotable {
                out += &format!("  {}: NOT PROMOTABLE: {why}\n", node.name);
            }
        }
        out += "\n";
        match &self.last_switch {
            Some(s) => {
                out += &format!("last switch: {}\n", s.summary());
                for p in &s.phases {
                    out += &format!("  {:<22} {:>7} ms  {}\n", p.name, p.ms, p.detail);
                }
            }
            None => out += "last switch: none recorded\n",
        }
        if self.holds.is_empty() {
            out += "holds: none\n";
        } else {
            out += "holds:\n";
            for h in &self.holds {
                out += &format!("  {h}\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, promotable: bool) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            endpoint: "http://10.0.0.1:8080".into(),
            reachable: true,
            error: None,
            role: role.into(),
            identity: Some("361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg".into()),
            slot: Some(1200),
            lag: Some(2),
            last_vote: Some(1190),
            health: Some("healthy".into()),
            process_running: Some(true),
            promotable,
            not_promotable: (!promotable).then(|| "staked keypair missing".into()),
        }
    }

    #[test]
    fn the_table_aligns_its_columns_and_says_why_a_node_is_not_promotable() {
        let mut passive = node("validator2 (10.0.0.2)", "passive", false);
        passive.reachable = false;
        passive.error = Some("connection refused".into());
        let report = StatusReport {
            source: "running manager".into(),
            term: 7,
            nodes: vec![node("validator1 (10.0.0.1)", "active", true), passive],
            cluster: ClusterStatus {
                consensus: "TowerBFT".into(),
                tip: Some(1202),
                last_vote: Some(1199),
                vote_lag: Some(3),
                stale_above: 8,
            },
            last_switch: None,
            holds: vec!["no failover: the passive is unreachable".into()],
            managers: Some(Managers {
                me: "m2 pid 7".into(),
                leader: Some("m1 pid 3".into()),
                followers: vec!["m2 pid 7".into(), "m3 pid 9".into()],
                current: true,
            }),
        };
        let table = report.table();
        assert!(
            table.contains("managers: leader m1 pid 3; followers m2 pid 7 (this one), m3 pid 9\n"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("NODE")).unwrap();
        let role_at = lines[header].find("ROLE").unwrap();
        assert_eq!(lines[header + 1].find("active"), Some(role_at), "{table}");
        assert_eq!(
            lines[header + 2].find("UNREACHABLE"),
            Some(role_at),
            "{table}"
        );
        assert!(
            table.contains("validator2 (10.0.0.2): connection refused"),
            "{table}"
        );
        assert!(
            table.contains("NOT PROMOTABLE: staked keypair missing"),
            "{table}"
        );
        assert!(table.contains("holds:\n  no failover: the passive is unreachable"));
        assert!(table.contains("last switch: none recorded"));
        // And the JSON form reads back as the same report.
        let json = serde_json::to_string(&report).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.table(), table);
    }
}
