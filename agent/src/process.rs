//! Whether the validator process is running, found by name in `/proc` as the reference's
//! `process_name` check does, and how long it has been up.

use std::path::Path;

/// A running process matching the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub uptime_secs: Option<u64>,
}

/// Finds the oldest process whose command name (or argv[0]'s file name) is `name`.
pub fn find(name: &str) -> Option<Found> {
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

/// A zombie has exited: it is not a running validator, whatever its name.
fn is_zombie(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace().next().map(|state| state == "Z")
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
        let found = find(comm.trim_end()).expect("this test process");
        assert!(found.uptime_secs.is_some());
        assert!(find("no-such-process-name-xyz").is_none());
    }
}
