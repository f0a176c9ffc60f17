//! What a manager (or anyone who can reach the agent's port) sends: the signed command's headers
//! and its JSON body, mutated from real commands. The verifier must accept a command only as it
//! was signed — any change to the body or to a header's meaning is refused — and never panic;
//! the body decoders, and the vote-state check a `become_active` body goes through, must return
//! a value or an error for any bytes.
//!
//! CI runs the default case count; by hand, for as long as wanted:
//! `PROPTEST_CASES=1000000 cargo test --release -p failover-agent --test fuzz_requests`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use failover_agent::api::{
    FailoverAction, FailoverRequest, ShutdownRequest, StatusRequest, TowerRequest, VoteStateBlob,
};
use failover_agent::auth::{self, Audience, Verifier};
use failover_agent::vote_state::verify_blob;
use failover_identity::vote_state::VoteStateKind;
use failover_identity::{Keypair, Pubkey};
use failover_sim::mutation::{edits, mutate};
use proptest::prelude::*;

const NOW_MS: u64 = 1_765_000_000_000;
const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PATH: &str = "/failover";

fn tower_identity() -> Pubkey {
    "361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg"
        .parse()
        .unwrap()
}

/// A `become_active` as the manager sends it: the real Agave 3.1.12 tower in the body.
fn become_active() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../fixtures/agave-3.1.12/tower-1_9-361jfy1wN64g8S6SuCvvYr4NtApv2iquBvcjawJoDLcg.bin",
    );
    let bytes = std::fs::read(&path).unwrap();
    let tower = VoteStateBlob::new(
        tower_identity().to_string(),
        VoteStateKind::Tower,
        &bytes,
        None,
        None,
    );
    let request = FailoverRequest {
        action: FailoverAction::BecomeActive,
        term: 7,
        switch_id: Some("9f1c".into()),
        skip_identity: false,
        reason: "active agent unreachable for 3 heartbeats".into(),
        tower_sha256: Some(tower.sha256.clone()),
        tower: Some(tower),
        min_last_vote: Some(12),
        min_root: None,
        past_lockouts: None,
        consensus: None,
        allow_migration: false,
    };
    serde_json::to_vec(&request).unwrap()
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        become_active(),
        serde_json::to_vec(&StatusRequest {
            term: 7,
            seq: Some(41),
            acked: Some(40),
        })
        .unwrap(),
        serde_json::to_vec(&TowerRequest {
            term: 7,
            known_sha256: Some("ab".repeat(32)),
            wait_ms: 5000,
        })
        .unwrap(),
        serde_json::to_vec(&ShutdownRequest { term: 7 }).unwrap(),
    ]
}

struct Setup {
    verifier: Verifier,
    signed: [(&'static str, String); 5],
}

fn setup(manager: &Keypair, body: &[u8]) -> Setup {
    let audience = Audience {
        agent_id: "5f0e4c2a9b7d61e3a8c4f2b0d9e7a6c1".into(),
        staked: tower_identity(),
    };
    let verifier = Verifier::new(
        vec![manager.pubkey()],
        Duration::from_secs(30),
        audience.clone(),
    );
    let signed = auth::sign(manager, &audience, "POST", PATH, body, NOW_MS).headers();
    Setup { verifier, signed }
}

fn header_map(headers: &[(&'static str, String)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        // What HTTP itself cannot carry never reaches the verifier.
        let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
        map.insert(HeaderName::from_static(name), value);
    }
    Some(map)
}

proptest! {
    #[test]
    fn the_real_command_verifies_once_and_its_replay_is_refused(which in 0..4usize) {
        let manager = Keypair::generate();
        let body = &bodies()[which];
        let s = setup(&manager, body);
        let headers = header_map(&s.signed).unwrap();
        prop_assert_eq!(
            s.verifier.verify(&headers, SOURCE, "POST", PATH, body, NOW_MS),
            Ok(manager.pubkey())
        );
        prop_assert_eq!(
            s.verifier.verify(&headers, SOURCE, "POST", PATH, body, NOW_MS),
            Err(auth::AuthError::Replay)
        );
    }

    /// `part` 0 mutates the body, 1–5 one header's value.
    #[test]
    fn a_mutated_signed_command_is_refused(which in 0..4usize, part in 0..6usize, e in edits()) {
        let manager = Keypair::generate();
        let body = bodies()[which].clone();
        let s = setup(&manager, &body);
        let mut headers = s.signed.clone();
        let mut sent = body.clone();
        if part == 0 {
            sent = mutate(body.clone(), &e);
        } else {
            let (_, value) = &mut headers[part - 1];
            *value = String::from_utf8_lossy(&mutate(value.clone().into_bytes(), &e)).into_owned();
        }
        let Some(map) = header_map(&headers) else {
            return Ok(());
        };
        let verdict = s.verifier.verify(&map, SOURCE, "POST", PATH, &sent, NOW_MS);
        let (_, original) = &s.signed[part.max(1) - 1];
        let (_, now) = &headers[part.max(1) - 1];
        // A timestamp written differently with the same value ("0…") is the same command.
        let same_meaning = part == 3 && now.parse::<u64>().ok() == original.parse::<u64>().ok();
        let unchanged = sent == body && (part == 0 || now == original || same_meaning);
        if unchanged {
            prop_assert_eq!(verdict, Ok(manager.pubkey()));
        } else {
            prop_assert!(verdict.is_err(), "a changed command was accepted: part {part}, {:?}", e);
        }
    }

    #[test]
    fn a_mutated_command_body_decodes_or_is_refused(which in 0..4usize, e in edits()) {
        let bytes = mutate(bodies()[which].clone(), &e);
        let _ = serde_json::from_slice::<StatusRequest>(&bytes);
        let _ = serde_json::from_slice::<TowerRequest>(&bytes);
        let _ = serde_json::from_slice::<ShutdownRequest>(&bytes);
        if let Ok(request) = serde_json::from_slice::<FailoverRequest>(&bytes) {
            if let Some(tower) = &request.tower {
                // A promotion's tower: installed only if it hashes to what it claims and verifies
                // as the staked identity's.
                let checked = verify_blob(tower, &tower_identity(), request.tower_sha256.as_deref());
                if let Ok(state) = checked {
                    prop_assert_eq!(failover_identity::tower_hash(&state.bytes), tower.sha256.clone());
                }
            }
        }
    }
}
