//! `failover-identity`: check, create and inspect validator identity keypairs.
//!
//! Thin edge over the `failover_identity` library: parse flags, run the checks, print one line per
//! check (or JSON), and exit with a code that tells scripts which check failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use failover_identity::{AdminRpcClient, Keypair, Permissions, Pubkey, Timeouts};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "failover-identity",
    version,
    about = "Check, create and inspect Solana validator identity keypairs",
    long_about = "Check, create and inspect Solana validator identity keypairs.\n\n\
        `verify` is the pre-flight check before trusting a key with failover: the file is a valid \
        ed25519 keypair, readable only by its owner, is the key you expect, and (optionally) is the \
        identity a running validator currently reports."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a keypair file and compare it with what you and the validator expect.
    #[command(after_help = "Exit codes (the first failing check decides):\n  \
        0  every requested check passed\n  \
        2  bad command-line usage\n  \
        3  the keypair file is missing, unreadable, readable by others, or not a valid keypair\n  \
        4  the keypair's pubkey is not --expect\n  \
        5  the validator's admin RPC reports a different identity\n  \
        6  the RPC node's getIdentity reports a different identity\n  \
        7  the validator's admin RPC could not be queried\n  \
        8  the RPC node could not be queried")]
    Verify(VerifyArgs),
    /// Generate a new keypair into a new file (mode 0600) and print its pubkey.
    New {
        /// Where to write the keypair; an existing file is never overwritten.
        #[arg(long, short = 'o', value_name = "PATH")]
        outfile: PathBuf,
    },
    /// Inspect an Agave tower file: verify its signature and show its last vote, root and hash.
    #[command(
        after_help = "Exit codes: 0 the tower verifies; 9 it is unreadable, malformed, \
        signed by another key or names another node."
    )]
    Tower {
        /// The tower file (`tower-1_9-<pubkey>.bin`).
        path: PathBuf,
        /// The identity it must belong to (default: the pubkey in the file name).
        #[arg(long, value_name = "PUBKEY")]
        identity: Option<Pubkey>,
        #[command(flatten)]
        output: failover_config::cli::OutputArg,
    },
    /// Inspect an Agave (Alpenglow) vote history file: verify its signature and show its newest
    /// vote, root, hash and vote counts.
    #[command(
        after_help = "Exit codes: 0 the vote history verifies; 9 it is unreadable, malformed, \
        signed by another key or names another node."
    )]
    VoteHistory {
        /// The vote history file (`vote_history-<pubkey>.bin`, in the ledger directory).
        path: PathBuf,
        /// The identity it must belong to (default: the pubkey in the file name).
        #[arg(long, value_name = "PUBKEY")]
        identity: Option<Pubkey>,
        #[command(flatten)]
        output: failover_config::cli::OutputArg,
    },
    /// Switch a running validator's identity through its admin RPC, like
    /// `agave-validator set-identity`: the keypair comes from a file or, with no file or `-`, from
    /// stdin (so it never touches the disk), and the switch is confirmed with `contactInfo`.
    #[command(
        after_help = "Exit codes: 0 switched and confirmed; 3 the keypair is invalid; 5 the \
        validator reports another identity afterwards; 7 the admin RPC could not be reached; \
        10 the validator refused (e.g. no loadable tower with --require-tower)."
    )]
    SetIdentity {
        #[command(flatten)]
        target: AdminTarget,
        /// Refuse unless the validator can load and verify the new identity's tower (TowerBFT).
        #[arg(long)]
        require_tower: bool,
        /// Switch even if the validator cannot load the new identity's vote history while its
        /// vote account has Alpenglow votes (dangerous: it may vote against its own history).
        /// Like agave-validator's flag; without it the vote history is required (Agave 4.2+).
        #[arg(long)]
        do_not_require_vote_history: bool,
        /// Keypair file; omit or `-` to read the keypair JSON from stdin.
        keypair: Option<PathBuf>,
    },
    /// Add an authorized voter to a running validator, like `agave-validator authorized-voter add`
    /// (keypair from a file, or from stdin with no file or `-`).
    AuthorizedVoterAdd {
        #[command(flatten)]
        target: AdminTarget,
        /// Keypair file; omit or `-` to read the keypair JSON from stdin.
        keypair: Option<PathBuf>,
    },
    /// Print the base58 pubkey of a keypair file.
    Pubkey {
        /// The keypair file (JSON array of 64 bytes).
        path: PathBuf,
        #[command(flatten)]
        perms: PermsArg,
    },
    #[command(flatten)]
    Docs(failover_config::cli::DocCommand),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct AdminTarget {
    /// Ledger directory of the validator (its admin socket is `<ledger>/admin.rpc`).
    #[arg(short, long, value_name = "PATH")]
    ledger: Option<PathBuf>,
    /// The validator's admin RPC socket.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
}

impl AdminTarget {
    fn client(&self) -> AdminRpcClient {
        let socket = self
            .admin_socket
            .clone()
            .or_else(|| self.ledger.as_deref().map(|l| l.join("admin.rpc")))
            .expect("clap requires one of --ledger and --admin-socket");
        AdminRpcClient::new(socket, Timeouts::LOCAL)
    }
}

/// Exit code when the validator refused an admin-RPC request.
const VALIDATOR_REFUSED: u8 = 10;

#[derive(Args)]
struct PermsArg {
    /// Load the keypair even if group or others can read it (refused by default).
    #[arg(long)]
    allow_insecure_permissions: bool,
}

impl PermsArg {
    fn permissions(&self) -> Permissions {
        if self.allow_insecure_permissions {
            Permissions::AllowInsecure
        } else {
            Permissions::Strict
        }
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// The keypair file to check (JSON array of 64 bytes, as written by solana-keygen).
    #[arg(long, value_name = "PATH")]
    keypair: PathBuf,
    /// The base58 pubkey the keypair must have.
    #[arg(long, value_name = "PUBKEY")]
    expect: Option<Pubkey>,
    /// Ledger directory of a running validator: its admin RPC (`<ledger>/admin.rpc`) must report
    /// this keypair as its identity.
    #[arg(short, long, value_name = "PATH", conflicts_with = "admin_socket")]
    ledger: Option<PathBuf>,
    /// Admin RPC socket of a running validator (instead of --ledger).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// JSON-RPC URL of a node whose getIdentity must report this keypair.
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// Deadline for each query of a validator or RPC node.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    output: failover_config::cli::OutputArg,
    #[command(flatten)]
    perms: PermsArg,
}

/// What a failed check means, and the exit code that says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Failure {
    Keypair = 3,
    ExpectMismatch = 4,
    ValidatorMismatch = 5,
    RpcMismatch = 6,
    ValidatorUnreachable = 7,
    RpcUnreachable = 8,
}

enum Change {
    SetIdentity { require: failover_identity::Require },
    AddAuthorizedVoter,
}

/// Loads the keypair (file or stdin) and applies `change` through the admin RPC.
fn admin_change(
    target: AdminTarget,
    path: Option<PathBuf>,
    change: Change,
) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let from_stdin = path.as_deref().is_none_or(|p| p == Path::new("-"));
    let loaded = if from_stdin {
        let mut text = zeroize::Zeroizing::new(Vec::new());
        std::io::stdin()
            .read_to_end(&mut text)
            .context("cannot read the keypair from stdin")?;
        Keypair::from_json(&text)
    } else {
        Keypair::read_file(path.as_deref().expect("checked above"), Permissions::Strict)
    };
    let keypair = match loaded {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(Failure::Keypair as u8));
        }
    };
    let client = target.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let result = match change {
            Change::SetIdentity { require } => {
                client.set_identity_from_bytes(&keypair, require).await
            }
            Change::AddAuthorizedVoter => client.add_authorized_voter_from_bytes(&keypair).await,
        };
        let refused = |e: failover_identity::AdminRpcError| {
            use failover_identity::AdminRpcError::*;
            let code = match e {
                Connect { .. } | ConnectTimeout { .. } | ConnectionLost { .. } => {
                    Failure::ValidatorUnreachable as u8
                }
                _ => VALIDATOR_REFUSED,
            };
            eprintln!("error: {e}");
            Ok(ExitCode::from(code))
        };
        if let Err(e) = result {
            return refused(e);
        }
        if let Change::AddAuthorizedVoter = change {
            println!("added authorized voter {}", keypair.pubkey());
            return Ok(ExitCode::SUCCESS);
        }
        match client.identity().await {
            Ok(now) if now == keypair.pubkey() => {
                println!("identity is now {now}");
                Ok(ExitCode::SUCCESS)
            }
            Ok(now) => {
                eprintln!(
                    "error: the validator reports {now}, not {}",
                    keypair.pubkey()
                );
                Ok(ExitCode::from(Failure::ValidatorMismatch as u8))
            }
            Err(e) => refused(e),
        }
    })
}

/// Exit code of `tower` when the tower is not acceptable.
const TOWER_INVALID: u8 = 9;

#[derive(Serialize)]
struct VoteStateReport {
    path: PathBuf,
    kind: failover_identity::VoteStateKind,
    identity: String,
    /// The newest slot with a vote: a tower's last vote; a vote history's newest voted slot.
    last_voted_slot: Option<u64>,
    root: Option<u64>,
    sha256: String,
    bytes: usize,
    /// A tower's votes under lockout, oldest first: a vote on `slot` forbids voting on a
    /// conflicting fork up to `locked_until` (slot + 2^confirmations).
    #[serde(skip_serializing_if = "Option::is_none")]
    votes: Option<Vec<TowerVote>>,
    /// A vote history's vote counts by kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<VoteCounts>,
}

#[derive(Serialize)]
struct TowerVote {
    slot: u64,
    confirmations: u32,
    locked_until: u64,
}

#[derive(Serialize)]
struct VoteCounts {
    /// Slots with a notarize or skip vote.
    voted: usize,
    notarized: usize,
    skipped: usize,
    finalized: usize,
    /// Votes kept to re-sign.
    cast: usize,
}

/// `tower` and `vote-history`: verify a vote-state file and show what it holds.
fn inspect_vote_state(
    kind: failover_identity::VoteStateKind,
    path: &Path,
    identity: Option<Pubkey>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use failover_identity::{tower_hash, VoteState, VoteStateFile, VoteStateKind};
    let prefix = match kind {
        VoteStateKind::Tower => "tower-1_9-",
        VoteStateKind::VoteHistory => "vote_history-",
    };
    let from_name = || {
        path.file_name()?
            .to_str()?
            .strip_prefix(prefix)?
            .strip_suffix(".bin")?
            .parse::<Pubkey>()
            .ok()
    };
    let Some(identity) = identity.or_else(from_name) else {
        eprintln!(
            "error: {} is not named {prefix}<pubkey>.bin; pass --identity",
            path.display()
        );
        return Ok(ExitCode::from(TOWER_INVALID));
    };
    let result = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|bytes| {
            let file = VoteStateFile::parse(kind, &bytes).map_err(|e| e.to_string())?;
            file.verify(&identity).map_err(|e| e.to_string())?;
            Ok((file, bytes))
        });
    let (file, bytes) = match result {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return Ok(ExitCode::from(TOWER_INVALID));
        }
    };
    let (votes, counts) = match &file.state {
        VoteState::Tower(tower) => (
            Some(
                tower
                    .vote_state
                    .votes
                    .iter()
                    .map(|l| TowerVote {
                        slot: l.slot,
                        confirmations: l.confirmation_count,
                        locked_until: l.slot.saturating_add(
                            1u64.checked_shl(l.confirmation_count).unwrap_or(u64::MAX),
                        ),
                    })
                    .collect::<Vec<_>>(),
            ),
            None,
        ),
        VoteState::VoteHistory(h) => (
            None,
            Some(VoteCounts {
                voted: h.voted.len(),
                notarized: h.voted_notar.len(),
                skipped: h.skipped.len(),
                finalized: h.its_over.len(),
                cast: h.votes_cast.iter().map(|(_, v)| v.len()).sum(),
            }),
        ),
    };
    let report = VoteStateReport {
        path: path.to_path_buf(),
        kind,
        identity: identity.to_string(),
        last_voted_slot: file.latest_vote(),
        root: file.root(),
        sha256: tower_hash(&bytes),
        bytes: bytes.len(),
        votes,
        counts,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let slot = |s: Option<u64>| s.map_or("none".to_string(), |s| s.to_string());
    println!(
        "ok  {kind} of {} verifies: last vote {}, root {}, {} bytes, sha256 {}",
        report.identity,
        slot(report.last_voted_slot),
        slot(report.root),
        report.bytes,
        report.sha256
    );
    if let Some(newest) = report.votes.as_ref().and_then(|v| v.last()) {
        println!(
            "    {} votes under lockout; newest: slot {} locked until slot {}",
            report.votes.as_ref().map_or(0, Vec::len),
            newest.slot,
            newest.locked_until
        );
    }
    if let Some(c) = &report.counts {
        println!(
            "    {} slots voted: {} notarized, {} skipped, {} finalized; {} votes kept to re-sign",
            c.voted, c.notarized, c.skipped, c.finalized, c.cast
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    /// Set when the check failed.
    failure: Option<Failure>,
    detail: String,
}

impl Check {
    fn pass(name: &'static str, detail: String) -> Self {
        Self {
            name,
            ok: true,
            failure: None,
            detail,
        }
    }

    fn fail(name: &'static str, failure: Failure, detail: String) -> Self {
        Self {
            name,
            ok: false,
            failure: Some(failure),
            detail,
        }
    }
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    exit_code: u8,
    keypair: PathBuf,
    pubkey: Option<String>,
    checks: Vec<Check>,
}

fn main() -> ExitCode {
    failover_config::cli::exit_quietly_when_output_closes();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Docs(docs) => {
            docs.run(<Cli as clap::CommandFactory>::command())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => verify(args),
        Command::New { outfile } => {
            let keypair = Keypair::generate();
            keypair
                .write_new_file(&outfile)
                .with_context(|| format!("cannot create {}", outfile.display()))?;
            eprintln!("Wrote a new keypair to {} (mode 0600)", outfile.display());
            println!("{}", keypair.pubkey());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tower {
            path,
            identity,
            output,
        } => inspect_vote_state(
            failover_identity::VoteStateKind::Tower,
            &path,
            identity,
            output.is_json(),
        ),
        Command::VoteHistory {
            path,
            identity,
            output,
        } => inspect_vote_state(
            failover_identity::VoteStateKind::VoteHistory,
            &path,
            identity,
            output.is_json(),
        ),
        Command::SetIdentity {
            target,
            require_tower,
            do_not_require_vote_history,
            keypair,
        } => {
            let require = failover_identity::Require {
                tower: require_tower,
                vote_history: !do_not_require_vote_history,
            };
            admin_change(target, keypair, Change::SetIdentity { require })
        }
        Command::AuthorizedVoterAdd { target, keypair } => {
            admin_change(target, keypair, Change::AddAuthorizedVoter)
        }
        Command::Pubkey { path, perms } => match Keypair::read_file(&path, perms.permissions()) {
            Ok(keypair) => {
                println!("{}", keypair.pubkey());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(Failure::Keypair as u8))
            }
        },
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.timeout.is_finite() && args.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut checks = Vec::new();
    let pubkey = match Keypair::read_file(&args.keypair, args.perms.permissions()) {
        Ok(keypair) => {
            let pubkey = keypair.pubkey();
            checks.push(Check::pass(
                "keypair",
                format!("valid ed25519 keypair, pubkey {pubkey}"),
            ));
            Some(pubkey)
        }
        Err(e) => {
            checks.push(Check::fail("keypair", Failure::Keypair, e.to_string()));
            None
        }
    };

    // Without a pubkey there is nothing to compare the other answers with.
    if let Some(pubkey) = pubkey {
        if let Some(expect) = args.expect {
            checks.push(if expect == pubkey {
                Check::pass("expect", format!("pubkey is {expect} as expected"))
            } else {
                Check::fail(
                    "expect",
                    Failure::ExpectMismatch,
                    format!("pubkey is {pubkey}, expected {expect}"),
                )
            });
        }
        let socket = args
            .admin_socket
            .clone()
            .or_else(|| args.ledger.as_deref().map(|l| l.join("admin.rpc")));
        let needs_runtime = socket.is_some() || args.rpc.is_some();
        if needs_runtime {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            if let Some(socket) = socket {
                checks.push(runtime.block_on(check_validator(&socket, pubkey, timeout)));
            }
            if let Some(url) = &args.rpc {
                checks.push(runtime.block_on(check_rpc(url, pubkey, timeout)));
            }
        }
    }

    let first_failure = checks.iter().find_map(|c| c.failure);
    let exit_code = first_failure.map_or(0, |f| f as u8);
    if args.output.is_json() {
        let report = Report {
            ok: first_failure.is_none(),
            exit_code,
            keypair: args.keypair,
            pubkey: pubkey.map(|p| p.to_string()),
            checks,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for check in &checks {
            let status = if check.ok { "ok  " } else { "FAIL" };
            println!("{status}  {:<9} {}", check.name, check.detail);
        }
    }
    Ok(ExitCode::from(exit_code))
}

async fn check_validator(socket: &Path, pubkey: Pubkey, timeout: Duration) -> Check {
    let client = AdminRpcClient::new(
        socket,
        Timeouts {
            connect: timeout,
            call: timeout,
        },
    );
    match client.identity().await {
        Ok(reported) if reported == pubkey => Check::pass(
            "validator",
            format!("{} reports identity {reported}", socket.display()),
        ),
        Ok(reported) => Check::fail(
            "validator",
            Failure::ValidatorMismatch,
            format!(
                "{} reports identity {reported}, not {pubkey}",
                socket.display()
            ),
        ),
        Err(e) => Check::fail("validator", Failure::ValidatorUnreachable, e.to_string()),
    }
}

async fn check_rpc(url: &str, pubkey: Pubkey, timeout: Duration) -> Check {
    use solana_rpc_client::nonblocking::rpc_client::RpcClient;
    let client = RpcClient::new_with_timeout(url.to_string(), timeout);
    match client.get_identity().await {
        // The RPC client's Pubkey is the same `solana-pubkey` type as ours.
        Ok(reported) if reported == pubkey => {
            Check::pass("rpc", format!("{url} getIdentity reports {reported}"))
        }
        Ok(reported) => Check::fail(
            "rpc",
            Failure::RpcMismatch,
            format!("{url} getIdentity reports {reported}, not {pubkey}"),
        ),
        Err(e) => Check::fail(
            "rpc",
            Failure::RpcUnreachable,
            format!("{url} getIdentity failed: {e}"),
        ),
    }
}
