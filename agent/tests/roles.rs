//! Only a `become_active` makes a node the active: a demoted node whose validator comes back
//! with the staked identity is demoted again, and a promotion never touches a node that already
//! holds it.

mod support;

use failover_agent::api::{FailoverAction, FailoverRequest};
use failover_identity::tower_path;
use failover_sim::{Fault, Violation};
use support::{bed, command, fence_report};

#[tokio::test(flavor = "multi_thread")]
async fn a_demoted_validator_restarted_with_the_staked_identity_is_demoted_again() {
    let bed = bed().await;
    let staked = bed.cluster.staked_pubkey();
    let (_, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    // The old active's validator restarts with X on its command line, as after a reboot of a
    // server whose identity link the operator never switched.
    bed.cluster
        .fault(0, Fault::Restart { startup_slots: 5 })
        .await
        .unwrap();
    let report = fence_report(&bed, 0).await;
    let demoted_at_slot = bed.cluster.slot();
    assert_eq!(report.outcome, "demoted_unauthorised", "{report:?}");
    assert!(report.reason.contains("demoted in term 1"), "{report:?}");
    assert_ne!(bed.cluster.identity(0), Some(staked));
    assert_eq!(bed.cluster.identity(1), Some(staked));
    // The restart alone made two holders, and only until the agent demoted it.
    let safety = bed.cluster.safety();
    let changes: Vec<_> = safety
        .identity_changes
        .iter()
        .filter(|c| c.node == 0)
        .collect();
    let took = changes
        .iter()
        .rposition(|c| c.identity.as_deref() == Some(&staked.to_string()))
        .expect("node 1 took X back at its restart");
    let (from, until) = (
        changes[took].at_ms,
        changes.get(took + 1).expect("and lost it").at_ms,
    );
    assert!(until - from < 2_000, "X held twice for {} ms", until - from);
    for v in &safety.violations {
        match v {
            Violation::TwoHolders { at_ms, .. } => {
                assert!((from..=until).contains(at_ms), "{v:?}")
            }
            Violation::DoubleVote { slot, .. } | Violation::VoteWhileHeldElsewhere { slot, .. } => {
                assert!(*slot <= demoted_at_slot, "{v:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_never_installs_a_vote_state_over_a_running_active() {
    let bed = bed().await;
    let staked = bed.cluster.staked_pubkey();
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    let old = passive.tower.clone().unwrap();
    let promote_with_old = |term| {
        command(
            FailoverAction::BecomeActive,
            term,
            Some(old.clone()),
            Some(old.sha256.clone()),
        )
    };
    // The same promotion asked again (its answer was lost): the journaled answer.
    let again = bed.client(1).failover(&promote_with_old(1)).await.unwrap();
    assert_eq!(again, active);
    // Asked again in other words (its journal gone, or another manager's wording): done, nothing
    // touched.
    let reworded = FailoverRequest {
        reason: "asked again".into(),
        ..promote_with_old(1)
    };
    let again = bed.client(1).failover(&reworded).await.unwrap();
    assert!(again.ok, "{again:#?}");
    assert!(
        again
            .phases
            .iter()
            .any(|p| p.detail.contains("already promoted in term 1")),
        "{again:#?}"
    );
    // Node 1 votes on; its tower moves past the one offered.
    let tower = tower_path(&bed.cluster.info().nodes[1].ledger, &staked);
    let offered_vote = old.last_vote.unwrap();
    bed.cluster
        .wait_until(support::PATIENCE, |w| {
            w.vote.last_voter == Some(1) && w.vote.last_vote > offered_vote + 3
        })
        .await
        .unwrap();
    let before = std::fs::read(&tower).unwrap();
    // Another term's promotion of the running active, with the older tower: refused.
    let other = bed.client(1).failover(&promote_with_old(2)).await.unwrap();
    assert!(!other.ok, "{other:#?}");
    assert!(
        other
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("already holds the staked identity"),
        "{other:#?}"
    );
    let after = std::fs::read(&tower).unwrap();
    let last_vote = |bytes: &[u8]| {
        failover_identity::TowerFile::parse(bytes)
            .unwrap()
            .tower
            .last_voted_slot()
    };
    assert!(
        last_vote(&after) >= last_vote(&before),
        "the tower went back to the offered one"
    );
    assert_eq!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

/// A stand-in for an Agave process of node `i` started with `identity` on its command line: a
/// shell named like the node's process, waiting on its standard input. Killed when dropped.
fn validator_process(
    bed: &support::Bed,
    i: usize,
    identity: &std::path::Path,
) -> tokio::process::Child {
    let info = bed.cluster.info();
    let link = bed.dir.path().join(&info.nodes[i].process_name);
    if !link.exists() {
        std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    }
    tokio::process::Command::new(&link)
        .args(["-c", "read never", "agave-validator", "--ledger"])
        .arg(&info.nodes[i].ledger)
        .arg("--identity")
        .arg(identity)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_validator_demoted_is_not_killed_for_the_staked_keypair_it_was_started_with() {
    // Found on real Agave 3.1.12: the initial active runs with `--identity <staked keypair>`,
    // and a demotion by setIdentity leaves that command line as it was.
    let bed = bed().await;
    let info = bed.cluster.info();
    let mut validator = validator_process(&bed, 0, &info.staked_keypair);
    // The simulated node restarts after it, so the process above is the one its agent finds.
    bed.cluster
        .fault(0, Fault::Restart { startup_slots: 0 })
        .await
        .unwrap();
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(passive.ok && active.ok, "{passive:#?} {active:#?}");
    let slot = bed.cluster.slot();
    bed.cluster
        .wait_for_slot(slot + 30, support::PATIENCE)
        .await
        .unwrap();
    assert!(
        validator.try_wait().unwrap().is_none(),
        "the demoted validator was killed"
    );
    assert!(bed.agents[0].agent.fence_reports().borrow().is_none());
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_validator_started_with_the_staked_keypair_after_a_demotion_is_killed_before_it_votes() {
    use std::os::unix::process::ExitStatusExt;
    let bed = bed().await;
    let (_, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    // Node 0's validator dies, and its service manager starts it again with X's keypair on the
    // command line. Agave would answer nothing until it has started, and could vote right after.
    bed.cluster.fault(0, Fault::Crash).await.unwrap();
    let mut validator = validator_process(&bed, 0, &bed.cluster.info().staked_keypair);
    let report = fence_report(&bed, 0).await;
    assert_eq!(report.outcome, "killed_unauthorised", "{report:?}");
    let status = tokio::time::timeout(support::PATIENCE, validator.wait())
        .await
        .expect("killed")
        .unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILL");
    assert_eq!(bed.cluster.identity(1), Some(bed.cluster.staked_pubkey()));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_term_is_one_switch_a_command_of_it_from_another_is_refused() {
    // Two managers that computed the same next term: the first to command in it owns it.
    let bed = bed().await;
    let staked = bed.cluster.staked_pubkey();
    let of = |action, switch: &str| failover_agent::api::FailoverRequest {
        switch_id: Some(switch.into()),
        ..command(action, 1, None, None)
    };
    let first = bed
        .client(0)
        .failover(&of(FailoverAction::BecomePassive, "manager-a-1"))
        .await
        .unwrap();
    assert!(first.ok, "{first:#?}");
    let tower = first.tower.clone().unwrap();
    let promote = failover_agent::api::FailoverRequest {
        tower_sha256: Some(tower.sha256.clone()),
        tower: Some(tower),
        ..of(FailoverAction::BecomeActive, "manager-a-1")
    };
    assert!(bed.client(1).failover(&promote).await.unwrap().ok);
    // The other manager's demotion of the new active, in the same term: refused, nothing changes.
    let other = bed
        .client(1)
        .failover(&of(FailoverAction::BecomePassive, "manager-b-1"))
        .await;
    let refusal = other.expect_err("refused");
    assert!(
        refusal
            .to_string()
            .contains("already belongs to another switch"),
        "{refusal}"
    );
    assert_eq!(bed.cluster.identity(1), Some(staked));
    // The owner's own command of the term is still taken.
    let again = bed.client(1).failover(&promote).await.unwrap();
    assert!(again.ok, "{again:#?}");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_still_offers_its_last_demotions_final_vote_state() {
    // The final tower lived only in the agent's memory: a manager whose demotion answer was lost
    // and whose agent then restarted could never have it.
    let mut bed = bed().await;
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    let final_tower = passive.tower.clone().unwrap();
    bed.agents.remove(0).stop().await;
    let config = support::agent_config(&bed.cluster, bed.dir.path(), &bed.manager, 0);
    bed.agents
        .insert(0, support::start_agent(&config, bed.dir.path()).await);
    let status = bed.client(0).status(1).await.unwrap();
    let offered = status
        .tower_backup
        .expect("the final tower, from the archive");
    assert_eq!(offered.sha256, final_tower.sha256);
    // And a demotion asked again (a manager retrying) returns it as final.
    let again = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(again.ok, "{again:#?}");
    assert_eq!(again.tower.map(|t| t.sha256), Some(final_tower.sha256));
    bed.cluster.safety().assert_safe();
}
