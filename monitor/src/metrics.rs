//! The manager's Prometheus metrics, served at `GET /metrics` on `metrics_listen_addr` (off
//! unless configured). Gauges mirror the last heartbeat's view; counters and histograms are
//! bumped where switches, holds and cluster RPC requests happen. Label values come from closed
//! sets (the configured node names, roles, phase names, hold kinds, RPC methods).

use std::sync::Arc;

use failover_agent::metrics::{phase_histogram as seconds_histogram, Seconds, CONTENT_TYPE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::engine::Hold;
use crate::observer::Sample;
use crate::switch::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub node: String,
    /// `active`, `passive` or `unknown` (no answer, or its identity unreadable).
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwitchLabels {
    pub reason: String,
    /// `ok`, `failed`, `rolled_back` or `dry_run`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabels {
    pub hold: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
}

const ROLES: [&str; 3] = ["active", "passive", "unknown"];

pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
    term: Gauge,
    role: Family<RoleLabels, Gauge>,
    up: Family<NodeLabels, Gauge>,
    misses: Family<NodeLabels, Gauge>,
    last_contact_age: Family<NodeLabels, Seconds>,
    slot: Family<NodeLabels, Gauge>,
    lag: Family<NodeLabels, Gauge>,
    promotable: Family<NodeLabels, Gauge>,
    tip: Gauge,
    last_vote: Gauge,
    vote_lag: Gauge,
    switches: Family<SwitchLabels, Counter>,
    phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    switch_duration: Histogram,
    holds: Family<HoldLabels, Counter>,
    rpc: Family<RpcLabels, Counter>,
}

impl Metrics {
    /// The metrics of a manager watching the nodes named `names` (validator1, validator2, …).
    pub fn new(names: Vec<String>, notifications: crate::notify::Deliveries) -> Self {
        let mut r = Registry::with_prefix("failover_manager");
        r.register(
            "notifications",
            "Notifications by target and outcome (delivered, rejected, gave_up, dropped)",
            notifications,
        );
        let term = Gauge::default();
        r.register("term", "The manager's fencing term", term.clone());
        let role = Family::<RoleLabels, Gauge>::default();
        r.register(
            "node_role",
            "1 for the role each node has now (active holds the staked identity), 0 for the others",
            role.clone(),
        );
        let up = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_up",
            "1 when the node's agent answered the last heartbeat",
            up.clone(),
        );
        let misses = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_heartbeat_misses",
            "Heartbeats in a row the node's agent did not answer",
            misses.clone(),
        );
        let last_contact_age = Family::<NodeLabels, Seconds>::default();
        r.register(
            "node_seconds_since_answer",
            "Seconds since the node's agent last answered a heartbeat",
            last_contact_age.clone(),
        );
        let slot = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_slot",
            "The slot the node's validator last reported",
            slot.clone(),
        );
        let lag = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_lag_slots",
            "How far the node's validator is behind the cluster's tip",
            lag.clone(),
        );
        let promotable = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_promotable",
            "1 when the node's agent says it could take the staked identity now",
            promotable.clone(),
        );
        let tip = Gauge::default();
        r.register("cluster_tip_slot", "The cluster's tip slot", tip.clone());
        let last_vote = Gauge::default();
        r.register(
            "vote_account_last_vote_slot",
            "The last vote the cluster shows for the staked identity's vote account",
            last_vote.clone(),
        );
        let vote_lag = Gauge::default();
        r.register(
            "vote_account_lag_slots",
            "Slots between the cluster's tip and the vote account's last vote",
            vote_lag.clone(),
        );
        let switches = Family::<SwitchLabels, Counter>::default();
        r.register(
            "switches",
            "Switches of the staked identity, by reason and outcome",
            switches.clone(),
        );
        let phases: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        r.register(
            "switch_phase_duration_seconds",
            "How long each phase of a switch took, as the manager saw it",
            phases.clone(),
        );
        let switch_duration = seconds_histogram();
        r.register(
            "switch_duration_seconds",
            "How long whole switches took",
            switch_duration.clone(),
        );
        let holds = Family::<HoldLabels, Counter>::default();
        r.register(
            "holds",
            "Heartbeats on which a wanted switch was held back, by why",
            holds.clone(),
        );
        let rpc = Family::<RpcLabels, Counter>::default();
        r.register(
            "cluster_rpc_requests",
            "Requests to cluster_rpc, by method",
            rpc.clone(),
        );
        Self {
            registry: r,
            names,
            term,
            role,
            up,
            misses,
            last_contact_age,
            slot,
            lag,
            promotable,
            tip,
            last_vote,
            vote_lag,
            switches,
            phases,
            switch_duration,
            holds,
            rpc,
        }
    }

    fn node(&self, i: usize) -> NodeLabels {
        NodeLabels {
            node: self.names[i].clone(),
        }
    }

    /// Mirrors one heartbeat's view.
    pub fn sampled(&self, sample: &Sample, term: u64) {
        self.term.set(term as i64);
        let view = &sample.view;
        if let Some(tip) = view.tip {
            self.tip.set(tip as i64);
        }
        if let Some(vote) = view.last_vote {
            self.last_vote.set(vote as i64);
            if let Some(tip) = view.tip {
                self.vote_lag.set(tip.saturating_sub(vote) as i64);
            }
        }
        for (i, node) in view.nodes.iter().enumerate() {
            let labels = self.node(i);
            let answered = sample.statuses[i].is_some();
            self.up.get_or_create(&labels).set(i64::from(answered));
            self.misses
                .get_or_create(&labels)
                .set(i64::from(node.misses));
            if let Some(at) = node.last_answer {
                self.last_contact_age
                    .get_or_create(&labels)
                    .set(view.now.saturating_sub(at).as_secs_f64());
            }
            let report = node.report.as_ref().filter(|_| answered);
            let role = match report.and_then(|r| r.holds_staked) {
                Some(true) => "active",
                Some(false) => "passive",
                None => "unknown",
            };
            for r in ROLES {
                self.role
                    .get_or_create(&RoleLabels {
                        node: labels.node.clone(),
                        role: r.into(),
                    })
                    .set(i64::from(r == role));
            }
            if let Some(slot) = report.and_then(|r| r.slot) {
                self.slot.get_or_create(&labels).set(slot as i64);
                if let Some(tip) = view.tip {
                    self.lag
                        .get_or_create(&labels)
                        .set(tip.saturating_sub(slot) as i64);
                }
            }
            self.promotable.get_or_create(&labels).set(i64::from(
                report.is_some_and(|r| r.healthy && r.not_promotable.is_none()),
            ));
        }
    }

    /// Records a finished switch (or dry run) and its phases; `reason` is a
    /// [`crate::engine::Reason::label`] or `planned`.
    pub fn switched(&self, outcome: &Outcome, reason: &'static str) {
        let result = if outcome.dry_run {
            "dry_run"
        } else if outcome.ok {
            "ok"
        } else if outcome.rolled_back {
            "rolled_back"
        } else {
            "failed"
        };
        self.switches
            .get_or_create(&SwitchLabels {
                reason: reason.into(),
                outcome: result.into(),
            })
            .inc();
        if outcome.dry_run {
            return;
        }
        self.switch_duration
            .observe(outcome.total_ms as f64 / 1000.0);
        for phase in &outcome.phases {
            self.phases
                .get_or_create(&PhaseLabels {
                    phase: phase.name.clone(),
                })
                .observe(phase.ms as f64 / 1000.0);
        }
    }

    /// Counts a heartbeat on which `hold` kept a wanted switch back.
    pub fn held(&self, hold: &Hold) {
        self.holds
            .get_or_create(&HoldLabels {
                hold: hold_kind(hold).into(),
            })
            .inc();
    }

    /// Counts one request to the cluster's RPC.
    pub fn rpc(&self, method: &'static str) {
        self.rpc
            .get_or_create(&RpcLabels {
                method: method.into(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        failover_agent::metrics::encode(&self.registry)
    }
}

fn hold_kind(hold: &Hold) -> &'static str {
    match hold {
        Hold::ViewIncomplete => "view_incomplete",
        Hold::Cooldown { .. } => "cooldown",
        Hold::PassiveUnreachable => "passive_unreachable",
        Hold::PassiveDown => "passive_down",
        Hold::PassiveUnhealthy => "passive_unhealthy",
        Hold::PassiveLagging { .. } => "passive_lagging",
        Hold::PassiveNotPromotable { .. } => "passive_not_promotable",
        Hold::StartupGrace { .. } => "startup_grace",
        Hold::MigrationWindow { .. } => "migration_window",
        Hold::OldActiveStillVoting => "old_active_still_voting",
        Hold::AwaitingFence { .. } => "awaiting_fence",
        Hold::NoVoteEvidence => "no_vote_evidence",
        Hold::AwaitingLockouts { .. } => "awaiting_lockouts",
        Hold::BothActive => "both_active",
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "Prometheus metrics at /metrics");
    }
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the metrics listener stopped");
    }
}
