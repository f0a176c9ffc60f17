//! Every parser that reads bytes another party wrote, fed mutated real inputs and random bytes:
//! tower and vote-history files (real Agave 3.1.12 and 4.2.2 files), keypair files, both config
//! files, and admin-RPC replies over a real Unix socket. None may panic; each bad input is a typed
//! error, and a keypair error never echoes the key.
//!
//! CI runs the default case count. By hand, for as long as wanted:
//! `PROPTEST_CASES=1000000 cargo test --release -p failover-sim --test fuzz_parsers`.
//! A failing case is shrunk and saved under `tests/proptest-regressions/`, and replayed first
//! on every later run: commit it with the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use failover_identity::vote_state::{VoteHistory, VoteHistoryFile, VoteStateKind};
use failover_identity::{AdminRpcClient, Keypair, Pubkey, Timeouts, Tower, TowerFile};
use failover_sim::mutation::{edits, mutate, mutate_text};
use proptest::prelude::*;

fn fixture(relative: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn real_tower() -> Vec<u8> {
    fixture("agave-3.1.12/tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin")
}

fn real_vote_history() -> Vec<u8> {
    fixture("agave-4.2.2/vote_history-4DLFgvCexG2nuSMcEkELk8GtxkEfTV5VWw5VkpeTqCNi.bin")
}

/// Whose the fixtures are (their file names say so).
fn tower_identity() -> Pubkey {
    "361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg"
        .parse()
        .unwrap()
}

fn vote_history_identity() -> Pubkey {
    "4DLFgvCexG2nuSMcEkELk8GtxkEfTV5VWw5VkpeTqCNi"
        .parse()
        .unwrap()
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The signature properties below mean something only if the unmutated files verify.
#[test]
fn the_real_files_verify() {
    TowerFile::parse(&real_tower())
        .unwrap()
        .verify(&tower_identity())
        .unwrap();
    VoteHistoryFile::parse(&real_vote_history())
        .unwrap()
        .verify(&vote_history_identity())
        .unwrap();
}

proptest! {
    #[test]
    fn a_mutated_tower_file_parses_or_is_refused(e in edits()) {
        let real = real_tower();
        let bytes = mutate(real.clone(), &e);
        if let Ok(file) = TowerFile::parse(&bytes) {
            let _ = file.tower.last_voted_slot();
            // Any change that still parses is caught by the signature.
            prop_assert!(bytes == real || file.verify(&tower_identity()).is_err());
        }
    }

    #[test]
    fn a_mutated_tower_body_decodes_or_is_refused(e in edits()) {
        let data = TowerFile::parse(&real_tower()).expect("the real tower parses").data;
        let _ = Tower::decode(&mutate(data, &e));
    }

    #[test]
    fn a_mutated_vote_history_file_parses_or_is_refused(e in edits()) {
        let real = real_vote_history();
        let bytes = mutate(real.clone(), &e);
        if let Ok(file) = VoteHistoryFile::parse(&bytes) {
            prop_assert!(bytes == real || file.verify(&vote_history_identity()).is_err());
        }
        let _ = failover_identity::vote_state::VoteStateFile::parse(VoteStateKind::VoteHistory, &bytes);
    }

    #[test]
    fn a_mutated_vote_history_body_decodes_or_is_refused(e in edits()) {
        let data = VoteHistoryFile::parse(&real_vote_history())
            .expect("the real vote history parses")
            .data;
        let _ = VoteHistory::decode(&mutate(data, &e));
    }

    #[test]
    fn random_bytes_are_no_vote_state(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(file) = TowerFile::parse(&bytes) {
            prop_assert!(file.verify(&tower_identity()).is_err());
        }
        if let Ok(file) = VoteHistoryFile::parse(&bytes) {
            prop_assert!(file.verify(&vote_history_identity()).is_err());
        }
        let _ = Tower::decode(&bytes);
        let _ = VoteHistory::decode(&bytes);
    }

    #[test]
    fn a_mutated_keypair_is_refused_without_echoing_it(e in edits()) {
        let key = Keypair::generate();
        let json = key.to_json();
        let text = mutate(json.as_bytes().to_vec(), &e);
        match Keypair::from_json(&text) {
            Ok(k) => prop_assert_eq!(k.to_bytes().len(), 64),
            Err(err) => {
                let message = err.to_string();
                // No run of three of the key's numbers (in the file's own spelling) shows.
                let numbers: Vec<&str> = json
                    .trim_matches(|c| c == '[' || c == ']' || c == '\n')
                    .split(',')
                    .collect();
                for window in numbers.windows(3) {
                    prop_assert!(!message.contains(&window.join(",")), "{}", message);
                }
            }
        }
        let _ = Keypair::from_bytes(&mutate(key.to_bytes().to_vec(), &e));
    }

    #[test]
    fn a_mutated_agent_config_is_accepted_or_every_problem_named(e in edits()) {
        let text = mutate_text(&example("validator-config.example.jsonc"), &e);
        if let Err(errors) = failover_config::parse_agent(&text, Path::new("validator-config.jsonc")) {
            prop_assert!(!errors.to_string().trim().is_empty());
        }
    }

    #[test]
    fn a_mutated_manager_config_is_accepted_or_every_problem_named(e in edits()) {
        let text = mutate_text(&example("manager-config.example.jsonc"), &e);
        if let Err(errors) = failover_config::parse_manager(&text, Path::new("manager-config.jsonc")) {
            prop_assert!(!errors.to_string().trim().is_empty());
        }
    }
}

/// A Unix socket that answers each request line with `reply` (whatever it is), then closes.
async fn admin_socket_answering(reply: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.rpc");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                if let Ok(Some(_request)) = lines.next_line().await {
                    let _ = write.write_all(&reply).await;
                    let _ = write.shutdown().await;
                }
            });
        }
    });
    (dir, path)
}

/// Replies a real Agave admin socket could send (the client's id is 1 for its first request),
/// to be mutated.
const REPLIES: [&str; 3] = [
    r#"{"jsonrpc":"2.0","result":{"identity":"361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg"},"id":1}"#,
    r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Tower file not found"},"id":1}"#,
    r#"{"jsonrpc":"2.0","result":null,"id":1}"#,
];

proptest! {
    // Each case is a real socket round trip (~0.4 ms): fewer by default. PROPTEST_CASES, when
    // set, overrides this cap too (proptest applies it over any config).
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.min(128), ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_admin_rpc_reply_is_an_answer_or_an_error(which in 0..REPLIES.len(), e in edits()) {
        let mut reply = mutate(REPLIES[which].as_bytes().to_vec(), &e);
        reply.push(b'\n');
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (_dir, path) = admin_socket_answering(reply).await;
            let timeouts = Timeouts { connect: Duration::from_millis(500), call: Duration::from_millis(500) };
            let client = AdminRpcClient::new(&path, timeouts);
            let _ = client.identity().await;
        });
    }
}
