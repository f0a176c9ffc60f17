//! Each simulated node's stand-in process: a real process named after the node, so that a check
//! that looks for the validator in `/proc` by name sees what the simulator does to it. A crash
//! (or admin `exit`) kills it, a restart starts a new one, a hang stops it, and the cluster's end
//! kills and reaps them all.

mod support;

use std::path::Path;
use std::time::Duration;

use failover_sim::{Cluster, Fault};
use serde_json::Value;
use support::{start, start_with, Sim, PATIENCE};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What `/proc/<pid>/comm` says, or `None` once there is no such process.
fn comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

/// The state letter in `/proc/<pid>/stat` (`S` sleeping, `T` stopped, …).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Every process whose comm is `name`, found the way the agent's `process_name` check finds the
/// validator. Read-only: nothing here signals a process it found by name.
fn pids_named(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&pid| comm(pid).as_deref() == Some(name))
        .collect();
    pids.sort_unstable();
    pids
}

/// The running stand-in of node `i`: its name and pid, checked against `/proc`.
fn stand_in(cluster: &Cluster, i: usize) -> (String, u32) {
    let name = cluster.info().nodes[i].process_name.clone();
    let pid = cluster
        .stand_in_pid(i)
        .unwrap_or_else(|| panic!("node {i} has no stand-in"));
    assert_eq!(comm(pid).as_deref(), Some(name.as_str()), "pid {pid}");
    (name, pid)
}

/// Whether the process `pid` named `name` is gone: no such pid, or a different process now.
fn gone(pid: u32, name: &str) -> bool {
    comm(pid).as_deref() != Some(name)
}

/// Waits until process `pid` has a handler for SIGTERM (bit 15 of `SigCgt` in its status).
async fn wait_catches_sigterm(pid: u32) {
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & SIGTERM_BIT != 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} does not handle SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_node_has_a_stand_in_named_after_it_while_it_is_up() {
    let sim = start().await;
    let info = sim.cluster.info();
    for (i, node) in info.nodes.iter().enumerate() {
        let (name, pid) = stand_in(&sim.cluster, i);
        assert_eq!(
            name,
            format!("simval-{}-{}", &node.unstaked_pubkey[..6], i + 1)
        );
        assert!(name.len() <= 15, "{name} does not fit in comm");
        assert_eq!(pids_named(&name), vec![pid]);
        assert_ne!(state(pid), Some('T'));
        // Started through a symlink to sleep(1) in the node's home.
        let link = node.ledger.parent().unwrap().join(&name);
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(target.file_name().unwrap(), "sleep");
        // Its command line is the link (argv[0] is `sleep` only for a multi-call binary).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        assert_eq!(argv[1], b"infinity");
        let argv0 = String::from_utf8_lossy(argv[0]).into_owned();
        assert!(
            argv0 == link.to_string_lossy() || argv0 == "sleep",
            "{argv0}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_fit_in_comm_past_node_nine_and_differ_between_clusters() {
    let many = start_with(|c| c.nodes = 12).await;
    let other = start().await;
    let mut names = Vec::new();
    for sim in [&many, &other] {
        for i in 0..sim.cluster.info().nodes.len() {
            let (name, pid) = stand_in(&sim.cluster, i);
            assert!(name.len() <= 15, "{name} does not fit in comm");
            assert!(name.ends_with(&format!("-{}", i + 1)), "{name}");
            assert_eq!(pids_named(&name), vec![pid]);
            names.push(name);
        }
    }
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_kills_the_stand_in_and_a_restart_starts_a_new_one() {
    let sim = start().await;
    let (name, old) = stand_in(&sim.cluster, 0);
    let (other_name, other_pid) = stand_in(&sim.cluster, 1);

    sim.cluster.fault(0, Fault::Crash).await.unwrap();
    assert!(gone(old, &name), "pid {old} still runs as {name}");
    assert_eq!(sim.cluster.stand_in_pid(0), None);
    assert_eq!(pids_named(&name), Vec::<u32>::new());
    // The other node is untouched.
    assert_eq!(stand_in(&sim.cluster, 1), (other_name, other_pid));

    sim.cluster
        .fault(0, Fault::Restart { startup_slots: 2 })
        .await
        .unwrap();
    let (again, new) = stand_in(&sim.cluster, 0);
    assert_eq!(again, name);
    assert_ne!(new, old);
    assert_eq!(pids_named(&name), vec![new]);

    // Restarting a running node replaces its process too.
    sim.cluster
        .fault(0, Fault::Restart { startup_slots: 0 })
        .await
        .unwrap();
    let (_, newer) = stand_in(&sim.cluster, 0);
    assert_ne!(newer, new);
    assert!(gone(new, &name));
    assert_eq!(pids_named(&name), vec![newer]);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_exit_kills_the_stand_in() {
    let sim = start().await;
    let (name, pid) = stand_in(&sim.cluster, 1);
    sim.admin(1).exit().await.unwrap();
    sim.cluster
        .wait_until(PATIENCE, |w| w.nodes[1].faults.crashed)
        .await
        .unwrap();
    assert!(gone(pid, &name), "pid {pid} still runs as {name}");
    assert_eq!(sim.cluster.stand_in_pid(1), None);
    assert_eq!(pids_named(&name), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_stops_the_stand_in_and_unhang_or_heal_continues_it() {
    let sim = start().await;
    let (name, pid) = stand_in(&sim.cluster, 0);

    sim.cluster.fault(0, Fault::Hang).await.unwrap();
    assert_eq!(state(pid), Some('T'));
    // A hung validator is still there by name, as a stopped process is.
    assert_eq!(pids_named(&name), vec![pid]);
    sim.cluster.fault(0, Fault::Unhang).await.unwrap();
    assert_eq!(stand_in(&sim.cluster, 0), (name.clone(), pid));
    assert_ne!(state(pid), Some('T'));

    sim.cluster.fault(0, Fault::Hang).await.unwrap();
    assert_eq!(state(pid), Some('T'));
    sim.cluster.fault(0, Fault::Heal).await.unwrap();
    assert_ne!(state(pid), Some('T'));

    // A stopped process dies of a crash all the same.
    sim.cluster.fault(0, Fault::Hang).await.unwrap();
    sim.cluster.fault(0, Fault::Crash).await.unwrap();
    assert!(gone(pid, &name));
    // Faults that signal the stand-in leave a crashed node, which has none, alone.
    sim.cluster.fault(0, Fault::Unhang).await.unwrap();
    sim.cluster.fault(0, Fault::Hang).await.unwrap();
    assert_eq!(pids_named(&name), Vec::<u32>::new());
}

/// Every node's stand-in name and pid, with node 1 stopped (a hung process must go too).
async fn running_stand_ins(sim: &Sim) -> Vec<(String, u32)> {
    let all: Vec<_> = (0..sim.cluster.info().nodes.len())
        .map(|i| stand_in(&sim.cluster, i))
        .collect();
    sim.cluster.fault(1, Fault::Hang).await.unwrap();
    assert_eq!(state(all[1].1), Some('T'));
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_cluster_leaves_no_stand_in_behind() {
    let sim = start_with(|c| c.nodes = 3).await;
    let all = running_stand_ins(&sim).await;
    let Sim { cluster, dir: _dir } = sim;
    drop(cluster);
    for (name, pid) in &all {
        assert!(gone(*pid, name), "pid {pid} still runs as {name}");
        assert_eq!(pids_named(name), Vec::<u32>::new());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_kills_every_stand_in() {
    let sim = start().await;
    let all = running_stand_ins(&sim).await;
    sim.cluster.shutdown();
    for (i, (name, pid)) in all.iter().enumerate() {
        assert!(gone(*pid, name), "pid {pid} still runs as {name}");
        assert_eq!(sim.cluster.stand_in_pid(i), None);
    }
    // Dropping after a shutdown is harmless.
    drop(sim);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_names_each_stand_in_and_takes_them_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_failover-sim"))
        .args(["--json", "--slot-ms", "50", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("endpoints line");
    let info: Value = serde_json::from_str(&first).unwrap();
    let mut pids = Vec::new();
    for node in info["nodes"].as_array().unwrap() {
        let name = node["process_name"].as_str().unwrap().to_string();
        let found = pids_named(&name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        let link = Path::new(node["ledger"].as_str().unwrap())
            .parent()
            .unwrap()
            .join(&name);
        assert!(link.is_symlink(), "{}", link.display());
        pids.push((name, found[0]));
    }

    // Stop it by its pid, as every test stops what it started; but only once it handles
    // SIGTERM, which it starts to after printing its endpoints.
    let pid = child.id().unwrap();
    wait_catches_sigterm(pid).await;
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("failover-sim exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    for (name, pid) in &pids {
        assert!(gone(*pid, name), "pid {pid} still runs as {name}");
    }
}
