//! `failover-identity` as an operator runs it: exit codes, one line per check, JSON for scripts.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use failover_identity::Keypair;
use serde_json::Value;
use support::fake_admin::{Behaviour, FakeAdmin};
use support::http_rpc::IdentityRpc;

const BIN: &str = env!("CARGO_BIN_EXE_failover-identity");

/// Runs the binary off the async runtime so in-test servers keep answering.
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .output()
            .expect("run failover-identity")
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn new_keypair_file(dir: &Path, name: &str) -> (Keypair, PathBuf) {
    let keypair = Keypair::generate();
    let path = dir.join(name);
    keypair.write_new_file(&path).unwrap();
    (keypair, path)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn verify_good_keypair_with_expected_pubkey() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--expect",
        &kp.pubkey().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("ok    keypair") && lines[0].contains(&kp.pubkey().to_string()));
    assert!(lines[1].starts_with("ok    expect"));
}

#[tokio::test]
async fn verify_reports_each_bad_file_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let (good, good_path) = new_keypair_file(dir.path(), "good.json");
    let json = std::fs::read_to_string(&good_path).unwrap();

    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let truncated = write("truncated.json", &json[..json.len() / 2], 0o600);
    let short = {
        let bytes = good.to_bytes();
        let list: Vec<String> = bytes[..40].iter().map(|b| b.to_string()).collect();
        write("short.json", &format!("[{}]", list.join(",")), 0o600)
    };
    let not_json = write("notjson.json", "this is not a keypair\n", 0o600);
    let readable = write("readable.json", &json, 0o644);
    let mismatched = {
        let other = Keypair::generate();
        let mut bytes = good.to_bytes().to_vec();
        bytes[32..].copy_from_slice(&other.pubkey().to_bytes());
        write(
            "mismatched.json",
            &serde_json::to_string(&bytes).unwrap(),
            0o600,
        )
    };
    let out_of_range = write(
        "range.json",
        &json.replacen(&format!("[{}", good.to_bytes()[0]), "[300", 1),
        0o600,
    );
    let missing = dir.path().join("missing.json");

    for (path, fragment) in [
        (&truncated, "not JSON"),
        (&short, "wrong length: 40 bytes"),
        (&not_json, "not JSON"),
        (&readable, "readable by group or others (mode 0644)"),
        (&mismatched, "is not the key derived from the secret half"),
        (&out_of_range, "element 0 is an integer outside 0-255"),
        (&missing, "no such file"),
    ] {
        let out = run(&["verify", "--keypair", s(path)]).await;
        assert_eq!(out.status.code(), Some(3), "{path:?}: {out:?}");
        let text = stdout(&out);
        assert!(
            text.starts_with("FAIL  keypair") && text.contains(fragment),
            "{path:?}: {text}"
        );
    }

    // The operator may explicitly accept a readable file.
    let out = run(&[
        "verify",
        "--keypair",
        s(&readable),
        "--allow-insecure-permissions",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test]
async fn verify_expect_mismatch_exits_4_and_json_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let other = Keypair::generate().pubkey().to_string();
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--expect",
        &other,
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["exit_code"], 4);
    assert_eq!(report["pubkey"], kp.pubkey().to_string());
    assert_eq!(report["checks"][0]["ok"], true);
    assert_eq!(report["checks"][1]["name"], "expect");
    assert_eq!(report["checks"][1]["failure"], "expect_mismatch");
}

#[tokio::test]
async fn verify_against_a_running_validator_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let ledger = tempfile::tempdir().unwrap();
    let _server = FakeAdmin::start(ledger.path(), kp.pubkey(), Behaviour::Prompt);

    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--ledger",
        s(ledger.path()),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out)
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("ok    validator"));

    // The same validator checked against a different key: it reports another identity.
    let (_, other_path) = new_keypair_file(dir.path(), "other.json");
    let socket = ledger.path().join("admin.rpc");
    let out = run(&[
        "verify",
        "--keypair",
        s(&other_path),
        "--admin-socket",
        s(&socket),
    ])
    .await;
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(stdout(&out).contains(&format!("reports identity {}", kp.pubkey())));
}

#[tokio::test]
async fn verify_validator_unreachable_or_starting_exits_7() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let empty_ledger = tempfile::tempdir().unwrap();
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--ledger",
        s(empty_ledger.path()),
    ])
    .await;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(stdout(&out).contains("cannot connect to admin socket"));

    let ledger = tempfile::tempdir().unwrap();
    let _server = FakeAdmin::start(ledger.path(), kp.pubkey(), Behaviour::StartingUp);
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--ledger",
        s(ledger.path()),
    ])
    .await;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(stdout(&out).contains("still starting up"));
}

#[tokio::test]
async fn verify_against_an_rpc_node() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let rpc = IdentityRpc::start(kp.pubkey()).await;

    let out = run(&["verify", "--keypair", s(&path), "--rpc", &rpc.url()]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("getIdentity reports"));

    let (_, other) = new_keypair_file(dir.path(), "other.json");
    let out = run(&["verify", "--keypair", s(&other), "--rpc", &rpc.url()]).await;
    assert_eq!(out.status.code(), Some(6), "{out:?}");

    let closed = IdentityRpc::closed_port_url().await;
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--rpc",
        &closed,
        "--timeout",
        "2",
    ])
    .await;
    assert_eq!(out.status.code(), Some(8), "{out:?}");
}

#[tokio::test]
async fn first_failing_check_decides_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = new_keypair_file(dir.path(), "id.json");
    let other = Keypair::generate().pubkey();
    let empty_ledger = tempfile::tempdir().unwrap();
    let out = run(&[
        "verify",
        "--keypair",
        s(&path),
        "--expect",
        &other.to_string(),
        "--ledger",
        s(empty_ledger.path()),
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keypair", "expect", "validator"]);
    assert_eq!(report["checks"][2]["failure"], "validator_unreachable");
}

#[tokio::test]
async fn new_writes_an_owner_only_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.json");
    let out = run(&["new", "--outfile", s(&path)]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = stdout(&out).trim().to_string();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = Keypair::read_file(&path, failover_identity::Permissions::Strict).unwrap();
    assert_eq!(loaded.pubkey().to_string(), printed);

    let before = std::fs::read(&path).unwrap();
    let out = run(&["new", "--outfile", s(&path)]).await;
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    let out = run(&["pubkey", s(&path)]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), printed);
}

#[tokio::test]
async fn secret_bytes_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let (kp, path) = new_keypair_file(dir.path(), "id.json");
    let ledger = tempfile::tempdir().unwrap();
    let _server = FakeAdmin::start(ledger.path(), kp.pubkey(), Behaviour::Prompt);
    let bytes = kp.to_bytes();
    let secret_prefix: Vec<String> = bytes[..6].iter().map(|b| b.to_string()).collect();
    let secret_prefix = secret_prefix.join(",");
    for args in [
        vec![
            "verify",
            "--keypair",
            s(&path),
            "--ledger",
            s(ledger.path()),
        ],
        vec!["verify", "--keypair", s(&path), "--json"],
        vec!["pubkey", s(&path)],
    ] {
        let out = run(&args).await;
        let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(
            !all.contains(&secret_prefix),
            "{args:?} printed secret bytes"
        );
    }
}

#[tokio::test]
async fn help_explains_exit_codes() {
    let out = run(&["verify", "--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for code in [
        "3  the keypair file",
        "4  the keypair's pubkey",
        "8  the RPC node",
    ] {
        assert!(text.contains(code), "{text}");
    }
}

#[tokio::test]
async fn tower_inspects_the_real_agave_tower_and_refuses_a_tampered_copy() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/agave-3.1.12/tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin",
    );
    let out = run(&["tower", s(&fixture), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["last_voted_slot"], 196);
    assert_eq!(report["root"], 165);
    assert_eq!(report["bytes"], 2319);
    // --output json is the same; --json was its older spelling and may not be mixed with it.
    let out = run(&["tower", s(&fixture), "--output", "json"]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        report
    );
    let out = run(&["tower", s(&fixture), "--output", "text", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join(fixture.file_name().unwrap());
    let mut bytes = std::fs::read(&fixture).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();
    let out = run(&["tower", s(&tampered)]).await;
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"));

    // The real tower claimed for another identity is refused.
    let other = Keypair::generate().pubkey().to_string();
    let out = run(&["tower", s(&fixture), "--identity", &other]).await;
    assert_eq!(out.status.code(), Some(9), "{out:?}");
}

/// Runs the binary with `input` on stdin.
async fn run_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(BIN)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn set_identity_reads_the_keypair_from_stdin_and_confirms() {
    let ledger = tempfile::tempdir().unwrap();
    let server = FakeAdmin::start(
        ledger.path(),
        Keypair::generate().pubkey(),
        Behaviour::Prompt,
    );
    let staked = Keypair::generate();
    let socket = ledger.path().join("admin.rpc");

    // With --require-tower and no tower, the validator refuses: exit 10, nothing changed.
    let before = server.identity();
    let out = run_with_stdin(
        &[
            "set-identity",
            "--admin-socket",
            s(&socket),
            "--require-tower",
        ],
        staked.to_json().as_bytes().to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tower not loadable"));
    assert_eq!(server.identity(), before);

    let out = run_with_stdin(
        &["set-identity", "--ledger", s(ledger.path())],
        staked.to_json().as_bytes().to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(server.identity(), staked.pubkey());
    assert!(stdout(&out).contains(&staked.pubkey().to_string()));

    let out = run_with_stdin(
        &["authorized-voter-add", "--ledger", s(ledger.path()), "-"],
        staked.to_json().as_bytes().to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(server.authorized_voters(), vec![staked.pubkey()]);

    // Garbage on stdin is a keypair error, and the validator is not called.
    let calls = server.requests().len();
    let out = run_with_stdin(
        &["set-identity", "--ledger", s(ledger.path())],
        b"[1,2,3]".to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(server.requests().len(), calls);
}

#[tokio::test]
async fn an_error_about_a_damaged_keypair_file_echoes_none_of_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let kp = failover_identity::Keypair::generate();
    let bytes = kp.to_bytes();
    let elements: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    // Each damage keeps the real secret bytes around the damaged element.
    let damaged = |at: usize, with: &str| {
        let mut e = elements.clone();
        e[at] = with.to_string();
        format!("[{}]", e.join(","))
    };
    let first = elements[0].clone();
    let cases = [
        ("float", damaged(0, &format!("{first}.0"))),
        ("exponent", damaged(3, &format!("{}e0", elements[3]))),
        ("out of range", damaged(1, &format!("{}00", elements[1]))),
        ("negative", damaged(2, &format!("-{}", elements[2]))),
        ("not a number", damaged(4, "\"x\"")),
        ("unclosed", format!("[{}", elements.join(","))),
        (
            "trailing",
            format!("[{}]{}", elements.join(","), elements[5]),
        ),
        ("too short", format!("[{}]", elements[..40].join(","))),
    ];
    for (name, text) in cases {
        let path = dir.path().join(format!("{}.json", name.replace(' ', "-")));
        std::fs::write(&path, &text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        for args in [
            vec!["verify", "--keypair", s(&path)],
            vec!["verify", "--keypair", s(&path), "--json"],
            vec!["pubkey", s(&path)],
        ] {
            let out = run(&args).await;
            assert_eq!(out.status.code(), Some(3), "{name} {args:?}: {out:?}");
            let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
            // No number at all may appear but element indexes, lengths and the file name's.
            let mut message = all.replace(s(&path), "FILE").replace("0-255", "BYTE");
            // Where the syntax error is (line, column) is not a value of the file.
            if let Some(at) = message.find("syntax error at line") {
                let end = message[at..].find(')').map_or(message.len(), |e| at + e);
                message.replace_range(at..end, "syntax error at L");
            }
            for (i, element) in elements.iter().enumerate() {
                let echoed = message
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|token| token == element && token.len() > 1);
                assert!(
                    !echoed || element.parse::<usize>().unwrap() <= 64,
                    "{name} {args:?}: element {i} ({element}) echoed in: {message}"
                );
            }
            assert!(
                !message.contains(&format!("{first}.0")),
                "{name}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn vote_history_inspects_the_real_agave_file_and_refuses_a_tampered_copy() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/agave-4.2.2/vote_history-92xGceEvXZw9ytyTefYt2fAG91sDJZGGGPcJWxHAipQX.bin",
    );
    let out = run(&["vote-history", s(&fixture), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "vote_history");
    assert_eq!(report["last_voted_slot"], 346);
    assert_eq!(report["root"], 345);
    assert_eq!(report["bytes"], 576);
    assert_eq!(report["counts"]["finalized"], 2);
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join(fixture.file_name().unwrap());
    let mut bytes = std::fs::read(&fixture).unwrap();
    bytes[300] ^= 0x01;
    std::fs::write(&tampered, bytes).unwrap();
    let out = run(&["vote-history", s(&tampered)]).await;
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"));
    // A tower is not a vote history.
    let tower = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/agave-3.1.12/tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin",
    );
    let out = run(&[
        "vote-history",
        s(&tower),
        "--identity",
        "361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg",
    ])
    .await;
    assert_eq!(out.status.code(), Some(9), "{out:?}");
}
