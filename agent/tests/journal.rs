//! A switch step runs to its end whatever happens to the request that asked for it, and a
//! repeated request is answered from the agent's switch journal, never with a second run.

mod support;

use std::time::Duration;

use failover_agent::api::FailoverAction;
use failover_agent::AgentClient;
use failover_sim::Fault;
use support::{bed, command, process_bed, PATIENCE};

/// Long enough that a request timing out at `IMPATIENT` is dropped inside the demotion, and well
/// inside the demotion's pause deadline (`PAUSE_DEADLINE`, 500 ms): a validator slower than that is
/// taken for hung and killed, and at 400 ms a loaded CI machine crossed it once (the demotion
/// killed the simulated validator, and the test waited in vain for it unstaked).
const SLOW_ADMIN_MS: u64 = 250;
const IMPATIENT: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread")]
async fn a_demotion_whose_request_was_dropped_runs_to_its_end_and_is_answered_once() {
    let bed = bed().await;
    let staked = bed.cluster.staked_pubkey();
    bed.cluster
        .fault(
            0,
            Fault::SlowAdmin {
                millis: SLOW_ADMIN_MS,
            },
        )
        .await
        .unwrap();
    let demote = command(FailoverAction::BecomePassive, 1, None, None);
    // A manager that gives up (or dies) a moment into the demotion.
    let impatient = AgentClient::new(&bed.agents[0].url, Some(bed.signer()), IMPATIENT);
    assert!(
        impatient.failover(&demote).await.is_err(),
        "answered in time"
    );
    // The demotion goes on without it: unstaked, voters gone.
    bed.cluster
        .wait_until(PATIENCE, |w| {
            w.nodes[0].identity.pubkey() != staked && w.nodes[0].authorized_voters.is_empty()
        })
        .await
        .expect("the dropped demotion finished");
    // The same step asked again: its outcome, not a second demotion.
    let again = bed.client(0).failover(&demote).await.unwrap();
    assert!(again.ok, "{again:#?}");
    assert!(again.tower.is_some(), "the final tower is in the answer");
    let once_more = bed.client(0).failover(&demote).await.unwrap();
    assert_eq!(again, once_more, "a second run, not the journaled outcome");
    // And the switch completes with it.
    let tower = again.tower.unwrap();
    let sha = Some(tower.sha256.clone());
    let active = bed
        .client(1)
        .failover(&command(FailoverAction::BecomeActive, 1, Some(tower), sha))
        .await
        .unwrap();
    assert!(active.ok, "{active:#?}");
    assert_eq!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_demotion_cut_short_by_the_agents_death_is_finished_at_its_next_start() {
    let mut bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    bed.cluster
        .fault(
            0,
            Fault::SlowAdmin {
                millis: SLOW_ADMIN_MS,
            },
        )
        .await
        .unwrap();
    let impatient = AgentClient::new(&bed.agents[0].url, Some(bed.signer()), IMPATIENT);
    let demote = command(FailoverAction::BecomePassive, 1, None, None);
    assert!(
        impatient.failover(&demote).await.is_err(),
        "answered in time"
    );
    let journal = bed.agents[0].state_dir.join("switch-journal.json");
    let recorded = std::fs::read_to_string(&journal).expect("the step is journaled at its start");
    assert!(recorded.contains("become_passive"), "{recorded}");
    // The agent dies inside the demotion (the slow admin socket holds it there).
    bed.agents[0].restart().await;
    bed.cluster
        .wait_until(PATIENCE, |w| {
            w.nodes[0].identity.pubkey() != staked && w.nodes[0].authorized_voters.is_empty()
        })
        .await
        .expect("the restarted agent finished the demotion");
    // A manager asking again gets that outcome.
    let client = AgentClient::new(&bed.agents[0].url, Some(bed.signer()), PATIENCE);
    let again = client.failover(&demote).await.unwrap();
    assert!(again.ok, "{again:#?}");
    assert!(again.tower.is_some(), "{again:#?}");
    bed.cluster.safety().assert_safe();
}
