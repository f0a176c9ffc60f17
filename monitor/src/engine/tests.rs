//! One named case per rule and per reason not to act. Each case runs the engine over a few
//! consecutive views (one per heartbeat) and checks what it asks for at the last one.

use super::*;

const S: Duration = Duration::from_secs(1);

fn rules() -> Rules {
    Rules {
        misses_before_failover: 3,
        slot_diff_threshold: 100,
        stale_vote_slot_threshold: 8,
        alpenglow_stale_vote_slot_threshold: 24,
        cooldown: Duration::from_secs(600),
        fence_margin: Duration::from_secs(5),
        watch_votes: true,
        startup_grace: Duration::ZERO,
        fence_after_unknown: FENCE_AFTER_UNKNOWN,
    }
}

fn report(holds: bool, slot: u64) -> AgentReport {
    AgentReport {
        holds_staked: Some(holds),
        process_running: Some(true),
        slot: Some(slot),
        healthy: true,
        fence_after: Duration::from_secs(30),
        not_promotable: None,
    }
}

/// A healthy cluster at second `t`: node 0 active, both at the tip, votes current.
fn healthy(t: u64) -> View {
    let tip = 1000 + t * 3;
    View {
        now: S * t as u32,
        nodes: vec![
            NodeView {
                misses: 0,
                report: Some(report(true, tip)),
                last_answer: Some(S * t as u32),
                staked_in_gossip: true,
            },
            NodeView {
                misses: 0,
                report: Some(report(false, tip)),
                last_answer: Some(S * t as u32),
                staked_in_gossip: false,
            },
        ],
        consensus: Consensus::TowerBft,
        tip: Some(tip),
        last_vote: Some(tip - 1),
        last_vote_at: S * t as u32,
        backup_behind_chain: false,
    }
}

/// Runs the engine over `views` and returns the actions of the last step.
fn run(rules: Rules, views: &[View], prepare: impl FnOnce(&mut Engine)) -> Vec<Action> {
    let mut engine = Engine::new(rules);
    prepare(&mut engine);
    let mut last = Vec::new();
    for v in views {
        last = engine.step(v);
    }
    last
}

/// Heartbeats 0..n where `edit(t, view)` changes heartbeat `t`.
fn timeline(n: u64, edit: impl Fn(u64, &mut View)) -> Vec<View> {
    (0..n)
        .map(|t| {
            let mut v = healthy(t);
            edit(t, &mut v);
            v
        })
        .collect()
}

/// The active's agent stops answering from heartbeat `from` on (its last report stays).
fn agent0_silent_from(from: u64) -> impl Fn(u64, &mut View) {
    move |t, v| {
        if t >= from {
            v.nodes[0].misses = (t - from + 1) as u32;
            v.nodes[0].last_answer = Some(S * (from - 1) as u32);
            v.nodes[0].report = Some(report(true, 1000 + (from - 1) * 3));
        }
    }
}

fn stop_votes_from(from: u64) -> impl Fn(u64, &mut View) {
    move |t, v| {
        if t >= from {
            v.last_vote = Some(1000 + from * 3);
        }
    }
}

/// Votes land lagging the tip by 20 slots (past the threshold) until heartbeat `until`, then none.
fn votes_land_until(until: u64) -> impl Fn(u64, &mut View) {
    move |t, v| {
        v.last_vote = Some(1000 + t.min(until) * 3 - 20);
    }
}

fn failover(from: Option<usize>, to: usize, reason: Reason, demotable: bool) -> Action {
    Action::Failover {
        from,
        to,
        reason,
        demotable,
        past_lockouts: None,
    }
}

fn has_failover(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Failover { .. }))
}

fn hold_of(actions: &[Action]) -> Option<Hold> {
    actions.iter().find_map(|a| match a {
        Action::Hold { hold, .. } => Some(hold.clone()),
        _ => None,
    })
}

#[test]
fn healthy_cluster_does_nothing() {
    assert_eq!(run(rules(), &timeline(10, |_, _| {}), |_| {}), vec![]);
}

#[test]
fn unreachable_active_whose_votes_stopped_is_replaced_after_its_fence() {
    // Silent from t=5, votes stop at t=5; fence = 30 s + 5 s margin after its last answer (t=4).
    let views = timeline(41, |t, v| {
        agent0_silent_from(5)(t, v);
        stop_votes_from(5)(t, v);
    });
    let actions = run(rules(), &views, |_| {});
    assert!(
        actions.contains(&failover(
            Some(0),
            1,
            Reason::AgentUnreachable { misses: 36 },
            false
        )),
        "{actions:?}"
    );
}

#[test]
fn unreachable_active_is_not_replaced_before_its_fence() {
    let views = timeline(20, |t, v| {
        agent0_silent_from(5)(t, v);
        stop_votes_from(5)(t, v);
    });
    let actions = run(rules(), &views, |_| {});
    assert!(
        matches!(hold_of(&actions), Some(Hold::AwaitingFence { .. })),
        "{actions:?}"
    );
    assert!(!has_failover(&actions));
}

#[test]
fn unreachable_active_whose_votes_still_land_is_not_replaced() {
    let actions = run(rules(), &timeline(60, agent0_silent_from(5)), |_| {});
    assert_eq!(
        hold_of(&actions),
        Some(Hold::OldActiveStillVoting),
        "{actions:?}"
    );
}

#[test]
fn a_few_missed_heartbeats_are_not_a_failure() {
    let actions = run(rules(), &timeline(7, agent0_silent_from(5)), |_| {});
    assert_eq!(actions, vec![]);
}

#[test]
fn a_down_validator_is_replaced_after_two_samples() {
    let down = |from: u64| {
        move |t: u64, v: &mut View| {
            if t >= from {
                v.nodes[0].report.as_mut().unwrap().process_running = Some(false);
            }
        }
    };
    assert!(
        !has_failover(&run(rules(), &timeline(6, down(5)), |_| {})),
        "one sample is not enough"
    );
    let actions = run(rules(), &timeline(7, down(5)), |_| {});
    assert_eq!(
        actions,
        vec![failover(Some(0), 1, Reason::ValidatorDown, true)]
    );
}

#[test]
fn an_unreadable_validator_without_rpc_counts_as_down() {
    let views = timeline(7, |t, v| {
        if t >= 5 {
            let r = v.nodes[0].report.as_mut().unwrap();
            r.holds_staked = None;
            r.slot = None;
        }
        // Gossip still shows it: it was the active.
    });
    let actions = run(rules(), &views, |_| {});
    assert_eq!(
        actions,
        vec![failover(Some(0), 1, Reason::ValidatorDown, true)]
    );
}

#[test]
fn a_lagging_active_is_replaced_after_two_samples() {
    let lag = |t: u64, v: &mut View| {
        if t >= 5 {
            v.nodes[0].report.as_mut().unwrap().slot = Some(v.tip.unwrap() - 150);
        }
    };
    assert!(!has_failover(&run(rules(), &timeline(6, lag), |_| {})));
    let actions = run(rules(), &timeline(7, lag), |_| {});
    assert_eq!(
        actions,
        vec![failover(Some(0), 1, Reason::SlotLag { lag: 150 }, true)]
    );
}

#[test]
fn stale_votes_replace_the_active_after_two_samples() {
    // Votes stop at t=5 (last vote 1015); the tip moves 3 slots a second.
    let one = run(rules(), &timeline(9, stop_votes_from(5)), |_| {});
    assert!(!has_failover(&one), "lag 9 once is not enough: {one:?}");
    let actions = run(rules(), &timeline(10, stop_votes_from(5)), |_| {});
    assert_eq!(
        actions,
        vec![failover(Some(0), 1, Reason::VoteStale { lag: 9 + 3 }, true)]
    );
}

#[test]
fn stale_votes_are_ignored_when_votes_are_not_watched() {
    let mut r = rules();
    r.watch_votes = false;
    let views = timeline(30, |t, v| {
        stop_votes_from(5)(t, v);
        v.last_vote = None;
    });
    assert_eq!(run(r, &views, |_| {}), vec![]);
}

/// The active's votes are stale from t=5: every case below wants a switch and must hold it.
fn wanting_switch(edit: impl Fn(u64, &mut View)) -> Vec<View> {
    timeline(10, move |t, v| {
        stop_votes_from(5)(t, v);
        edit(t, v);
    })
}

#[test]
fn never_to_an_unreachable_passive() {
    let actions = run(
        rules(),
        &wanting_switch(|_, v| v.nodes[1].misses = 1),
        |_| {},
    );
    assert_eq!(hold_of(&actions), Some(Hold::PassiveUnreachable));
}

#[test]
fn never_to_a_down_passive() {
    let views =
        wanting_switch(|_, v| v.nodes[1].report.as_mut().unwrap().process_running = Some(false));
    assert_eq!(
        hold_of(&run(rules(), &views, |_| {})),
        Some(Hold::PassiveDown)
    );
}

#[test]
fn never_to_a_lagging_passive() {
    let views = wanting_switch(|_, v| {
        let tip = v.tip.unwrap();
        v.nodes[1].report.as_mut().unwrap().slot = Some(tip - 500);
    });
    assert_eq!(
        hold_of(&run(rules(), &views, |_| {})),
        Some(Hold::PassiveLagging { lag: 500 })
    );
}

#[test]
fn never_to_an_unhealthy_passive() {
    let views = wanting_switch(|_, v| v.nodes[1].report.as_mut().unwrap().healthy = false);
    assert_eq!(
        hold_of(&run(rules(), &views, |_| {})),
        Some(Hold::PassiveUnhealthy)
    );
}

#[test]
fn not_within_the_cooldown() {
    let actions = run(rules(), &wanting_switch(|_, _| {}), |e| {
        e.switched(Duration::ZERO)
    });
    assert!(
        matches!(hold_of(&actions), Some(Hold::Cooldown { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_new_active_whose_validator_died_is_replaced_within_the_cooldown() {
    // The CI run of 2026-12-02: Agave 4.2.2 exited right after it took X in a planned switch,
    // and for the 10-minute cooldown nobody voted.
    let views = timeline(7, |t, v| {
        if t >= 5 {
            v.nodes[0].report.as_mut().unwrap().process_running = Some(false);
        }
    });
    let actions = run(rules(), &views, |e| e.switched(Duration::ZERO));
    assert_eq!(
        actions,
        vec![failover(Some(0), 1, Reason::ValidatorDown, true)]
    );
}

#[test]
fn a_fenced_unreachable_active_is_replaced_within_the_cooldown() {
    // The real 3.1.12 isolation drill of 2026-12-03: the active was cut off 6 s after a switch;
    // its agent fenced it and its votes stopped, yet for the rest of the cooldown nobody voted
    // ("nobody is voting ... no switch is possible: cooldown").
    let views = timeline(60, |t, v| {
        agent0_silent_from(5)(t, v);
        stop_votes_from(5)(t, v);
    });
    let actions = run(rules(), &views, |e| e.switched(Duration::ZERO));
    assert!(has_failover(&actions), "{actions:?}");
    // Its votes still landing: the cooldown holds (and it would be two voters anyway).
    let landing = timeline(60, agent0_silent_from(5));
    let actions = run(rules(), &landing, |e| e.switched(Duration::ZERO));
    assert!(!has_failover(&actions), "{actions:?}");
}

#[test]
fn nobody_active_is_resolved_within_the_cooldown() {
    let views = timeline(10, |t, v| {
        v.nodes[0].report.as_mut().unwrap().holds_staked = Some(false);
        v.nodes[0].staked_in_gossip = false;
        v.nodes[0].report.as_mut().unwrap().slot = Some(v.tip.unwrap() - 5);
        stop_votes_from(3)(t, v);
    });
    let actions = run(rules(), &views, |e| e.switched(Duration::ZERO));
    assert_eq!(actions, vec![failover(None, 1, Reason::NoActive, true)]);
}

#[test]
fn after_the_cooldown_it_acts_again() {
    let mut r = rules();
    r.cooldown = Duration::from_secs(3);
    let actions = run(r, &wanting_switch(|_, _| {}), |e| {
        e.switched(Duration::ZERO)
    });
    assert!(has_failover(&actions), "{actions:?}");
}

#[test]
fn nothing_while_the_view_is_incomplete() {
    for (name, edit) in [
        (
            "no tip",
            Box::new(|_: u64, v: &mut View| v.tip = None) as Box<dyn Fn(u64, &mut View)>,
        ),
        (
            "no vote sample",
            Box::new(|_, v: &mut View| v.last_vote = None),
        ),
        (
            "passive never answered",
            Box::new(|_, v: &mut View| v.nodes[1].report = None),
        ),
    ] {
        let actions = run(rules(), &wanting_switch(edit), |_| {});
        assert!(!has_failover(&actions), "{name}: {actions:?}");
    }
}

#[test]
fn both_active_is_critical_and_changes_nothing() {
    let views = timeline(3, |_, v| {
        v.nodes[1].report.as_mut().unwrap().holds_staked = Some(true)
    });
    let actions = run(rules(), &views, |_| {});
    assert!(
        matches!(actions.as_slice(), [Action::Critical { .. }]),
        "{actions:?}"
    );
}

#[test]
fn nobody_active_and_nobody_voting_promotes_the_best_passive() {
    let views = timeline(10, |t, v| {
        v.nodes[0].report.as_mut().unwrap().holds_staked = Some(false);
        v.nodes[0].staked_in_gossip = false;
        v.nodes[0].report.as_mut().unwrap().slot = Some(v.tip.unwrap() - 5);
        stop_votes_from(3)(t, v);
    });
    let actions = run(rules(), &views, |_| {});
    assert_eq!(actions, vec![failover(None, 1, Reason::NoActive, true)]);
}

#[test]
fn nobody_active_but_votes_landing_does_nothing() {
    let views = timeline(10, |_, v| {
        v.nodes[0].report.as_mut().unwrap().holds_staked = Some(false);
        v.nodes[0].staked_in_gossip = false;
    });
    assert_eq!(run(rules(), &views, |_| {}), vec![]);
}

#[test]
fn roles_are_read_from_the_agents_either_way_round() {
    // Node 1 is the active one here; its votes stop.
    let views = timeline(10, |t, v| {
        v.nodes.swap(0, 1);
        stop_votes_from(5)(t, v);
    });
    let actions = run(rules(), &views, |_| {});
    assert_eq!(
        actions,
        vec![failover(Some(1), 0, Reason::VoteStale { lag: 12 }, true)]
    );
}

#[test]
fn unreachable_and_back_online_are_each_reported_once() {
    let mut engine = Engine::new(rules());
    let mut seen = Vec::new();
    for t in 0..12 {
        let mut v = healthy(t);
        if (3..8).contains(&t) {
            v.nodes[1].misses = (t - 2) as u32;
        }
        seen.extend(engine.step(&v));
    }
    assert_eq!(
        seen,
        vec![
            Action::Unreachable { node: 1 },
            Action::BackOnline { node: 1 }
        ]
    );
}

fn attention_of(actions: &[Action]) -> Vec<(Cause, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Attention {
                cause, critical, ..
            } => Some((cause.clone(), *critical)),
            _ => None,
        })
        .collect()
}

fn standby_keys_broken(_: u64, v: &mut View) {
    v.nodes[1].report.as_mut().unwrap().not_promotable =
        Some("staked_identity_keypair: holds another key".into());
}

#[test]
fn a_standby_that_could_not_be_promoted_is_held_with_its_reason() {
    let views = timeline(8, |t, v| {
        standby_keys_broken(t, v);
        stop_votes_from(1)(t, v);
    });
    let actions = run(rules(), &views, |_| {});
    assert!(!has_failover(&actions));
    assert!(matches!(
        hold_of(&actions),
        Some(Hold::PassiveNotPromotable { why }) if why.contains("staked_identity_keypair")
    ));
}

#[test]
fn a_standby_that_could_not_be_promoted_is_said_once_and_again_after_it_recovers() {
    let mut engine = Engine::new(rules());
    let mut said = Vec::new();
    for t in 0..10 {
        let mut v = healthy(t);
        if !(4..6).contains(&t) {
            standby_keys_broken(t, &mut v);
        }
        said.extend(attention_of(&engine.step(&v)));
    }
    let cause = (Cause::StandbyNotPromotable { node: 1 }, false);
    assert_eq!(said, vec![cause.clone(), cause]);
}

#[test]
fn a_standby_whose_validator_is_down_is_said_once() {
    let views = timeline(6, |_, v| {
        v.nodes[1].report.as_mut().unwrap().process_running = Some(false);
    });
    let mut engine = Engine::new(rules());
    let said: Vec<_> = views
        .iter()
        .flat_map(|v| attention_of(&engine.step(v)))
        .collect();
    assert_eq!(said, vec![(Cause::StandbyDown { node: 1 }, false)]);
}

#[test]
fn a_killed_active_is_not_called_a_standby_that_is_down() {
    // What a real agent reports once its validator is killed: not running, identity unknown.
    let views = timeline(8, |t, v| {
        if t >= 5 {
            let r = v.nodes[0].report.as_mut().unwrap();
            r.process_running = Some(false);
            r.holds_staked = None;
            r.slot = None;
        }
    });
    let mut engine = Engine::new(rules());
    let mut said = Vec::new();
    let mut switched = false;
    for v in &views {
        let actions = engine.step(v);
        said.extend(attention_of(&actions));
        switched |= has_failover(&actions);
    }
    assert!(switched);
    assert!(said.is_empty(), "{said:?}");
}

#[test]
fn a_hold_that_leaves_nobody_voting_is_said_once_as_critical() {
    // The active is down and the standby could not take over: nobody votes.
    let views = timeline(8, |t, v| {
        standby_keys_broken(t, v);
        if t >= 2 {
            v.nodes[0].report.as_mut().unwrap().process_running = Some(false);
            v.last_vote = Some(1000 + 2 * 3);
        }
    });
    let mut engine = Engine::new(rules());
    let said: Vec<_> = views
        .iter()
        .flat_map(|v| attention_of(&engine.step(v)))
        .collect();
    let critical: Vec<_> = said.iter().filter(|(_, c)| *c).collect();
    assert_eq!(critical.len(), 1, "{said:?}");
    assert!(
        matches!(&critical[0].0, Cause::NobodyVoting { reason, .. } if reason.contains("down"))
    );
}

#[test]
fn waiting_out_a_fence_is_not_said_as_nobody_voting() {
    let views = timeline(12, |t, v| {
        agent0_silent_from(2)(t, v);
        stop_votes_from(2)(t, v);
    });
    let mut engine = Engine::new(rules());
    let said: Vec<_> = views
        .iter()
        .flat_map(|v| attention_of(&engine.step(v)))
        .collect();
    assert!(said.is_empty(), "{said:?}");
}

#[test]
fn no_automatic_switch_within_the_startup_grace_period() {
    let grace = Rules {
        startup_grace: Duration::from_secs(120),
        ..rules()
    };
    let views = timeline(6, stop_votes_from(1));
    let actions = run(grace, &views, |_| {});
    assert!(!has_failover(&actions));
    assert!(matches!(hold_of(&actions), Some(Hold::StartupGrace { .. })));
    // After it, the same view fails over.
    let actions = run(rules(), &views, |_| {});
    assert!(has_failover(&actions));
}

// The lease (issue 14): positive evidence before promoting past an unreachable active.

#[test]
fn a_restarted_manager_that_never_heard_the_active_waits_the_worst_case_from_its_start() {
    // A manager that starts (t=0) while the active is already silent: no report, no answer ever.
    // It must assume the largest fence_after it knows of, not 0 + margin.
    let views = timeline(60, |t, v| {
        v.nodes[0].misses = t as u32 + 1;
        v.nodes[0].report = None;
        v.nodes[0].last_answer = None;
        v.last_vote = Some(1000);
    });
    let rules = Rules {
        fence_after_unknown: Duration::from_secs(45),
        ..rules()
    };
    // At t=49 (45 s + 5 s margin not yet passed): waiting.
    let early = run(rules.clone(), &views[..50], |_| {});
    assert!(
        matches!(hold_of(&early), Some(Hold::AwaitingFence { .. })),
        "{early:?}"
    );
    let late = run(rules, &views, |_| {});
    assert!(has_failover(&late), "{late:?}");
}

#[test]
fn an_unreachable_active_whose_votes_landed_recently_waits_its_fence_from_that_vote() {
    // Silent from t=5, but votes kept landing (lagging past the threshold) until t=40: an agent
    // past its lease keeps voting while its votes land, so the fence counts from the last one.
    let views = timeline(80, |t, v| {
        agent0_silent_from(5)(t, v);
        votes_land_until(40)(t, v);
    });
    // t=70: 65 s since its last answer, 30 s since its last vote landed (< 30 s + 5 s).
    let held = run(rules(), &views[..71], |_| {});
    assert!(
        matches!(hold_of(&held), Some(Hold::AwaitingFence { .. })),
        "{held:?}"
    );
    let acted = run(rules(), &views, |_| {});
    assert!(has_failover(&acted), "{acted:?}");
}

#[test]
fn the_fence_counts_from_when_the_vote_was_read_not_from_the_end_of_the_sample() {
    // As above, but each sample ends 2 s after the cluster answered (it waited for the silent
    // agent): the last vote that moved was read at t=38, so the 30 s + 5 s fence ends at t=73.
    let views = timeline(80, |t, v| {
        agent0_silent_from(5)(t, v);
        votes_land_until(40)(t, v);
        v.last_vote_at = (S * t as u32).saturating_sub(2 * S);
    });
    let held = run(rules(), &views[..73], |_| {});
    assert!(
        matches!(hold_of(&held), Some(Hold::AwaitingFence { .. })),
        "{held:?}"
    );
    let acted = run(rules(), &views[..74], |_| {});
    assert!(has_failover(&acted), "{acted:?}");
}

#[test]
fn without_a_vote_account_an_unreachable_active_is_never_replaced_on_time_alone() {
    let views = timeline(80, agent0_silent_from(5));
    let rules = Rules {
        watch_votes: false,
        ..rules()
    };
    let actions = run(rules, &views, |_| {});
    assert!(!has_failover(&actions), "{actions:?}");
    assert_eq!(hold_of(&actions), Some(Hold::NoVoteEvidence));
}

#[test]
fn a_node_that_missed_heartbeats_is_unknown_not_known_passive() {
    // Node 1 was promoted, but its answer never came and its agent is unreachable since: its last
    // report says "not staked". Node 0 is passive. Nobody votes on chain yet (node 1 just took X).
    // With node 1 counted as passive, NoActive would promote node 0: two voters.
    let views = timeline(20, |t, v| {
        v.nodes[0].report = Some(report(false, 1000 + t * 3));
        v.nodes[0].staked_in_gossip = false;
        v.nodes[1].misses = t as u32 + 1;
        v.nodes[1].last_answer = None;
        v.last_vote = Some(1000);
    });
    let actions = run(rules(), &views, |_| {});
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Failover {
                reason: Reason::NoActive,
                ..
            }
        )),
        "{actions:?}"
    );
    // It is the possible active: replaced only by the fence rules, from it.
    assert!(actions.iter().all(|a| match a {
        Action::Failover { from, .. } => *from == Some(1),
        _ => true,
    }));
}

#[test]
fn a_fenced_active_whose_final_tower_never_arrived_is_replaced_once_its_lockouts_expired() {
    // The old active fenced itself, but the newest tower the manager holds predates the chain's
    // last vote. Refusing would leave nobody voting for as long as it stays away; instead wait
    // until every vote it may have cast beyond the chain has lost its lockout (TowerBFT).
    let edit = |t: u64, v: &mut View| {
        agent0_silent_from(5)(t, v);
        stop_votes_from(5)(t, v);
        v.backup_behind_chain = true;
    };
    // Fence sure at t=40 (30 s + 5 s after the last vote landed, t=5): tip 1120.
    let sure = run(rules(), &timeline(41, edit), |_| {});
    assert_eq!(
        hold_of(&sure),
        Some(Hold::AwaitingLockouts {
            slots: TOWER_LOCKOUT_EXPIRY_SLOTS
        })
    );
    let bound = 1000 + 40 * 3 + TOWER_LOCKOUT_EXPIRY_SLOTS;
    // The tip (1000 + 3t) reaches the bound at t = 212.
    let waiting = run(rules(), &timeline(212, edit), |_| {});
    assert!(
        matches!(hold_of(&waiting), Some(Hold::AwaitingLockouts { slots: 3 })),
        "{waiting:?}"
    );
    let acted = run(rules(), &timeline(213, edit), |_| {});
    assert!(
        acted.contains(&Action::Failover {
            from: Some(0),
            to: 1,
            reason: Reason::AgentUnreachable { misses: 208 },
            demotable: false,
            past_lockouts: Some(bound),
        }),
        "{acted:?}"
    );
}

#[test]
fn under_alpenglow_a_stale_history_needs_no_lockout_wait_the_agent_waits_for_its_root() {
    let edit = |t: u64, v: &mut View| {
        agent0_silent_from(5)(t, v);
        v.last_vote = Some(1000 + 5 * 3);
        v.consensus = Consensus::Alpenglow {
            genesis_slot: Some(0),
        };
        v.backup_behind_chain = true;
    };
    let acted = run(rules(), &timeline(41, edit), |_| {});
    assert!(
        acted.iter().any(|a| matches!(
            a,
            Action::Failover {
                past_lockouts: Some(1117),
                demotable: false,
                ..
            }
        )),
        "{acted:?}"
    );
}

#[test]
fn a_demotable_switch_never_waits_for_lockouts() {
    // A reachable active hands over its final tower: an old backup does not matter.
    let views = timeline(10, |t, v| {
        if t >= 5 {
            v.nodes[0].report.as_mut().unwrap().process_running = Some(false);
        }
        v.backup_behind_chain = true;
    });
    let actions = run(rules(), &views, |_| {});
    assert!(
        actions.contains(&failover(Some(0), 1, Reason::ValidatorDown, true)),
        "{actions:?}"
    );
}

/// The healthy cluster with a third node, a standby after node 1 in priority.
fn three(t: u64) -> View {
    let mut v = healthy(t);
    let standby = v.nodes[1].clone();
    v.nodes.push(standby);
    v
}

/// Heartbeats 0..n of [`three`] where `edit(t, view)` changes heartbeat `t`.
fn timeline3(n: u64, edit: impl Fn(u64, &mut View)) -> Vec<View> {
    (0..n)
        .map(|t| {
            let mut v = three(t);
            edit(t, &mut v);
            v
        })
        .collect()
}

/// The first switch `actions` ask for: whence, where to.
fn failover_of(actions: &[Action]) -> Option<(Option<usize>, usize)> {
    actions.iter().find_map(|a| match a {
        Action::Failover { from, to, .. } => Some((*from, *to)),
        _ => None,
    })
}

fn crash_of_node_0(t: u64, v: &mut View) {
    if t >= 2 {
        v.nodes[0].report.as_mut().unwrap().process_running = Some(false);
    }
}

#[test]
fn three_nodes_a_dead_active_goes_to_the_first_standby() {
    let actions = run(rules(), &timeline3(5, crash_of_node_0), |_| {});
    assert_eq!(failover_of(&actions), Some((Some(0), 1)), "{actions:?}");
}

#[test]
fn three_nodes_a_lagging_first_standby_is_passed_over_for_the_next() {
    let actions = run(
        rules(),
        &timeline3(5, |t, v| {
            crash_of_node_0(t, v);
            v.nodes[1].report.as_mut().unwrap().slot = Some(v.tip.unwrap() - 500);
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), Some((Some(0), 2)), "{actions:?}");
}

#[test]
fn three_nodes_an_unreachable_or_unpromotable_first_standby_is_passed_over() {
    let unreachable = timeline3(5, |t, v| {
        crash_of_node_0(t, v);
        v.nodes[1].misses = 1;
    });
    let actions = run(rules(), &unreachable, |_| {});
    assert_eq!(failover_of(&actions), Some((Some(0), 2)), "{actions:?}");
    let keyless = timeline3(5, |t, v| {
        crash_of_node_0(t, v);
        v.nodes[1].report.as_mut().unwrap().not_promotable = Some("no keypair".into());
    });
    let actions = run(rules(), &keyless, |_| {});
    assert_eq!(failover_of(&actions), Some((Some(0), 2)), "{actions:?}");
}

#[test]
fn three_nodes_with_no_standby_fit_the_first_standbys_problem_holds() {
    let actions = run(
        rules(),
        &timeline3(5, |t, v| {
            crash_of_node_0(t, v);
            v.nodes[1].report.as_mut().unwrap().healthy = false;
            v.nodes[2].report.as_mut().unwrap().process_running = Some(false);
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), None, "{actions:?}");
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Hold {
                hold: Hold::PassiveUnhealthy,
                ..
            }
        )),
        "{actions:?}"
    );
}

#[test]
fn three_nodes_the_active_in_the_middle_goes_to_the_first_standby() {
    let actions = run(
        rules(),
        &timeline3(5, |t, v| {
            v.nodes.swap(0, 1);
            if t >= 2 {
                v.nodes[1].report.as_mut().unwrap().process_running = Some(false);
            }
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), Some((Some(1), 0)), "{actions:?}");
}

#[test]
fn three_nodes_two_holders_is_critical_and_no_switch() {
    let actions = run(
        rules(),
        &timeline3(3, |_, v| {
            v.nodes[2].report.as_mut().unwrap().holds_staked = Some(true);
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), None, "{actions:?}");
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Critical { text } if text.contains("validator1 and validator3"))
        ),
        "{actions:?}"
    );
}

#[test]
fn three_nodes_nobody_active_promotes_the_standby_closest_to_the_tip() {
    let actions = run(
        rules(),
        &timeline3(5, |_, v| {
            let tip = v.tip.unwrap();
            v.nodes[0].report.as_mut().unwrap().holds_staked = Some(false);
            v.nodes[0].staked_in_gossip = false;
            v.nodes[0].report.as_mut().unwrap().slot = Some(tip - 5);
            v.nodes[1].report.as_mut().unwrap().slot = Some(tip - 3);
            v.last_vote = Some(tip - 40);
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), Some((None, 2)), "{actions:?}");
}

#[test]
fn three_nodes_an_unreachable_active_is_not_replaced_while_two_are_unknown() {
    // Node 0 unreachable (it may hold X) and node 2 unknown too: with nothing in gossip, nobody
    // is taken for the active, and nothing is switched while votes land.
    let actions = run(
        rules(),
        &timeline3(8, |t, v| {
            if t >= 2 {
                v.nodes[0].misses = (t - 1) as u32;
                v.nodes[2].misses = (t - 1) as u32;
            }
        }),
        |_| {},
    );
    assert_eq!(failover_of(&actions), None, "{actions:?}");
}
