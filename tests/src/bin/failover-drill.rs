//! `failover-drill`: failover drills on a REAL Agave cluster started by `scripts/agave/cluster.sh`,
//! with real agents and a real manager, asserting safety from independent samples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use failover_sim::agave_drill::{isolation_available, Bed, DrillRun, Managers, RealCluster};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Drill {
    /// Planned switchovers via `failover-manager --trigger-failover`, alternating A→B and B→A.
    Planned,
    /// `kill -9` of the active validator; the manager fails over on its own; the killed node is
    /// restarted unstaked.
    KillValidator,
    /// `kill -9` of the active's agent while its validator votes: the manager must not promote.
    KillAgent,
    /// The active's server cut off (nftables on its loopback address and its uplink): its agent
    /// demotes it, then the manager promotes the passive. Needs root and nft.
    Isolate,
    /// The active's host dies: `kill -9` of its validator and its agent at once; the manager
    /// promotes the passive once the lease and the last landed vote are past the fence.
    HostDown,
    /// Host down, and a second later `kill -9` of the manager and a new one: the restarted
    /// manager waits the worst-case fence from its own start, then promotes the passive.
    ManagerRestarted,
    /// `kill -STOP` of the active validator: its agent kills it, the manager promotes the passive.
    HungValidator,
    /// A planned switch, then at once `kill -9` of the new active's validator, inside the
    /// manager's cooldown: X must go back to the old active without waiting it out.
    CrashAfterSwitch,
    /// The passive's validator restarted with X on its command line: refused by Agave (no vote
    /// history under Alpenglow) or demoted by its agent; X stays with the active.
    RestartedWithX,
    /// A planned switch whose promotion fails (the passive cannot write X's vote state): X must
    /// go back to the old active in the same switch, reported as rolled back.
    FailedPromotion,
    /// A planned switch held between the demotion and the promotion (a pause point), where the
    /// manager is killed (`kill -9`) and started again: one node must be active again.
    ManagerKilledMidSwitch,
    /// A planned switch in which the standby's agent is stopped (`kill -STOP`) with the
    /// promotion in its backlog for 7 s, then resumed.
    AgentPausedMidSwitch,
    /// Both validators killed at once and restarted, each with the identity its link names (a
    /// shared power feed): X votes again from one node.
    BothRestarted,
    /// Two managers over a real etcd (a bed of their own, after the drills above): `kill -9` of
    /// the leading manager in steady state; the other one leads, nobody switches.
    LeaderKilled,
    /// Two managers over etcd: the leading manager and the active validator killed at once; the
    /// other manager leads and fails over.
    LeaderAndActiveKilled,
    /// Two managers over etcd: a planned switch, the leader killed between the demotion and the
    /// promotion (a pause point holds it there); the other manager makes one node active again.
    LeaderKilledMidSwitch,
    /// All of the above, in that order.
    All,
    /// Nothing goes wrong for --soak seconds: no switch, no hold message, X keeps voting (not
    /// part of `all`).
    Soak,
}

#[derive(Parser)]
#[command(
    name = "failover-drill",
    version,
    about = "Failover drills on a real Agave cluster (see scripts/agave/cluster.sh)",
    long_about = "Failover drills on a real Agave cluster started by scripts/agave/cluster.sh: \
        starts failover-agent on nodes A and B and failover-manager (built next to this binary) \
        with their default detection settings, then runs the drills while sampling both \
        validators' identity through the admin RPC every 25 ms, X's last vote every 100 ms and \
        X's vote state (tower under TowerBFT, vote history under Alpenglow, as cluster.json says) \
        on both ledgers every 25 ms. Exits non-zero if X was ever seen on both nodes, its vote \
        state went backwards or changed on the old active after the switch, two of its Alpenglow \
        votes for one slot disagreed, or votes did not resume from the right node."
)]
struct Args {
    /// The cluster description written by `scripts/agave/cluster.sh up`.
    #[arg(long, default_value = "/tmp/agave-failover-cluster/cluster.json")]
    cluster: PathBuf,
    /// Where the agents' and manager's configs, state and logs go.
    #[arg(long, default_value = "/tmp/agave-failover-drill")]
    dir: PathBuf,
    /// Which drill to run.
    #[arg(long, value_enum, default_value = "all")]
    drill: Drill,
    /// Runs of each drill (a planned run is one switch; two runs go there and back).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// How long the agent-killed drill watches for a wrong promotion, in seconds (default: past
    /// the agent's fence_after plus the manager's margin, and much more).
    #[arg(long, default_value_t = 40)]
    agent_window: u64,
    /// Leave the isolation drill out of `all` (CI on Agave 4.2.2 under Alpenglow: see
    /// BENCHMARKS.md, a validator given X back after a long cut-off can crash in Agave's block
    /// creation loop).
    #[arg(long)]
    no_isolate: bool,
    /// Leave the host-down drills (host down, manager restarted) out of `all` (CI's Agave 4.2.2
    /// Alpenglow run, for time; they need the relay validator, `cluster.sh up --relay`: without
    /// it the passive gets its shreds through the active, so with the active dead its root stalls
    /// and the promotion's root wait rightly refuses; see BENCHMARKS.md).
    #[arg(long)]
    no_host_down: bool,
    /// Planned switches with `--trigger-failover --now`: no wait for a moment the staked identity
    /// leads none of the next slots (to compare the blocks it skips).
    #[arg(long)]
    planned_now: bool,
    /// Count the staked identity's leader slots skipped around each planned switch (from the
    /// trigger to 40 slots after X votes again; waits that long after each switch).
    #[arg(long)]
    count_leader_slots: bool,
    /// How long the soak drill watches a healthy cluster, in seconds.
    #[arg(long, default_value_t = 1800)]
    soak: u64,
    /// Seconds of steady state measured before the drills (CPU, memory, RPC requests).
    #[arg(long, default_value_t = 10)]
    idle: u64,
    /// Leave the two-manager drills (leader killed, leader and active killed, leader killed
    /// mid-switch) out of `all`.
    #[arg(long)]
    no_two_managers: bool,
    /// Leave the fault matrix's real-Agave subset (manager killed mid-switch, agent paused
    /// mid-switch, both validators restarted) out of `all` (CI's Alpenglow run: not yet run on
    /// Agave 4.2.2).
    #[arg(long)]
    no_matrix_subset: bool,
    /// Print every run as JSON too.
    #[arg(long)]
    json: bool,
}

/// The drills that need two managers over etcd.
const TWO_MANAGERS: [Drill; 3] = [
    Drill::LeaderKilled,
    Drill::LeaderAndActiveKilled,
    Drill::LeaderKilledMidSwitch,
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    failover_config::cli::exit_quietly_when_output_closes();
    let args = Args::parse();
    let cluster = RealCluster::load(&args.cluster)?;
    println!(
        "== drills on the real cluster: Agave {} under {}, X {} (vote account {})",
        cluster.version,
        cluster.consensus(),
        cluster.x,
        cluster.vote_account
    );
    let single = !TWO_MANAGERS.contains(&args.drill);
    let two = !single || (args.drill == Drill::All && !args.no_two_managers);
    let mut runs = Vec::new();
    if single {
        let bed = Bed::start(cluster.clone(), &args.dir, Managers::One).await?;
        runs.extend(on_bed(bed, &args, single_manager_drills).await?);
    }
    if two {
        // A bed of their own (its logs beside the first's): the agents back their vote state up
        // to the same etcd the managers elect through.
        let dir = args.dir.join("two-managers");
        println!(
            "== two managers electing their leader through etcd (logs in {})",
            dir.display()
        );
        let bed = Bed::start(cluster, &dir, Managers::TwoOverEtcd).await?;
        runs.extend(on_bed(bed, &args, two_manager_drills).await?);
    }
    summarize(&runs);
    if args.json {
        println!("{}", serde_json::to_string(&runs)?);
    }
    let failed = runs.iter().filter(|r| !r.ok).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} drill runs failed their safety or recovery checks",
        runs.len()
    );
    Ok(())
}

/// Runs `drills` on `bed` and stops it (its agents and managers, by pid), interrupted or not.
async fn on_bed<F>(mut bed: Bed, args: &Args, drills: F) -> anyhow::Result<Vec<DrillRun>>
where
    F: AsyncFn(&mut Bed, &Args) -> anyhow::Result<Vec<DrillRun>>,
{
    bed.planned_now = args.planned_now;
    bed.count_leader_slots = args.count_leader_slots;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = drills(&mut bed, args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
    };
    bed.stop().await;
    result
}

async fn single_manager_drills(bed: &mut Bed, args: &Args) -> anyhow::Result<Vec<DrillRun>> {
    if args.idle > 0 {
        let idle = bed.idle(Duration::from_secs(args.idle)).await;
        println!(
            "steady state over {} s: manager {} KiB RSS, {}% CPU; agents up to {} KiB RSS, {}% CPU; \
             cluster RPC {} req/s from the manager, up to {} req/s from an agent to its validator",
            idle.secs,
            idle.manager_rss_kib,
            idle.manager_cpu_pct,
            idle.agent_rss_kib,
            idle.agent_cpu_pct,
            idle.cluster_rpc_per_s,
            idle.local_rpc_per_s
        );
    }
    let wanted = |d: Drill| args.drill == d || args.drill == Drill::All;
    let mut runs = Vec::new();
    if wanted(Drill::Planned) {
        for _ in 0..args.runs {
            report(&mut runs, bed.planned().await?);
        }
    }
    if wanted(Drill::KillValidator) {
        for _ in 0..args.runs {
            report(&mut runs, bed.kill_validator().await?);
        }
    }
    if wanted(Drill::KillAgent) {
        for _ in 0..args.runs {
            report(
                &mut runs,
                bed.kill_agent(Duration::from_secs(args.agent_window))
                    .await?,
            );
        }
    }
    if wanted(Drill::HostDown) && !(args.no_host_down && args.drill == Drill::All) {
        for _ in 0..args.runs {
            report(&mut runs, bed.host_down().await?);
        }
    }
    if wanted(Drill::ManagerRestarted) && !(args.no_host_down && args.drill == Drill::All) {
        for _ in 0..args.runs {
            report(&mut runs, bed.manager_restarted().await?);
        }
    }
    if wanted(Drill::HungValidator) {
        for _ in 0..args.runs {
            report(&mut runs, bed.hung_validator().await?);
        }
    }
    if wanted(Drill::CrashAfterSwitch) {
        for _ in 0..args.runs {
            report(&mut runs, bed.crash_after_switch().await?);
        }
    }
    if wanted(Drill::RestartedWithX) {
        for _ in 0..args.runs {
            report(&mut runs, bed.restarted_with_x().await?);
        }
    }
    if wanted(Drill::FailedPromotion) {
        for _ in 0..args.runs {
            report(&mut runs, bed.failed_promotion().await?);
        }
    }
    let subset = |d: Drill| wanted(d) && !(args.no_matrix_subset && args.drill == Drill::All);
    if subset(Drill::ManagerKilledMidSwitch) {
        for _ in 0..args.runs {
            report(&mut runs, bed.manager_killed_mid_switch().await?);
        }
    }
    if subset(Drill::AgentPausedMidSwitch) {
        for _ in 0..args.runs {
            report(&mut runs, bed.agent_paused_mid_switch().await?);
        }
    }
    if subset(Drill::BothRestarted) {
        for _ in 0..args.runs {
            report(&mut runs, bed.both_restarted().await?);
        }
    }
    if wanted(Drill::Isolate) && !args.no_isolate {
        match isolation_available() {
            Ok(()) => {
                for _ in 0..args.runs {
                    report(&mut runs, bed.isolate().await?);
                }
            }
            Err(e) if args.drill == Drill::All => {
                println!("isolation drill: SKIPPED (cannot filter loopback traffic here: {e})")
            }
            Err(e) => anyhow::bail!("the isolation drill needs nftables and root: {e}"),
        }
    }
    if args.drill == Drill::Soak {
        report(&mut runs, bed.soak(Duration::from_secs(args.soak)).await?);
    }
    // A validator that exited after the last drill is caught here like before any other.
    bed.first_active().await?;
    for exit in &bed.exits {
        println!("note: {exit}");
    }
    Ok(runs)
}

async fn two_manager_drills(bed: &mut Bed, args: &Args) -> anyhow::Result<Vec<DrillRun>> {
    let wanted = |d: Drill| args.drill == d || args.drill == Drill::All;
    let mut runs = Vec::new();
    if wanted(Drill::LeaderKilled) {
        for _ in 0..args.runs {
            report(&mut runs, bed.leader_killed().await?);
        }
    }
    if wanted(Drill::LeaderAndActiveKilled) {
        for _ in 0..args.runs {
            report(&mut runs, bed.leader_and_active_killed().await?);
        }
    }
    if wanted(Drill::LeaderKilledMidSwitch) {
        for _ in 0..args.runs {
            report(&mut runs, bed.leader_killed_mid_switch().await?);
        }
    }
    bed.first_active().await?;
    for exit in &bed.exits {
        println!("note: {exit}");
    }
    Ok(runs)
}

fn report(runs: &mut Vec<DrillRun>, run: DrillRun) {
    println!("{}\n  {}", run.line(), run.summary);
    println!(
        "  during the run: manager {} KiB, {}% CPU; agents up to {} KiB, {}% CPU",
        run.usage.manager_rss_kib,
        run.usage.manager_cpu_pct,
        run.usage.agent_rss_kib,
        run.usage.agent_cpu_pct
    );
    runs.push(run);
}

/// Median and worst of each figure, per drill.
fn summarize(runs: &[DrillRun]) {
    let mut drills: Vec<&str> = runs.iter().map(|r| r.drill.as_str()).collect();
    drills.dedup();
    println!("\n== summary (median / worst)");
    for drill in drills {
        let of = |f: &dyn Fn(&DrillRun) -> Option<u64>| {
            let mut v: Vec<u64> = runs
                .iter()
                .filter(|r| r.drill == drill)
                .filter_map(f)
                .collect();
            v.sort_unstable();
            match v.len() {
                0 => "-".to_string(),
                n => format!("{} / {}", v[(n - 1) / 2], v[n - 1]),
            }
        };
        let n = runs.iter().filter(|r| r.drill == drill).count();
        let ok = runs.iter().filter(|r| r.drill == drill && r.ok).count();
        let (led, skipped) = runs
            .iter()
            .filter(|r| r.drill == drill)
            .filter_map(|r| r.leader_slots)
            .fold((0, 0), |(a, b), (l, s)| (a + l, b + s));
        let leaders = match led {
            0 if skipped == 0
                && runs
                    .iter()
                    .all(|r| r.drill != drill || r.leader_slots.is_none()) =>
            {
                String::new()
            }
            _ => format!("; X's leader slots during the switches {led}, skipped {skipped}"),
        };
        let takeover = of(&|r| r.takeover_ms);
        let takeover = match takeover.as_str() {
            "-" => String::new(),
            t => format!("new leader acting {t} ms; "),
        };
        println!(
            "{drill}: {ok}/{n} ok; {takeover}detect {} ms; switch {} ms; voting again {} ms; recovery {} ms; vote gap {} slots; X on both {} samples{leaders}",
            of(&|r| r.detect_ms),
            of(&|r| (r.switch_ms > 0).then_some(r.switch_ms)),
            of(&|r| r.voting_ms),
            of(&|r| (r.recovery_ms > 0).then_some(r.recovery_ms)),
            of(&|r| Some(r.vote_gap_slots)),
            of(&|r| Some(r.both_held_samples as u64)),
        );
    }
}
