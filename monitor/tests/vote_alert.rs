//! Vote-staleness alerting against the simulated cluster, delivered through a loopback webhook:
//! stopping the votes raises exactly one alert, resuming them sends exactly one recovery.

mod alert_support;

use std::time::Duration;

use alert_support::{FakeServer, Recorded, PATIENCE};
use failover_monitor::notify::Notifier;
use failover_monitor::vote_alert::{run, VoteAlertConfig};
use failover_sim::{Cluster, Fault, SimConfig};

const THRESHOLD: u64 = 8;

/// The text of a webhook message.
fn text(r: &Recorded) -> String {
    r.body["text"].as_str().expect("a text field").to_string()
}

/// The number on the line starting with `label` in a message.
fn field(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {text:?}"))
        .trim()
        .trim_end_matches(" slots")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_votes_raise_one_alert_and_resumed_votes_one_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new(dir.path());
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    let info = cluster.info().clone();

    let mut server = FakeServer::start().await;
    let (notifier, sender) = Notifier::start(server.config(false, true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(run(
        VoteAlertConfig {
            rpc_url: info.rpc_url.clone(),
            vote_account: info.vote_pubkey.parse().unwrap(),
            threshold_slots: Some(THRESHOLD),
            interval: Duration::from_millis(100),
        },
        notifier.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    // Let the watch see a voting account for a while first.
    let start = cluster.slot();
    cluster.wait_for_slot(start + 10, PATIENCE).await.unwrap();
    let before_stop = cluster.slot();
    cluster.fault(0, Fault::StopVoting).await.unwrap();
    let after_stop = cluster.slot();

    let stale = text(&server.next().await);
    assert!(stale.starts_with("⚠️ Vote account lagging"), "{stale}");
    assert!(stale.contains(&info.vote_pubkey), "{stale}");
    assert!(stale.contains("Delinquent: no"), "{stale}");
    // The alert is about this stop: the last vote it reports is the one before it.
    let last_vote = field(&stale, "Last vote:");
    assert!(
        last_vote + 1 >= before_stop && last_vote <= after_stop,
        "last vote {last_vote}, votes stopped between slots {before_stop} and {after_stop}"
    );
    assert!(field(&stale, "Lag:") > THRESHOLD, "{stale}");

    // Stay stale for many more samples (well short of delinquency): no second alert may come.
    cluster
        .wait_for_slot(cluster.slot() + 2 * THRESHOLD, PATIENCE)
        .await
        .unwrap();
    let before_resume = cluster.slot();
    cluster.fault(0, Fault::ResumeVoting).await.unwrap();

    // The next message must be the recovery; a repeated alert would arrive first.
    let recovered = text(&server.next().await);
    assert!(recovered.starts_with("✅ Votes recovered"), "{recovered}");
    assert!(recovered.contains(&info.vote_pubkey), "{recovered}");
    assert!(
        field(&recovered, "Last vote:") >= before_resume,
        "{recovered}"
    );

    // Keep watching a healthy account for a while, then stop and check nothing else was sent.
    cluster
        .wait_for_slot(cluster.slot() + 2 * THRESHOLD, PATIENCE)
        .await
        .unwrap();
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, watch)
        .await
        .expect("the watch stops on shutdown")
        .unwrap()
        .unwrap();
    notifier.flush().await;
    let extra = server.drain();
    assert!(extra.is_empty(), "unexpected messages: {extra:#?}");

    drop(notifier);
    tokio::time::timeout(PATIENCE, sender)
        .await
        .expect("the sender ends once every notifier is dropped")
        .unwrap();
    server.stop().await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_errors_are_skipped_not_alerted() {
    // An "RPC node" that answers every request with something that is not JSON-RPC.
    let mut rpc = FakeServer::start().await;
    let mut server = FakeServer::start().await;
    let (notifier, _sender) = Notifier::start(server.config(false, true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(run(
        VoteAlertConfig {
            rpc_url: rpc.base.to_string(),
            vote_account: "Vote111111111111111111111111111111111111111"
                .parse()
                .unwrap(),
            threshold_slots: Some(THRESHOLD),
            interval: Duration::from_millis(20),
        },
        notifier.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    // Five rounds of two requests each, every one failing: were they samples of a missing
    // account, the second would have raised an alert.
    for _ in 0..10 {
        rpc.next().await;
    }
    let _ = stop.send(());
    watch.await.unwrap().unwrap();
    notifier.flush().await;
    assert!(server.drain().is_empty());
    rpc.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_takes_a_group_chat_id_as_written_and_alerts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new(dir.path().join("cluster"));
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    let info = cluster.info().clone();
    let mut server = FakeServer::start().await;
    let token = dir.path().join("token");
    std::fs::write(&token, alert_support::TOKEN).unwrap();
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("failover-manager");
    let mut child = tokio::process::Command::new(binary)
        .args([
            "vote-alert",
            "--rpc",
            &info.rpc_url,
            "--vote-account",
            &info.vote_pubkey,
        ])
        .args(["--threshold", "8", "--interval", "100ms"])
        .arg("--telegram-bot-token-file")
        .arg(&token)
        .args(["--telegram-chat-id", "-1001234567890"])
        .args(["--telegram-api-base", server.telegram().api_base.as_str()])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    cluster
        .wait_for_slot(cluster.slot() + 5, PATIENCE)
        .await
        .unwrap();
    cluster.fault(0, Fault::StopVoting).await.unwrap();
    let alert = server.next().await;
    assert_eq!(alert.path, FakeServer::telegram_path());
    assert_eq!(alert.body["chat_id"], "-1001234567890");
    assert!(text(&alert).starts_with("⚠️ Vote account lagging"));
    child.kill().await.unwrap();
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_alpenglow_the_default_threshold_fits_the_certificate_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::alpenglow(dir.path());
    sim.slot_time = Duration::from_millis(100);
    let cluster = Cluster::start(sim).await.unwrap();
    let info = cluster.info().clone();
    let mut server = FakeServer::start().await;
    let (notifier, _sender) = Notifier::start(server.config(false, true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watch = tokio::spawn(run(
        VoteAlertConfig {
            rpc_url: info.rpc_url.clone(),
            vote_account: info.vote_pubkey.parse().unwrap(),
            threshold_slots: None,
            interval: Duration::from_millis(100),
        },
        notifier.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    // A healthy Alpenglow account for 60 slots: lastVote trails by ~8, no alert.
    cluster
        .wait_for_slot(cluster.slot() + 60, PATIENCE)
        .await
        .unwrap();
    notifier.flush().await;
    assert!(server.drain().is_empty(), "a healthy account was alerted");
    cluster.fault(0, Fault::StopVoting).await.unwrap();
    let stale = text(&server.next().await);
    assert!(stale.starts_with("⚠️ Vote account lagging"), "{stale}");
    assert!(field(&stale, "Lag:") > 24, "{stale}");
    let _ = stop.send(());
    let _ = watch.await;
    cluster.shutdown();
}
