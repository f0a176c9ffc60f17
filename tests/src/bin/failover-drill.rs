//! `failover-drill`: failover drills on a REAL Agave cluster started by `scripts/agave/cluster.sh`,
//! with real agents and a real manager, asserting safety from independent samples.

use std::path::PathBuf;

use clap::Parser;
use failover_sim::agave_drill::{Bed, RealCluster};

#[derive(Parser)]
#[command(
    name = "failover-drill",
    version,
    about = "Failover drills on a real Agave cluster (see scripts/agave/cluster.sh)",
    long_about = "Failover drills on a real Agave cluster started by scripts/agave/cluster.sh: \
        starts failover-agent on nodes A and B and failover-manager (built next to this binary), \
        then runs the drill while sampling both validators' identity through the admin RPC every \
        25 ms, X's last vote every 100 ms and X's tower on both ledgers. Exits non-zero if X was \
        ever seen on both nodes, its tower went backwards, or votes did not resume."
)]
struct Args {
    /// The cluster description written by `scripts/agave/cluster.sh up`.
    #[arg(long, default_value = "/tmp/agave-failover-cluster/cluster.json")]
    cluster: PathBuf,
    /// Where the agents' and manager's configs, state and logs go.
    #[arg(long, default_value = "/tmp/agave-failover-drill")]
    dir: PathBuf,
    /// Planned switchovers to run (alternating A→B, B→A).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Print the runs as JSON too.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = RealCluster::load(&args.cluster)?;
    println!(
        "== drills on the real cluster: X {} (vote account {})",
        cluster.x, cluster.vote_account
    );
    let mut bed = Bed::start(cluster, &args.dir).await?;
    let mut runs = Vec::new();
    let mut failed = false;
    for i in 1..=args.runs {
        let run = bed.planned().await?;
        println!(
            "planned switchover {i}: {}; recovery {} ms, vote gap {} slots, {} identity samples, X on both: {}, tower backwards: {}\n  {}",
            if run.ok { "ok" } else { "FAILED" },
            run.recovery_ms,
            run.vote_gap_slots,
            run.identity_samples,
            run.both_held_samples,
            run.tower_backwards.len(),
            run.summary
        );
        failed |= !run.ok;
        runs.push(run);
    }
    bed.stop().await;
    if args.json {
        println!("{}", serde_json::to_string(&runs)?);
    }
    anyhow::ensure!(!failed, "a drill failed its safety or recovery checks");
    Ok(())
}
