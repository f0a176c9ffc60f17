//! The agent's Prometheus metrics, served at `GET /metrics` on its own listener: no signature (a
//! scrape changes nothing), the listener's `allowed_ips` still applies. Counters are bumped where
//! things happen; the gauges that mirror state are set at scrape time from memory, so a scrape
//! never waits for the validator.
//!
//! Every label value comes from a closed set (matched routes, status codes, step and phase names,
//! fence outcomes): nobody can grow the families by sending odd requests.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::encode`] writes (Prometheus text format 0.0.4).
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/status`, `/failover`, …).
    pub path: String,
    /// The HTTP status answered.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `become_active` or `become_passive`.
    pub step: String,
    /// `ok` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub step: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FenceLabels {
    /// The watchdog's outcome (`stayed_active`, `demoted`, `paused`, `killed`, `fence_failed`,
    /// `dry_run`).
    pub outcome: String,
}

/// A gauge in seconds. Shared with the manager's metrics, like the two functions below.
pub type Seconds = Gauge<f64, AtomicU64>;

/// Switch phases take milliseconds to a minute: 5 ms doubling to about 82 s.
pub fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The exposition text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub steps: Family<StepLabels, Counter>,
    pub phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub fences: Family<FenceLabels, Counter>,
    pub term: Gauge,
    /// 1 while the validator last answered with the staked identity, 0 with another, -1 unknown.
    pub holds_staked_identity: Gauge,
    pub validator_slot: Gauge,
    pub since_lease_renewal: Seconds,
    pub lease_expired: Gauge,
    pub fence_after: Seconds,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("failover_agent");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests to the agent's routes, by route and status code",
            requests.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "switch_steps",
            "Switch steps (become_active, become_passive) run here, by outcome",
            steps.clone(),
        );
        let phases: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(phase_histogram);
        registry.register(
            "switch_phase_duration_seconds",
            "How long each phase of a switch step took here",
            phases.clone(),
        );
        let fences = Family::<FenceLabels, Counter>::default();
        registry.register(
            "fence_decisions",
            "The watchdog's decisions after its lease expired, by outcome",
            fences.clone(),
        );
        let term = Gauge::default();
        registry.register(
            "term",
            "The newest fencing term this agent accepted",
            term.clone(),
        );
        let holds_staked_identity = Gauge::default();
        holds_staked_identity.set(-1);
        registry.register(
            "holds_staked_identity",
            "1 while the validator last answered with the staked identity, 0 with another, -1 unknown",
            holds_staked_identity.clone(),
        );
        let validator_slot = Gauge::default();
        registry.register(
            "validator_slot",
            "The slot the validator last reported",
            validator_slot.clone(),
        );
        let since_lease_renewal = Seconds::default();
        registry.register(
            "seconds_since_lease_renewal",
            "Seconds since a heartbeat the manager acknowledged last renewed the lease",
            since_lease_renewal.clone(),
        );
        let lease_expired = Gauge::default();
        registry.register(
            "lease_expired",
            "1 while the manager's lease has expired (the watchdog is judging), else 0",
            lease_expired.clone(),
        );
        let fence_after = Seconds::default();
        registry.register(
            "fence_after_seconds",
            "The published bound: an active without evidence has stopped voting this long after \
             the manager last heard it",
            fence_after.clone(),
        );
        Self {
            registry,
            requests,
            steps,
            phases,
            fences,
            term,
            holds_staked_identity,
            validator_slot,
            since_lease_renewal,
            lease_expired,
            fence_after,
        }
    }

    /// Counts one answered request on a matched route.
    pub fn request(&self, path: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                path: path.into(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Records a finished switch step and its phases.
    pub fn step(&self, step: &str, ok: bool, phases: &[crate::api::Phase]) {
        let outcome = if ok { "ok" } else { "failed" };
        self.steps
            .get_or_create(&StepLabels {
                step: step.into(),
                outcome: outcome.into(),
            })
            .inc();
        for phase in phases {
            self.phases
                .get_or_create(&PhaseLabels {
                    step: step.into(),
                    phase: phase.name.clone(),
                })
                .observe(phase.ms as f64 / 1000.0);
        }
    }

    /// Counts a watchdog decision.
    pub fn fence(&self, outcome: &str) {
        self.fences
            .get_or_create(&FenceLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}
