//! The attack battery, against real `failover-agent` processes on a simulated cluster: whoever can
//! see manager↔agent traffic (plain HTTP) and send from an allowed address must not be able to use
//! what they saw anywhere else — not on the other agent, not on another pair that trusts the same
//! manager key, not after an agent restart — and nothing they send may change anything.

mod support;

use std::time::Duration;

use failover_agent::api::{FailoverAction, PATH_FAILOVER, PATH_STATUS};
use failover_agent::AgentClient;
use failover_sim::capture::{replay, Capture};
use support::{command, process_bed, process_bed_limited, ProcessBed};

const PATIENCE: Duration = Duration::from_secs(30);

fn client(url: &str, bed: &ProcessBed) -> AgentClient {
    AgentClient::new(url, Some(bed.signer()), PATIENCE)
}

/// A planned switch `from` → `to` in `term` as the manager makes it, with the traffic to each
/// agent passing through `captures[i]`.
async fn switch_through(
    bed: &ProcessBed,
    captures: &[Capture; 2],
    from: usize,
    to: usize,
    term: u64,
) {
    let passive = client(&captures[from].url(), bed)
        .failover(&command(FailoverAction::BecomePassive, term, None, None))
        .await
        .unwrap();
    assert!(passive.ok, "{passive:#?}");
    let tower = passive.tower.expect("the final tower");
    let sha = Some(tower.sha256.clone());
    let active = client(&captures[to].url(), bed)
        .failover(&command(
            FailoverAction::BecomeActive,
            term,
            Some(tower),
            sha,
        ))
        .await
        .unwrap();
    assert!(active.ok, "{active:#?}");
}

async fn captures(bed: &ProcessBed) -> [Capture; 2] {
    [
        Capture::start(bed.agents[0].addr).await.unwrap(),
        Capture::start(bed.agents[1].addr).await.unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_become_active_replayed_to_the_other_agent_is_refused() {
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let captures = captures(&bed).await;
    // node2 is made active first (term 8), then a planned switch node2 → node1 in term 9.
    switch_through(&bed, &captures, 0, 1, 8).await;
    switch_through(&bed, &captures, 1, 0, 9).await;
    let promote = captures[0]
        .last(PATH_FAILOVER, "become_active")
        .expect("the captured become_active");
    let (status, body) = replay(&promote, bed.agents[1].addr).await.unwrap();
    assert_ne!(status, 200, "{}", brief(&body));
    assert_eq!(status, 401, "{}", brief(&body));
    assert_eq!(bed.cluster.identity(0), Some(staked));
    assert_ne!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_become_passive_replayed_to_the_new_active_is_refused() {
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let captures = captures(&bed).await;
    switch_through(&bed, &captures, 0, 1, 9).await;
    let demote = captures[0]
        .last(PATH_FAILOVER, "become_passive")
        .expect("the captured become_passive");
    let (status, body) = replay(&demote, bed.agents[1].addr).await.unwrap();
    assert_eq!(status, 401, "{}", brief(&body));
    assert_eq!(bed.cluster.identity(1), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_for_one_pair_is_refused_by_another_pair_trusting_the_same_manager_key() {
    let one = process_bed(None, |_, _| {}).await;
    let two = process_bed(Some(one.manager.clone()), |_, _| {}).await;
    let staked_two = two.cluster.staked_pubkey();
    let capture = Capture::start(one.agents[0].addr).await.unwrap();
    let demoted = client(&capture.url(), &one)
        .failover(&command(FailoverAction::BecomePassive, 3, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    let demote = capture.last(PATH_FAILOVER, "become_passive").unwrap();
    let (status, body) = replay(&demote, two.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "{}", brief(&body));
    assert_eq!(two.cluster.identity(0), Some(staked_two));
    two.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_captured_before_an_agent_restart_is_refused_after_it() {
    let mut bed = process_bed(None, |_, _| {}).await;
    let capture = Capture::start(bed.agents[0].addr).await.unwrap();
    client(&capture.url(), &bed).status(4).await.unwrap();
    let heartbeat = capture.last(PATH_STATUS, "term").unwrap();
    let (status, _) = replay(&heartbeat, bed.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "a replay is refused by the same process");
    bed.agents[0].restart().await;
    // A heartbeat counts as contact from the manager: replayed, it would keep an isolated active
    // from fencing itself.
    let (status, body) = replay(&heartbeat, bed.agents[0].addr).await.unwrap();
    assert_eq!(status, 401, "{}", brief(&body));
}

/// Shortens a long answer for an assertion message.
fn brief(text: &str) -> &str {
    &text[..text.len().min(300)]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tower_older_than_the_chain_or_the_managers_floor_is_never_installed() {
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let node = |i: usize| client(&bed.agents[i].url, &bed);
    // node1 demoted in term 9; node2 takes over and votes on.
    let demoted = node(0)
        .failover(&command(FailoverAction::BecomePassive, 9, None, None))
        .await
        .unwrap();
    let own = demoted.tower.expect("node1's final tower");
    let sha = Some(own.sha256.clone());
    let promoted = node(1)
        .failover(&command(
            FailoverAction::BecomeActive,
            9,
            Some(own.clone()),
            sha.clone(),
        ))
        .await
        .unwrap();
    assert!(promoted.ok, "{promoted:#?}");
    let own_vote = own.last_vote.unwrap();
    bed.cluster
        .wait_until(PATIENCE, |w| w.vote.last_vote > own_vote + 8)
        .await
        .unwrap();
    let demoted = node(1)
        .failover(&command(FailoverAction::BecomePassive, 10, None, None))
        .await
        .unwrap();
    assert!(demoted.ok, "{demoted:#?}");
    // A signed, fresh become_active carrying node1's own old tower: node1 has seen nothing newer
    // itself, but its validator shows the vote account's last vote past it.
    let stale = node(0)
        .failover(&command(FailoverAction::BecomeActive, 10, Some(own), sha))
        .await
        .unwrap();
    assert!(!stale.ok);
    let error = stale.error.unwrap_or_default();
    assert!(
        error.contains("older than the vote account's last vote on this validator's chain"),
        "{error}"
    );
    assert_ne!(bed.cluster.identity(0), Some(staked));
    // The newest tower, but under the floor the manager states: refused too.
    let newest = demoted.tower.expect("node2's final tower");
    let mut request = command(
        FailoverAction::BecomeActive,
        11,
        Some(newest.clone()),
        Some(newest.sha256.clone()),
    );
    request.min_last_vote = Some(newest.last_vote.unwrap() + 50);
    let refused = node(0).failover(&request).await.unwrap();
    assert!(!refused.ok);
    assert!(refused
        .error
        .unwrap_or_default()
        .contains("older than the vote account's last vote the manager saw"),);
    // With an honest floor it goes through.
    request.min_last_vote = newest.last_vote;
    let ok = node(0).failover(&request).await.unwrap();
    assert!(ok.ok, "{ok:#?}");
    assert_eq!(bed.cluster.identity(0), Some(staked));
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_term_that_demoted_a_node_cannot_promote_it() {
    let bed = process_bed(None, |_, _| {}).await;
    let node = client(&bed.agents[0].url, &bed);
    let demoted = node
        .failover(&command(FailoverAction::BecomePassive, 5, None, None))
        .await
        .unwrap();
    let tower = demoted.tower.unwrap();
    let sha = Some(tower.sha256.clone());
    let back = node
        .failover(&command(FailoverAction::BecomeActive, 5, Some(tower), sha))
        .await
        .unwrap();
    assert!(!back.ok);
    assert!(back.error.unwrap().contains("demoted in term 5"));
    assert_ne!(bed.cluster.identity(0), Some(bed.cluster.staked_pubkey()));
    bed.cluster.safety().assert_safe();
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(
    from: &str,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// Whether the agent closes `stream` within `within` (reads end, or reset).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (the 408 for a slow body): keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_slow_bodies_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let bed = process_bed(None, |_, _| {}).await;
    let addr = bed.agents[0].addr;
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut stream = connect_from("127.0.0.1", addr).await.unwrap();
        match i % 3 {
            // Headers dribbled, never finished.
            0 => stream
                .write_all(b"POST /status HTTP/1.1\r\nhost: a\r\n")
                .await
                .unwrap(),
            // Headers done, the body never comes.
            1 => stream
                .write_all(b"POST /status HTTP/1.1\r\ncontent-length: 100\r\n\r\n{")
                .await
                .unwrap(),
            // Nothing at all.
            _ => {}
        }
        streams.push(stream);
    }
    let limit = failover_agent::http::HEADER_TIMEOUT.max(failover_agent::http::BODY_TIMEOUT)
        + Duration::from_secs(5);
    let closing = streams.iter_mut().map(|s| closed_within(s, limit));
    let closed = futures_util::future::join_all(closing).await;
    assert!(closed.iter().all(|c| *c), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_does_not_keep_the_manager_out() {
    // A low file limit, as the attack found: 150 idle connections used to exhaust it.
    let bed = process_bed_limited(None, Some(128), |_, c| {
        c["allowed_ips"] = serde_json::json!(["127.0.0.1", "127.0.0.6"]);
    })
    .await;
    let addr = bed.agents[0].addr;
    // From an address that is not allowed: each is closed at once.
    let mut strangers = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = connect_from("127.0.0.5", addr).await {
            strangers.push(s);
        }
    }
    // From an allowed address that is not the manager: held, but only up to the per-source cap.
    let mut neighbours = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = connect_from("127.0.0.6", addr).await {
            neighbours.push(s);
        }
    }
    let heartbeat = AgentClient::new(
        &bed.agents[0].url,
        Some(bed.signer()),
        Duration::from_secs(2),
    );
    for term in 1..=5 {
        let status = heartbeat.status(term).await;
        assert!(
            status.is_ok(),
            "heartbeat {term} during the flood: {status:?}"
        );
    }
    for stranger in strangers.iter_mut().take(20) {
        assert!(closed_within(stranger, Duration::from_secs(2)).await);
    }
    let mut open = 0;
    for neighbour in neighbours.iter_mut() {
        if !closed_within(neighbour, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    eprintln!(
        "{} of 150 strangers connected (each closed), {open} of {} neighbours held",
        strangers.len(),
        neighbours.len()
    );
    assert!(
        open <= failover_agent::http::MAX_CONNECTIONS_PER_SOURCE,
        "{open} connections held from one address"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_signature_flood_is_throttled_and_the_heartbeat_stays_on_time() {
    use failover_agent::auth;
    let bed = process_bed(None, |_, c| {
        c["allowed_ips"] = serde_json::json!(["127.0.0.1", "127.0.0.6"]);
    })
    .await;
    let url = bed.agents[0].url.clone();
    let health = AgentClient::new(&url, None, PATIENCE)
        .health()
        .await
        .unwrap();
    let audience = auth::Audience {
        agent_id: health.agent_id,
        staked: bed.cluster.staked_pubkey(),
    };
    let attacker = reqwest::Client::builder()
        .local_address("127.0.0.6".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (attacker, url, audience, manager, stop) = (
            attacker.clone(),
            url.clone(),
            audience.clone(),
            bed.manager.clone(),
            stop.clone(),
        );
        flood.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<u16, u32>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = br#"{"term":1}"#.to_vec();
                let mut signed =
                    auth::sign(&manager, &audience, "POST", PATH_STATUS, &body, now_ms());
                signed.signature = rand_signature();
                let mut request = attacker.post(format!("{url}{PATH_STATUS}")).body(body);
                for (name, value) in signed.headers() {
                    request = request.header(name, value);
                }
                if let Ok(r) = request.send().await {
                    *codes.entry(r.status().as_u16()).or_default() += 1;
                }
            }
            codes
        }));
    }
    let heartbeat = AgentClient::new(&url, Some(bed.signer()), Duration::from_secs(2));
    let mut slowest = Duration::ZERO;
    for term in 1..=20 {
        let started = std::time::Instant::now();
        let status = heartbeat.status(term).await;
        assert!(
            status.is_ok(),
            "heartbeat {term} during the flood: {status:?}"
        );
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    for task in flood {
        for (code, n) in task.await.unwrap() {
            *codes.entry(code).or_default() += n;
        }
    }
    eprintln!("flood answers {codes:?}, slowest heartbeat {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest heartbeat {slowest:?}"
    );
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert_eq!(
        codes
            .keys()
            .copied()
            .filter(|c| *c != 401 && *c != 429)
            .count(),
        0,
        "{codes:?}"
    );
    // The log says so a few times, not once per forgery.
    let log = std::fs::read_to_string(&bed.agents[0].log).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("rejected command"))
        .count();
    assert!(lines <= 10, "{lines} rejection lines logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timestamp_at_the_end_of_time_is_refused_and_the_agent_lives_on() {
    use failover_agent::auth;
    let bed = process_bed(None, |_, _| {}).await;
    let url = bed.agents[0].url.clone();
    let health = AgentClient::new(&url, None, PATIENCE)
        .health()
        .await
        .unwrap();
    let audience = auth::Audience {
        agent_id: health.agent_id,
        staked: bed.cluster.staked_pubkey(),
    };
    let body = br#"{"term":1}"#.to_vec();
    let mut signed = auth::sign(
        &bed.manager,
        &audience,
        "POST",
        PATH_STATUS,
        &body,
        now_ms(),
    );
    signed.timestamp_ms = u64::MAX;
    signed.signature = rand_signature();
    let mut request = reqwest::Client::new()
        .post(format!("{url}{PATH_STATUS}"))
        .body(body);
    for (name, value) in signed.headers() {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    assert!(answer.text().await.unwrap().contains("in the future"));
    assert!(
        AgentClient::new(&url, None, PATIENCE)
            .health()
            .await
            .unwrap()
            .ok
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rand_signature() -> [u8; 64] {
    let mut s = [0u8; 64];
    let a = failover_identity::Keypair::generate().pubkey().to_bytes();
    let b = failover_identity::Keypair::generate().pubkey().to_bytes();
    s[..32].copy_from_slice(&a);
    s[32..].copy_from_slice(&b);
    s
}

/// One request of the battery, sent raw so that any header or body can be wrong.
struct Raw {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Raw {
    async fn send(&self, url: &str) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{url}{}", self.path))
            .header("content-type", "application/json");
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let response = request.body(self.body.clone()).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn demote_body(term: u64) -> Vec<u8> {
    serde_json::to_vec(&command(FailoverAction::BecomePassive, term, None, None)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_command_gets_its_own_refusal_and_changes_nothing() {
    use failover_agent::auth::{self, Audience, HEADER_AUDIENCE, HEADER_SIGNATURE};
    let bed = process_bed(None, |_, _| {}).await;
    let staked = bed.cluster.staked_pubkey();
    let url = bed.agents[0].url.clone();
    let health = AgentClient::new(&url, None, PATIENCE)
        .health()
        .await
        .unwrap();
    let to = Audience {
        agent_id: health.agent_id.clone(),
        staked,
    };
    let signed = |key: &failover_identity::Keypair, path: &'static str, body: Vec<u8>, at: u64| {
        let headers = auth::sign(key, &to, "POST", path, &body, at)
            .headers()
            .to_vec();
        Raw {
            path,
            headers,
            body,
        }
    };
    let manager = bed.manager.clone();
    let stranger = failover_identity::Keypair::generate();
    let now = now_ms();
    // A genuine heartbeat first: term 7 is the one everything below must leave in place.
    let genuine = signed(&manager, PATH_STATUS, br#"{"term":7}"#.to_vec(), now);
    assert_eq!(genuine.send(&url).await.0, 200);

    let mut cases: Vec<(&str, Raw, u16, &str)> = vec![
        (
            "unsigned",
            Raw {
                path: PATH_FAILOVER,
                headers: vec![],
                body: demote_body(8),
            },
            401,
            "unsigned command",
        ),
        (
            "a stranger's key",
            signed(&stranger, PATH_FAILOVER, demote_body(8), now),
            401,
            "not in manager_pubkeys",
        ),
        ("replayed to the same agent", genuine, 401, "replayed"),
        (
            "expired",
            signed(&manager, PATH_FAILOVER, demote_body(8), now - 120_000),
            401,
            "ms old",
        ),
        (
            "from the future",
            signed(&manager, PATH_FAILOVER, demote_body(8), now + 120_000),
            401,
            "in the future",
        ),
        (
            "stale term",
            signed(&manager, PATH_FAILOVER, demote_body(3), now),
            409,
            "older than term 7",
        ),
        (
            "malformed body, validly signed",
            signed(&manager, PATH_FAILOVER, b"{\"action\":".to_vec(), now),
            400,
            "bad failover request",
        ),
        (
            "unknown action, validly signed",
            signed(
                &manager,
                PATH_FAILOVER,
                br#"{"action":"become_leader","term":8}"#.to_vec(),
                now,
            ),
            400,
            "unknown variant",
        ),
        (
            "oversized",
            signed(&manager, PATH_FAILOVER, vec![b' '; 200 * 1024], now),
            413,
            "larger than",
        ),
    ];
    // Tampered after signing: body, path.
    let mut tampered = signed(&manager, PATH_FAILOVER, demote_body(8), now);
    tampered.body = demote_body(9);
    cases.push(("tampered body", tampered, 401, "signature does not verify"));
    let mut moved = signed(&manager, PATH_STATUS, demote_body(8), now);
    moved.path = PATH_FAILOVER;
    cases.push((
        "signed for another path",
        moved,
        401,
        "signature does not verify",
    ));
    let mut bad_signature = signed(&manager, PATH_FAILOVER, demote_body(8), now);
    bad_signature
        .headers
        .retain(|(n, _)| *n != HEADER_SIGNATURE);
    bad_signature
        .headers
        .push((HEADER_SIGNATURE, "notbase58!".into()));
    cases.push((
        "malformed signature",
        bad_signature,
        401,
        "malformed header x-failover-signature",
    ));
    let mut elsewhere = signed(&manager, PATH_FAILOVER, demote_body(8), now);
    elsewhere.headers.retain(|(n, _)| *n != HEADER_AUDIENCE);
    elsewhere
        .headers
        .push((HEADER_AUDIENCE, Audience::new_agent_id()));
    cases.push((
        "addressed to another agent",
        elsewhere,
        401,
        "addressed to agent",
    ));

    for (name, raw, want, text) in &cases {
        let (status, body) = raw.send(&url).await;
        assert_eq!(status, *want, "{name}: {}", brief(&body));
        assert!(body.contains(text), "{name}: {}", brief(&body));
        assert_eq!(
            bed.cluster.identity(0),
            Some(staked),
            "{name} changed the identity"
        );
    }
    // From an address not allowed: no HTTP at all.
    let mut stranger_conn = connect_from("127.0.0.5", bed.agents[0].addr).await.unwrap();
    assert!(closed_within(&mut stranger_conn, Duration::from_secs(2)).await);

    let state = failover_agent::state::StateFile::load(&bed.agents[0].state_dir).unwrap();
    assert_eq!(state.state.term, 7, "the term moved");
    assert_eq!(state.state.demoted_in_term, None);
    assert!(
        !bed.agents[0].state_dir.join("towers").exists(),
        "a tower was archived"
    );
    bed.cluster.safety().assert_safe();
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_commands_work_only_when_signing_is_switched_off() {
    let bed = process_bed(None, |_, c| {
        c["require_signed_commands"] = serde_json::json!(false);
        c.as_object_mut().unwrap().remove("manager_pubkeys");
    })
    .await;
    let unsigned = AgentClient::new(&bed.agents[0].url, None, PATIENCE);
    assert_eq!(unsigned.status(1).await.unwrap().term, 1);
    // And the stale term is still refused, telling the agent's term.
    let err = unsigned.status(0).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(err.agent_term(), Some(1));
}
