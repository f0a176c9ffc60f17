//! Whether the validator process is running, found by name in `/proc` as the reference's
//! `process_name` check does, and how long it has been up. With the ledger known, a process of that
//! name that runs on another ledger is not ours: a second validator on the same server (a test bed,
//! a spare) must not make a dead one look alive.

use std::path::{Path, PathBuf};

/// A running process matching the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub uptime_secs: Option<u64>,
}

/// Finds the oldest process whose command name (or argv[0]'s file name) is `name` and, when
/// `ledger` is given, whose `--ledger`/`-l` argument is that directory (a process with no ledger
/// argument is counted: it may use the default).
pub fn find(name: &str, ledger: Option<&Path>) -> Option<Found> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut best: Option<(u64, u32)> = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if !matches_name(&dir, name) || is_zombie(&dir) {
            continue;
        }
        if let Some(ledger) = ledger {
            if !runs_on_ledger(&dir, ledger) {
                continue;
            }
        }
        let start = start_ticks(&dir).unwrap_or(u64::MAX);
        if best.is_none_or(|(s, _)| start < s) {
            best = Some((start, pid));
        }
    }
    let (start, pid) = best?;
    Some(Found {
        pid,
        uptime_secs: uptime_secs(start),
    })
}

fn matches_name(dir: &Path, name: &str) -> bool {
    // The kernel truncates comm to 15 bytes; compare the truncated name too.
    if let Ok(comm) = std::fs::read_to_string(dir.join("comm")) {
        let comm = comm.trim_end();
        let truncated: String = name.chars().take(15).collect();
        if comm == name || comm == truncated {
            return true;
        }
    }
    if let Ok(cmdline) = std::fs::read(dir.join("cmdline")) {
        if let Some(argv0) = cmdline.split(|b| *b == 0).next() {
            let argv0 = String::from_utf8_lossy(argv0);
            return Path::new(argv0.as_ref())
                .file_name()
                .and_then(|f| f.to_str())
                == Some(name);
        }
    }
    false
}

/// False only when the process names a ledger and it is another directory.
fn runs_on_ledger(dir: &Path, ledger: &Path) -> bool {
    let Some(named) = path_arg(dir, "--ledger", "-l") else {
        return true;
    };
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(&named) == canonical(ledger)
}

/// The keypair file process `pid` was started with (`--identity`/`-i`), as a path from here.
pub fn identity_arg(pid: u32) -> Option<PathBuf> {
    path_arg(
        &Path::new("/proc").join(pid.to_string()),
        "--identity",
        "-i",
    )
}

/// The value of option `long` (or `short`, or `long=value`) on the process's command line, a
/// relative path taken from its working directory.
fn path_arg(dir: &Path, long: &str, short: &str) -> Option<PathBuf> {
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let with_eq = format!("{long}=");
    let named = args.iter().enumerate().find_map(|(i, a)| {
        if a == long || a == short {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&with_eq).map(str::to_string)
        }
    })?;
    let named = Path::new(&named);
    Some(match std::fs::read_link(dir.join("cwd")) {
        Ok(cwd) if named.is_relative() => cwd.join(named),
        _ => named.to_path_buf(),
    })
}

/// A zombie has exited: it is not a running validator, whatever its name.
/// Whether `pid` is a process that can still run code. A zombie main thread is not enough: while
/// a killed multi-threaded process exits, its main thread can be a zombie with other threads (a
/// voting one) still running; it is gone when at most that one task is left.
pub fn alive(pid: u32) -> bool {
    let dir = Path::new("/proc").join(pid.to_string());
    if !dir.exists() {
        return false;
    }
    if !is_zombie(&dir) {
        return true;
    }
    std::fs::read_dir(dir.join("task")).is_ok_and(|tasks| tasks.count() > 1)
}

fn is_zombie(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace()
                .next()
                .map(|state| state == "Z" || state == "X")
        })
        .unwrap_or(false)
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
fn start_ticks(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name is in parentheses and may contain spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn uptime_secs(start_ticks: u64) -> Option<u64> {
    // USER_HZ is 100 on every Linux architecture Agave runs on.
    const TICKS_PER_SEC: u64 = 100;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let since_boot: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some((since_boot as u64).saturating_sub(start_ticks / TICKS_PER_SEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_by_its_own_name() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let found = find(comm.trim_end(), None).expect("this test process");
        assert!(found.uptime_secs.is_some());
        assert!(find("no-such-process-name-xyz", None).is_none());
    }

    #[test]
    fn reads_the_identity_a_process_was_started_with() {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            vec!["--identity", "id.json"],
            vec!["-i", "id.json"],
            vec!["--identity=id.json"],
        ] {
            let mut child = std::process::Command::new("sh")
                .args(["-c", "sleep 30; :", "sh"])
                .args(&args)
                .current_dir(dir.path())
                .spawn()
                .unwrap();
            // Right after the exec the kernel may still show an empty command line.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut named = identity_arg(child.id());
            while named.is_none() && std::time::Instant::now() < deadline {
                std::thread::yield_now();
                named = identity_arg(child.id());
            }
            child.kill().unwrap();
            child.wait().unwrap();
            assert_eq!(named, Some(dir.path().join("id.json")), "{args:?}");
        }
        assert_eq!(identity_arg(std::process::id()), None);
    }

    #[test]
    fn a_process_on_another_ledger_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir_all(&ours).unwrap();
        std::fs::create_dir_all(&theirs).unwrap();
        // `sh` keeps running with the extra arguments in its command line (`;` stops it from
        // exec-ing `sleep`).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :", "sh", "--ledger"])
            .arg(&theirs)
            .spawn()
            .unwrap();
        let proc_dir = Path::new("/proc").join(child.id().to_string());
        // Right after the exec the kernel may still show an empty command line: wait for it.
        let shows_ledger = || {
            std::fs::read(proc_dir.join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("--ledger"))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !shows_ledger() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let on_theirs = runs_on_ledger(&proc_dir, &theirs);
        let on_ours = runs_on_ledger(&proc_dir, &ours);
        let _ = child.kill();
        let _ = child.wait();
        assert!(on_theirs);
        assert!(!on_ours);
        // A process that names no ledger may be using the default one: counted.
        assert!(runs_on_ledger(Path::new("/proc/self"), &ours));
    }
}
