//! The `failover-sim` binary as the demo and benchmarks use it: start, read the endpoints, drive
//! faults through the control API, stop.

mod support;

use serde_json::Value;
use support::http;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn runs_standalone_and_takes_fault_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_failover-sim"))
        .args(["--json", "--slot-ms", "50", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("endpoints line");
    let info: Value = serde_json::from_str(&first).unwrap();
    let control = info["control_url"].as_str().unwrap().to_string();
    assert_eq!(info["nodes"].as_array().unwrap().len(), 2);
    assert!(dir.path().join("node1/ledger/admin.rpc").exists());

    // The cluster endpoint answers JSON-RPC.
    let rpc = info["rpc_url"].as_str().unwrap();
    let (status, body) = http(
        "POST",
        rpc,
        "/",
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"method":"getIdentity"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let fault = |node: &str, body: &str| {
        let control = control.clone();
        let path = format!("/nodes/{node}/fault");
        let body = body.to_string();
        async move { http("POST", &control, &path, "application/json", &body).await }
    };
    let (status, body) = fault("node1", r#"{"kind":"crash"}"#).await;
    assert_eq!(status, 200, "{body}");
    let (_, state) = http("GET", &control, "/state", "application/json", "").await;
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["nodes"][0]["identity"], Value::Null);
    assert_eq!(state["nodes"][0]["faults"]["crashed"], true);
    assert!(!dir.path().join("node1/ledger/admin.rpc").exists());

    let (status, _) = fault("1", r#"{"kind":"behind","slots":500}"#).await;
    assert_eq!(status, 200);
    let (status, body) = fault("node9", r#"{"kind":"crash"}"#).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = fault("node2", r#"{"kind":"explode"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad fault"));

    let (_, safety) = http("GET", &control, "/safety", "application/json", "").await;
    let safety: Value = serde_json::from_str(&safety).unwrap();
    assert_eq!(safety["violations"].as_array().unwrap().len(), 0);

    // Stop it by its pid, as every test stops what it started.
    let pid = child.id().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = child.wait().await.unwrap();
    assert!(exit.success(), "{exit:?}");
}
