//! `failover-agent`: the agent on a validator server. Thin edge: flags, config, logging, then
//! `failover_agent::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use failover_agent::state::StateFile;
use failover_agent::Agent;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "failover-agent",
    version,
    about = "Failover agent for a Solana validator server",
    long_about = "Failover agent for a Solana validator server. It answers the failover manager \
        (status, become_active, become_passive, shutdown), moves the staked identity and its tower \
        through the validator's admin RPC in the safe order, and demotes its own validator when it \
        loses both the manager and the outside world.\n\n\
        Start the passive server's agent first, then the active one's, then the manager.",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    docs: Option<failover_config::cli::DocCommand>,
    /// The agent config (validator-config.json; the reference design's files load unchanged).
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "validator-config.json"
    )]
    config: PathBuf,
    /// Validate the config, print the effective settings (secrets masked) and exit.
    #[arg(long)]
    check_config: bool,
    /// Log every action it would take and change nothing (overrides the config's dry_run).
    #[arg(long)]
    dry_run: bool,
    /// Log to this file as well as standard error (overrides the config's log_file). SIGHUP
    /// reopens it (for logrotate).
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// How log lines are written: text, or json (one object per line, with the switch's term,
    /// nodes and reason as fields). Overrides the config's log_format.
    #[arg(long, value_name = "FORMAT", value_parser = failover_config::LogFormat::parse)]
    log_format: Option<failover_config::LogFormat>,
    /// What to log: a level (error, warn, info, debug, trace) or RUST_LOG-style directives.
    /// Default: RUST_LOG when set, else info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// The reference binary's flags, as Go spells them (`-config`, `-dry-run=false`).
const GO_FLAGS: &[&str] = &["config", "check-config", "dry-run", "log-file"];
const GO_SWITCHES: &[&str] = &["check-config", "dry-run"];

fn main() -> ExitCode {
    failover_config::cli::exit_quietly_when_output_closes();
    let args = Args::parse_from(failover_config::cli::go_style_args(
        std::env::args_os(),
        GO_FLAGS,
        GO_SWITCHES,
    ));
    if let Some(docs) = &args.docs {
        return docs.exit(<Args as clap::CommandFactory>::command());
    }
    let mut cfg = match failover_config::load_agent(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.dry_run {
        cfg.dry_run = true;
    }
    if let Some(path) = &args.log_file {
        cfg.log_file = Some(path.clone());
    }
    if let Some(format) = args.log_format {
        cfg.log_format = format;
    }
    // The keys it would switch with, checked now rather than at the first promotion — by the
    // start and by the check alike.
    let keys = failover_agent::keys::check(&cfg);
    if args.check_config {
        return match keys {
            Ok(found) => {
                println!("ok: {}", cfg.summary());
                for line in found {
                    println!("key: {line}");
                }
                for w in &cfg.warnings {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{} is not usable:", args.config.display());
                for p in problems {
                    eprintln!("  {p}");
                }
                ExitCode::from(2)
            }
        };
    }
    if let Err(problems) = keys {
        for p in problems {
            eprintln!("error: {p}");
        }
        return ExitCode::from(2);
    }
    let log_file = match failover_agent::logging::init(failover_agent::logging::LogOptions {
        file: cfg.log_file.as_ref(),
        format: cfg.log_format,
        level: args.log_level.as_deref(),
    }) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async move {
        if let Err(e) = failover_agent::logging::reopen_on_sighup(log_file) {
            warn!("cannot handle SIGHUP: {e}");
        }
        run(cfg).await
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: failover_config::AgentConfig) -> anyhow::Result<()> {
    info!(version = env!("CARGO_PKG_VERSION"), "{}", cfg.summary());
    for w in &cfg.warnings {
        warn!("config: {w}");
    }
    if cfg.dry_run {
        warn!("DRY RUN: every action is logged and none is taken");
    }
    if failover_agent::pause::enabled() {
        warn!(
            dir = %failover_agent::pause::dir(&cfg.state_dir).display(),
            "pause points on ({}=1): a test can hold this agent at chosen steps; never in production",
            failover_agent::pause::ENV
        );
    }
    let state = StateFile::load(&cfg.state_dir)?;
    info!(term = state.state.term, path = %state.path().display(), "state loaded");
    let _reserve = failover_agent::state::keep_reserve(cfg.state_dir.clone());
    let listen = cfg.listen_addr;
    let agent = Agent::new(cfg, state);
    let role = agent.startup_check().await.map_err(anyhow::Error::msg)?;
    info!("{role}");
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(%listen, "listening");
    failover_agent::run(agent, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("SIGTERM"),
    }
}
