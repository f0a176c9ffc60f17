//! The manager end to end on the simulated cluster, with real agent processes: role detection,
//! a failover for each unhealthy reason, no failover for each reason not to act, the planned
//! switchover, a restart mid-way, and the operator's messages. Every test asserts the safety
//! recorder's three properties.

mod e2e_support;

use e2e_support::system;
use failover_agent::api::{FailoverAction, FailoverRequest};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_monitor::notify::Notifier;
use failover_monitor::Manager;
use failover_sim::Fault;

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_detected_and_reported() {
    let sys = system(|_, _| {}).await;
    let mut manager = Manager::new(sys.manager_cfg(), Notifier::disabled())
        .await
        .unwrap();
    manager.observe().await;
    let lines = manager.status_lines();
    assert!(
        lines[0].starts_with("validator1 (127.0.0.2): Active"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("validator2 (127.0.0.3): Passive"),
        "{lines:?}"
    );
    assert!(lines[0].contains("process running"), "{lines:?}");
    sys.cluster.safety().assert_safe();
}

/// A planned switch starts when the staked identity leads none of the next slots (the
/// simulator's schedule: slots 16k..16k+3 are its, 16k+4..16k+15 the network node's), so that
/// none of its blocks is skipped;
/// `now` switches at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_switch_waits_for_a_moment_the_staked_identity_leads_no_slot() {
    let mut sys = system(|_, _| {}).await;
    sys.manager_config["planned_switch_leader_slots"] = 10.into();
    let manager = sys.start_manager().await;
    let staked = sys.staked();
    let trigger = |now: bool| ControlRequest::Trigger {
        to: None,
        reason: "maintenance".into(),
        force: false,
        dry_run: false,
        now,
    };
    // Asked 4 slots before one of its leader windows: that window is within the next 10 slots
    // until it has passed.
    sys.cluster
        .wait_until(e2e_support::PATIENCE, |w| w.slot % 16 == 12)
        .await
        .unwrap();
    let mut demoted_at = None;
    let planned = trigger(false);
    let (outcome, demoted) = tokio::join!(
        ask_running(&manager.state_dir, &planned),
        sys.cluster.wait_until(e2e_support::PATIENCE, |w| {
            let gone = w.nodes[0].identity.pubkey() != staked;
            if gone {
                demoted_at.get_or_insert(w.slot);
            }
            gone
        })
    );
    demoted.unwrap();
    let outcome = outcome.unwrap().unwrap();
    assert!(outcome.ok, "{}", outcome.summary());
    let leader = &outcome.phases[0];
    assert_eq!(leader.name, "leader");
    assert!(leader.detail.contains("leads none of slots"), "{leader:?}");
    let demoted_at = demoted_at.unwrap();
    let led: Vec<u64> = sys.cluster.with_world(|w| {
        (demoted_at..demoted_at + 4)
            .filter(|s| w.slot_leader(*s) == staked)
            .collect()
    });
    assert!(
        led.is_empty(),
        "the switch ran through its leader slots {led:?}"
    );
    sys.wait_active(1).await;

    // --now: no wait, no leader phase.
    let at_once = trigger(true);
    let outcome = ask_running(&manager.state_dir, &at_once)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.ok, "{}", outcome.summary());
    assert!(
        outcome.phases.iter().all(|p| p.name != "leader"),
        "{}",
        outcome.summary()
    );
    sys.wait_active(0).await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_switchover_through_the_running_manager_and_its_messages() {
    let mut sys = system(|_, _| {}).await;
    let manager = sys.start_manager().await;
    let outcome = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            to: None,
            reason: "maintenance on validator1".into(),
            force: false,
            dry_run: false,
            now: false,
        },
    )
    .await
    .expect("the manager answers on its control socket")
    .unwrap();
    assert!(outcome.ok, "{}", outcome.summary());
    assert_eq!(outcome.term, 1);
    let names: Vec<&str> = outcome.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["leader", "term", "demote", "tower", "promote", "confirm", "gossip"]
    );
    sys.wait_active(1).await;

    // The operator hears about it on Telegram and on the webhook, with the reason and the nodes.
    let (path, text) = sys.receiver.wait_for("Failover complete").await;
    let other = sys.receiver.wait_for("Failover complete").await.0;
    let mut paths = [path, other];
    paths.sort();
    assert_eq!(
        paths,
        [
            format!("/bot{}/sendMessage", e2e_support::BOT_TOKEN),
            "/webhook".to_string()
        ]
    );
    assert!(text.contains("maintenance on validator1"), "{text}");
    assert!(
        text.contains("validator1 (127.0.0.2)") && text.contains("validator2 (127.0.0.3)"),
        "{text}"
    );
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// Puts the active in `fault` and expects the manager to fail over, saying `why`.
async fn fails_over_after(fault: Fault, why: &str) {
    let mut sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, fault).await.unwrap();
    sys.wait_active(1).await;
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains(why), "{text}");
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_validator_is_replaced_automatically() {
    fails_over_after(Fault::Crash, "down").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_validator_that_stops_voting_is_replaced() {
    fails_over_after(Fault::StopVoting, "last vote").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_validator_is_replaced() {
    fails_over_after(Fault::Behind { slots: 300 }, "behind").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_agent_whose_validator_still_votes_is_left_alone_and_no_stale_tower_is_used() {
    let mut sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.agents[0].kill().await;
    sys.receiver.wait_for("Server unreachable").await;
    // Its validator still votes: promoting the other would make two voters.
    sys.slots(40).await;
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    assert_ne!(sys.cluster.identity(1), Some(sys.staked()));
    // Now the validator dies too. Votes stop and the fence passes, but the manager's newest tower
    // backup predates the votes cast since its agent died. It used to refuse every failover from
    // then on (nobody voted until someone brought the agent back); now it waits until every vote
    // the old active may have cast beyond the chain has lost its lockout, and promotes past them.
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    let died_at = sys.cluster.slot();
    let staked = sys.staked();
    sys.cluster
        .wait_until(std::time::Duration::from_secs(120), |w| {
            w.holders(&staked) == vec![1] && w.vote.last_voter == Some(1)
        })
        .await
        .expect("promoted once the lockouts expired");
    let first = sys
        .cluster
        .with_world(|w| w.safety.first_vote_after(1, died_at))
        .unwrap();
    assert!(
        first > died_at + failover_monitor::engine::TOWER_LOCKOUT_EXPIRY_SLOTS,
        "the new active voted at {first}, within the lockouts of votes up to {died_at}"
    );
    assert_eq!(sys.receiver.inbox.count("Failover failed"), 0);
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("From: validator1 (127.0.0.2)"), "{text}");
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn never_to_an_unhealthy_passive() {
    let sys = system(|_, _| {}).await;
    sys.cluster
        .fault(1, Fault::Behind { slots: 500 })
        .await
        .unwrap();
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.slots(60).await;
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    assert_ne!(sys.cluster.identity(1), Some(sys.staked()));
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_second_failover_within_the_cooldown() {
    let mut sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.wait_active(1).await;
    sys.receiver.wait_for("Failover complete").await;
    // Node 1 recovers; node 2 now stops voting within the one-minute cooldown.
    sys.cluster.fault(0, Fault::ResumeVoting).await.unwrap();
    sys.cluster.fault(1, Fault::StopVoting).await.unwrap();
    sys.slots(60).await;
    assert_eq!(sys.cluster.identity(1), Some(sys.staked()));
    assert_eq!(
        sys.receiver.inbox.count("Failover complete"),
        2,
        "one switch, on two channels"
    );
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_node_keeps_its_lease_while_the_manager_waits_for_gossip() {
    // Real Agave 3.1.12 (isolation drill): gossip took 2.4 s to show the new active, the manager
    // sent it no heartbeat meanwhile, and its lease ran out: it fenced itself 3.3 s after its
    // promotion, before its first vote was confirmed, and nobody voted for 6 s.
    let mut sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.freeze_gossip(true);
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.wait_active(1).await;
    // The switch ends once gossip gave up (10 s), ten leases of the new active.
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("gossip 10"), "{text}");
    let status = sys.agent_client(1).status(1).await.unwrap();
    assert_eq!(
        status.last_fence, None,
        "its lease lapsed during the switch"
    );
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_pubsub_stream_does_not_freeze_the_tip() {
    // The cluster endpoint's websocket stays open and stops sending: the tip used to stay at
    // the last notification, every lag read near zero, and no failover ever happened.
    let sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.silence_network_pubsub(true);
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.wait_active(1).await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_active_that_dies_within_the_cooldown_is_replaced_at_once() {
    // Agave 4.2.2 exited 250 ms after it took X in a CI drill; the one-minute cooldown held
    // the manager while nobody voted.
    let mut sys = system(|_, _| {}).await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.wait_active(1).await;
    sys.receiver.wait_for("Failover complete").await;
    sys.cluster.fault(0, Fault::ResumeVoting).await.unwrap();
    sys.slots(5).await;
    sys.cluster.fault(1, Fault::Crash).await.unwrap();
    sys.wait_active(0).await;
    let (_, text) = sys.receiver.wait_for("active validator is down").await;
    assert!(text.contains("Failover complete"), "{text}");
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_interrupted_after_the_demotion_is_finished_by_a_restarted_manager() {
    let sys = system(|_, _| {}).await;
    // A previous manager demoted node 1 (term 1) and died before promoting node 2.
    let demoted = sys
        .agent_client(0)
        .failover(&FailoverRequest {
            action: FailoverAction::BecomePassive,
            term: 1,
            switch_id: None,
            skip_identity: false,
            reason: "interrupted".into(),
            tower: None,
            tower_sha256: None,
            min_last_vote: None,
            min_root: None,
            past_lockouts: None,
            consensus: None,
            allow_migration: false,
        })
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    // Nobody votes now. The new manager sees it and finishes the switch with the final tower,
    // onto either node (both are healthy passives now; it learns their term first).
    let _manager = sys.start_manager().await;
    let staked = sys.staked();
    let last_old = demoted.tower.as_ref().unwrap().last_vote.unwrap();
    sys.cluster
        .wait_until(e2e_support::PATIENCE, |w| {
            let holders = w.holders(&staked);
            holders.len() == 1
                && w.vote.last_voter == Some(holders[0])
                && w.vote.last_vote > last_old
        })
        .await
        .unwrap();
    let active = sys.cluster.with_world(|w| w.holders(&staked)[0]);
    let installed = std::fs::read(
        sys.cluster.info().nodes[active]
            .ledger
            .join(format!("tower-1_9-{}.bin", sys.staked())),
    );
    // The new active has voted since, so its tower moved on from the one installed; the vote
    // account shows it resumed after the demoted node's last vote.
    assert!(installed.is_ok());
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_decides_but_changes_nothing() {
    let mut sys = system(|_, _| {}).await;
    sys.manager_config["dry_run"] = true.into();
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.slots(60).await;
    assert_eq!(sys.cluster.identity(0), Some(sys.staked()));
    assert_ne!(sys.cluster.identity(1), Some(sys.staked()));
    assert_eq!(sys.receiver.inbox.count("Failover complete"), 0);
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_report_arrives_on_schedule() {
    let mut sys = system(|_, _| {}).await;
    sys.manager_config["status_report_interval"] = "2s".into();
    let _manager = sys.start_manager().await;
    let (_, text) = sys.receiver.wait_for("Server status").await;
    assert!(text.contains("validator1 (127.0.0.2): Active"), "{text}");
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_pubsub_the_tip_comes_from_get_slot() {
    let mut sys = system(|_, _| {}).await;
    // Nothing listens here: the observer keeps reconnecting and polls getSlot meanwhile.
    sys.manager_config["cluster_ws"] = "ws://127.0.0.1:9".into();
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::StopVoting).await.unwrap();
    sys.wait_active(1).await;
    sys.receiver.wait_for("Failover complete").await;
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_whose_term_is_behind_the_agents_learns_theirs_and_can_switch() {
    let sys = system(|_, _| {}).await;
    // Another manager (or this one before its state_dir was wiped) brought the agents to term 5.
    for i in 0..sys.agents.len() {
        sys.agent_client(i).status(5).await.unwrap();
    }
    let manager = sys.start_manager().await;
    let outcome = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            to: None,
            reason: "after a state_dir reset".into(),
            force: false,
            dry_run: false,
            now: false,
        },
    )
    .await
    .expect("the manager answers")
    .expect("both agents count as answering");
    assert!(outcome.ok, "{}", outcome.summary());
    assert_eq!(outcome.term, 6);
    sys.wait_active(1).await;
    sys.cluster.safety().assert_safe();
}

/// Starts the system with a relay in front of node `i`'s agent that loses the answer to the
/// first request containing `needle` (the agent runs it; the manager never hears back), and
/// asks for a switch from validator1 to validator2; with `refused`, validator2's setIdentity
/// fails.
async fn switch_with_a_lost_answer(
    i: usize,
    needle: &str,
    refused: bool,
) -> (
    e2e_support::System,
    failover_monitor::switch::Outcome,
    failover_sim::relay::AnswerLosingRelay,
) {
    let mut sys = system(|_, _| {}).await;
    let relay = failover_sim::relay::AnswerLosingRelay::start(&sys.agents[i].url, needle, 1)
        .await
        .unwrap();
    sys.manager_config[format!("validator{}", i + 1)]["endpoint"] = relay.url.clone().into();
    let manager = sys.start_manager().await;
    if refused {
        sys.cluster
            .fault(1, Fault::RefuseSetIdentity { refuse: true })
            .await
            .unwrap();
    }
    let outcome = ask_running(
        &manager.state_dir,
        &ControlRequest::Trigger {
            to: None,
            reason: "maintenance".into(),
            force: true,
            dry_run: false,
            now: true,
        },
    )
    .await
    .unwrap()
    .unwrap();
    manager.stop().await;
    (sys, outcome, relay)
}

/// The lost answer is asked for again, answered from the agent's journal — the promotion ran
/// once — and the switch completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_whose_answer_was_lost_is_asked_again_and_not_run_twice() {
    let (sys, outcome, relay) = switch_with_a_lost_answer(1, "become_active", false).await;
    assert_eq!(relay.lost(), 1, "the relay lost no answer");
    assert!(outcome.ok, "{}", outcome.summary());
    sys.wait_active(1).await;
    let log = sys.agents[1].log.lock().unwrap().join("\n");
    assert!(
        log.contains("a repeated request"),
        "the promotion was not asked again: {log}"
    );
    let staked = sys.staked().to_string();
    let changes = sys.cluster.safety().identity_changes;
    assert_eq!(
        changes
            .iter()
            .filter(|c| c.node == 1 && c.identity.as_deref() == Some(staked.as_str()))
            .count(),
        1,
        "validator2 took the staked identity more than once: {changes:?}"
    );
    sys.slots(5).await;
    sys.cluster.safety().assert_safe();
}

/// A refusal whose answer was lost is still a refusal: asked again, the journal says so, and X
/// goes back to the old active in the same switch.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_promotion_whose_answer_was_lost_is_still_rolled_back() {
    let (sys, outcome, relay) = switch_with_a_lost_answer(1, "become_active", true).await;
    assert_eq!(relay.lost(), 1, "the relay lost no answer");
    assert!(!outcome.ok);
    assert!(outcome.rolled_back, "{}", outcome.summary());
    let staked = sys.staked();
    let before = sys.cluster.vote_account().last_vote;
    sys.cluster
        .wait_until(e2e_support::PATIENCE, |w| {
            w.holders(&staked) == vec![0]
                && w.vote.last_voter == Some(0)
                && w.vote.last_vote > before
        })
        .await
        .unwrap();
    sys.cluster.safety().assert_safe();
}

/// A demotion whose answer was lost: asked again, the journal gives its outcome and the final
/// tower, and the switch goes on instead of leaving the old active demoted with nobody voting.
#[tokio::test(flavor = "multi_thread")]
async fn a_demotion_whose_answer_was_lost_is_asked_again_and_the_switch_completes() {
    let (sys, outcome, relay) = switch_with_a_lost_answer(0, "become_passive", false).await;
    assert_eq!(relay.lost(), 1, "the relay lost no answer");
    assert!(outcome.ok, "{}", outcome.summary());
    sys.wait_active(1).await;
    sys.slots(5).await;
    sys.cluster.safety().assert_safe();
}

/// The etcd tower store, with a real etcd: a planned switch, then the new active's validator
/// dies. Its agent stores the final tower in etcd, and the failover back must use that one —
/// not the previous switch's final tower the manager still holds, which the chain has passed
/// (every failover after the first used to be refused for it).
#[tokio::test(flavor = "multi_thread")]
async fn with_the_etcd_store_the_failover_after_a_switch_uses_the_tower_in_etcd() {
    let sys = e2e_support::etcd_system().await;
    let manager = sys.start_manager().await;
    let outcome = ask_running(&manager.state_dir, &switch_now())
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.ok, "{}", outcome.summary());
    sys.wait_active(1).await;
    // validator2 votes well past validator1's final tower, then dies.
    sys.slots(20).await;
    sys.cluster.fault(1, Fault::Crash).await.unwrap();
    let staked = sys.staked();
    let died_at = sys.cluster.vote_account().last_vote;
    sys.cluster
        .wait_until(e2e_support::PATIENCE, |w| {
            w.holders(&staked) == vec![0]
                && w.vote.last_voter == Some(0)
                && w.vote.last_vote > died_at
        })
        .await
        .expect("validator1 votes again, with validator2's final tower from etcd");
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// A planned switch at once (no wait for a leader gap).
fn switch_now() -> ControlRequest {
    ControlRequest::Trigger {
        to: None,
        reason: "maintenance".into(),
        force: false,
        dry_run: false,
        now: true,
    }
}

/// The etcd store: planned switches there and back, each with the final tower through etcd.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_etcd_store_planned_switches_go_there_and_back() {
    let sys = e2e_support::etcd_system().await;
    let manager = sys.start_manager().await;
    for to in [1, 0] {
        let outcome = ask_running(&manager.state_dir, &switch_now())
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.ok, "{}", outcome.summary());
        assert!(
            outcome
                .phases
                .iter()
                .any(|p| p.name == "tower" && p.detail.starts_with("in etcd")),
            "{}",
            outcome.summary()
        );
        sys.wait_active(to).await;
        sys.slots(5).await;
    }
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// The etcd store: an active whose validator crashed is replaced, with the tower from etcd.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_etcd_store_a_crashed_validator_is_replaced() {
    let mut sys = e2e_support::etcd_system().await;
    let _manager = sys.start_manager().await;
    sys.slots(5).await;
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    sys.wait_active(1).await;
    let (_, text) = sys.receiver.wait_for("Failover complete").await;
    assert!(text.contains("down"), "{text}");
    sys.slots(5).await;
    sys.cluster.safety().assert_safe();
}

/// The etcd store: each vote state the active saves reaches etcd as it is saved, not once per
/// heartbeat — a host that dies leaves etcd's record at the last vote it cast (but for one saved
/// in the instant before the power went), which the new active needs to vote at once. Polled
/// every few milliseconds for 20 slots (100 ms each), etcd showed about every other vote before.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_etcd_store_every_vote_state_the_active_saves_reaches_etcd() {
    let sys = e2e_support::etcd_system().await;
    let manager = sys.start_manager().await;
    sys.wait_active(0).await;
    let config = sys.manager_cfg();
    let failover_config::TowerStore::Etcd(store) = &config.tower_store else {
        unreachable!("etcd system")
    };
    let etcd = failover_agent::store::EtcdTowers::connect(store)
        .await
        .unwrap();
    let cast = || sys.cluster.with_world(|w| w.safety.last_vote_cast());
    sys.cluster
        .wait_until(e2e_support::PATIENCE, |w| {
            w.safety.last_vote_cast().is_some()
        })
        .await
        .unwrap();
    let first = cast().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + e2e_support::PATIENCE;
    while cast().unwrap() < first + 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the active stopped voting"
        );
        if let Some(record) = etcd.get_tower().await.unwrap() {
            seen.extend(record.tower.last_vote);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let voted: Vec<u64> = (first + 1..first + 20).collect();
    let missed: Vec<&u64> = voted.iter().filter(|v| !seen.contains(v)).collect();
    assert!(
        missed.len() <= 1,
        "votes whose vote state never reached etcd: {missed:?} (seen {seen:?})"
    );
    manager.stop().await;
    sys.cluster.safety().assert_safe();
}

/// The etcd store: the active's agent dies, its validator goes on voting, then dies too. etcd's
/// record is then older than the chain's last vote: the manager waits until every vote beyond it
/// has lost its lockout and promotes past them — it used to try and refuse the switch every few
/// seconds forever ("the newest tower available is older than the vote account's last vote"),
/// because with the etcd store it never looked whether its vote state was behind.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_etcd_store_a_stale_record_waits_out_the_lockouts_instead_of_stalling() {
    let mut sys = e2e_support::etcd_system().await;
    let _manager = sys.start_manager().await;
    sys.wait_active(0).await;
    sys.slots(5).await;
    sys.agents[0].kill().await;
    sys.receiver.wait_for("Server unreachable").await;
    sys.slots(10).await;
    sys.cluster.fault(0, Fault::Crash).await.unwrap();
    let died_at = sys.cluster.slot();
    let staked = sys.staked();
    sys.cluster
        .wait_until(std::time::Duration::from_secs(120), |w| {
            w.holders(&staked) == vec![1] && w.vote.last_voter == Some(1)
        })
        .await
        .expect("promoted once the lockouts expired");
    let first = sys
        .cluster
        .with_world(|w| w.safety.first_vote_after(1, died_at))
        .unwrap();
    assert!(first > died_at + failover_monitor::engine::TOWER_LOCKOUT_EXPIRY_SLOTS);
    assert_eq!(sys.receiver.inbox.count("Failover failed"), 0);
    sys.cluster.safety().assert_safe();
}
