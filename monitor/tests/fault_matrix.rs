//! The fault matrix (issue 18): each scenario injects one fault, or a sequence of them, into a
//! fresh system — the simulated cluster, a real `failover-agent` process per validator and a real
//! `failover-manager` process — and asserts the safety recorder (never two holders of X, never two
//! votes in one slot, no vote state loaded older than a vote already cast) and liveness (X voting
//! again on exactly one node within the scenario's bound whenever a healthy standby exists, or
//! still voting where nothing needed to move).
//!
//! A program of its own (`harness = false`): `cargo test --test fault_matrix` runs every scenario
//! once; `scripts/faults` runs each 10 times. Arguments: `--runs N`, `--seed S` (a failing run
//! prints its seed; the seed picks the node that is active when the fault comes and when, to the
//! slot and the millisecond), `--jobs N` (scenarios run side by side), `--list`, and any other
//! word filters the scenarios by name, as a test filter would. Flags of the standard test harness
//! (`--nocapture`, `--test-threads=…`) are accepted and ignored.
//!
//! Every fault is placed by an event (a slot reached, a log line, a pause point), never by a
//! sleep; the only sleeps are the seeded sub-slot jitter and the length of a pause being tested.

mod e2e_support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e_support::{spawn_agent, system_on, ManagerProcess, System, PATIENCE};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_monitor::switch::Outcome;
use failover_sim::{Fault, SimConfig};
use futures_util::future::BoxFuture;

/// Crash, stop-voting, lag: detection is three 200 ms heartbeats or two vote samples.
const QUICK: Duration = Duration::from_secs(15);
/// Faults the manager may only act on past the agent's fence (1 s lease → 3.6 s published, plus
/// the 500 ms margin), or that need a restart first.
const FENCED: Duration = Duration::from_secs(25);
/// A host that dies between its validator's vote and the agent's shipping of that tower leaves
/// the manager a tower one vote older than the chain (a few percent of the moments in a slot);
/// under TowerBFT the manager then waits until every vote the dead node may have cast has lost
/// its lockout (`engine::TOWER_LOCKOUT_EXPIRY_SLOTS`, 516 slots of 100 ms here) — safe, and slow.
const FENCED_OR_LOCKOUTS: Duration = Duration::from_secs(25 + 52);
/// How long "nothing should move" is watched.
const STEADY_SLOTS: u64 = 30;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Consensus {
    Tower,
    Alpenglow,
}

struct Scenario {
    name: &'static str,
    consensus: Consensus,
    /// What the run shows: `Some` the time from the fault to X voting again (a recovery),
    /// `None` nothing needed to move and X kept voting where it was.
    run: fn(&mut Run) -> BoxFuture<'_, anyhow::Result<Option<Duration>>>,
}

macro_rules! scenario {
    ($name:literal, $consensus:ident, $f:ident) => {
        Scenario {
            name: $name,
            consensus: Consensus::$consensus,
            run: |r| Box::pin($f(r)),
        }
    };
    ($name:literal, $consensus:ident, $f:ident($($arg:expr),*)) => {
        Scenario {
            name: $name,
            consensus: Consensus::$consensus,
            run: |r| Box::pin($f(r, $($arg),*)),
        }
    };
}

fn scenarios() -> Vec<Scenario> {
    vec![
        scenario!("validator-crash", Tower, validator_crash),
        scenario!("validator-crash", Alpenglow, validator_crash),
        scenario!("validator-hung", Tower, validator_hung),
        scenario!("validator-hung", Alpenglow, validator_hung),
        scenario!("validator-stops-voting", Tower, validator_stops_voting),
        scenario!("validator-stops-voting", Alpenglow, validator_stops_voting),
        scenario!("validator-lags", Tower, validator_lags),
        scenario!("validator-cut-from-cluster", Tower, validator_cut_off),
        scenario!("validator-cut-from-cluster", Alpenglow, validator_cut_off),
        scenario!("host-down", Tower, host_down),
        scenario!("host-down", Alpenglow, host_down),
        scenario!("active-agent-killed", Tower, active_agent_killed),
        scenario!(
            "active-agent-paused-briefly",
            Tower,
            active_agent_paused_briefly
        ),
        scenario!(
            "active-agent-paused-past-lease",
            Tower,
            active_agent_paused_past_lease
        ),
        scenario!(
            "active-agent-paused-past-lease",
            Alpenglow,
            active_agent_paused_past_lease
        ),
        scenario!("passive-agent-killed", Tower, passive_agent_killed),
        scenario!("manager-killed", Tower, manager_killed),
        scenario!("manager-paused", Tower, manager_paused),
        scenario!("manager-paused", Alpenglow, manager_paused),
        scenario!(
            "manager-killed-before-demote",
            Tower,
            manager_killed_at("switch_term")
        ),
        scenario!(
            "manager-killed-after-demote",
            Tower,
            manager_killed_at("switch_demoted")
        ),
        scenario!(
            "manager-killed-after-demote",
            Alpenglow,
            manager_killed_at("switch_demoted")
        ),
        scenario!(
            "manager-killed-after-promote",
            Tower,
            manager_killed_at("switch_promoted")
        ),
        scenario!(
            "manager-killed-after-promote",
            Alpenglow,
            manager_killed_at("switch_promoted")
        ),
        scenario!(
            "manager-killed-after-confirm",
            Tower,
            manager_killed_at("switch_confirmed")
        ),
        scenario!(
            "old-agent-killed-voters-removed",
            Tower,
            agent_killed_at(Side::Old, "demote_voters_removed")
        ),
        scenario!(
            "old-agent-killed-voters-removed",
            Alpenglow,
            agent_killed_at(Side::Old, "demote_voters_removed")
        ),
        scenario!(
            "old-agent-killed-during-settle",
            Tower,
            agent_killed_at(Side::Old, "demote_settling")
        ),
        scenario!(
            "old-agent-killed-after-handover",
            Tower,
            agent_killed_at(Side::Old, "demote_handed_over")
        ),
        scenario!(
            "old-agent-killed-after-handover",
            Alpenglow,
            agent_killed_at(Side::Old, "demote_handed_over")
        ),
        scenario!(
            "new-agent-killed-tower-installed",
            Tower,
            agent_killed_at(Side::New, "promote_installed")
        ),
        scenario!(
            "new-agent-killed-vote-history-installed",
            Alpenglow,
            agent_killed_at(Side::New, "promote_installed")
        ),
        scenario!(
            "new-agent-killed-identity-set",
            Tower,
            agent_killed_at(Side::New, "promote_identity_set")
        ),
        scenario!(
            "new-agent-killed-identity-set",
            Alpenglow,
            agent_killed_at(Side::New, "promote_identity_set")
        ),
        scenario!(
            "new-agent-killed-before-answer",
            Tower,
            agent_killed_at(Side::New, "promote_done")
        ),
        scenario!(
            "manager-killed-at-decision",
            Tower,
            manager_killed_at_decision
        ),
        scenario!(
            "manager-restarted-in-silence",
            Tower,
            manager_restarted_in_silence
        ),
        scenario!(
            "manager-restarted-in-silence",
            Alpenglow,
            manager_restarted_in_silence
        ),
        scenario!(
            "standby-agent-paused-during-promotion",
            Tower,
            standby_agent_paused_during_promotion
        ),
        scenario!(
            "standby-agent-paused-during-promotion",
            Alpenglow,
            standby_agent_paused_during_promotion
        ),
        scenario!("gossip-frozen-then-crash", Tower, gossip_frozen_then_crash),
        scenario!("cluster-pubsub-silent", Tower, pubsub_silent),
        scenario!(
            "passive-down-then-active-crash",
            Tower,
            passive_down_then_active_crash
        ),
        scenario!("slow-admin-on-promotion", Tower, slow_admin_on_promotion),
        scenario!("promotion-refused", Tower, promotion_refused),
        scenario!("promotion-refused", Alpenglow, promotion_refused),
        scenario!("promotion-half-applied", Alpenglow, promotion_half_applied),
        scenario!("both-validators-restart", Tower, both_validators_restart),
        scenario!("switch-asked-twice-at-once", Tower, switch_asked_twice),
        scenario!("flapping-cluster-link", Tower, flapping_cluster_link),
        scenario!(
            "crash-then-new-active-crash",
            Tower,
            crash_then_new_active_crash
        ),
        scenario!(
            "standby-state-dir-read-only",
            Tower,
            switch_onto_read_only_state_dir
        ),
        scenario!(
            "standby-state-dir-full",
            Alpenglow,
            switch_onto_full_state_dir
        ),
        scenario!(
            "active-state-dir-read-only",
            Tower,
            switch_from_broken_state_dir(Disk::ReadOnly)
        ),
        scenario!(
            "active-state-dir-full-then-crash",
            Tower,
            active_state_dir_full_then_crash
        ),
    ]
}

/// What goes wrong with an agent's state dir (its term, journal, lease and vote-state archive).
#[derive(Clone, Copy, Debug)]
enum Disk {
    /// Remounted read-only (what the kernel does after I/O errors): every write fails EROFS.
    ReadOnly,
    /// No space left: every write that needs a block fails ENOSPC.
    Full,
}

/// An agent's state dir moved onto a small tmpfs of its own (its files copied there), so that a
/// scenario can make it read-only or full. Unmounted on drop, before the run's tempdir goes.
/// Needs root (`mount`), like the isolation drills.
struct BrokenDisk {
    dir: PathBuf,
    tmpfs: PathBuf,
}

fn mount(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("mount").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "mount {}: {} (the disk scenarios need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl BrokenDisk {
    fn break_(dir: PathBuf, how: Disk) -> anyhow::Result<Self> {
        let tmpfs = dir.with_extension("tmpfs");
        std::fs::create_dir_all(&tmpfs)?;
        let path = |p: &PathBuf| p.to_str().expect("UTF-8 path").to_string();
        // Room for the agent's files and its 1 MiB reserve (`durable::keep_reserve`).
        mount(&["-t", "tmpfs", "-o", "size=8m", "tmpfs", &path(&tmpfs)])?;
        let disk = Self { dir, tmpfs };
        let copied = std::process::Command::new("cp")
            .args(["-a", &format!("{}/.", path(&disk.dir)), &path(&disk.tmpfs)])
            .status()?;
        anyhow::ensure!(copied.success(), "cp -a of the state dir failed");
        mount(&["--bind", &path(&disk.tmpfs), &path(&disk.dir)])?;
        match how {
            Disk::ReadOnly => mount(&["-o", "remount,bind,ro", &path(&disk.dir)])?,
            Disk::Full => {
                use std::io::Write as _;
                let mut filler = std::fs::File::create(disk.dir.join("filler"))?;
                let block = vec![0u8; 64 * 1024];
                while filler.write_all(&block).is_ok() {}
                // And the last bytes a partial block left.
                while filler.write_all(&[0]).is_ok() {}
            }
        }
        Ok(disk)
    }
}

impl Drop for BrokenDisk {
    fn drop(&mut self) {
        for mounted in [&self.dir, &self.tmpfs] {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(mounted)
                .status();
        }
    }
}

/// SplitMix64: the seed's stream of choices, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One run of one scenario: a fresh system, the manager as a process.
struct Run {
    sys: System,
    manager: Option<ManagerProcess>,
    rng: Rng,
}

impl Run {
    async fn start(consensus: Consensus, seed: u64) -> anyhow::Result<Self> {
        let make = match consensus {
            Consensus::Tower => SimConfig::new as fn(PathBuf) -> SimConfig,
            Consensus::Alpenglow => SimConfig::alpenglow,
        };
        let mut sys = system_on(make, |_, _| {}).await;
        // One failover per scenario is the rule; the sequences need a second within seconds.
        sys.manager_config["failover_cooldown"] = "3s".into();
        let mut run = Self {
            sys,
            manager: None,
            rng: Rng(seed),
        };
        run.start_manager().await;
        run.sys.wait_active(0).await;
        // The seed picks which node is active when the fault comes.
        if run.rng.between(0, 1) == 1 {
            run.planned_switch().await?;
            run.sys.wait_active(1).await;
            // Past the cooldown of that switch, as the scenario's own failover must be.
            run.sys.slots(35).await;
        }
        Ok(run)
    }

    async fn start_manager(&mut self) {
        // Pause points on, for the scenarios that stop the manager at one.
        self.manager = Some(
            self.sys
                .spawn_manager(&format!("export {}=1", failover_agent::pause::ENV))
                .await,
        );
    }

    fn manager(&self) -> &ManagerProcess {
        self.manager.as_ref().expect("the manager runs")
    }

    async fn kill_manager(&mut self) {
        let mut manager = self.manager.take().expect("the manager runs");
        manager.child.kill().await.expect("SIGKILL by pid");
    }

    fn active(&self) -> anyhow::Result<usize> {
        let staked = self.sys.staked();
        let holders = self.sys.cluster.with_world(|w| w.holders(&staked));
        match holders[..] {
            [one] => Ok(one),
            _ => anyhow::bail!("X is held by {holders:?}"),
        }
    }

    fn last_cast(&self) -> u64 {
        self.sys
            .cluster
            .with_world(|w| w.safety.last_vote_cast().unwrap_or(0))
    }

    /// The fault comes a seeded number of slots from now, at a seeded point of its slot.
    async fn moment(&mut self) {
        let slots = self.rng.between(2, 12);
        self.sys.slots(slots).await;
        let jitter = self.rng.between(0, 99);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }

    /// Waits until exactly one node holds X and has cast a vote past `after`; how long it took
    /// from `since`.
    async fn voting_again(
        &self,
        after: u64,
        since: Instant,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let staked = self.sys.staked();
        self.sys
            .cluster
            .wait_until(within, |w| match w.holders(&staked)[..] {
                // Landed, not only cast: a node cut off from the cluster casts votes nobody gets.
                [one] => w.vote.last_voter == Some(one) && w.vote.last_vote > after,
                _ => false,
            })
            .await
            .map_err(|e| anyhow::anyhow!("X not voting again: {e}"))?;
        Ok(since.elapsed())
    }

    /// X stays on `node` for [`STEADY_SLOTS`] slots, voting there at the end.
    async fn stays_on(&self, node: usize) -> anyhow::Result<()> {
        let staked = self.sys.staked();
        let end = self.sys.cluster.slot() + STEADY_SLOTS;
        let from = self.last_cast();
        let mut moved = None;
        self.sys
            .cluster
            .wait_until(PATIENCE, |w| {
                let holders = w.holders(&staked);
                if holders != vec![node] && moved.is_none() {
                    moved = Some((w.slot, holders));
                }
                moved.is_some()
                    || (w.slot >= end && w.safety.first_vote_after(node, from).is_some())
            })
            .await?;
        if let Some((slot, holders)) = moved {
            anyhow::bail!(
                "X left node {} although nothing required it: at slot {slot} held by {holders:?}",
                node + 1
            );
        }
        Ok(())
    }

    async fn planned_switch(&self) -> anyhow::Result<()> {
        let outcome = self.ask_switch("fault matrix: planned").await?;
        anyhow::ensure!(outcome.ok, "{}", outcome.summary());
        Ok(())
    }

    async fn ask_switch(&self, reason: &str) -> anyhow::Result<Outcome> {
        ask_switch(self.sys.manager_state_dir(), reason.into()).await
    }

    fn agent_pid(&self, i: usize) -> u32 {
        self.sys.agents[i].child.id().expect("agent runs")
    }

    /// Power off node `i`: its validator and its agent at once.
    async fn power_off(&mut self, i: usize) -> anyhow::Result<()> {
        self.sys.cluster.fault(i, Fault::Crash).await?;
        self.sys.agents[i].kill().await;
        Ok(())
    }

    /// A planned switch onto a standby put into `fault` first; the node that was active, the
    /// switch's outcome, and the last vote cast and the instant before it was asked.
    async fn switch_onto_faulty_standby(
        &mut self,
        fault: Fault,
    ) -> anyhow::Result<(usize, anyhow::Result<Outcome>, u64, Instant)> {
        self.moment().await;
        let active = self.active()?;
        self.sys.cluster.fault(1 - active, fault).await?;
        let (after, at) = (self.last_cast(), Instant::now());
        let outcome = self.ask_switch("fault matrix: faulty standby").await;
        Ok((active, outcome, after, at))
    }

    /// Agent `i`'s state dir.
    fn agent_state_dir(&self, i: usize) -> PathBuf {
        self.sys.dir.path().join(format!("agent{}", i + 1))
    }

    /// Agent `i` told its operator that a write took its state dir's reserve.
    fn said_reserve_given_up(&self, i: usize) -> anyhow::Result<()> {
        let log = self.sys.agents[i].log.lock().expect("log lock");
        anyhow::ensure!(
            log.iter().any(|l| l.contains("gave up its reserve")),
            "agent {} wrote on a full disk without saying it took the reserve",
            i + 1
        );
        Ok(())
    }

    async fn respawn_agent(&mut self, i: usize) {
        let config = self
            .sys
            .dir
            .path()
            .join(format!("validator-config-{}.json", i + 1));
        let url = self.sys.agents[i].url.clone();
        self.sys.agents[i] = spawn_agent(&config, url).await;
    }
}

async fn ask_switch(state_dir: PathBuf, reason: String) -> anyhow::Result<Outcome> {
    let request = ControlRequest::Trigger {
        to: None,
        reason,
        force: false,
        dry_run: false,
        now: true,
    };
    ask_running(&state_dir, &request)
        .await
        .ok_or_else(|| anyhow::anyhow!("no manager answers on its control socket"))?
        .map_err(|e| anyhow::anyhow!("switch refused: {e}"))
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a signal to a process this program started, by its pid.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "signal {sig} to {pid}");
}

// --- the scenarios -------------------------------------------------------------------------

/// One fault of the simulated validator that holds X; X must move within `within`.
async fn active_fault(
    r: &mut Run,
    fault: Fault,
    within: Duration,
) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(active, fault).await?;
    let took = r.voting_again(after, at, within).await?;
    anyhow::ensure!(r.active()? != active, "X stayed on the failed node");
    Ok(Some(took))
}

async fn validator_crash(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    active_fault(r, Fault::Crash, QUICK).await
}

async fn validator_hung(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    active_fault(r, Fault::Hang, FENCED).await
}

async fn validator_stops_voting(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    active_fault(r, Fault::StopVoting, QUICK).await
}

async fn validator_lags(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    active_fault(r, Fault::Behind { slots: 150 }, QUICK).await
}

async fn validator_cut_off(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    let took = active_fault(r, Fault::CutOff, FENCED).await?;
    // Its link back: the old active must not vote with X again.
    let old = 1 - r.active()?;
    r.sys.cluster.fault(old, Fault::Reconnect).await?;
    r.stays_on(1 - old).await?;
    Ok(took)
}

/// Power off: the validator and its agent at once.
async fn host_down(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.power_off(active).await?;
    let took = r.voting_again(after, at, FENCED_OR_LOCKOUTS).await?;
    anyhow::ensure!(r.active()? != active, "X stayed on the dead node");
    Ok(Some(took))
}

/// The agent of the active dies; its validator votes on, so nothing moves (the reference's
/// semantics); the agent comes back and takes up its node.
async fn active_agent_killed(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    r.sys.agents[active].kill().await;
    r.stays_on(active).await?;
    r.respawn_agent(active).await;
    r.stays_on(active).await?;
    Ok(None)
}

/// SIGSTOP of the active's agent for half its lease, then SIGCONT: nothing may move.
async fn active_agent_paused_briefly(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let pid = r.agent_pid(active);
    signal(pid, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(pid, libc::SIGCONT);
    r.stays_on(active).await?;
    Ok(None)
}

/// SIGSTOP of the active's agent for three leases, then SIGCONT. Meanwhile its validator votes
/// and the votes land, so the manager must not promote the other. The resumed agent cannot date
/// the votes that landed while it was stopped (its last reading is seconds old, and crediting
/// them to now would make its evidence younger than it is), so it may fence its own validator;
/// the manager then moves X. Either way: never two voters, and X voting again.
async fn active_agent_paused_past_lease(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let pid = r.agent_pid(active);
    signal(pid, libc::SIGSTOP);
    let watched = r.stays_on(active).await;
    signal(pid, libc::SIGCONT);
    watched?;
    let (after, at) = (r.last_cast(), Instant::now());
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

async fn passive_agent_killed(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    r.sys.agents[1 - active].kill().await;
    r.stays_on(active).await?;
    r.respawn_agent(1 - active).await;
    r.stays_on(active).await?;
    Ok(None)
}

/// The manager dies in steady state; the active keeps voting (its votes land), and a new manager
/// on the same state dir changes nothing.
async fn manager_killed(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    r.kill_manager().await;
    r.stays_on(active).await?;
    r.start_manager().await;
    r.stays_on(active).await?;
    Ok(None)
}

/// SIGSTOP of the manager past every agent's lease, then SIGCONT: nobody switches, the active's
/// agent keeps voting on the evidence of its landed votes.
async fn manager_paused(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let pid = r.manager().pid();
    signal(pid, libc::SIGSTOP);
    let watched = r.stays_on(active).await;
    signal(pid, libc::SIGCONT);
    watched?;
    r.stays_on(active).await?;
    Ok(None)
}

/// A planned switch whose manager is SIGKILLed at pause point `point` of the switch: with the
/// term raised and nothing else done (`switch_term`), right after the old active was demoted and
/// nobody holds X (`switch_demoted`), with the new active promoted but not confirmed
/// (`switch_promoted`), or confirmed (`switch_confirmed`). A new manager on the same state dir
/// finds the switch as the old one left it, and X votes again on one node.
async fn manager_killed_at(r: &mut Run, point: &'static str) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let dir = failover_agent::pause::dir(&r.sys.manager_state_dir());
    let point = failover_sim::pause::PausePoint::arm(&dir, point)?;
    let asked = tokio::spawn(ask_switch(r.sys.manager_state_dir(), "fault matrix".into()));
    let held = point
        .reached(PATIENCE)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.kill_manager().await;
    drop(held);
    drop(point);
    let _ = asked.await;
    r.start_manager().await;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// Whose agent a switch-step scenario kills.
#[derive(Clone, Copy)]
enum Side {
    /// The active's, demoting it.
    Old,
    /// The standby's, promoting it.
    New,
}

/// A planned switch during which one agent is SIGKILLed at its pause point `point` and started
/// again (as systemd would): the old active's after its authorized voters were removed
/// (`demote_voters_removed`), waiting for its vote state to be final (`demote_settling`), or with
/// the final vote state handed over and not yet answered (`demote_handed_over`); the standby's
/// with X's vote state installed (`promote_installed`), with X set and no authorized voter yet
/// (`promote_identity_set`), or active and not yet answered (`promote_done`). The manager asks
/// again, finds the agent's journal, or decides afresh; X votes again on one node.
async fn agent_killed_at(
    r: &mut Run,
    side: Side,
    point: &'static str,
) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let node = match side {
        Side::Old => active,
        Side::New => 1 - active,
    };
    let point = r.sys.pause_point(node, point);
    let asked = tokio::spawn(ask_switch(r.sys.manager_state_dir(), "fault matrix".into()));
    let held = point
        .reached(PATIENCE)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.agents[node].kill().await;
    drop(held);
    drop(point);
    r.respawn_agent(node).await;
    let _ = asked.await;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// The active crashes and the manager is SIGKILLed the moment it logs its decision; a new
/// manager finds the switch in whatever state the old one left it.
async fn manager_killed_at_decision(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(active, Fault::Crash).await?;
    r.manager().wait_logged("switch decided", 1, QUICK).await;
    r.kill_manager().await;
    r.start_manager().await;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// The passive's validator dies, then the active's: nobody can take X until the passive is back
/// (restarted unstaked, by its symlink); then it must.
async fn passive_down_then_active_crash(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let passive = 1 - active;
    r.sys.cluster.fault(passive, Fault::Crash).await?;
    r.sys.slots(5).await;
    r.sys.cluster.fault(active, Fault::Crash).await?;
    r.sys.slots(20).await;
    let staked = r.sys.staked();
    anyhow::ensure!(
        r.sys.cluster.with_world(|w| w.holders(&staked)).is_empty(),
        "X came to life with both validators dead"
    );
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys
        .cluster
        .fault(passive, Fault::Restart { startup_slots: 3 })
        .await?;
    let took = r.voting_again(after, at, FENCED).await?;
    anyhow::ensure!(r.active()? == passive, "X not on the node that came back");
    Ok(Some(took))
}

/// Power off, and one second into the fence wait the manager is SIGKILLed and a new one started
/// on the same state dir: it has heard nobody, so it waits the persisted `fence_after` from its
/// own start — never less.
async fn manager_restarted_in_silence(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.power_off(active).await?;
    r.sys.slots(10).await;
    r.kill_manager().await;
    r.start_manager().await;
    let took = r.voting_again(after, at, FENCED_OR_LOCKOUTS).await?;
    anyhow::ensure!(r.active()? != active, "X stayed on the dead node");
    Ok(Some(took))
}

/// The standby's agent is SIGSTOPped right after the old active was demoted, so the promotion
/// command waits in its socket's backlog; it resumes 3 s later, past the manager's patience for
/// an answer, and reads a command that is by then old. One node votes with X, never two.
async fn standby_agent_paused_during_promotion(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let standby = 1 - r.active()?;
    let dir = failover_agent::pause::dir(&r.sys.manager_state_dir());
    let point = failover_sim::pause::PausePoint::arm(&dir, "switch_demoted")?;
    let asked = tokio::spawn(ask_switch(r.sys.manager_state_dir(), "fault matrix".into()));
    let held = point
        .reached(PATIENCE)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let (after, at) = (r.last_cast(), Instant::now());
    let pid = r.agent_pid(standby);
    signal(pid, libc::SIGSTOP);
    held.release().await;
    drop(point);
    r.sys.slots(30).await;
    signal(pid, libc::SIGCONT);
    let _ = asked.await;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// Gossip stands still (every node keeps what it showed) when the active crashes: the switch
/// cannot see the new active in gossip, and must still leave X voting on one node.
async fn gossip_frozen_then_crash(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    r.sys.cluster.freeze_gossip(true);
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(active, Fault::Crash).await?;
    let took = r.voting_again(after, at, FENCED).await;
    r.sys.cluster.freeze_gossip(false);
    Ok(Some(took?))
}

/// The cluster's pubsub goes silent (connections open, nothing sent): the manager takes the tip
/// from `getSlot`, moves nothing, and still fails over a crash.
async fn pubsub_silent(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    r.sys.cluster.silence_network_pubsub(true);
    r.stays_on(active).await?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(active, Fault::Crash).await?;
    Ok(Some(r.voting_again(after, at, QUICK).await?))
}

/// A planned switch onto a passive whose admin RPC answers after 2.5 s: it completes or is rolled
/// back; either way one node votes with X.
async fn slow_admin_on_promotion(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    let (_, _, after, at) = r
        .switch_onto_faulty_standby(Fault::SlowAdmin { millis: 2500 })
        .await?;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// A planned switch onto a passive that refuses `setIdentity`: rolled back to the old active.
async fn promotion_refused(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    let (active, outcome, after, at) = r
        .switch_onto_faulty_standby(Fault::RefuseSetIdentity { refuse: true })
        .await?;
    anyhow::ensure!(
        !outcome.as_ref().is_ok_and(|o| o.ok),
        "a refused promotion reported success"
    );
    let took = r.voting_again(after, at, FENCED).await?;
    anyhow::ensure!(r.active()? == active, "X not back on the old active");
    Ok(Some(took))
}

/// Agave 4.3's partial `setIdentity` (applied in part, then an error) on the promotion.
async fn promotion_half_applied(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    let (_, _, after, at) = r
        .switch_onto_faulty_standby(Fault::PartialSetIdentity { times: 1 })
        .await?;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// Both validators restart at once (a shared power feed): each comes back with what its symlink
/// names, so the active returns with X.
async fn both_validators_restart(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let (after, at) = (r.last_cast(), Instant::now());
    let (a, b) = (
        r.sys.cluster.fault(0, Fault::Restart { startup_slots: 3 }),
        r.sys.cluster.fault(1, Fault::Restart { startup_slots: 3 }),
    );
    let (a, b) = tokio::join!(a, b);
    a?;
    b?;
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// Two planned switches asked at the same instant (a command delivered twice): one runs, the
/// other is refused or runs after it; never two voters.
async fn switch_asked_twice(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let (after, at) = (r.last_cast(), Instant::now());
    let dir = r.sys.manager_state_dir();
    let (one, two) = tokio::join!(
        ask_switch(dir.clone(), "fault matrix: first".into()),
        ask_switch(dir, "fault matrix: second".into())
    );
    let oks = [&one, &two]
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|o| o.ok))
        .count();
    anyhow::ensure!(oks >= 1, "neither switch ran: {one:?} / {two:?}");
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// The active's link to the cluster drops and comes back three times, a second apart.
async fn flapping_cluster_link(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    for _ in 0..3 {
        r.sys.cluster.fault(active, Fault::CutOff).await?;
        r.sys.slots(10).await;
        r.sys.cluster.fault(active, Fault::Reconnect).await?;
        r.sys.slots(10).await;
    }
    let (after, at) = (r.last_cast(), Instant::now());
    Ok(Some(r.voting_again(after, at, FENCED).await?))
}

/// A long silence with faults in a row: the active crashes, the old one is restarted (passive),
/// then the new active crashes too — X must come back to the first.
async fn crash_then_new_active_crash(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let first = r.active()?;
    let after = r.last_cast();
    r.sys.cluster.fault(first, Fault::Crash).await?;
    r.voting_again(after, Instant::now(), QUICK).await?;
    r.sys
        .cluster
        .fault(first, Fault::Restart { startup_slots: 3 })
        .await?;
    let staked = r.sys.staked();
    r.sys
        .cluster
        .wait_until(PATIENCE, |w| w.nodes[first].faults.starting_until.is_none())
        .await?;
    r.sys.slots(5).await;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(1 - first, Fault::Crash).await?;
    let took = r.voting_again(after, at, FENCED).await?;
    anyhow::ensure!(
        r.sys.cluster.with_world(|w| w.holders(&staked)) == vec![first],
        "X not back on the first node"
    );
    Ok(Some(took))
}

// --- the runner ----------------------------------------------------------------------------

struct Args {
    runs: u32,
    seed: u64,
    jobs: usize,
    list: bool,
    filters: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 1,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        jobs: 2,
        list: false,
        filters: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs {what}"))
        };
        match arg.as_str() {
            "--runs" => a.runs = value("a number") as u32,
            "--seed" => a.seed = value("a number"),
            "--jobs" => a.jobs = (value("a number") as usize).max(1),
            "--list" => a.list = true,
            // The standard test harness's flags (cargo passes them through).
            s if s.starts_with('-') => {}
            s => a.filters.push(s.to_string()),
        }
    }
    a
}

fn label(s: &Scenario) -> String {
    let consensus = match s.consensus {
        Consensus::Tower => "tower",
        Consensus::Alpenglow => "alpenglow",
    };
    format!("{} [{consensus}]", s.name)
}

/// One line per run: the verdict, the seed that replays it, and what it took.
struct Verdict {
    scenario: usize,
    seed: u64,
    passed: bool,
    violations: usize,
    recovery: Option<Duration>,
    detail: String,
}

/// The last warnings and decisions of the manager and both agents, for a failure's verdict.
fn what_they_said(run: &Run) -> String {
    fn last(log: &[String], n: usize) -> Vec<&String> {
        let mut said: Vec<&String> = log
            .iter()
            .filter(|l| {
                ["switch decided", "WARN", "ERROR"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect();
        said.drain(..said.len().saturating_sub(n));
        said
    }
    let mut out = String::new();
    if let Some(m) = &run.manager {
        for line in last(&m.log.lock().unwrap(), 6) {
            let _ = write!(out, "\n      manager: {line}");
        }
    }
    for (i, agent) in run.sys.agents.iter().enumerate() {
        for line in last(&agent.log.lock().unwrap(), 4) {
            let _ = write!(out, "\n      agent {}: {line}", i + 1);
        }
    }
    out
}

async fn run_one(s: &Scenario, index: usize, seed: u64) -> Verdict {
    let outcome = async {
        let mut run = Run::start(s.consensus, seed).await?;
        let mut result = (s.run)(&mut run).await;
        if let Err(e) = &mut result {
            *e = anyhow::anyhow!("{e:#}{}", what_they_said(&run));
        }
        let report = run.sys.cluster.safety();
        drop(run);
        Ok::<_, anyhow::Error>((result, report))
    };
    // A scenario that hangs is a failure, not a stuck matrix.
    let outcome = tokio::time::timeout(Duration::from_secs(180), outcome).await;
    let (passed, violations, recovery, detail) = match outcome {
        Err(_) => (false, 0, None, "did not finish within 180 s".to_string()),
        Ok(Err(e)) => (false, 0, None, format!("setup: {e:#}")),
        Ok(Ok((result, report))) => {
            let violations = report.violations.len();
            let safety = if violations == 0 {
                String::new()
            } else {
                format!(" SAFETY: {:?}", report.violations)
            };
            match result {
                Ok(recovery) => (violations == 0, violations, recovery, safety),
                Err(e) => (false, violations, None, format!("{e:#}{safety}")),
            }
        }
    };
    Verdict {
        scenario: index,
        seed,
        passed,
        violations,
        recovery,
        detail,
    }
}

fn main() {
    let args = args();
    let all = scenarios();
    let chosen: Vec<usize> = (0..all.len())
        .filter(|&i| {
            args.filters.is_empty() || args.filters.iter().any(|f| label(&all[i]).contains(f))
        })
        .collect();
    if args.list {
        for &i in &chosen {
            println!("{}", label(&all[i]));
        }
        return;
    }
    if chosen.is_empty() {
        return;
    }
    println!(
        "fault matrix: {} scenarios × {} run(s), seed {}, {} at a time",
        chosen.len(),
        args.runs,
        args.seed,
        args.jobs
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    // Run k of every scenario has seed `seed + k`: a failure replays with its own seed and
    // `--runs 1`.
    let work: Vec<(usize, u64)> = (0..args.runs)
        .flat_map(|k| {
            chosen
                .iter()
                .map(move |&i| (i, args.seed.wrapping_add(k.into())))
        })
        .collect();
    let verdicts = runtime.block_on(async {
        let all = &all;
        let mut verdicts = Vec::new();
        for batch in work.chunks(args.jobs) {
            let runs = batch.iter().map(|&(i, seed)| run_one(&all[i], i, seed));
            for v in futures_util::future::join_all(runs).await {
                let s = &all[v.scenario];
                let took = v.recovery.map_or("stayed put".to_string(), |d| {
                    format!("X voting again after {} ms", d.as_millis())
                });
                if v.passed {
                    println!("ok    {} seed {}: {took}", label(s), v.seed);
                } else {
                    println!("FAIL  {} seed {}: {}", label(s), v.seed, v.detail);
                }
                verdicts.push(v);
            }
        }
        verdicts
    });
    let mut table = String::from(
        "\n| scenario | runs | passed | safety violations | worst recovery |\n|---|---|---|---|---|\n",
    );
    let mut failed = Vec::new();
    for &i in &chosen {
        let mine: Vec<&Verdict> = verdicts.iter().filter(|v| v.scenario == i).collect();
        let passed = mine.iter().filter(|v| v.passed).count();
        let violations: usize = mine.iter().map(|v| v.violations).sum();
        let worst = mine
            .iter()
            .filter_map(|v| v.recovery)
            .max()
            .map_or("—".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        let _ = writeln!(
            table,
            "| {} | {} | {passed} | {violations} | {worst} |",
            label(&all[i]),
            mine.len()
        );
        failed.extend(
            mine.iter()
                .filter(|v| !v.passed)
                .map(|v| format!("{} --seed {}", all[i].name, v.seed)),
        );
    }
    print!("{table}");
    println!(
        "\n{} of {} runs passed in {:.0} s",
        verdicts.iter().filter(|v| v.passed).count(),
        verdicts.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("replay a failure with: scripts/faults --runs 1 <scenario> --seed <seed>");
        for f in &failed {
            println!("  {f}");
        }
        std::process::exit(1);
    }
}

/// A planned switch onto a standby whose state dir is read-only: its agent cannot record the
/// promotion's term, so it must refuse before it changes anything, and X goes back to the old
/// active in the same switch.
async fn switch_onto_read_only_state_dir(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let _disk = BrokenDisk::break_(r.agent_state_dir(1 - active), Disk::ReadOnly)?;
    let (after, at) = (r.last_cast(), Instant::now());
    let outcome = r.ask_switch("fault matrix: standby's disk").await;
    anyhow::ensure!(
        !outcome.as_ref().is_ok_and(|o| o.ok),
        "a promotion onto a read-only state dir reported success"
    );
    let took = r.voting_again(after, at, FENCED).await?;
    anyhow::ensure!(r.active()? == active, "X not back on the old active");
    Ok(Some(took))
}

/// A planned switch onto a standby whose state dir is full: its agent gives up the dir's
/// reserve to record the promotion's term, and the switch completes.
async fn switch_onto_full_state_dir(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let _disk = BrokenDisk::break_(r.agent_state_dir(1 - active), Disk::Full)?;
    let (after, at) = (r.last_cast(), Instant::now());
    let outcome = r.ask_switch("fault matrix: standby's disk").await?;
    anyhow::ensure!(outcome.ok, "{}", outcome.summary());
    let took = r.voting_again(after, at, FENCED).await?;
    anyhow::ensure!(r.active()? != active, "X stayed on the old active");
    r.said_reserve_given_up(1 - active)?;
    Ok(Some(took))
}

/// A planned switch away from an active whose state dir is read-only: its agent cannot record
/// the demotion, so it refuses before the validator changes and X keeps voting there — and the
/// failing lease writes of every heartbeat do not make it fence itself.
async fn switch_from_broken_state_dir(r: &mut Run, how: Disk) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let _disk = BrokenDisk::break_(r.agent_state_dir(active), how)?;
    let outcome = r.ask_switch("fault matrix: active's disk").await;
    anyhow::ensure!(
        !outcome.as_ref().is_ok_and(|o| o.ok),
        "a demotion on a {how:?} state dir reported success"
    );
    r.stays_on(active).await?;
    Ok(None)
}

/// The active's state dir fills up (its lease renewals and vote-state records fail), then its
/// validator crashes: its agent gives up the dir's reserve to record the demotion, and the
/// manager fails over. Without the reserve it refused every demotion ("cannot persist term:
/// No space left on device") and nobody voted for as long as the disk stayed full.
async fn active_state_dir_full_then_crash(r: &mut Run) -> anyhow::Result<Option<Duration>> {
    r.moment().await;
    let active = r.active()?;
    let _disk = BrokenDisk::break_(r.agent_state_dir(active), Disk::Full)?;
    r.stays_on(active).await?;
    let (after, at) = (r.last_cast(), Instant::now());
    r.sys.cluster.fault(active, Fault::Crash).await?;
    let took = r.voting_again(after, at, FENCED_OR_LOCKOUTS).await?;
    anyhow::ensure!(r.active()? != active, "X stayed on the crashed node");
    r.said_reserve_given_up(active)?;
    Ok(Some(took))
}
