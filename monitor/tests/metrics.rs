//! The manager's `/metrics` and both agents', scraped by a real Prometheus during a planned switch
//! on the simulated cluster: `promtool check metrics` accepts all three, and PromQL finds the
//! switch's phases.

mod e2e_support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use failover_sim::prometheus::{promtool_check_metrics, PrometheusServer};
use serde_json::json;

/// How long Prometheus gets to have scraped what a query looks for (scrapes every 500 ms).
const SCRAPED_WITHIN: Duration = Duration::from_secs(15);

async fn scrape(url: &str) -> String {
    let response = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Runs `promql` until its result satisfies `done`, for at most [`SCRAPED_WITHIN`]. Prometheus
/// scrapes on its own schedule, which a test cannot await; the query's answer is the event.
async fn query_until(
    prometheus: &PrometheusServer,
    promql: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let result = prometheus.query(promql).await.unwrap();
        if done(&result) {
            return result;
        }
        assert!(
            started.elapsed() < SCRAPED_WITHIN,
            "{promql} never satisfied: last {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switch_shows_in_prometheus_with_its_phases() {
    let mut sys = e2e_support::system(|_, _| {}).await;
    let port = e2e_support::free_port().await;
    let manager_url = format!("http://127.0.0.1:{port}");
    sys.manager_config["metrics_listen_addr"] = json!(format!("127.0.0.1:{port}"));
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;

    let dir = tempfile::tempdir().unwrap();
    let agents = sys
        .agents
        .iter()
        .map(|a| a.url.trim_start_matches("http://").to_string())
        .collect();
    // The job names deploy/prometheus/scrape.yml gives and the rules and dashboard expect.
    let jobs = [
        ("failover-manager", vec![format!("127.0.0.1:{port}")]),
        ("failover-agent", agents),
    ];
    let rules = deploy().join("prometheus/failover-alerts.yml");
    let prometheus = PrometheusServer::start(dir.path(), &jobs, &[&rules])
        .await
        .unwrap();
    query_until(&prometheus, "up == 1", |r| r.len() == 3).await;

    // Under load an agent may fence itself before the manager's first heartbeat (its 1 s lease
    // ran out with no vote seen to land) and the manager then makes a start-up switch: this
    // switch's phases are what the counts gain from here.
    let before = phase_counts(&scrape(&manager_url).await);
    let steps_before = [
        steps_ok(&scrape(&sys.agents[0].url).await, "become_passive"),
        steps_ok(&scrape(&sys.agents[1].url).await, "become_active"),
    ];
    let outcome = e2e_support::switch_now(&manager.state_dir, "maintenance").await;
    sys.wait_active(1).await;

    for url in [&manager_url, &sys.agents[0].url, &sys.agents[1].url] {
        promtool_check_metrics(&scrape(url).await).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let switches = query_until(
        &prometheus,
        r#"failover_manager_switches_total{reason="planned",outcome="ok"}"#,
        |r| r.len() == 1 && r[0]["value"][1] == "1",
    )
    .await;
    assert_eq!(switches.len(), 1);
    // Every phase the manager reported, as one more observation of its histogram series.
    let expected = |name: &str| (before.get(name).copied().unwrap_or(0) + 1).to_string();
    let counted = |r: &[serde_json::Value], name: &str| {
        r.iter()
            .any(|s| s["metric"]["phase"] == name && s["value"][1] == expected(name).as_str())
    };
    let phases = query_until(
        &prometheus,
        "failover_manager_switch_phase_duration_seconds_count",
        |r| outcome.phases.iter().all(|p| counted(r, &p.name)),
    )
    .await;
    for phase in &outcome.phases {
        assert!(
            counted(&phases, &phase.name),
            "phase {} not counted once more than {before:?} in {phases:?}; the switch: {}",
            phase.name,
            outcome.summary()
        );
    }
    // The roles as Prometheus saw them after the switch, from the manager and from the agents.
    query_until(
        &prometheus,
        r#"failover_manager_node_role{role="active"} == 1"#,
        |r| r.len() == 1 && r[0]["metric"]["node"] == "validator2",
    )
    .await;
    // The step each agent ran in this switch, once more than before it.
    for (agent, step) in [(0, "become_passive"), (1, "become_active")] {
        let instance = sys.agents[agent]
            .url
            .trim_start_matches("http://")
            .to_string();
        let expected = (steps_before[agent] + 1).to_string();
        query_until(
            &prometheus,
            &format!(r#"failover_agent_switch_steps_total{{outcome="ok",step="{step}"}}"#),
            |r| {
                r.iter().any(|s| {
                    s["metric"]["instance"] == instance.as_str()
                        && s["value"][1] == expected.as_str()
                })
            },
        )
        .await;
    }

    // The alert rules load and evaluate without error on these series.
    let started = Instant::now();
    loop {
        let groups = prometheus.api("/api/v1/rules").await.unwrap();
        let rules = groups["groups"][0]["rules"].as_array().unwrap().clone();
        assert!(rules.len() >= 5, "{groups}");
        if rules.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            started.elapsed() < SCRAPED_WITHIN,
            "rules not healthy: {rules:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let firing = prometheus.query("ALERTS").await.unwrap();
    assert!(
        !firing
            .iter()
            .any(|a| a["metric"]["alertname"] == "FailoverTwoActive"),
        "{firing:?}"
    );

    // Every query of the dashboard is valid PromQL here and names only metrics that exist.
    let mut exported = String::new();
    for url in [&manager_url, &sys.agents[0].url, &sys.agents[1].url] {
        exported += &scrape(url).await;
    }
    let families = families(&exported);
    for expr in dashboard_queries() {
        let expr = expr.replace("$instance", ".*");
        prometheus
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("dashboard query {expr}: {e:#}"));
        for name in metric_names(&expr) {
            assert!(
                families.contains(&name) || FIRST_EVENT.contains(&name.as_str()),
                "dashboard query {expr} names {name}, which nobody exports"
            );
        }
    }

    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// Families this switch does not touch: prometheus-client writes a labelled family only once it
/// has a series (a hold, a watchdog decision).
const FIRST_EVENT: [&str; 2] = ["failover_manager_holds", "failover_agent_fence_decisions"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every `expr` of every panel of the dashboard.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("grafana/failover-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let queries: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= panels.len(), "a panel without a query");
    queries
}

/// The metric families an exposition declares (`# TYPE name kind`).
/// The samples of `name` in an exposition: (its labels as written, its value).
fn samples<'a>(exposition: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, u64)> {
    exposition.lines().filter_map(move |l| {
        let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
        Some((labels, value.trim().parse().ok()?))
    })
}

/// `failover_manager_switch_phase_duration_seconds_count` by phase.
fn phase_counts(exposition: &str) -> HashMap<String, u64> {
    samples(
        exposition,
        "failover_manager_switch_phase_duration_seconds_count",
    )
    .filter_map(|(labels, n)| {
        let phase = labels.strip_prefix("phase=\"")?.strip_suffix('"')?;
        Some((phase.to_string(), n))
    })
    .collect()
}

/// How many `step`s an agent ran to completion.
fn steps_ok(exposition: &str, step: &str) -> u64 {
    let labels = format!(r#"step="{step}",outcome="ok""#);
    samples(exposition, "failover_agent_switch_steps_total")
        .find(|(l, _)| *l == labels)
        .map_or(0, |(_, n)| n)
}

fn families(exposition: &str) -> HashSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(family)
        .collect()
}

/// The product's metric families a PromQL expression names.
fn metric_names(expr: &str) -> HashSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("failover_"))
        .map(family)
        .collect()
}

/// A sample or family name without the suffix its type adds.
fn family(name: &str) -> String {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
        .to_string()
}
