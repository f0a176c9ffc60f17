//! `GET /metrics` on the agent's listener: what a switch leaves in it, checked by Prometheus's own
//! `promtool check metrics` (Debian package `prometheus`, installed by `scripts/setup test`).

mod support;

use failover_sim::prometheus::promtool_check_metrics as promtool;
use support::bed;

async fn scrape(url: &str) -> String {
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the sample named exactly `series` (name and labels as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_shows_in_both_agents_metrics_and_promtool_accepts_them() {
    let bed = bed().await;
    for i in 0..2 {
        bed.client(i).status(1).await.unwrap();
    }
    let before = scrape(&bed.agents[0].url).await;
    promtool(&before).unwrap();
    assert_eq!(
        value(&before, "failover_agent_holds_staked_identity"),
        Some(1.0)
    );
    assert_eq!(value(&before, "failover_agent_term"), Some(1.0));
    assert!(value(&before, "failover_agent_validator_slot").unwrap() > 0.0);
    assert!(
        value(
            &before,
            r#"failover_agent_requests_total{path="/status",code="200"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{before}"
    );

    let (passive, active) = bed.switch(0, 1, 2).await;
    assert!(passive.ok && active.ok, "{passive:#?} {active:#?}");
    // A path no route matches is answered 404 and adds no series.
    let stray = reqwest::get(format!("{}/no-such-route", bed.agents[0].url))
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    for i in 0..2 {
        bed.client(i).status(2).await.unwrap();
    }

    let old = scrape(&bed.agents[0].url).await;
    let new = scrape(&bed.agents[1].url).await;
    promtool(&old).unwrap();
    promtool(&new).unwrap();
    assert!(!old.contains("no-such-route"), "{old}");
    assert_eq!(
        value(&old, "failover_agent_holds_staked_identity"),
        Some(0.0)
    );
    assert_eq!(
        value(&new, "failover_agent_holds_staked_identity"),
        Some(1.0)
    );
    assert_eq!(value(&old, "failover_agent_term"), Some(2.0));
    assert_eq!(
        value(
            &old,
            r#"failover_agent_switch_steps_total{step="become_passive",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &new,
            r#"failover_agent_switch_steps_total{step="become_active",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &old,
            r#"failover_agent_requests_total{path="/failover",code="200"}"#
        ),
        Some(1.0)
    );
    // Every phase the step reported is in the histogram, once.
    for phase in &passive.phases {
        let series = format!(
            r#"failover_agent_switch_phase_duration_seconds_count{{step="become_passive",phase="{}"}}"#,
            phase.name
        );
        assert_eq!(value(&old, &series), Some(1.0), "{series} in\n{old}");
    }
    for phase in &active.phases {
        let series = format!(
            r#"failover_agent_switch_phase_duration_seconds_count{{step="become_active",phase="{}"}}"#,
            phase.name
        );
        assert_eq!(value(&new, &series), Some(1.0), "{series} in\n{new}");
    }
    // Heartbeats just renewed the lease.
    assert_eq!(value(&new, "failover_agent_lease_expired"), Some(0.0));
    bed.cluster.safety().assert_safe();
}
