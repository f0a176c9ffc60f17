//! Dry-run changes nothing; the firedancer and command validator kinds switch identities through
//! their own tools (stand-ins that drive the simulated validator's admin socket, with the keypair
//! on stdin).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use failover_agent::api::{FailoverAction, Role};
use support::{bed_with, command, PATIENCE};

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_reports_every_step_and_changes_nothing() {
    let bed = bed_with(|_, c| c["dry_run"] = true.into()).await;
    let staked = bed.cluster.staked_pubkey();
    let tower = bed.cluster.info().nodes[0]
        .ledger
        .join(format!("tower-1_9-{staked}.bin"));
    let response = bed
        .client(0)
        .failover(&command(FailoverAction::BecomePassive, 1, None, None))
        .await
        .unwrap();
    assert!(response.ok, "{response:#?}");
    assert!(response.dry_run);
    assert!(response.phases.iter().any(|p| p
        .detail
        .starts_with("dry-run: would set the unstaked identity")));
    assert!(response
        .phases
        .iter()
        .any(|p| p.detail.starts_with("dry-run: would archive and remove")));
    assert_eq!(bed.cluster.identity(0), Some(staked));
    assert!(tower.exists());
    assert!(!bed.agents[0].state_dir.join("towers").exists());

    let sha = response.tower.as_ref().map(|t| t.sha256.clone());
    let promote = command(FailoverAction::BecomeActive, 1, response.tower, sha);
    let response = bed.client(1).failover(&promote).await.unwrap();
    assert!(response.ok, "{response:#?}");
    assert!(!bed.cluster.info().nodes[1]
        .ledger
        .join(format!("tower-1_9-{staked}.bin"))
        .exists());
    assert_ne!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

/// The `failover-identity` binary built alongside these tests (`cargo test --workspace`).
fn identity_tool() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("failover-identity");
    assert!(
        path.exists(),
        "{} missing: run `cargo build -p failover-identity` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn firedancer_kind_pipes_the_keypair_to_fdctl() {
    let dir = tempfile::tempdir().unwrap();
    let fdctl = dir.path().join("fdctl");
    let argv_log = dir.path().join("fdctl-argv.log");
    let fd_config = dir.path().join("fd.toml");
    std::fs::write(&fd_config, "# firedancer config\n").unwrap();
    let tool = identity_tool();
    // A stand-in for `fdctl set-identity --config CFG - [--require-tower]
    // [--do-not-require-vote-history] [--force]` (Firedancer's `set_identity.c` usage): it logs
    // its argv and hands the keypair it reads on stdin to the validator's admin socket.
    let make = |socket: &Path| {
        format!(
            "#!/bin/sh\necho \"$@\" >> {log}\n[ \"$1\" = set-identity ] || exit 64\nshift\nreq=\nwhile [ $# -gt 0 ]; do case \"$1\" in --config) shift 2;; --require-tower|--do-not-require-vote-history) req=\"$req $1\"; shift;; --force) shift;; -) shift;; *) exit 65;; esac; done\nexec {tool} set-identity --admin-socket {socket} $req\n",
            log = argv_log.display(),
            tool = tool.display(),
            socket = socket.display()
        )
    };
    let fdctl_for = |i: usize| dir.path().join(format!("fdctl{i}"));
    let bed = bed_with(|i, c| {
        let ledger = c["ledger_path"].as_str().unwrap().to_string();
        c["validator_client"] = "firedancer".into();
        c["fdctl_path"] = fdctl_for(i).to_str().unwrap().into();
        c["firedancer_config"] = fd_config.to_str().unwrap().into();
        c["tower_dir"] = ledger.clone().into();
        c.as_object_mut().unwrap().remove("ledger_path");
        write_script(&fdctl_for(i), &make(&Path::new(&ledger).join("admin.rpc")));
    })
    .await;
    let _ = fdctl;
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    assert!(
        passive.phases[1].detail.contains("fdctl set-identity"),
        "{passive:#?}"
    );
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_voter == Some(1))
        .await
        .unwrap();
    assert_eq!(bed.client(1).status(1).await.unwrap().role, Role::Active);
    // fdctl got `-` and the flag, never key material, in its arguments.
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(
        argv.lines()
            .all(|l| l.starts_with("set-identity --config ")),
        "{argv}"
    );
    assert!(
        argv.lines().any(|l| l.ends_with(" - --require-tower")),
        "{argv}"
    );
    assert!(!argv.contains('['), "{argv}");
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn command_kind_runs_the_reference_commands() {
    let tool = identity_tool();
    let bed = bed_with(|_, c| {
        let ledger = c["ledger_path"].as_str().unwrap().to_string();
        let socket = Path::new(&ledger).join("admin.rpc");
        let staked = c["staked_identity_keypair"].as_str().unwrap().to_string();
        let unstaked = c["unstaked_identity_keypair"].as_str().unwrap().to_string();
        c["identity_change_command"] = format!(
            "{} set-identity --admin-socket {} --require-tower {staked}",
            tool.display(),
            socket.display()
        )
        .into();
        c["identity_remove_command"] = format!(
            "{} set-identity --admin-socket {} {unstaked}",
            tool.display(),
            socket.display()
        )
        .into();
        c["tower_file_path"] = format!("{ledger}/tower-1_9-{{validator_identity}}.bin").into();
        let o = c.as_object_mut().unwrap();
        for key in [
            "ledger_path",
            "staked_identity_keypair",
            "unstaked_identity_keypair",
        ] {
            o.remove(key);
        }
    })
    .await;
    let (passive, active) = bed.switch(0, 1, 1).await;
    assert!(active.ok, "{active:#?}");
    assert!(passive.phases[1].detail.contains("identity_remove_command"));
    assert!(active
        .phases
        .iter()
        .any(|p| p.detail.contains("identity_change_command")));
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_voter == Some(1))
        .await
        .unwrap();
    bed.cluster.safety().assert_safe();
}
