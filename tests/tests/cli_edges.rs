//! Every binary at the edges an operator's shell reaches: output piped into something that stops
//! reading (`| head -1`), and config paths that are not files (`/dev/zero`, a FIFO) or are huge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A binary built next to this test (`cargo test --workspace` builds every one).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace`",
        path.display()
    );
    path
}

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name)
}

/// Runs `program args` with its stdout a pipe whose reading end is already closed; returns the
/// exit code and what it wrote to stderr.
fn with_closed_stdout(program: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(program)
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_binary_panics_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id.json");
    failover_identity::Keypair::generate()
        .write_new_file(&key)
        .unwrap();
    let agent_ref = reference("validator-config.reference.json");
    let manager_ref = reference("manager-config.reference.json");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "failover-config",
            vec!["check-manager", manager_ref.to_str().unwrap()],
        ),
        (
            "failover-config",
            vec!["check-agent", agent_ref.to_str().unwrap()],
        ),
        ("failover-identity", vec!["pubkey", key.to_str().unwrap()]),
        (
            "failover-identity",
            vec!["verify", "--keypair", key.to_str().unwrap()],
        ),
        ("failover-identity", vec!["--help"]),
        ("failover-manager", vec!["--help"]),
        ("failover-agent", vec!["--help"]),
        ("failover-sim", vec!["--help"]),
    ];
    for (program, args) in cases {
        let (code, stderr) = with_closed_stdout(&binary(program), &args);
        assert!(!stderr.contains("panicked"), "{program} {args:?}: {stderr}");
        assert!(
            matches!(code, Some(0 | 2)),
            "{program} {args:?}: exit {code:?}: {stderr}"
        );
    }
}

#[test]
fn a_config_that_is_not_a_regular_file_or_is_huge_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let huge = dir.path().join("huge.json");
    std::fs::write(&huge, vec![b' '; 2 * 1024 * 1024]).unwrap();
    for (path, why) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (dir.path(), "not a regular file"),
        (huge.as_path(), "larger than"),
    ] {
        for (program, args) in [
            (
                "failover-config",
                vec!["check-agent", path.to_str().unwrap()],
            ),
            (
                "failover-config",
                vec!["check-manager", path.to_str().unwrap()],
            ),
            (
                "failover-agent",
                vec!["--check-config", "--config", path.to_str().unwrap()],
            ),
            (
                "failover-manager",
                vec!["--check-config", "--config", path.to_str().unwrap()],
            ),
        ] {
            let started = Instant::now();
            let mut child = Command::new(binary(program))
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Bounded wait: a blocked or memory-eating read would not end by itself.
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!("{program} {args:?} did not finish");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(!status.success(), "{program} {args:?}");
            assert!(stderr.contains(why), "{program} {args:?}: {stderr}");
        }
    }
}

#[test]
fn setup_without_root_names_the_exact_command_to_run() {
    // A PATH with the shell's basics and apt-get but neither protoc nor sudo, as an unprivileged
    // user: nothing can be installed, so the helper must say how.
    let dir = tempfile::tempdir().unwrap();
    for tool in ["bash", "env", "id", "sed", "apt-get"] {
        std::os::unix::fs::symlink(which(tool), dir.path().join(tool)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup");
    let out = Command::new(which("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(dir.path().join("bash"))
        .arg(&script)
        .arg("build")
        .env_clear()
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends protobuf-compiler'"
        ),
        "{err}"
    );
}

/// Where `tool` is on this machine's PATH.
fn which(tool: &str) -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}
