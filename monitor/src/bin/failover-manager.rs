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
struct RunArgs {
    /// The manager config (manager-config.json; the reference design's files load unchanged).
    #[arg(long, value_name = "PATH", default_value = "manager-config.json")]
    config: PathBuf,
    /// Planned switchover: move the staked identity from the active to the passive now.
    #[arg(long)]
    trigger_failover: bool,
    /// Why (logged and sent with the notification).
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "manual failover triggered via CLI"
    )]
    reason: String,
    /// With --trigger-failover: switch even if the passive looks unhealthy.
    #[arg(long)]
    force: bool,
    /// Stop both agents at once (stop the manager first), as the reference design does.
    #[arg(long)]
    shutdown_agent: bool,
    /// Print both validators' state and exit.
    #[arg(long)]
    status: bool,
    /// Decide and log the plan, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Validate the config, list every problem with its field path, and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Watchtower-style alerts only: warn when the vote account's last vote lags the cluster or
    /// turns delinquent, and send an all-clear when it recovers. Needs no agents.
    VoteAlert(VoteAlertArgs),
}

#[derive(Args)]
struct VoteAlertArgs {
    /// Cluster JSON-RPC URL.
    #[arg(long, value_name = "URL")]
    rpc: String,
    /// The vote account to watch.
    #[arg(long, value_name = "PUBKEY")]
    vote_account: failover_identity::Pubkey,
    /// Alert when the last vote lags the tip by more than this many slots (two samples).
    #[arg(long, default_value_t = 8)]
    threshold: u64,
    /// Time between samples (Go-style, e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// File holding the Telegram bot token (a file, so the token never shows in `ps`).
    #[arg(long, value_name = "PATH")]
    telegram_bot_token_file: Option<PathBuf>,
    #[arg(long)]
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

fn main() -> ExitCode {
    failover_config::cli::exit_quietly_when_output_closes();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::VoteAlert(args)) = cli.command {
        return runtime.block_on(vote_alert(args));
    }
    let args = cli.run;
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
    if args.check_config {
        println!("ok: {}", cfg.summary());
        for w in &cfg.warnings {
            println!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = failover_agent::logging::init(cfg.log_file.as_ref()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    runtime.block_on(async move {
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
    for w in &cfg.warnings {
        warn!("config: {w}");
    }
    if args.trigger_failover {
        let request = ControlRequest::Trigger {
            reason: args.reason.clone(),
            force: args.force,
        };
        let answer = match ask_running(&cfg.state_dir, &request).await {
            Some(answer) => {
                info!("asked the running manager to switch");
                answer
            }
            None => {
                info!("no manager running here: switching myself");
                let (notifier, _task) = Notifier::start(NotifierConfig::from_manager(&cfg));
                let mut manager = Manager::new(cfg, notifier.clone()).await?;
                let answer = manager.trigger(&args.reason, args.force).await;
                notifier.flush().await;
                answer
            }
        };
        return Ok(match answer {
            Ok(outcome) => {
                println!("{}", outcome.summary());
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
        let mut manager = Manager::read_only(cfg).await?;
        manager.observe().await;
        for line in manager.status_lines() {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cfg.dry_run {
        warn!("DRY RUN: decisions are logged, no switch is made");
    }
    info!(version = env!("CARGO_PKG_VERSION"), "{}", cfg.summary());
    failover_monitor::run(cfg, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn vote_alert(args: VoteAlertArgs) -> ExitCode {
    if let Err(e) = failover_agent::logging::init(None) {
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
        rpc_url: args.rpc,
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
