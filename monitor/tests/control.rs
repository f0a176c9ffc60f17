//! The manager's local doors under abuse: the control socket is private from its first instant,
//! bounded in what it reads and for how long, and a stopping manager keeps its state dir until it
//! has exited — and does not linger there.

mod e2e_support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use e2e_support::system;
use failover_monitor::control::{ask_running, ControlRequest, MAX_CLIENTS, READ_DEADLINE};
use failover_monitor::manager::SHUTDOWN_FLUSH;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Reads until the manager closes the connection; what it answered.
async fn answer_of(stream: &mut UnixStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut text)).await {
        Ok(_) => Some(String::from_utf8_lossy(&text).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_socket_is_private_from_its_first_instant_even_under_umask_000() {
    let sys = system(|_, _| {}).await;
    let socket = sys.manager_state_dir().join("manager.sock");
    std::fs::create_dir_all(sys.manager_state_dir()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (socket, stop) = (socket.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut modes = std::collections::BTreeSet::new();
            // One more look once told to stop: a watcher starved of CPU until then still sees
            // the socket the manager had bound before it said it was running.
            loop {
                let last = stop.load(std::sync::atomic::Ordering::Relaxed);
                if let Ok(meta) = std::fs::symlink_metadata(&socket) {
                    if meta.file_type().is_socket() {
                        modes.insert(meta.permissions().mode() & 0o777);
                    }
                }
                if last {
                    break;
                }
            }
            modes
        })
    };
    let manager = sys.spawn_manager("umask 000").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let modes = watcher.join().unwrap();
    assert_eq!(modes.into_iter().collect::<Vec<_>>(), vec![0o600]);
    // Nothing of the socket's staging is left behind (the disk reserve, which the manager may
    // still be writing, is another matter).
    let leftovers: Vec<_> = std::fs::read_dir(sys.manager_state_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && !n.starts_with(failover_identity::durable::RESERVE_FILE))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(manager);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_slow_and_idle_control_clients_are_bounded_and_a_trigger_still_works() {
    let sys = system(|_, _| {}).await;
    let manager = sys.spawn_manager(":").await;
    let socket = sys.manager_state_dir().join("manager.sock");
    let before = rss_kib(manager.pid());
    // A 50 MB line: refused after 64 KiB, memory stays put.
    let mut big = UnixStream::connect(&socket).await.unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..50 {
        if big.write_all(&chunk).await.is_err() {
            break; // the manager stopped reading and closed: what we want
        }
    }
    let answer = answer_of(&mut big, Duration::from_secs(10)).await.unwrap();
    assert!(answer.contains("request longer than"), "{answer}");
    let after = rss_kib(manager.pid());
    assert!(after < before + 10 * 1024, "RSS {before} KiB → {after} KiB");
    // Many clients that never send: the first ones are answered after the deadline, the rest
    // closed at once; all are gone shortly after the deadline.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(UnixStream::connect(&socket).await.unwrap());
    }
    let started = Instant::now();
    let mut timed_out = 0;
    for stream in idle.iter_mut() {
        let answer = answer_of(stream, READ_DEADLINE + Duration::from_secs(3))
            .await
            .expect("closed by the manager");
        if answer.contains("no request line within") {
            timed_out += 1;
        }
    }
    assert!(timed_out <= MAX_CLIENTS, "{timed_out} clients held at once");
    assert!(started.elapsed() < READ_DEADLINE + Duration::from_secs(3));
    // And the manager still takes a planned switch.
    let outcome = ask_running(
        &sys.manager_state_dir(),
        &ControlRequest::Trigger {
            to: None,
            reason: "after the abuse".into(),
            force: false,
            dry_run: false,
            now: false,
        },
    )
    .await
    .expect("the manager answers")
    .expect("the switch ran");
    assert!(outcome.ok, "{}", outcome.summary());
    sys.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_manager_keeps_its_state_dir_and_exits_within_its_flush_bound() {
    let mut sys = system(|_, _| {}).await;
    // Notifications go to a server that accepts and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = format!("http://{}", black_hole.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = black_hole.accept().await {
            open.push(s);
        }
    });
    sys.manager_config["telegram_api_base"] = hole.clone().into();
    sys.manager_config["webhook_url"] = format!("{hole}/webhook").into();
    let mut manager = sys.spawn_manager(":").await;
    // Something to say: an agent goes away.
    sys.agents[1].kill().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !manager.logged("agent unreachable") {
        assert!(Instant::now() < deadline, "the manager never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    manager.signal("-TERM").await;
    let stopped_at = Instant::now();
    // As soon as the socket is gone, a second manager on the same state dir must be refused.
    let socket = sys.manager_state_dir().join("manager.sock");
    while socket.exists() {
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "socket never removed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::process::Command::new(e2e_support::binary("failover-manager"))
        .arg("--config")
        .arg(&manager.config)
        .output()
        .await
        .unwrap();
    // The first one is still flushing into the black hole: it holds the state dir.
    assert!(manager.child.try_wait().unwrap().is_none());
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another manager is running"), "{err}");
    let status = tokio::time::timeout(
        SHUTDOWN_FLUSH + Duration::from_secs(5),
        manager.child.wait(),
    )
    .await
    .expect("the manager outlived its flush bound")
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(stopped_at.elapsed() < SHUTDOWN_FLUSH + Duration::from_secs(5));
}
