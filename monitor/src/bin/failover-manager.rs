//! `failover-manager`: watches both validators and the cluster, fails over when the active is
//! unhealthy, and runs the one-shot commands operators know from the reference design. Thin edge:
//! flags, config, logging, then the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use failover_monitor::control::{ask_running, ControlRequest};
use failover_monitor::notify::{Notifier, NotifierConfig, TelegramTarget};
use failover_monitor::Manager;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "failover-manager",
    version,
    about = "Failover manager for a pair of Solana validators",
    long_about = "Failover manager for a pair of Solana validators. It watches both validators \
        (through their failover agents) and the cluster (RPC and pubsub), and moves the staked \
        identity and its tower from the active to the passive when the active is unhealthy — or on \
        command — in the safe order, never letting both vote.\n\n\
        Without a one-shot flag it runs until SIGTERM/SIGINT.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("one_shot")
        .args(["trigger_failover", "shutdown_agent", "status", "check_config"])
        .multiple(false)
))]
#[command(group(
    clap::ArgGroup::new("forceable")
        .args(["trigger_failover", "shutdown_agent"])
        .multiple(false)
))]
struct RunArgs {
    /// The manager config (manager-config.json; the reference design's files load unchanged).
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "manager-config.json"
    )]
    config: PathBuf,
    /// Planned switchover: move the staked identity from the active to a standby now (through
    /// the running manager when there is one): the one --to names, else the first standby in
    /// the config's order that could take it. With --dry-run: print the plan, change nothing.
    #[arg(long)]
    trigger_failover: bool,
    /// With --trigger-failover: why (logged and sent with the notification).
    #[arg(long, value_name = "TEXT", requires = "trigger_failover")]
    reason: Option<String>,
    /// With --trigger-failover: the validator to move the staked identity to, by its name in
    /// the config (`validator2`, or its `name`).
    #[arg(long, value_name = "NODE", requires = "trigger_failover")]
    to: Option<String>,
    /// With --trigger-failover: switch even if the passive looks unhealthy. With
    /// --shutdown-agent: stop the agents even while a manager is running.
    #[arg(long, requires = "forceable")]
    force: bool,
    /// With --trigger-failover: switch at once, without waiting (up to
    /// planned_switch_leader_wait) for a moment the staked identity leads none of the next
    /// planned_switch_leader_slots slots.
    #[arg(long, requires = "trigger_failover")]
    now: bool,
    /// Stop both agents at once, as the reference design does. Refused while a manager runs on
    /// this state_dir (it would lose its agents) unless --force.
    #[arg(long)]
    shutdown_agent: bool,
    /// Print both validators' state, the term, the last switch and the holds, and exit (the same
    /// as the `status` subcommand).
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    output: failover_config::cli::OutputArg,
    /// Decide and log, change nothing: as a daemon it never switches; with --trigger-failover
    /// it prints the plan the running manager would execute, phase by phase.
    #[arg(long, conflicts_with_all = ["status", "check_config", "shutdown_agent"])]
    dry_run: bool,
    /// Validate the config exactly as the service starts with it (keys, state_dir, log_file),
    /// list every problem with its field path, and exit.
    #[arg(long)]
    check_config: bool,
    /// Log to this file as well as standard error (overrides the config's log_file).
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

#[derive(Subcommand)]
enum Command {
    /// Both nodes, the term, the last switch and the holds (the same as --status)
    ///
    /// A table of both nodes (role, identity, slot, lag, last vote, health, promotable or why
    /// not), the term, the last switch with its phases and the active holds. A running manager
    /// answers from its last heartbeat; without one (or while it is busy switching) this command
    /// observes once itself. Writes nothing.
    Status(StatusArgs),
    #[command(flatten)]
    Docs(failover_config::cli::DocCommand),
    /// Watchtower-style alerts only: warn when the vote account's last vote lags the cluster or
    /// turns delinquent, and send an all-clear when it recovers. Needs no agents.
    VoteAlert(Box<VoteAlertArgs>),
}

#[derive(Args)]
struct StatusArgs {
    /// The manager config.
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "manager-config.json"
    )]
    config: PathBuf,
    #[command(flatten)]
    output: failover_config::cli::OutputArg,
}

#[derive(Args)]
struct VoteAlertArgs {
    /// Cluster JSON-RPC URL, or a moniker as the solana CLI takes it: mainnet-beta (m), testnet
    /// (t), devnet (d), localhost (l).
    #[arg(
        short = 'u',
        long,
        visible_alias = "url",
        value_name = "URL_OR_MONIKER"
    )]
    rpc: String,
    /// The vote account to watch.
    #[arg(long, value_name = "PUBKEY")]
    vote_account: failover_identity::Pubkey,
    /// Alert when the last vote lags the tip by more than this many slots (two samples).
    /// Default: 8 on a TowerBFT cluster, 24 on Alpenglow (asked of --rpc at start).
    #[arg(long)]
    threshold: Option<u64>,
    /// Time between samples (Go-style, e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// File holding the Telegram bot token (a file, so the token never shows in `ps`).
    #[arg(long, value_name = "PATH")]
    telegram_bot_token_file: Option<PathBuf>,
    /// The chat to alert; group chat ids are negative (`-1001234567890`), written as they are.
    #[arg(long, allow_negative_numbers = true)]
    telegram_chat_id: Option<String>,
    #[arg(long, default_value = "https://api.telegram.org")]
    telegram_api_base: url::Url,
    /// A Slack/Discord-compatible webhook.
    #[arg(long, value_name = "URL")]
    webhook: Option<url::Url>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    failover_config::parse_duration(text)
}

/// The reference binary's flags, as Go spells them (`-config`, `-dry-run=false`).
const GO_FLAGS: &[&str] = &[
    "config",
    "trigger-failover",
    "reason",
    "to",
    "shutdown-agent",
    "dry-run",
    "log-file",
    "force",
    "now",
    "status",
    "check-config",
];
const GO_SWITCHES: &[&str] = &[
    "trigger-failover",
    "shutdown-agent",
    "dry-run",
    "force",
    "now",
    "status",
    "check-config",
];

fn main() -> ExitCode {
    failover_config::cli::exit_quietly_when_output_closes();
    let cli = Cli::parse_from(failover_config::cli::go_style_args(
        std::env::args_os(),
        GO_FLAGS,
        GO_SWITCHES,
    ));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = match cli.command {
        Some(Command::VoteAlert(args)) => return runtime.block_on(vote_alert(*args)),
        Some(Command::Docs(docs)) => return docs.exit(<Cli as clap::CommandFactory>::command()),
        Some(Command::Status(status)) => RunArgs {
            config: status.config,
            status: true,
            output: status.output,
            ..cli.run
        },
        None => cli.run,
    };
    if args.output.is_json() && !args.status {
        eprintln!("error: --output/--json apply to --status (or the status subcommand)");
        return ExitCode::from(2);
    }
    let mut cfg = match failover_config::load_manager(&args.config) {
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
    // What the service checks before it starts, the check checks too.
    let keys = failover_monitor::manager::Keys::load(&cfg);
    if args.check_config {
        return match keys {
            Ok(_) => {
                println!("ok: {}", cfg.summary());
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
    runtime.block_on(async move {
        if let Err(e) = failover_agent::logging::reopen_on_sighup(log_file) {
            warn!("cannot handle SIGHUP: {e}");
        }
        match run(args, cfg).await {
            Ok(code) => code,
            Err(e) => {
                error!("{e:#}");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(args: RunArgs, cfg: failover_config::ManagerConfig) -> anyhow::Result<ExitCode> {
    // One-shot commands do not repeat the config's warnings (--check-config lists them); the
    // service says them once at start.
    if args.trigger_failover {
        let reason = args
            .reason
            .clone()
            .unwrap_or_else(|| "manual failover triggered via CLI".to_string());
        let request = ControlRequest::Trigger {
            reason: reason.clone(),
            force: args.force,
            dry_run: args.dry_run,
            now: args.now,
            to: args.to.clone(),
        };
        let answer = match ask_running(&cfg.state_dir, &request).await {
            Some(answer) => {
                info!(dry_run = args.dry_run, "asked the running manager");
                answer
            }
            None if cfg.election.is_some() => Err(
                "no manager runs on this state dir, and with an `election` only the leading \
                 manager switches: run this where it runs (its status names it)"
                    .to_string(),
            ),
            None => {
                info!("no manager running here: doing it myself");
                let (notifier, _task) = Notifier::start(NotifierConfig::from_manager(&cfg));
                let mut manager = Manager::new(cfg, notifier.clone()).await?;
                let answer = manager
                    .trigger(
                        &reason,
                        args.to.as_deref(),
                        args.force,
                        args.dry_run,
                        args.now,
                    )
                    .await;
                notifier
                    .flush_within(failover_monitor::manager::SHUTDOWN_FLUSH)
                    .await;
                answer
            }
        };
        return Ok(match answer {
            Ok(outcome) => {
                println!("{}", outcome.summary());
                if outcome.dry_run {
                    for phase in &outcome.phases {
                        println!("  {:<16} {}", phase.name, phase.detail);
                    }
                }
                if outcome.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        });
    }
    if args.shutdown_agent {
        if !args.force && failover_monitor::control::is_running(&cfg.state_dir).await {
            eprintln!(
                "error: a manager is running on {} and would lose both agents (then warn every \
                 heartbeat); stop it first, or add --force",
                cfg.state_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
        let manager = Manager::read_only(cfg).await?;
        let results = manager.shutdown_agents().await;
        let mut ok = true;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(()) => println!("validator{}: agent stopping", i + 1),
                Err(e) => {
                    ok = false;
                    println!("validator{}: {e}", i + 1);
                }
            }
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if args.status {
        return status(cfg, args.output.is_json()).await;
    }
    for w in &cfg.warnings {
        warn!("config: {w}");
    }
    if cfg.dry_run {
        warn!("DRY RUN: decisions are logged, no switch is made");
    }
    info!(version = env!("CARGO_PKG_VERSION"), "{}", cfg.summary());
    failover_monitor::run(cfg, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// How long `status` waits for a running manager's answer; it answers between heartbeats, so
/// only a switch in progress keeps it longer.
const STATUS_PATIENCE: Duration = Duration::from_secs(3);

async fn status(cfg: failover_config::ManagerConfig, json: bool) -> anyhow::Result<ExitCode> {
    use failover_monitor::control::ask_status;
    let asked = tokio::time::timeout(STATUS_PATIENCE, ask_status(&cfg.state_dir)).await;
    let report = match asked {
        Ok(Some(Ok(report))) => report,
        Ok(Some(Err(e))) => anyhow::bail!("the running manager: {e}"),
        Ok(None) | Err(_) => {
            let source = match asked {
                Err(_) => "this command (the running manager is busy, probably switching)",
                _ => "this command (no manager runs on this state_dir)",
            };
            let mut manager = Manager::read_only(cfg).await?;
            manager.observe().await;
            manager.status_report(source)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

async fn vote_alert(args: VoteAlertArgs) -> ExitCode {
    if let Err(e) = failover_agent::logging::init(failover_agent::logging::LogOptions {
        file: None,
        format: failover_config::LogFormat::Text,
        level: None,
    }) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let token = match &args.telegram_bot_token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let telegram = match (token, args.telegram_chat_id) {
        (Some(bot_token), Some(chat_id)) => Some(TelegramTarget {
            api_base: args.telegram_api_base,
            bot_token,
            chat_id,
        }),
        (None, None) => None,
        _ => {
            eprintln!("error: --telegram-bot-token-file and --telegram-chat-id go together");
            return ExitCode::from(2);
        }
    };
    let (notifier, _task) = Notifier::start(NotifierConfig::new(telegram, args.webhook));
    let cfg = failover_monitor::vote_alert::VoteAlertConfig {
        rpc_url: failover_config::cli::cluster_url(&args.rpc).to_string(),
        vote_account: args.vote_account,
        threshold_slots: args.threshold,
        interval: args.interval,
    };
    match failover_monitor::vote_alert::run(cfg, notifier.clone(), shutdown_signal()).await {
        Ok(()) => {
            notifier.flush().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
