//! The admin-RPC client against a Unix-socket peer that answers like Agave 3.1.

mod support;

use std::time::Duration;

use failover_identity::{AdminRpcClient, AdminRpcError, Keypair, Pubkey, Timeouts};
use support::fake_admin::{Behaviour, FakeAdmin};

const QUICK: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    call: Duration::from_secs(5),
};

struct Setup {
    _dir: tempfile::TempDir,
    server: FakeAdmin,
    client: AdminRpcClient,
}

fn setup(identity: Pubkey, behaviour: Behaviour) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeAdmin::start(dir.path(), identity, behaviour);
    let client = AdminRpcClient::for_ledger(dir.path(), QUICK);
    Setup {
        _dir: dir,
        server,
        client,
    }
}

fn write_keypair(dir: &std::path::Path, name: &str, keypair: &Keypair) -> std::path::PathBuf {
    let path = dir.join(name);
    keypair.write_new_file(&path).unwrap();
    path
}

#[tokio::test]
async fn reads_identity_and_start_progress() {
    let id = Keypair::generate().pubkey();
    let s = setup(id, Behaviour::Prompt);
    assert_eq!(s.client.identity().await.unwrap(), id);
    assert_eq!(s.client.start_progress().await.unwrap(), "Running");
    // Both calls travelled on one connection.
    assert_eq!(s.server.connections(), 1);
    let methods: Vec<_> = s
        .server
        .requests()
        .iter()
        .map(|r| r["method"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(methods, ["contactInfo", "startProgress"]);
}

#[tokio::test]
async fn set_identity_sends_path_and_require_tower_and_switches() {
    let staked = Keypair::generate();
    let s = setup(Keypair::generate().pubkey(), Behaviour::Prompt);
    let path = write_keypair(&s.server.ledger, "staked.json", &staked);

    // No tower for the staked key: Agave refuses, and the identity stays as it was.
    let before = s.client.identity().await.unwrap();
    let err = s.client.set_identity(&path, true).await.unwrap_err();
    match &err {
        AdminRpcError::TowerUnavailable { message, .. } => {
            assert!(message.contains(&staked.pubkey().to_string()), "{message}")
        }
        other => panic!("expected TowerUnavailable, got {other:?}"),
    }
    assert_eq!(s.client.identity().await.unwrap(), before);

    std::fs::write(
        s.server
            .ledger
            .join(format!("tower-1_9-{}.bin", staked.pubkey())),
        b"tower",
    )
    .unwrap();
    s.client.set_identity(&path, true).await.unwrap();
    assert_eq!(s.client.identity().await.unwrap(), staked.pubkey());

    let sent = s.server.requests();
    let last_set = sent
        .iter()
        .rev()
        .find(|r| r["method"] == "setIdentity")
        .unwrap();
    assert_eq!(
        last_set["params"],
        serde_json::json!([path.to_str().unwrap(), true])
    );
}

#[tokio::test]
async fn set_identity_from_bytes_sends_the_64_keypair_bytes() {
    let unstaked = Keypair::generate();
    let s = setup(Keypair::generate().pubkey(), Behaviour::Prompt);
    s.client
        .set_identity_from_bytes(&unstaked, failover_identity::Require::both(false))
        .await
        .unwrap();
    assert_eq!(s.server.identity(), unstaked.pubkey());
    let sent = s.server.requests();
    let params = &sent.last().unwrap()["params"];
    let bytes: Vec<u8> = serde_json::from_value(params[0].clone()).unwrap();
    assert_eq!(bytes, unstaked.to_bytes().to_vec());
    assert_eq!(params[1], false);
}

#[tokio::test]
async fn authorized_voter_methods() {
    let voter = Keypair::generate();
    let s = setup(Keypair::generate().pubkey(), Behaviour::Prompt);
    s.client
        .add_authorized_voter_from_bytes(&voter)
        .await
        .unwrap();
    assert_eq!(s.server.authorized_voters(), vec![voter.pubkey()]);
    // Agave's own refusal comes back as a typed RPC error with its code and message.
    match s.client.add_authorized_voter_from_bytes(&voter).await {
        Err(AdminRpcError::Rpc {
            code,
            message,
            method,
        }) => {
            assert_eq!(code, -32602);
            assert_eq!(message, "Authorized voter already present");
            assert_eq!(method, "addAuthorizedVoterFromBytes");
        }
        other => panic!("unexpected {other:?}"),
    }
    s.client.remove_all_authorized_voters().await.unwrap();
    assert!(s.server.authorized_voters().is_empty());
}

#[tokio::test]
async fn startup_answer_is_its_own_error_kind() {
    let s = setup(Keypair::generate().pubkey(), Behaviour::StartingUp);
    match s.client.contact_info().await {
        Err(AdminRpcError::StartupNotComplete { method, .. }) => assert_eq!(method, "contactInfo"),
        other => panic!("unexpected {other:?}"),
    }
    // A phase with data is reported by its name.
    assert_eq!(s.client.start_progress().await.unwrap(), "ProcessingLedger");
}

#[tokio::test]
async fn unknown_method_keeps_code_and_message() {
    let s = setup(Keypair::generate().pubkey(), Behaviour::Prompt);
    // `addAuthorizedVoter` by path is not served by this peer: a stand-in for any method the
    // validator does not know.
    let err = s
        .client
        .add_authorized_voter(std::path::Path::new("/nonexistent"))
        .await
        .unwrap_err();
    match err {
        AdminRpcError::Rpc { code, message, .. } => {
            assert_eq!(code, -32601);
            assert_eq!(message, "Method not found");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_calls_get_their_own_answers_when_answered_out_of_order() {
    let id = Keypair::generate().pubkey();
    let s = setup(id, Behaviour::ReverseBatch(3));
    // Three calls in flight on one connection; the peer answers them last-first in one write.
    let (a, b, c) = tokio::join!(
        s.client.start_progress(),
        s.client.identity(),
        s.client.start_progress()
    );
    assert_eq!(a.unwrap(), "Running");
    assert_eq!(b.unwrap(), id);
    assert_eq!(c.unwrap(), "Running");
    assert_eq!(s.server.connections(), 1);
}

#[tokio::test]
async fn answers_split_across_writes_are_reassembled() {
    let id = Keypair::generate().pubkey();
    let s = setup(id, Behaviour::SplitWrites);
    assert_eq!(s.client.identity().await.unwrap(), id);
    assert_eq!(s.client.start_progress().await.unwrap(), "Running");
}

#[tokio::test]
async fn a_silent_validator_times_out_with_outcome_unknown_and_the_client_recovers() {
    let id = Keypair::generate().pubkey();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeAdmin::start(dir.path(), id, Behaviour::Silent("contactInfo"));
    let client = AdminRpcClient::for_ledger(
        dir.path(),
        Timeouts {
            connect: Duration::from_secs(2),
            call: Duration::from_millis(200),
        },
    );
    match client.contact_info().await {
        Err(AdminRpcError::Timeout { method, sent, .. }) => {
            assert_eq!(method, "contactInfo");
            assert!(sent, "the request was written, so the outcome is unknown");
        }
        other => panic!("unexpected {other:?}"),
    }
    server.set_behaviour(Behaviour::Prompt);
    assert_eq!(client.identity().await.unwrap(), id);
}

#[tokio::test]
async fn a_dropped_connection_fails_the_call_and_the_next_call_redials() {
    let id = Keypair::generate().pubkey();
    let s = setup(id, Behaviour::HangUp("contactInfo"));
    match s.client.contact_info().await {
        Err(AdminRpcError::ConnectionLost { method, .. }) => assert_eq!(method, "contactInfo"),
        other => panic!("unexpected {other:?}"),
    }
    s.server.set_behaviour(Behaviour::Prompt);
    assert_eq!(s.client.identity().await.unwrap(), id);
    assert_eq!(s.server.connections(), 2);
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let client = AdminRpcClient::for_ledger(dir.path(), QUICK);
    match client.identity().await {
        Err(AdminRpcError::Connect { path, .. }) => assert_eq!(path, dir.path().join("admin.rpc")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn negotiates_the_three_param_set_identity_of_newer_agave() {
    let unstaked = Keypair::generate();
    let s = setup(Keypair::generate().pubkey(), Behaviour::VoteHistoryArity);
    s.client
        .set_identity_from_bytes(&unstaked, failover_identity::Require::both(false))
        .await
        .unwrap();
    assert_eq!(s.server.identity(), unstaked.pubkey());
    // Learned once: the next switch goes straight to three params.
    let path = write_keypair(&s.server.ledger, "u.json", &unstaked);
    s.client.set_identity(&path, false).await.unwrap();
    let counts: Vec<usize> = s
        .server
        .requests()
        .iter()
        .map(|r| r["params"].as_array().unwrap().len())
        .collect();
    assert_eq!(counts, [2, 3, 3]);
}

#[tokio::test]
async fn a_fixed_arity_is_not_renegotiated() {
    // A two-param validator told it is 4.2+ answers with an arity error, which the caller sees.
    let unstaked = Keypair::generate();
    let s = setup(Keypair::generate().pubkey(), Behaviour::Prompt);
    s.client
        .set_identity_arity(failover_identity::SetIdentityArity::Three);
    let err = s
        .client
        .set_identity_from_bytes(&unstaked, failover_identity::Require::both(false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminRpcError::Rpc { code: -32602, message, .. } if message.contains("expected fewer elements")),
        "{err:?}"
    );
    assert_ne!(s.server.identity(), unstaked.pubkey());
}
