//! `failover-config`: checks a `validator-config.json` or `manager-config.json` before it is
//! deployed, reporting every problem at once. A thin shell over the `failover_config` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use failover_config::{LoadError, Problem};

/// Checks failover config files the way failover-agent and failover-manager will read them.
///
/// Every problem in the file is reported at once, each with the path of its field. Paths the
/// config names (ledger, keypairs, SSH key) are checked on this machine, so run the check where the
/// program will run. Nothing is sent over the network.
///
/// Exit status: 0 when the config is valid (warnings may be printed), 2 when it is invalid,
/// 1 when the file cannot be read.
#[derive(Parser)]
#[command(name = "failover-config", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks an agent config (validator-config.json).
    CheckAgent {
        /// The config file.
        path: PathBuf,
    },
    /// Checks a manager config (manager-config.json).
    CheckManager {
        /// The config file.
        path: PathBuf,
    },
    #[command(flatten)]
    Docs(failover_config::cli::DocCommand),
}

fn main() -> ExitCode {
    failover_config::cli::exit_quietly_when_output_closes();
    let args = Args::parse();
    let checked = match &args.command {
        Command::CheckAgent { path } => {
            failover_config::load_agent(path).map(|c| (c.summary(), c.warnings))
        }
        Command::CheckManager { path } => {
            failover_config::load_manager(path).map(|c| (c.summary(), c.warnings))
        }
        Command::Docs(docs) => return docs.exit(Args::command()),
    };
    match checked {
        Ok((summary, warnings)) => {
            println!("ok: {summary}");
            for Problem { path, message } in warnings {
                println!("warning: {path}: {message}");
            }
            ExitCode::SUCCESS
        }
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
        Err(error @ LoadError::Read { .. }) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}
