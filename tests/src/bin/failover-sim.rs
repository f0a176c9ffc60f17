//! `failover-sim`: run a simulated Solana cluster on loopback until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use failover_sim::{Cluster, SimConfig};

#[derive(Parser)]
#[command(
    name = "failover-sim",
    version,
    about = "Run a simulated Solana cluster that speaks Agave's RPC, pubsub and admin-RPC protocols",
    long_about = "Run a simulated Solana cluster on loopback: a failover pair of validators sharing \
        one staked identity and vote account, plus a cluster RPC endpoint. Each validator has its \
        own JSON-RPC port (pubsub on the port above) and an admin socket at <ledger>/admin.rpc. \
        Faults are injected through the control API:\n\n  \
        curl -X POST http://CONTROL/nodes/node1/fault -d '{\"kind\":\"crash\"}'\n\n\
        Fault kinds: crash, restart (startup_slots), hang, unhang, behind (slots), stop_voting, \
        resume_voting, slow_admin (millis), refuse_set_identity (refuse), heal. GET /cluster, \
        /state and /safety report endpoints, state and the safety recorder."
)]
struct Args {
    /// Directory for keypairs and ledgers (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Validators in the failover pair.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Slot time in milliseconds.
    #[arg(long, default_value_t = 400)]
    slot_ms: u64,
    /// Start with no node holding the staked identity.
    #[arg(long)]
    no_active: bool,
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Print the endpoints as one JSON line (for scripts).
    #[arg(long)]
    json: bool,
    /// Run a switchover drill of this many switches back and forth (the manual procedure in
    /// the safe order), print its timings and the safety report, and exit: 0 when safe.
    #[arg(long, value_name = "SWITCHES")]
    drill: Option<usize>,
    /// In a drill, slots the old active's tower must stay unchanged before it is copied.
    #[arg(long, default_value_t = 2)]
    quiet_slots: u64,
    /// The product's demo: start two failover-agent processes and failover-manager (built next to
    /// this binary) on the cluster, then run a planned switchover, a crash failover and a
    /// stopped-voting failover, printing each with timings. Exits non-zero if safety was violated.
    #[arg(long)]
    demo: bool,
    /// With --demo: how many rounds (each three switches); more than one prints medians and worsts.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// What the cluster runs: TowerBFT (Agave 3.1.12 nodes, towers) or Alpenglow (Agave 4.2.2
    /// nodes, vote histories, certificate-fed lastVote).
    #[arg(long, value_enum, default_value_t = SimConsensus::Tower)]
    consensus: SimConsensus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SimConsensus {
    Tower,
    Alpenglow,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    failover_config::cli::exit_quietly_when_output_closes();
    let args = Args::parse();
    anyhow::ensure!(
        args.control.ip().is_loopback(),
        "--control must be a loopback address"
    );
    let (dir, _temp) = match args.dir {
        Some(dir) => (dir, None),
        None => {
            let temp = std::env::temp_dir().join(format!("failover-sim-{}", std::process::id()));
            (temp.clone(), Some(TempDir(temp)))
        }
    };
    if args.demo {
        std::fs::create_dir_all(&dir)?;
        let rounds = failover_sim::demo::run(
            &dir,
            Duration::from_millis(args.slot_ms.max(10)),
            args.rounds.max(1),
            args.consensus == SimConsensus::Alpenglow,
        )
        .await?;
        if rounds.len() > 1 {
            print_rounds(&rounds);
        }
        if args.json {
            println!("{}", serde_json::to_string(&rounds)?);
        }
        return Ok(());
    }
    let mut config = match args.consensus {
        SimConsensus::Tower => SimConfig::new(&dir),
        SimConsensus::Alpenglow => SimConfig::alpenglow(&dir),
    };
    config.nodes = args.nodes;
    config.slot_time = Duration::from_millis(args.slot_ms.max(10));
    config.active = (!args.no_active).then_some(0);
    let cluster = Arc::new(
        Cluster::start(config)
            .await
            .context("starting the cluster")?,
    );

    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding the control API on {}", args.control))?;
    let control = listener.local_addr()?;
    let app = failover_sim::control::router(cluster.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let info = cluster.info();
    if args.json && args.drill.is_none() {
        let mut value = serde_json::to_value(info)?;
        value["control_url"] = format!("http://{control}").into();
        println!("{value}");
    } else {
        println!("failover-sim: cluster running in {}", dir.display());
        println!("  control API      http://{control}");
        println!("  cluster RPC      {}", info.rpc_url);
        println!("  cluster pubsub   {}", info.pubsub_url);
        println!(
            "  staked identity  {} ({})",
            info.staked_pubkey,
            info.staked_keypair.display()
        );
        println!("  vote account     {}", info.vote_pubkey);
        println!("  slot time        {} ms", info.slot_time_ms);
        for node in &info.nodes {
            println!(
                "  {}: rpc {}  pubsub {}",
                node.name, node.rpc_url, node.pubsub_url
            );
            println!("         admin socket {}", node.admin_socket.display());
            println!(
                "         unstaked {} ({})",
                node.unstaked_pubkey,
                node.unstaked_keypair.display()
            );
            println!("         process name {}", node.process_name);
        }
        if args.drill.is_none() {
            println!("Ctrl-C to stop.");
        }
    }

    if let Some(switches) = args.drill {
        return drill(&cluster, switches, args.quiet_slots, args.json).await;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        result = server => result??,
    }
    cluster.shutdown();
    let report = cluster.safety();
    eprintln!(
        "failover-sim: stopped at slot {}; safety: {} violation(s)",
        cluster.slot(),
        report.violations.len()
    );
    Ok(())
}

async fn drill(
    cluster: &Cluster,
    switches: usize,
    quiet_slots: u64,
    json: bool,
) -> anyhow::Result<()> {
    // Let the active node vote for a few slots first.
    let slot = cluster.slot();
    cluster
        .wait_for_slot(slot + 3, Duration::from_secs(30))
        .await?;
    let report = failover_sim::drill::run(cluster, switches, quiet_slots).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "drill: {switches} switchover(s), tower quiet for {quiet_slots} slot(s) before copying"
        );
        for s in &report.switches {
            println!(
                "  {} -> {}: demote {} ms, tower settle {} ms, copy {} ms, promote {} ms; total {} ms; \
                 last old vote {}, first new vote {}, vote gap {} slot(s)",
                s.from, s.to, s.demote_ms, s.tower_settle_ms, s.tower_copy_ms, s.promote_ms,
                s.total_ms, s.last_old_vote, s.first_new_vote, s.vote_gap_slots
            );
        }
        let safety = &report.safety;
        println!(
            "safety: staked identity on two nodes: {}; two votes in one slot: {}; tower went backwards: {}",
            yes_no(safety.staked_held_twice),
            yes_no(safety.double_votes),
            yes_no(safety.tower_went_backwards)
        );
    }
    cluster.shutdown();
    anyhow::ensure!(
        report.safety.violations.is_empty(),
        "safety violated: {:?}",
        report.safety.violations
    );
    Ok(())
}

/// Median and worst of each figure over the rounds.
fn print_rounds(rounds: &[failover_sim::demo::Round]) {
    let stat = |f: fn(&failover_sim::demo::Round) -> u64| {
        let mut v: Vec<u64> = rounds.iter().map(f).collect();
        v.sort_unstable();
        (v[v.len() / 2], *v.last().expect("at least one round"))
    };
    println!("\n== {} rounds: median / worst", rounds.len());
    for (name, unit, (median, worst)) in [
        (
            "planned switchover, decision to new active confirmed",
            "ms",
            stat(|r| r.planned_ms),
        ),
        (
            "crashed validator, detection",
            "ms",
            stat(|r| r.crash_detect_ms),
        ),
        (
            "crashed validator, crash to new active voting",
            "ms",
            stat(|r| r.crash_total_ms),
        ),
        (
            "crashed validator, vote gap",
            "slots",
            stat(|r| r.crash_vote_gap),
        ),
        (
            "silent validator, detection",
            "slots",
            stat(|r| r.silent_detect_slots),
        ),
        (
            "silent validator, silence to new active voting",
            "ms",
            stat(|r| r.silent_total_ms),
        ),
        (
            "silent validator, vote gap",
            "slots",
            stat(|r| r.silent_vote_gap),
        ),
    ] {
        println!("  {name}: {median} / {worst} {unit}");
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "YES"
    } else {
        "never"
    }
}

/// Removes a directory the simulator created for itself.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
