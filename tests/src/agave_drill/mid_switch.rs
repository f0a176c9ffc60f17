//! The fault matrix's most telling scenarios on real Agave (issue 18): the one manager killed
//! between the demotion and the promotion of a planned switch, the standby's agent paused with
//! the promotion in its backlog, and both validators restarted at once (a shared power feed).
//! Besides what every drill asserts (X never on both nodes, its vote state never backwards, no
//! two disagreeing votes for a slot): X votes again from one node — which one each drill says.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::bed::Bed;
use super::drills::{failover_message, signal, DrillRun, BASELINE, PATIENCE};
use super::leaders::votes_from_either;
use super::sampler::{Sampler, Samples};
use crate::pause::PausePoint;

/// The pause point between a switch's demotion and its promotion (`monitor/src/switch.rs`).
const DEMOTED: &str = "switch_demoted";
/// How long the standby's agent stays stopped: far past a heartbeat's timeout (2 s), inside the
/// manager's wait for a switch command's answer (60 s); the resumed agent finds the promotion in
/// its backlog, 7 s old.
const AGENT_PAUSE: Duration = Duration::from_secs(7);
/// Two validators restarting from their ledgers, catching up and voting again.
const RESTART_PATIENCE: Duration = Duration::from_secs(300);

impl Bed {
    /// A planned switch held where the old active is demoted and nobody holds X; there the
    /// manager is killed (`kill -9`) and a new one starts on its state dir. It must make one node
    /// active again with X's final vote state, finishing the switch or going back.
    pub async fn manager_killed_mid_switch(&mut self) -> anyhow::Result<DrillRun> {
        self.past_cooldown().await;
        let from = self.first_active().await?;
        let point = self.arm_manager_point(DEMOTED)?;
        self.inbox.drain();
        let sampler = Sampler::start(&self.cluster);
        tokio::time::sleep(BASELINE).await;
        let trigger = self.trigger("drill: manager killed mid-switch")?;
        let held = point
            .reached(PATIENCE)
            .await
            .map_err(|e| anyhow::anyhow!("the planned switch never demoted: {e}"))?;
        let before = self.reading();
        let killed = Instant::now();
        let mut problems = Vec::new();
        self.kill_manager(self.leader).await?;
        drop(held);
        drop(point);
        let out = trigger.wait_with_output().await?;
        if out.status.success() {
            problems.push(format!(
                "--trigger-failover reported a switch whose manager was killed in it: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        if let Err(e) = self.start_manager(self.leader, "").await {
            problems.push(format!("the manager did not start again: {e}"));
        }
        let (to, recovered) = match votes_from_either(&self.cluster, killed, PATIENCE).await {
            Some((to, at)) => (to, Some(at)),
            None => (1 - from, None),
        };
        let summary = match failover_message(&mut self.inbox, BASELINE).await {
            Ok((_, message)) => message.replace('\n', " | "),
            Err(_) => String::new(),
        };
        let usage = self.usage_since(&before);
        self.last_switch = Some(Instant::now());
        let samples = sampler.stop();
        Ok(self.judge(
            "manager killed mid-switch",
            from,
            to,
            problems,
            summary,
            None,
            killed,
            recovered,
            samples,
            usage,
        ))
    }

    /// A planned switch held where the old active is demoted; there the standby's agent is
    /// stopped (`kill -STOP`), the switch goes on, and the agent resumes after
    /// [`AGENT_PAUSE`] with the promotion in its socket's backlog. Whatever it then does with
    /// that old command (on Agave 3.1.12 it carried it out, the manager still waiting for the
    /// answer), one node votes with X, never two.
    pub async fn agent_paused_mid_switch(&mut self) -> anyhow::Result<DrillRun> {
        self.past_cooldown().await;
        let from = self.first_active().await?;
        let standby = 1 - from;
        let point = self.arm_manager_point(DEMOTED)?;
        self.inbox.drain();
        let sampler = Sampler::start(&self.cluster);
        tokio::time::sleep(BASELINE).await;
        let trigger = self.trigger("drill: agent paused mid-switch")?;
        let held = point
            .reached(PATIENCE)
            .await
            .map_err(|e| anyhow::anyhow!("the planned switch never demoted: {e}"))?;
        let before = self.reading();
        let paused = Instant::now();
        let pid = self.agents[standby]
            .as_ref()
            .and_then(|a| a.pid())
            .ok_or_else(|| anyhow::anyhow!("the standby's agent is not running"))?;
        signal(pid as i32, "STOP").await?;
        held.release().await;
        drop(point);
        tokio::time::sleep(AGENT_PAUSE).await;
        signal(pid as i32, "CONT").await?;
        let out = trigger.wait_with_output().await?;
        let summary = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', " | ");
        let (to, recovered) = match votes_from_either(&self.cluster, paused, PATIENCE).await {
            Some((to, at)) => (to, Some(at)),
            None => (standby, None),
        };
        let usage = self.usage_since(&before);
        self.last_switch = Some(Instant::now());
        let samples = sampler.stop();
        Ok(self.judge(
            "agent paused mid-switch",
            from,
            to,
            Vec::new(),
            summary,
            None,
            paused,
            recovered,
            samples,
            usage,
        ))
    }

    /// Both validators killed (`kill -9`) at once and started again as their systemd units
    /// would: each with the identity its link names (X on the active, its own on the passive),
    /// from its ledger and vote state. The agents and the manager keep running. X votes again
    /// from one node — the old active with its own vote state, or the passive if the manager
    /// moved X first (then the old active's agent must keep it from voting).
    pub async fn both_restarted(&mut self) -> anyhow::Result<DrillRun> {
        self.past_cooldown().await;
        let from = self.first_active().await?;
        self.inbox.drain();
        let sampler = Sampler::start(&self.cluster);
        tokio::time::sleep(BASELINE).await;
        let before = self.reading();
        let names = [0, 1].map(|i| self.cluster.node(i).name.clone());
        let identity = [0, 1].map(|i| {
            if i == from {
                self.cluster.x_keypair.clone()
            } else {
                self.cluster.node(i).unstaked_keypair.clone()
            }
        });
        let cut = Instant::now();
        let (a, b) = tokio::join!(
            self.cluster
                .script("stop-node", &names[0], &["--signal", "KILL"]),
            self.cluster
                .script("stop-node", &names[1], &["--signal", "KILL"])
        );
        a?;
        b?;
        let args = identity
            .each_ref()
            .map(|k| ["--identity", k.to_str().expect("UTF-8 path")]);
        let (a, b) = tokio::join!(
            self.cluster.script("start-node", &names[0], &args[0]),
            self.cluster.script("start-node", &names[1], &args[1])
        );
        a?;
        b?;
        let restarted = Instant::now();
        let mut problems = Vec::new();
        // Votes cast just before the kill still land for a slot or two, and Agave answers its
        // admin RPC (with the identity it was started with) long before it votes: only votes
        // that land once both are back count as X voting again.
        let (a, b) = tokio::join!(self.wait_caught_up(0), self.wait_caught_up(1));
        problems.extend(
            [a, b]
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string())),
        );
        let (to, recovered) = match votes_from_either(&self.cluster, cut, RESTART_PATIENCE).await {
            Some((to, at)) => (to, Some(at)),
            None => (from, None),
        };
        // Under Alpenglow the vote account follows the certificates, some slots behind the votes.
        while cut.elapsed() < RESTART_PATIENCE
            && sampler
                .peek(|s| voting_after_restart(s, to, restarted).1)
                .is_none()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let summary = match failover_message(&mut self.inbox, Duration::ZERO).await {
            Ok((_, message)) => message.replace('\n', " | "),
            Err(_) => format!(
                "no switch: X came back on {} with its own vote state",
                names[to]
            ),
        };
        let usage = self.usage_since(&before);
        self.last_switch = Some(Instant::now());
        let samples = sampler.stop();
        let (voting, landed) = voting_after_restart(&samples, to, restarted);
        let mut run = self.judge(
            "both validators restarted",
            from,
            to,
            problems,
            summary,
            None,
            cut,
            recovered,
            samples,
            usage,
        );
        // `judge` counts from the first sample that shows X held, which for X restarted in place
        // is the killed process's last answer and its last votes still landing.
        let since_cut = |t: Instant| (t - cut).as_millis() as u64;
        run.voting_ms = voting.map(since_cut);
        run.recovery_ms = landed.map_or(0, since_cut);
        if landed.is_none() {
            run.problems
                .push("no vote of X landed past what the killed validators had cast".into());
            run.ok = false;
        }
        Ok(run)
    }

    /// Arms pause point `name` of the (leading) manager.
    pub(super) fn arm_manager_point(&self, name: &str) -> anyhow::Result<PausePoint> {
        // `failover_agent::pause::dir`: the points of a process listen in its state dir.
        let dir = self.managers[self.leader]
            .state_dir(&self.dir)
            .join("pause");
        Ok(PausePoint::arm(&dir, name)?)
    }

    /// `failover-manager --trigger-failover --now`, started and not awaited.
    pub(super) fn trigger(&self, reason: &str) -> anyhow::Result<tokio::process::Child> {
        Ok(Command::new(&self.manager_bin)
            .args([
                "--config",
                self.manager_cfg().to_str().expect("UTF-8 path"),
                "--trigger-failover",
                "--reason",
                reason,
                "--now",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?)
    }
}

/// When X voted again after both validators were restarted at `restarted`: `to`'s vote state past
/// what its killed process left on disk, and the first of X's votes to land past what either
/// killed process had cast (each writes its vote state before it sends the vote, so a vote past
/// both can only come from a restarted process).
fn voting_after_restart(
    samples: &Samples,
    to: usize,
    restarted: Instant,
) -> (Option<Instant>, Option<Instant>) {
    let left = samples.latest_on(to, restarted).unwrap_or(0);
    let voting = samples.voted_past(to, left, restarted);
    let cast = [0, 1]
        .into_iter()
        .filter_map(|i| samples.latest_on(i, restarted))
        .max()
        .unwrap_or(0);
    let landed = samples
        .votes
        .iter()
        .find(|(t, v)| *t >= restarted && *v > cast)
        .map(|(t, _)| *t);
    (voting, landed)
}
