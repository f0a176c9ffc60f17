//! What every command-line program of the product shares at its edge: it ends quietly, with
//! success, when whoever reads its output goes away (`failover-config check-manager … | head -1`),
//! as `head`-friendly tools do, instead of Rust's panic on a broken pipe.

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
