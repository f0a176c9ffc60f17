//! The attack battery, against real `failover-agent` processes on a simulated cluster: whoever can
//! see manager↔agent traffic (plain HTTP) and send from an allowed address must not be able to use
//! what they saw anywhere else — not on the other agent, not on another pair that trusts the same
//! manager key, not after an agent restart — and nothing they send may change anything.

mod support;

use std::time::Duration;

use failover_agent::api::{FailoverAction, PATH_FAILOVER, PATH_STATUS};
use failover_agent::AgentClient;
use failover_sim::capture::{replay, Capture};
use support::{command, process_bed, ProcessBed};

const PATIENCE: Duration = Duration::from_secs(30);

fn client(url: &str, bed: &ProcessBed) -> AgentClient {
    AgentClient::new(url, Some(bed.signer()), PATIENCE)
}

/// A planned switch `from` → `to` in `term` as the manager makes it, with the traffic to each
/// agent passing through `captures[i]`.
async fn switch_through(
    bed: &ProcessBed,
    captures: &[Capture; 2],
    from: usize,
    to: usize,
    term: u64,
) {
    let passive = client(&captures[from].url(), bed)
        .failover(&command(FailoverAction::BecomePassive, term, None, None))
        .await
        .unwrap();
    assert!(passive.ok, "{passive:#?}");
    let tower = passive.tower.expect("the final tower");
    let sha = Some(tower.sha256.clone());
    let active = client(&captures[to].url(), bed)
        .failover(&command(
            FailoverAction::BecomeActive,
            term,
            Some(tower),
            sha,
        ))
        .await
        .unwrap();
    assert!(active.ok, "{active:#?}");
}

async fn captures(bed: &ProcessBed) -> [Capture; 2] {
    [
        Capture::start(bed.agents[0].addr).await.unwrap(),
        Capture::start(bed.agents[1].addr).await.unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_become_active_replayed_to_the_other_agent_is_refused() {
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let captures = captures(&bed).await;
    // node2 is made active first (term 8), then a planned switch node2 → node1 in term 9.
    switch_through(&bed, &captures, 0, 1, 8).await;
    switch_through(&bed, &captures, 1, 0, 9).await;
    let promote = captures[0]
        .last(PATH_FAILOVER, "become_active")
        .expect("the captured become_active");
    let (status, body) = replay(&promote, bed.agents[1].addr).await.unwrap();
    assert_ne!(status, 200, "{body}");
    assert_eq!(status, 401, "{body}");
    assert_eq!(bed.cluster.identity(0), Some(staked));
    assert_ne!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_become_passive_replayed_to_the_new_active_is_refused() {
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let captures = captures(&bed).await;
    switch_through(&bed, &captures, 0, 1, 9).await;
    let demote = captures[0]
        .last(PATH_FAILOVER, "become_passive")
        .expect("the captured become_passive");
    let (status, body) = replay(&demote, bed.agents[1].addr).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_for_one_pair_is_refused_by_another_pair_trusting_the_same_manager_key() {
    let one = process_bed(None, |_, _| {}).await;
    let two = process_bed(Some(one.manager.clone()), |_, _| {}).await;
    let staked_two = two.cluster.staked_pubkey();
    let capture = Capture::start(one.agents[0].addr).await.unwrap();
    let demoted = client(&capture.url(), &one)
        .failover(&command(FailoverAction::BecomePassive, 3, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    let demote = capture.last(PATH_FAILOVER, "become_passive").unwrap();
    let (status, body) = replay(&demote, two.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(two.cluster.identity(0), Some(staked_two));
    two.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_captured_before_an_agent_restart_is_refused_after_it() {
    let mut bed = process_bed(None, |_, _| {}).await;
    let capture = Capture::start(bed.agents[0].addr).await.unwrap();
    client(&capture.url(), &bed).status(4).await.unwrap();
    let heartbeat = capture.last(PATH_STATUS, "term").unwrap();
    let (status, _) = replay(&heartbeat, bed.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "a replay is refused by the same process");
    bed.agents[0].restart().await;
    // A heartbeat counts as contact from the manager: replayed, it would keep an isolated active
    // from fencing itself.
    let (status, body) = replay(&heartbeat, bed.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "{body}");
}
