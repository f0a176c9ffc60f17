//! Commands that must be refused — forged, replayed, expired, unsigned, from a stranger's address,
//! with a stale term, oversized — and each refusal changes nothing.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use failover_agent::api::{FailoverAction, FailoverRequest, PATH_FAILOVER};
use failover_agent::auth;
use failover_agent::AgentClient;
use failover_identity::Keypair;
use support::{bed, bed_with};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a command for agent `i` of `bed` is addressed to.
fn to(bed: &support::Bed, i: usize) -> auth::Audience {
    auth::Audience {
        agent_id: bed.agents[i].agent.id().to_string(),
        staked: bed.cluster.staked_pubkey(),
    }
}

fn demote_body(term: u64) -> Vec<u8> {
    serde_json::to_vec(&FailoverRequest {
        action: FailoverAction::BecomePassive,
        term,
        skip_identity: false,
        reason: "attack".into(),
        tower: None,
        tower_sha256: None,
        min_last_vote: None,
    })
    .unwrap()
}

/// Posts `body` to the agent's /failover with the given auth headers; returns status and body.
async fn post(url: &str, headers: &[(&'static str, String)], body: Vec<u8>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{PATH_FAILOVER}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.body(body).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_replayed_expired_and_unsigned_commands_change_nothing() {
    let bed = bed().await;
    let url = &bed.agents[0].url;
    let staked = bed.cluster.staked_pubkey();
    let body = demote_body(5);

    // Unsigned.
    let (status, text) = post(url, &[], body.clone()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unsigned command"), "{text}");

    // Signed by a key the agent does not trust.
    let stranger = Keypair::generate();
    let signed = auth::sign(
        &stranger,
        &to(&bed, 0),
        "POST",
        PATH_FAILOVER,
        &body,
        now_ms(),
    );
    let (status, text) = post(url, &signed.headers(), body.clone()).await;
    assert_eq!(status, 401);
    assert!(text.contains("not in manager_pubkeys"), "{text}");

    // The manager's key claimed, the body altered after signing.
    let signed = auth::sign(
        &bed.manager,
        &to(&bed, 0),
        "POST",
        PATH_FAILOVER,
        &demote_body(4),
        now_ms(),
    );
    let (status, text) = post(url, &signed.headers(), body.clone()).await;
    assert_eq!(status, 401);
    assert!(text.contains("signature does not verify"), "{text}");

    // Expired.
    let signed = auth::sign(
        &bed.manager,
        &to(&bed, 0),
        "POST",
        PATH_FAILOVER,
        &body,
        now_ms() - 120_000,
    );
    let (status, text) = post(url, &signed.headers(), body.clone()).await;
    assert_eq!(status, 401);
    assert!(text.contains("old"), "{text}");

    // Nothing of that reached the validator or the term.
    assert_eq!(bed.cluster.identity(0), Some(staked));
    assert_eq!(bed.agents[0].agent.term().await, 0);

    // A genuine status heartbeat goes through once; its replay is refused.
    let status_body = br#"{"term":1}"#.to_vec();
    let signed = auth::sign(
        &bed.manager,
        &to(&bed, 0),
        "POST",
        "/status",
        &status_body,
        now_ms(),
    );
    let send = |headers: Vec<(&'static str, String)>| {
        let url = format!("{url}/status");
        let body = status_body.clone();
        async move {
            let mut r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json");
            for (n, v) in headers {
                r = r.header(n, v);
            }
            r.body(body).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send(signed.headers().to_vec()).await, 200);
    assert_eq!(send(signed.headers().to_vec()).await, 401);
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_term_is_refused() {
    let bed = bed().await;
    let client = bed.client(1);
    client.status(7).await.unwrap();
    let err = client.status(6).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(err.to_string().contains("older than term 7"));
    let response = client
        .failover(&FailoverRequest {
            action: FailoverAction::BecomePassive,
            term: 3,
            skip_identity: false,
            reason: "old manager".into(),
            tower: None,
            tower_sha256: None,
            min_last_vote: None,
        })
        .await;
    assert_eq!(response.unwrap_err().status(), Some(409));
    // The term survives a restart of the agent: it is on disk.
    let state = failover_agent::state::StateFile::load(&bed.agents[1].state_dir).unwrap();
    assert_eq!(state.state.term, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_outside_the_allow_list_and_oversized_bodies_are_refused() {
    let bed = bed_with(|_, c| c["allowed_ips"] = serde_json::json!(["127.0.0.9"])).await;
    // Refused at accept: the connection is closed before any HTTP is read.
    let err = bed.client(0).status(1).await.unwrap_err();
    assert!(
        matches!(err, failover_agent::ClientError::Unreachable { .. }),
        "{err}"
    );
    assert_eq!(bed.agents[0].agent.term().await, 0);

    let open = bed_with(|_, _| {}).await;
    let huge = vec![b' '; 200 * 1024];
    let signed = auth::sign(
        &open.manager,
        &to(&open, 0),
        "POST",
        PATH_FAILOVER,
        &huge,
        now_ms(),
    );
    let (status, _) = post(&open.agents[0].url, &signed.headers(), huge).await;
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_commands_work_only_when_signing_is_switched_off() {
    let bed = bed_with(|_, c| {
        c["require_signed_commands"] = serde_json::json!(false);
        c.as_object_mut().unwrap().remove("manager_pubkeys");
    })
    .await;
    let unsigned = AgentClient::new(&bed.agents[0].url, None, std::time::Duration::from_secs(10));
    let status = unsigned.status(1).await.unwrap();
    assert_eq!(status.term, 1);
}
