//! Proof that a state file survives a power cut: the test re-runs itself under `strace -y` and
//! checks, for every rename into its directory, that the renamed file was fsynced before it and
//! the directory after it. A page cache that loses the rename would otherwise undo a fencing
//! term or a demotion.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHILD: &str = "FAILOVER_DURABILITY_DIR";

/// Runs `write` (which writes its files into the directory it is given) inside the test named
/// `test` — its full path, as `cargo test -- --exact` takes it — under strace, and panics with
/// the trace's lines when a rename into the directory is not durable or nothing was renamed.
pub fn assert_durable(test: &str, write: impl FnOnce(&Path)) {
    if let Some(dir) = std::env::var_os(CHILD) {
        write(Path::new(&dir));
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "failover-durability-{}-{}",
        std::process::id(),
        test.replace("::", "-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let log = dir.with_extension("strace");
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg("-o")
        .arg(&log)
        .arg(&exe)
        .args(["--exact", test, "--test-threads=1", "--quiet"])
        .env(CHILD, &dir)
        .status()
        .expect("strace runs (scripts/setup test installs it)");
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
    assert!(status.success(), "{test} failed under strace");
    let problems = check(&trace, &dir);
    assert!(
        problems.is_empty(),
        "{}\n--- trace\n{trace}",
        problems.join("\n")
    );
}

/// Every rename into `dir` in `trace`: the source fsynced before, `dir` fsynced after.
fn check(trace: &str, dir: &Path) -> Vec<String> {
    let lines: Vec<&str> = trace.lines().collect();
    let quoted = |line: &str| -> Vec<PathBuf> {
        line.split('"')
            .skip(1)
            .step_by(2)
            .map(PathBuf::from)
            .collect()
    };
    let synced = |line: &str, path: &Path| {
        (line.contains("fsync(") || line.contains("fdatasync("))
            && line.contains(&format!("<{}>", path.display()))
            && line.trim_end().ends_with("= 0")
    };
    let mut problems = Vec::new();
    let mut renames = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("rename") || !line.trim_end().ends_with("= 0") {
            continue;
        }
        let paths = quoted(line);
        let (Some(from), Some(to)) = (paths.first(), paths.last()) else {
            continue;
        };
        if to.parent() != Some(dir) {
            continue;
        }
        renames += 1;
        if !lines[..i].iter().any(|l| synced(l, from)) {
            problems.push(format!(
                "{} was not fsynced before its rename",
                from.display()
            ));
        }
        if !lines[i + 1..].iter().any(|l| synced(l, dir)) {
            problems.push(format!(
                "the directory was not fsynced after renaming to {}",
                to.display()
            ));
        }
    }
    if renames == 0 {
        problems.push(format!("nothing was renamed into {}", dir.display()));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_without_a_directory_fsync_is_found() {
        let dir = Path::new("/s");
        let good =
            "1 fsync(3</s/f.new>) = 0\n1 rename(\"/s/f.new\", \"/s/f\") = 0\n1 fsync(4</s>) = 0\n";
        assert!(check(good, dir).is_empty());
        let no_dir = "1 fsync(3</s/f.new>) = 0\n1 rename(\"/s/f.new\", \"/s/f\") = 0\n";
        assert_eq!(check(no_dir, dir).len(), 1);
        let no_file = "1 rename(\"/s/f.new\", \"/s/f\") = 0\n1 fsync(4</s>) = 0\n";
        assert_eq!(check(no_file, dir).len(), 1);
        assert_eq!(check("", dir).len(), 1);
    }
}
