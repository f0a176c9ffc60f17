//! Self-fencing, as the reference design does it: when the active agent has heard nothing from the
//! manager for `manager_timeout`, it tries to reach the outside (the connectivity targets); if
//! `connectivity_failures_to_fence` or more are unreachable, this server is presumably the isolated
//! one, so it demotes its validator (the same safe become_passive). If the outside is reachable, the
//! manager is the one in trouble and the validator keeps voting. Either way it is logged once per
//! silence and reported in `/status`.

use std::sync::Arc;
use std::time::Duration;

use failover_config::HostPort;
use tokio::net::TcpStream;
use tracing::{error, info, warn};

use crate::agent::{unix_ms, Agent};
use crate::api::FenceReport;

/// How often the watchdog looks.
pub(crate) fn period(cfg: &failover_config::AgentConfig) -> Duration {
    (cfg.manager_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs until aborted.
pub async fn run(agent: Arc<Agent>) {
    let period = period(&agent.cfg);
    // One decision per silence: reset when the manager is heard again.
    let mut handled_silence = false;
    loop {
        tokio::time::sleep(period).await;
        let silent_for = agent
            .last_manager_contact
            .lock()
            .expect("contact")
            .elapsed();
        if silent_for < agent.cfg.manager_timeout {
            handled_silence = false;
            continue;
        }
        if handled_silence {
            continue;
        }
        match agent.validator.identity().await {
            Ok(id) if id == agent.staked() => {}
            // Passive (or unreadable): nothing to fence.
            _ => continue,
        }
        handled_silence = true;
        let unreachable = unreachable_targets(
            &agent.cfg.connectivity.targets,
            agent.cfg.connectivity.timeout,
        )
        .await;
        let reason = format!(
            "no manager contact for {} s; {} of {} connectivity targets unreachable",
            silent_for.as_secs(),
            unreachable.len(),
            agent.cfg.connectivity.targets.len()
        );
        let outcome = if unreachable.len() >= agent.cfg.connectivity.failures_to_fence {
            warn!(
                %reason,
                unreachable = unreachable.join(", "),
                "isolated: demoting myself so the other server can take over"
            );
            let term = agent.term().await;
            let response = agent
                .become_passive(
                    term,
                    "self-fence: isolated from the manager and the outside",
                )
                .await;
            if response.ok {
                "demoted"
            } else {
                error!(
                    error = response.error.as_deref().unwrap_or("unknown"),
                    "self-fencing demotion failed"
                );
                "demotion_failed"
            }
        } else {
            info!(%reason, "manager silent but the outside is reachable: staying active");
            "stayed_active"
        };
        agent.last_fence.send_replace(Some(FenceReport {
            at_ms: unix_ms(),
            reason,
            outcome: outcome.into(),
            unreachable_targets: unreachable,
        }));
    }
}

/// Tries each target concurrently; returns the ones that did not accept a TCP connection in time.
pub async fn unreachable_targets(targets: &[HostPort], timeout: Duration) -> Vec<String> {
    let mut checks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let addr = target.to_string();
        checks.spawn(async move {
            let ok = matches!(
                tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await,
                Ok(Ok(_))
            );
            (i, (!ok).then_some(addr))
        });
    }
    let mut results: Vec<(usize, Option<String>)> = checks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().filter_map(|(_, a)| a).collect()
}
