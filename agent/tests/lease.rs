//! The lease (issue 14), against real agent processes' code on the simulated cluster: only an
//! answered heartbeat renews it, the watchdog keeps looking for the whole silence, and a validator
//! that does not answer is killed, not trusted.

mod support;

use std::time::Duration;

use failover_sim::cluster::Fault;
use support::{bed_with, PATIENCE};

/// Waits for a fence report whose outcome is not "stayed_active".
async fn fenced(bed: &support::Bed, i: usize) -> failover_agent::api::FenceReport {
    let mut reports = bed.agents[i].agent.fence_reports();
    let report = tokio::time::timeout(
        PATIENCE,
        reports.wait_for(|r| r.as_ref().is_some_and(|r| r.outcome != "stayed_active")),
    )
    .await
    .expect("the watchdog fenced")
    .unwrap()
    .clone();
    report.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_admitted_but_answered_too_late_renew_nothing() {
    // The validator's admin socket answers after 2.5 s: every status the manager sends (1 s
    // timeout) is admitted, then times out. The agent used to count the admission as contact and
    // never fenced, while the manager counted misses and promoted the passive "by time".
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "1s".into();
    })
    .await;
    bed.cluster
        .fault(0, Fault::SlowAdmin { millis: 2_500 })
        .await
        .unwrap();
    let client = failover_agent::AgentClient::new(
        &bed.agents[0].url,
        Some(bed.signer()),
        Duration::from_secs(1),
    );
    let heartbeats = tokio::spawn(async move {
        loop {
            let _ = client.status(1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let report = fenced(&bed, 0).await;
    heartbeats.abort();
    // The validator does not answer the pause within its deadline: killed.
    assert_eq!(report.outcome, "killed", "{report:?}");
    assert!(report.reason.contains("does not answer"), "{report:?}");
    assert_eq!(bed.cluster.stand_in_pid(0), None, "the stand-in is gone");
    assert_eq!(
        bed.cluster.identity(0),
        None,
        "the node died with its process"
    );
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn answered_heartbeats_keep_the_lease_with_a_slow_but_working_validator() {
    // The same slow validator, but a manager that waits for the answers: every heartbeat is
    // acknowledged, so the lease holds and nothing is fenced.
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "1500ms".into();
    })
    .await;
    bed.cluster
        .fault(0, Fault::SlowAdmin { millis: 300 })
        .await
        .unwrap();
    let client = bed.client(0);
    let start = bed.cluster.slot();
    while bed.cluster.slot() < start + 50 {
        client.status(1).await.unwrap();
    }
    assert!(
        bed.agents[0].agent.fence_reports().borrow().is_none(),
        "{:?}",
        bed.agents[0].agent.fence_reports().borrow()
    );
    assert_eq!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_keeps_looking_for_the_whole_silence() {
    // The manager is gone but the outside answers and the votes land: stay active. Later in the
    // same silence the node is cut off from the cluster (its votes land nowhere): it must fence
    // then. The watchdog used to decide once per silence and never again.
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = up.local_addr().unwrap().to_string();
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "1s".into();
        c["connectivity_targets"] = serde_json::json!([target]);
        c["connectivity_failures_to_fence"] = 1.into();
    })
    .await;
    let first = support::fence_report(&bed, 0).await;
    assert_eq!(first.outcome, "stayed_active", "{first:?}");
    bed.cluster.fault(0, Fault::CutOff).await.unwrap();
    let report = fenced(&bed, 0).await;
    assert_eq!(report.outcome, "demoted", "{report:?}");
    assert!(report.reason.contains("no vote landed"), "{report:?}");
    assert_ne!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
    bed.cluster.safety().assert_safe();
    drop(up);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_gone_during_skipped_blocks_leaves_a_voting_active_voting() {
    // The manager's last answered heartbeat, then silence; a run of skipped blocks holds the
    // confirmed last vote still from a third of the lease until just past its end. The votes did
    // land within the lease, and land again right after: the active must stay active. The
    // watchdog used to read the votes only in the lease's last third, saw them stand still and
    // fenced — on real Agave, a new leader found nobody holding X after a manager takeover.
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = up.local_addr().unwrap().to_string();
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "6s".into();
        c["connectivity_targets"] = serde_json::json!([target]);
        c["connectivity_failures_to_fence"] = 1.into();
    })
    .await;
    let client = bed.client(0);
    client.status(1).await.unwrap();
    // The second heartbeat acknowledges the first: the lease runs from its admission, about now.
    client.status(1).await.unwrap();
    let renewed = bed.cluster.slot();
    // 100 ms slots: blocks skipped from 2 s into the lease until 0.6 s past its end.
    bed.cluster
        .wait_for_slot(renewed + 20, PATIENCE)
        .await
        .unwrap();
    bed.cluster.skip_blocks(46);
    let stalled = bed.cluster.vote_account().last_vote;
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > stalled)
        .await
        .unwrap();
    // Past the lease and the stall, with a look or two after it.
    bed.cluster
        .wait_for_slot(renewed + 80, PATIENCE)
        .await
        .unwrap();
    let report = bed.agents[0].agent.fence_reports().borrow().clone();
    let report = report.expect("the lease expired: the watchdog decided");
    assert_eq!(report.outcome, "stayed_active", "{report:?}");
    assert_eq!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
    bed.cluster.safety().assert_safe();
    drop(up);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_validator_is_killed_and_a_sigcont_cannot_make_it_vote() {
    // SIGSTOP (the stand-in is stopped and the node answers nothing): the lease lapses, the pause
    // gets no answer, the process is killed. Continuing it afterwards finds nothing to continue.
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "1s".into();
    })
    .await;
    let pid = bed.cluster.stand_in_pid(0).unwrap();
    bed.cluster.fault(0, Fault::Hang).await.unwrap();
    let report = fenced(&bed, 0).await;
    assert_eq!(report.outcome, "killed", "{report:?}");
    assert!(!failover_agent::process::alive(pid));
    let _ = bed.cluster.fault(0, Fault::Unhang).await;
    assert_eq!(
        bed.cluster.identity(0),
        None,
        "SIGCONT has no process to continue"
    );
    let votes = bed.cluster.vote_account().last_vote;
    let now = bed.cluster.slot();
    bed.cluster.wait_for_slot(now + 20, PATIENCE).await.unwrap();
    assert_eq!(
        bed.cluster.vote_account().last_vote,
        votes,
        "nobody voted with X"
    );
    // The manager's demotion afterwards gets the final vote state the fence handed over, as
    // final (not as an older backup: under Alpenglow that made the manager wait for roots).
    let demoted = bed
        .client(0)
        .failover(&support::command(
            failover_agent::api::FailoverAction::BecomePassive,
            1,
            None,
            None,
        ))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    assert!(demoted.tower.is_some(), "{demoted:#?}");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_read_as_passive_then_promoted_and_stopped_is_killed() {
    // The hung-validator drill on real Agave 3.1.12 (one run in six): the watchdog had read the
    // node's identity while it was passive and its lease lapsed; a promotion later made it the
    // active, it hung before the watchdog read it again, and the stale "unstaked" reading made
    // it "not maybe active". Nothing fenced it; the manager promoted the other node by time
    // while the stopped process still held X.
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "1s".into();
    })
    .await;
    // No heartbeats: node 1's lease lapses while it is passive, and its watchdog reads the
    // unstaked identity every look (100 ms) for the second after.
    let now = bed.cluster.slot();
    bed.cluster.wait_for_slot(now + 20, PATIENCE).await.unwrap();
    // Then a manager's heartbeats (the second acknowledges the first), and on they go: the lease
    // is fresh through the switch, so the watchdog reads nothing at a lease's end meanwhile.
    let client = failover_agent::AgentClient::new(
        &bed.agents[1].url,
        Some(bed.signer()),
        Duration::from_secs(1),
    );
    client.status(1).await.unwrap();
    client.status(1).await.unwrap();
    let heartbeats = tokio::spawn(async move {
        loop {
            let _ = client.status(1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (_, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    let pid = bed.cluster.stand_in_pid(1).unwrap();
    bed.cluster.fault(1, Fault::Hang).await.unwrap();
    let report = fenced(&bed, 1).await;
    heartbeats.abort();
    assert_eq!(report.outcome, "killed", "{report:?}");
    assert!(report.reason.contains("does not answer"), "{report:?}");
    assert!(!failover_agent::process::alive(pid));
    let _ = bed.cluster.fault(1, Fault::Unhang).await;
    assert_eq!(
        bed.cluster.identity(1),
        None,
        "SIGCONT has no process to continue"
    );
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_demotion_asked_of_a_hung_validator_kills_it_and_hands_the_tower_over() {
    // A demotion that reached the agent just as its validator hung waited out every admin call
    // (identity, pause, setIdentity, then the identity twice more: about 50 s) under the
    // switching lock, so the watchdog could not fence, and ended "failed" with the process
    // alive and holding X — while the manager, counting the node from its last answer, promoted
    // the other. It must kill the validator like the watchdog does and hand its tower over.
    let bed = bed_with(|_, c| {
        // A lease that outlasts the test: only the demotion acts here, not the watchdog.
        c["manager_timeout"] = "60s".into();
    })
    .await;
    let pid = bed.cluster.stand_in_pid(0).unwrap();
    bed.cluster.fault(0, Fault::Hang).await.unwrap();
    let demoted = bed
        .client(0)
        .failover(&support::command(
            failover_agent::api::FailoverAction::BecomePassive,
            1,
            None,
            None,
        ))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    let kill = demoted.phases.iter().find(|p| p.name == "kill");
    assert!(
        kill.is_some_and(|p| p.detail.contains("did not answer")),
        "{demoted:#?}"
    );
    assert!(!failover_agent::process::alive(pid));
    assert!(
        demoted.tower.is_some(),
        "the final tower, from disk: {demoted:#?}"
    );
    let _ = bed.cluster.fault(0, Fault::Unhang).await;
    assert_eq!(
        bed.cluster.identity(0),
        None,
        "SIGCONT has no process to continue"
    );
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_fence_after_covers_the_lease_and_every_fence_deadline() {
    let bed = bed_with(|_, c| {
        c["manager_timeout"] = "3s".into();
        c["connectivity_timeout"] = "1s".into();
    })
    .await;
    let status = bed.client(0).status(1).await.unwrap();
    // 3 s lease + 300 ms look + 1 s probes + 500 ms pause + 1 s kill.
    assert_eq!(status.fence_after_ms, 5_800);
}
