//! Replays what real Agave validators answered — 3.1.12 under TowerBFT (`fixtures/agave-3.1.12/`),
//! 4.2.2 under Alpenglow (`fixtures/agave-4.2.2/`, captured by `scripts/agave/capture-fixtures`)
//! — against the simulator in the same mode and compares the answers text for text, after
//! replacing every base58 key with `K` and every run of digits with `N` (the simulator has its own
//! keys, slots and ports). Error messages are compared after substituting the simulator's own
//! keys and paths, exactly.

mod support;

use std::path::{Path, PathBuf};

use failover_identity::Keypair;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{http_post, start, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const TOWER: &str = "agave-3.1.12";
const ALPENGLOW: &str = "agave-4.2.2";

fn fixture_of(release: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(release)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces base58 keys (32–44 base58 characters) with `K` and digit runs with `N`.
fn shape(text: &str) -> String {
    const B58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.is_empty() {
            return;
        }
        if run.chars().all(|c| c.is_ascii_digit()) {
            out.push('N');
        } else if (32..=44).contains(&run.len()) && run.chars().all(|c| B58.contains(c)) {
            out.push('K');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One exchange of the admin transcript: what was sent (with its note) and the answer lines.
struct Exchange {
    request: String,
    note: String,
    answers: Vec<String>,
}

fn admin_transcript(release: &str) -> Vec<Exchange> {
    let mut exchanges: Vec<Exchange> = Vec::new();
    for line in fixture_of(release, "admin-rpc-transcript.txt").lines() {
        if let Some(rest) = line.strip_prefix("> ") {
            let (request, note) = match rest.find("   (") {
                Some(at) => (rest[..at].trim_end(), rest[at..].trim()),
                None => (rest.trim_end(), ""),
            };
            exchanges.push(Exchange {
                request: request.to_string(),
                note: note.to_string(),
                answers: Vec::new(),
            });
        } else if let Some(answer) = line.strip_prefix("< ") {
            exchanges
                .last_mut()
                .unwrap()
                .answers
                .push(answer.to_string());
        } else if line.starts_with('{') {
            exchanges.last_mut().unwrap().answers.push(line.to_string());
        }
    }
    exchanges
}

/// Sends raw bytes on a fresh admin-socket connection and reads `count` answer lines.
async fn admin_raw(socket: &Path, request: &str, count: usize) -> Vec<String> {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.iter().filter(|b| **b == b'\n').count() < count {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "socket closed after {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rpc_transcript_replays_with_the_same_answers() {
    let sim = start().await;
    let staked = sim.cluster.staked_pubkey();
    let active = sim.cluster.info().nodes[0].admin_socket.clone();
    let passive = sim.cluster.info().nodes[1].admin_socket.clone();
    // The transcript's throwaway key with no tower, and a path that does not exist.
    let rand = Keypair::generate();
    let rand_path: PathBuf = sim.dir.path().join("rand.json");
    rand.write_new_file(&rand_path).unwrap();
    let nonexist = sim.dir.path().join("nonexist.json");
    let rand_bytes = serde_json::to_string(&rand.to_bytes().to_vec()).unwrap();

    let exchanges = admin_transcript(TOWER);
    assert_eq!(exchanges.len(), 11, "transcript changed");
    for ex in exchanges {
        let on_passive = ex.note.contains("pipelined") || ex.note.contains("on the passive");
        if ex.note.contains("on the passive") {
            // As on the real cluster: the tower was copied before the promotion.
            sim.wait_tower_quiet(0).await;
            std::fs::copy(sim.tower_file(0, &staked), sim.tower_file(1, &staked)).unwrap();
        }
        let subst = [
            (
                "/abs/path/rand.json",
                rand_path.to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/nonexist.json",
                nonexist.to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/unstaked.json",
                sim.unstaked_keypair(0).to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/staked.json",
                sim.staked_keypair().to_str().unwrap().to_string(),
            ),
            ("[...64 bytes of the keypair...]", rand_bytes.clone()),
            (
                "FbvDJyLnKdD7W2adVfkNspCrE8Yp61saW9K4poktbsLC",
                rand.pubkey().to_string(),
            ),
        ];
        let apply = |text: &str| {
            subst
                .iter()
                .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
        };
        let socket = if on_passive { &passive } else { &active };
        let got = admin_raw(socket, &apply(&ex.request), ex.answers.len()).await;
        assert_eq!(got.len(), ex.answers.len(), "{}", ex.request);
        for (want, got) in ex.answers.iter().zip(&got) {
            let want = apply(want);
            if want.contains("\"error\"") {
                assert_eq!(got, &want, "request {} {}", ex.request, ex.note);
            } else {
                assert_eq!(
                    shape(got),
                    shape(&want),
                    "request {} {}",
                    ex.request,
                    ex.note
                );
            }
        }
    }
    // The replay ended with the staked identity moved to the passive node, safely.
    assert_eq!(sim.cluster.identity(1), Some(staked));
    sim.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_answers_have_the_shapes_real_agave_gave() {
    rpc_answers_match(TOWER, start().await, 7).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_answers_have_the_shapes_real_agave_4_2_gave_under_alpenglow() {
    rpc_answers_match(ALPENGLOW, start_alpenglow().await, 10).await;
}

/// The simulator on an Alpenglow cluster of 4.2.2 nodes, as the 4.2.2 fixtures were captured.
async fn start_alpenglow() -> support::Sim {
    start_with(|c| {
        c.consensus = failover_sim::Consensus::Alpenglow {
            genesis_slot: c.start_slot.max(64) - 64,
        };
    })
    .await
}

async fn rpc_answers_match(release: &str, sim: support::Sim, sections_expected: usize) {
    let url = sim.cluster.info().rpc_url.clone();
    let text = fixture_of(release, "rpc-responses.txt");
    let mut sections = text.split("## ").skip(1);
    let mut checked = 0;
    for section in sections.by_ref() {
        let (title, answer) = section.split_once('\n').unwrap();
        let answer = answer.trim();
        let request = match title.trim() {
            "getSlot processed" => {
                r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[{"commitment":"processed"}]}"#.to_string()
            }
            "getVoteAccounts processed" => {
                r#"{"jsonrpc":"2.0","id":1,"method":"getVoteAccounts","params":[{"commitment":"processed"}]}"#.to_string()
            }
            "getSlot finalized" => {
                r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":[{"commitment":"finalized"}]}"#.to_string()
            }
            "getAccountInfo alpenglow feature" => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"getAccountInfo","params":["{}",{{"encoding":"base64","commitment":"finalized"}}]}}"#,
                // agave-feature-set 4.2 `alpenglow`
                "a1penGLz8Vm2QHYB3JPefBiU4BY3Z6JkW2k3Scw5GWP"
            ),
            method => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#),
        };
        let (status, body) = http_post(&url, &request, "application/json").await;
        assert_eq!(status, 200);
        assert!(body.ends_with('\n'));
        assert_eq!(shape(body.trim_end()), shape(answer), "{release} {title}");
        checked += 1;
    }
    assert_eq!(checked, sections_expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_framing_matches_jsonrpc_http_server() {
    let sim = start().await;
    let url = sim.cluster.info().rpc_url.clone();
    let (status, body) = http_post(
        &url,
        r#"{"jsonrpc":"2.0","id":1,"method":"getSlot"}"#,
        "text/plain",
    )
    .await;
    assert_eq!(status, 415);
    assert!(body.starts_with("Supplied content type is not allowed."));
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"getSlot","pad":"{}"}}"#,
        "x".repeat(60_000)
    );
    let (status, _) = http_post(&url, &big, "application/json").await;
    assert_eq!(status, 413);
    let (status, body) = http_post(&url, "{oops", "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(body, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":\"Parse error\"},\"id\":null}\n");
    let (_, body) = http_post(
        &url,
        r#"{"jsonrpc":"2.0","id":7,"method":"getBlock"}"#,
        "application/json",
    )
    .await;
    assert_eq!(body, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"Method not found\"},\"id\":7}\n");
    let (_, body) = http_post(
        &url,
        r#"[{"jsonrpc":"2.0","id":1,"method":"getHealth"},{"jsonrpc":"2.0","id":2,"method":"getIdentity"}]"#,
        "application/json",
    )
    .await;
    let batch: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(batch.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn lagging_node_health_error_matches_agave() {
    let sim = start_with(|_| {}).await;
    sim.cluster
        .fault(1, failover_sim::Fault::Behind { slots: 42 + 128 })
        .await
        .unwrap();
    let (_, body) = http_post(
        &sim.cluster.info().nodes[1].rpc_url,
        r#"{"jsonrpc":"2.0","id":1,"method":"getHealth"}"#,
        "application/json",
    )
    .await;
    // solana-rpc's own test (rpc.rs) shows this exact frame for a node 42 slots behind.
    assert_eq!(
        body.trim_end(),
        r#"{"jsonrpc":"2.0","error":{"code":-32005,"message":"Node is behind by 170 slots","data":{"numSlotsBehind":170}},"id":1}"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_frames_have_the_shapes_real_agave_sent() {
    pubsub_frames_match(TOWER, start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_frames_have_the_shapes_real_agave_4_2_sent_under_alpenglow() {
    pubsub_frames_match(ALPENGLOW, start_alpenglow().await).await;
}

async fn pubsub_frames_match(release: &str, sim: support::Sim) {
    let text = fixture_of(release, "pubsub-notifications.txt");
    let frames = |section: &str| -> Vec<String> {
        let body = text.split(&format!("## {section}\n")).nth(1).unwrap();
        body.lines()
            .take_while(|l| !l.starts_with("## "))
            .map(str::to_string)
            .collect()
    };
    for (section, method) in [
        ("slotSubscribe", "slotSubscribe"),
        ("rootSubscribe", "rootSubscribe"),
    ] {
        let want = frames(section);
        let (mut ws, _) = tokio_tungstenite::connect_async(sim.cluster.info().pubsub_url.as_str())
            .await
            .unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#
        )))
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let frame = ws.next().await.unwrap().unwrap();
            got.push(frame.into_text().unwrap().to_string());
        }
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(shape(g), shape(w), "{release} {section}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rpc_transcript_of_4_2_under_alpenglow_replays_with_the_same_answers() {
    let sim = start_alpenglow().await;
    let staked = sim.cluster.staked_pubkey();
    let vote = sim.cluster.with_world(|w| w.vote.vote_pubkey);
    let active = sim.cluster.info().nodes[0].admin_socket.clone();
    let passive = sim.cluster.info().nodes[1].admin_socket.clone();
    let rand = Keypair::generate();
    let rand_path: PathBuf = sim.dir.path().join("rand.json");
    rand.write_new_file(&rand_path).unwrap();
    let nonexist = sim.dir.path().join("nonexist.json");
    let history = |i: usize| {
        sim.ledger(i)
            .join(failover_identity::VoteStateKind::VoteHistory.file_name(&staked))
    };
    let exchanges = admin_transcript(ALPENGLOW);
    assert_eq!(exchanges.len(), 14, "transcript changed");
    for ex in exchanges {
        let on_passive = ex.note.contains("on the passive");
        if ex.note.contains("vote history copied") {
            // As on the real cluster: the history copied once it stopped changing.
            sim.cluster
                .wait_for_slot(sim.cluster.slot() + 2, std::time::Duration::from_secs(10))
                .await
                .unwrap();
            std::fs::copy(history(0), history(1)).unwrap();
        }
        let subst = [
            (
                "/abs/path/rand.json",
                rand_path.to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/nonexist.json",
                nonexist.to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/unstaked.json",
                sim.unstaked_keypair(0).to_str().unwrap().to_string(),
            ),
            (
                "/abs/path/staked.json",
                sim.staked_keypair().to_str().unwrap().to_string(),
            ),
            (
                "CK81ttNXdXVZR7KtDKCtMjW1MzcN6WqkJxXiBqodzLW9",
                rand.pubkey().to_string(),
            ),
            (
                "edDaLThumVHiNX5uwKKWZunXy8vhGWHprTdNyDBZY55",
                staked.to_string(),
            ),
            (
                "EZs5Z8jSJ2e39MKz4ZivCabp1BmEGSgS1K2jCD7wQruC",
                vote.to_string(),
            ),
        ];
        let apply = |text: &str| {
            subst
                .iter()
                .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
        };
        let socket = if on_passive { &passive } else { &active };
        let got = admin_raw(socket, &apply(&ex.request), ex.answers.len()).await;
        assert_eq!(got.len(), ex.answers.len(), "{}", ex.request);
        for (want, got) in ex.answers.iter().zip(&got) {
            let want = apply(want);
            if want.contains("\"error\"") {
                assert_eq!(got, &want, "request {} {}", ex.request, ex.note);
            } else {
                assert_eq!(
                    shape(got),
                    shape(&want),
                    "request {} {}",
                    ex.request,
                    ex.note
                );
            }
        }
    }
    assert_eq!(sim.cluster.identity(1), Some(staked));
    sim.cluster
        .wait_for_slot(sim.cluster.slot() + 3, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    sim.cluster.safety().assert_safe();
}
