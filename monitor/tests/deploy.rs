//! What an operator deploys beside the binaries: the systemd units pass `systemd-analyze verify`,
//! the alert rules pass `promtool check rules` and their own unit tests, and `scripts/install`
//! lays out a root the units can run from — and changes nothing when run again.

use std::path::{Path, PathBuf};
use std::process::Command;

use failover_sim::prometheus::promtool;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put this build's binaries (the test binary sits in `deps/` below it).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for b in [
        "failover-agent",
        "failover-manager",
        "failover-identity",
        "failover-config",
    ] {
        assert!(
            dir.join(b).exists(),
            "{b} missing in {}: cargo build --workspace",
            dir.display()
        );
    }
    dir
}

/// Runs `systemd-analyze verify` on the units in `units` after pointing their binaries into
/// `bin`: the errors it printed, empty when it is content.
fn verify_units(units: &[PathBuf], bin: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(unit).unwrap();
        let text = text
            .replace(
                "/usr/bin/failover-",
                &format!("{}/failover-", bin.display()),
            )
            .replace(
                "/usr/local/bin/failover-",
                &format!("{}/failover-", bin.display()),
            );
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {}: {said}", out.status)
    }
}

fn units(dir: &Path) -> Vec<PathBuf> {
    ["failover-agent.service", "failover-manager.service"]
        .iter()
        .map(|u| dir.join(u))
        .collect()
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let units = units(&repo().join("deploy/systemd"));
    let said = verify_units(&units, &bin_dir());
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The check can fail: a misspelt directive is reported.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("failover-agent.service");
    let text = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(&broken, text.replace("RestartSec=", "RestartSecs=")).unwrap();
    let said = verify_units(&[broken], &bin_dir());
    assert!(said.contains("RestartSecs"), "not reported: {said}");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = repo().join("deploy/prometheus/failover-alerts.yml");
    let said = promtool(&["check", "rules", rules.to_str().unwrap()]).unwrap();
    assert!(said.contains("SUCCESS"), "{said}");
    // The cases in the test file: each alert fires on the series it is for, not before its
    // `for:` has passed, and the healthy pair fires nothing.
    let cases = repo().join("deploy/prometheus/failover-alerts.test.yml");
    promtool(&["test", "rules", cases.to_str().unwrap()]).unwrap();
}

fn install(root: &Path, extra: &[&str]) -> String {
    let out = Command::new(repo().join("scripts/install"))
        .arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(bin_dir())
        .args(extra)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scripts/install failed: {said}");
    said
}

#[test]
fn scripts_install_lays_out_a_root_the_units_run_from_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let first = install(
        root,
        &["--validator-user", "sol", "--validator-service", "sol"],
    );
    assert!(!first.contains(" 0 changed"), "{first}");
    for file in [
        "usr/local/bin/failover-agent",
        "usr/local/bin/failover-manager",
        "usr/local/bin/failover-identity",
        "usr/local/bin/failover-config",
        "etc/failover/validator-config.example.jsonc",
        "etc/failover/manager-config.example.jsonc",
        "etc/sudoers.d/failover-agent",
        "usr/share/solana-failover/prometheus/failover-alerts.yml",
        "usr/share/solana-failover/grafana/failover-dashboard.json",
        "usr/local/share/man/man1/failover-manager.1.gz",
        "usr/local/share/bash-completion/completions/failover-agent",
        "usr/local/share/zsh/vendor-completions/_failover-identity",
        "usr/local/share/fish/vendor_completions.d/failover-config.fish",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed:\n{first}");
    }
    let agent_unit =
        std::fs::read_to_string(root.join("etc/systemd/system/failover-agent.service")).unwrap();
    assert!(agent_unit.contains("\nUser=sol\n"), "{agent_unit}");
    assert!(agent_unit.contains("ExecStart=/usr/local/bin/failover-agent --config"));
    let sudoers = std::fs::read_to_string(root.join("etc/sudoers.d/failover-agent")).unwrap();
    assert!(
        sudoers.contains(
            "sol ALL=(root) NOPASSWD: /usr/bin/systemctl restart sol, \
             /usr/bin/systemctl stop failover-agent"
        ),
        "{sudoers}"
    );
    let said = verify_units(
        &units(&root.join("etc/systemd/system")),
        &root.join("usr/local/bin"),
    );
    assert!(said.trim().is_empty(), "installed units: {said}");

    // Again: nothing changes. An operator's own config is never touched.
    std::fs::write(root.join("etc/failover/manager-config.json"), "{}").unwrap();
    let second = install(
        root,
        &["--validator-user", "sol", "--validator-service", "sol"],
    );
    assert!(second.contains(" 0 changed"), "{second}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/failover/manager-config.json")).unwrap(),
        "{}"
    );
    // A changed option changes exactly what depends on it.
    let third = install(
        root,
        &["--validator-user", "sol", "--validator-service", "agave"],
    );
    assert!(
        third.contains("installed /etc/sudoers.d/failover-agent"),
        "{third}"
    );
    assert!(third.contains(" 1 changed"), "{third}");
}

#[test]
fn scripts_install_refuses_bad_arguments_and_installs_nothing() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        &["--role", "witness"][..],
        &["--validator-user", "sol; rm -rf /"][..],
        &["--prefix", "relative/dir"][..],
        &["--bogus"][..],
    ] {
        let out = Command::new(repo().join("scripts/install"))
            .arg("--root")
            .arg(root.path())
            .arg("--bin-dir")
            .arg(bin_dir())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no reason given");
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

/// Each binary's completions and man page come from its own flag definitions: they name its
/// subcommands and flags, and a shell or `man` accepts them.
#[test]
fn every_binary_prints_its_completions_and_its_man_page() {
    let run = |bin: &str, args: &[&str]| {
        let out = Command::new(bin_dir().join(bin))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for (bin, flag) in [
        ("failover-manager", "--trigger-failover"),
        ("failover-agent", "--check-config"),
        ("failover-identity", "verify"),
        ("failover-config", "check-manager"),
    ] {
        let bash = run(bin, &["completion", "--shell", "bash"]);
        assert!(bash.contains(flag), "{bin}: {flag} missing in\n{bash}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("completion.bash");
        std::fs::write(&script, &bash).unwrap();
        let checked = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(checked.status.success(), "{bin}: bash -n: {checked:?}");
        let man = run(bin, &["man"]);
        assert!(
            man.starts_with(".ie") || man.contains(".TH"),
            "{bin}: not roff:\n{man}"
        );
        assert!(
            man.contains(&flag.replace('-', "\\-")),
            "{bin}: {flag} missing in its man page"
        );
    }
    // An unknown shell is refused with the list of known ones.
    let out = Command::new(bin_dir().join("failover-manager"))
        .args(["completion", "--shell", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
