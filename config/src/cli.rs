//! What every command-line program of the product shares at its edge: it ends quietly, with
//! success, when whoever reads its output goes away (`failover-config check-manager … | head -1`),
//! as `head`-friendly tools do, instead of Rust's panic on a broken pipe; the reference's Go flag
//! spellings; `--output text|json`; and the `completion` / `man` subcommands.

/// Installs a panic hook that turns the standard library's "failed printing to stdout: Broken
/// pipe" panic into a quiet exit 0; every other panic is reported as before. Call first in `main`.
pub fn exit_quietly_when_output_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("os error 32") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Rewrites the reference (Go) binaries' flag spellings into ours before parsing, so that an
/// operator's existing unit files keep working: Go's `flag` package takes `-name` as well as
/// `--name`, and `-name=true|false` for a boolean. `long` names the flags to rewrite (without
/// dashes), `booleans` which of them are switches. Anything else is left for the parser to judge.
pub fn go_style_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    long: &[&str],
    booleans: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    for (i, arg) in args.into_iter().enumerate() {
        let Some(text) = arg.to_str().filter(|_| i > 0) else {
            out.push(arg);
            continue;
        };
        let bare = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-').filter(|t| !t.starts_with('-')));
        let Some(bare) = bare else {
            out.push(arg);
            continue;
        };
        let (name, value) = match bare.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (bare, None),
        };
        if !long.contains(&name) {
            out.push(arg);
            continue;
        }
        match (booleans.contains(&name), value) {
            (true, Some("false")) => {}
            (true, Some("true")) | (_, None) => out.push(format!("--{name}").into()),
            (_, Some(v)) => out.push(format!("--{name}={v}").into()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings_become_ours() {
        let args = [
            "failover-manager",
            "-config",
            "/etc/m.json",
            "-dry-run=false",
            "-trigger-failover",
            "--reason=maint",
            "-x",
            "--force=true",
        ]
        .map(std::ffi::OsString::from);
        let got = go_style_args(
            args,
            &["config", "dry-run", "trigger-failover", "reason", "force"],
            &["dry-run", "trigger-failover", "force"],
        );
        let want = [
            "failover-manager",
            "--config",
            "/etc/m.json",
            "--trigger-failover",
            "--reason=maint",
            "-x",
            "--force",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(got, want);
    }
}

/// How a one-shot command prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines (or a table) for people.
    #[default]
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// `--output text|json`, with `--json` kept as the older spelling of `--output json`.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArg {
    /// How to print the answer: text for people, json (one object) for scripts.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Output::Text)]
    pub output: Output,
    /// The same as --output json (the older spelling).
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl OutputArg {
    pub fn is_json(&self) -> bool {
        self.json || self.output == Output::Json
    }
}

/// The subcommands every binary has for its installation: its shell completions and its man
/// page, generated from its own flag definitions (the package installs both).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum DocCommand {
    /// Print a shell completion script
    ///
    /// For bash, zsh, fish, elvish or powershell, e.g.
    /// `… completion --shell bash > /usr/share/bash-completion/completions/NAME`.
    Completion {
        #[arg(short, long, value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    ///
    /// E.g. `… man > /usr/share/man/man1/NAME.1`.
    Man,
}

impl DocCommand {
    /// Writes what was asked for about `command` (the binary's `CommandFactory::command()`) to
    /// standard output.
    pub fn run(&self, mut command: clap::Command) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            DocCommand::Completion { shell } => {
                let name = command.get_name().to_string();
                clap_complete::generate(*shell, &mut command, name, &mut out);
                Ok(())
            }
            DocCommand::Man => clap_mangen::Man::new(command).render(&mut out),
        }
    }

    /// [`DocCommand::run`], as the binary's exit status.
    pub fn exit(&self, command: clap::Command) -> std::process::ExitCode {
        match self.run(command) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            // `… man | head`: the reader went away, as with every other output here.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// The `solana` CLI's cluster monikers (`-u`): `mainnet-beta`/`m`, `testnet`/`t`, `devnet`/`d`,
/// `localhost`/`l`, as the RPC URL they name; anything else is returned as it is.
pub fn cluster_url(value: &str) -> &str {
    match value {
        "m" | "mainnet-beta" => "https://api.mainnet-beta.solana.com",
        "t" | "testnet" => "https://api.testnet.solana.com",
        "d" | "devnet" => "https://api.devnet.solana.com",
        "l" | "localhost" => "http://localhost:8899",
        other => other,
    }
}
