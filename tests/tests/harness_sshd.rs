//! The sshd harness starts a real sshd that lets in exactly its client key, that a client checking
//! host keys strictly accepts only through the harness's known_hosts, and that never outlives the
//! test.

use std::path::Path;
use std::process::{Command, Output};

use failover_sim::sshd::SshServer;

/// Whether `pid` is still an sshd child of this test process (running or a zombie). A pid that
/// was reaped and given to an unrelated process does not count.
fn still_our_sshd(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ppid …`; comm may hold spaces, so split after the last parenthesis.
    let (head, tail) = stat.rsplit_once(')').expect("a /proc stat line");
    let comm = head.split_once('(').map(|(_, comm)| comm).unwrap_or("");
    let ppid: u32 = tail.split_whitespace().nth(1).unwrap().parse().unwrap();
    comm == "sshd" && ppid == std::process::id()
}

fn run(mut command: Command) -> Output {
    command
        .output()
        .expect("run ssh (CI installs the Debian package openssh-client)")
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn ssh_runs_a_command_with_the_client_key_and_the_pinned_host_key() {
    let dir = tempfile::tempdir().unwrap();
    // A space in the path must survive both sshd_config and ssh's `-o` parsing.
    let sshd = SshServer::start(&dir.path().join("with space"))
        .await
        .expect("start sshd");
    assert_eq!(sshd.host(), "127.0.0.1");
    let known_hosts = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    assert_eq!(
        known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port(),
            sshd.host_public_key_line()
        )
    );
    assert!(sshd.host_public_key_line().starts_with("ssh-ed25519 AAAA"));

    let mut ssh = sshd.ssh_command();
    ssh.args(["echo", "hello"]);
    let output = run(ssh);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    let log = std::fs::read_to_string(sshd.log_path()).unwrap();
    assert!(
        log.contains(&format!("Accepted publickey for {}", sshd.user())),
        "{log}"
    );
}

#[tokio::test]
async fn a_host_key_other_than_the_pinned_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = SshServer::start(&dir.path().join("sshd")).await.unwrap();
    // A known_hosts entry for the same address with another key: what a client sees when
    // something else answers on the server's address.
    let impostor = dir.path().join("impostor_key");
    keygen(&impostor);
    let impostor_pub = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let wrong_known_hosts = dir.path().join("wrong_known_hosts");
    std::fs::write(
        &wrong_known_hosts,
        format!("[127.0.0.1]:{} {impostor_pub}", sshd.port()),
    )
    .unwrap();

    let mut ssh = sshd.ssh_command_with(&sshd.client_key(), &wrong_known_hosts);
    ssh.args(["echo", "hello"]);
    let output = run(ssh);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn a_key_not_in_authorized_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = SshServer::start(&dir.path().join("sshd")).await.unwrap();
    let stranger = dir.path().join("stranger_key");
    keygen(&stranger);

    let mut ssh = sshd.ssh_command_with(&stranger, &sshd.known_hosts());
    ssh.args(["echo", "hello"]);
    let output = run(ssh);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn drop_stops_sshd_and_frees_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = SshServer::start(dir.path()).await.unwrap();
    let (pid, port) = (sshd.pid(), sshd.port());
    assert!(still_our_sshd(pid));
    drop(sshd);
    assert!(!still_our_sshd(pid), "sshd {pid} outlived its harness");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn a_panicking_test_still_stops_sshd() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let test = tokio::spawn(async move {
        let sshd = SshServer::start(&path).await.expect("start sshd");
        pid_tx.send(sshd.pid()).unwrap();
        panic!("the test fails while sshd runs");
    });
    assert!(test.await.unwrap_err().is_panic());
    let pid = pid_rx.recv().unwrap();
    assert!(!still_our_sshd(pid), "sshd {pid} outlived a panicking test");
}
