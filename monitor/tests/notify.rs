//! Notifications against a loopback fake of the Telegram Bot API and a webhook: the exact texts
//! and bodies, the retry policy (5xx retried, 429 waits as asked, other 4xx not retried), `send`
//! never waiting, and the bot token never reaching logs or `Debug` output.

mod alert_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use alert_support::{FakeServer, Recorded, Reply, CHAT_ID, PATIENCE, TOKEN};
use failover_monitor::notify::{
    render, DeliveryLabels, Event, Notifier, NotifierConfig, TelegramTarget,
};
use serde_json::json;

fn failover_complete() -> Event {
    Event::FailoverComplete {
        reason: "validator1 missed 3 heartbeats".into(),
        from: "validator1 (10.0.0.1)".into(),
        to: "validator2 (10.0.0.2)".into(),
        term: 7,
        summary: "demote 2 ms, tower 812 ms, promote 3 ms, total 1.02 s".into(),
    }
}

fn server_unreachable() -> Event {
    Event::ServerUnreachable {
        name: "validator1".into(),
        endpoint: "http://10.0.0.1:8080/".into(),
        error: "connection refused".into(),
    }
}

fn server_back_online() -> Event {
    Event::ServerBackOnline {
        name: "validator1".into(),
        endpoint: "http://10.0.0.1:8080/".into(),
    }
}

fn status() -> Event {
    Event::Status {
        lines: vec![
            "Active: validator2 (10.0.0.2), slot 1234".into(),
            "Passive: validator1 (10.0.0.1), slot 1233".into(),
            "Term: 7".into(),
        ],
    }
}

/// Sends `events`, waits until they were attempted, and returns what the server received.
async fn deliver(
    server: &mut FakeServer,
    cfg: NotifierConfig,
    events: Vec<Event>,
) -> Vec<Recorded> {
    let (notifier, _task) = Notifier::start(cfg);
    for event in events {
        notifier.send(event);
    }
    tokio::time::timeout(PATIENCE, notifier.flush())
        .await
        .expect("flush within the patience");
    server.drain()
}

#[tokio::test]
async fn each_message_reaches_telegram_and_the_webhook_as_plain_text() {
    logs();
    let mut server = FakeServer::start().await;
    let cfg = server.config(true, true);
    let webhook_path = server.webhook_url().path().to_string();
    let cases = [
        (
            failover_complete(),
            "🔄 Failover complete\n\
             Reason: validator1 missed 3 heartbeats\n\
             From: validator1 (10.0.0.1)\n\
             To: validator2 (10.0.0.2)\n\
             Term: 7\n\
             Timing: demote 2 ms, tower 812 ms, promote 3 ms, total 1.02 s",
        ),
        (
            server_unreachable(),
            "🔴 Server unreachable\n\
             Server: validator1\n\
             Endpoint: http://10.0.0.1:8080/\n\
             Error: connection refused",
        ),
        (
            server_back_online(),
            "🟢 Server back online\n\
             Server: validator1\n\
             Endpoint: http://10.0.0.1:8080/",
        ),
        (
            status(),
            "🟢 Server status\n\
             Active: validator2 (10.0.0.2), slot 1234\n\
             Passive: validator1 (10.0.0.1), slot 1233\n\
             Term: 7",
        ),
    ];
    let events = cases.iter().map(|(e, _)| e.clone()).collect();
    let received = deliver(&mut server, cfg, events).await;

    // Both targets get every message, in order; the two targets are served concurrently.
    let bodies = |path: &str| -> Vec<serde_json::Value> {
        received
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect()
    };
    let telegram = bodies(&FakeServer::telegram_path());
    let webhook = bodies(&webhook_path);
    assert_eq!(received.len(), 2 * cases.len(), "{received:#?}");
    assert_eq!(telegram.len(), cases.len());
    assert_eq!(webhook.len(), cases.len());
    for (i, (event, text)) in cases.iter().enumerate() {
        assert_eq!(render(event), *text);
        assert_eq!(
            telegram[i],
            json!({"chat_id": CHAT_ID, "text": text, "disable_web_page_preview": true}),
            "telegram body for {}",
            event.kind()
        );
        assert_eq!(
            webhook[i],
            json!({"text": text, "content": text}),
            "webhook body for {}",
            event.kind()
        );
    }
    server.stop().await;
}

#[test]
fn the_manager_s_own_messages_have_their_headings() {
    logs();
    let cases = [
        (
            Event::FailoverFailed {
                reason: "manual".into(),
                error: "demotion not confirmed".into(),
                rolled_back: false,
            },
            "❌ Failover failed\nReason: manual\nError: demotion not confirmed",
        ),
        (
            Event::Critical {
                text: "both validators report the staked identity".into(),
            },
            "🚨 both validators report the staked identity",
        ),
        (
            Event::VoteStale {
                vote_account: "Vote111".into(),
                last_vote: 990,
                tip: 1000,
                lag: 10,
                delinquent: false,
            },
            "⚠️ Vote account lagging\nVote account: Vote111\nLast vote: 990\nTip: 1000\n\
             Lag: 10 slots\nDelinquent: no",
        ),
        (
            Event::VoteRecovered {
                vote_account: "Vote111".into(),
                last_vote: 999,
                tip: 1000,
            },
            "✅ Votes recovered\nVote account: Vote111\nLast vote: 999\nTip: 1000",
        ),
    ];
    for (event, text) in cases {
        assert_eq!(render(&event), text, "{}", event.kind());
    }
}

#[tokio::test]
async fn a_server_error_is_retried_and_delivered_once() {
    logs();
    let mut server = FakeServer::start().await;
    server.script_telegram([Reply::Status(500, "oops".into())]);
    let cfg = server.config(true, false);
    let received = deliver(&mut server, cfg, vec![server_back_online()]).await;
    assert_eq!(received.len(), 2, "one failure, one success: {received:#?}");
    assert_eq!(received[0].body, received[1].body);
    assert_eq!(received[1].path, FakeServer::telegram_path());
}

#[tokio::test]
async fn a_rate_limit_waits_as_long_as_telegram_asks() {
    logs();
    let mut server = FakeServer::start().await;
    server.script_telegram([Reply::Status(
        429,
        json!({
            "ok": false,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1}
        })
        .to_string(),
    )]);
    // Without the hint the retry would come after 20 ms.
    let cfg = server.config(true, false);
    let received = deliver(&mut server, cfg, vec![server_back_online()]).await;
    assert_eq!(received.len(), 2, "{received:#?}");
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, not after the 1 s Telegram asked for"
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    logs();
    let mut server = FakeServer::start().await;
    server.script_telegram([Reply::Status(
        400,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"})
            .to_string(),
    )]);
    let cfg = server.config(true, false);
    let (notifier, _task) = Notifier::start(cfg);
    notifier.send(server_back_online());
    notifier.flush().await;
    assert_eq!(server.drain().len(), 1, "a 400 is not retried");
    // The sender goes on with the next message.
    notifier.send(status());
    notifier.flush().await;
    let next = server.drain();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].body["text"], render(&status()));
    // The metrics count one of each.
    let count = |outcome| {
        notifier
            .deliveries()
            .get_or_create(&DeliveryLabels {
                target: "telegram",
                outcome,
            })
            .get()
    };
    assert_eq!((count("rejected"), count("delivered")), (1, 1));
}

#[tokio::test]
async fn send_never_waits_for_a_hung_server() {
    logs();
    let mut server = FakeServer::start().await;
    server.script_telegram([Reply::Hang]);
    let cfg = server.config(true, false);
    let (notifier, task) = Notifier::start(cfg);
    notifier.send(server_unreachable());
    // The sender task is now stuck on the hung request.
    let first = server.next().await;
    assert_eq!(first.path, FakeServer::telegram_path());
    // Far more than the queue holds: every call must still return at once. `send` runs on its own
    // thread so that a blocking call would show up as a timeout here instead of a hung test.
    let sender = notifier.clone();
    let sends = tokio::task::spawn_blocking(move || {
        for _ in 0..(failover_monitor::notify::QUEUE_CAPACITY * 4) {
            sender.send(status());
        }
    });
    tokio::time::timeout(Duration::from_secs(5), sends)
        .await
        .expect("send returned although the server hangs")
        .unwrap();
    task.abort();
    drop(server);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The log output of every test in this file, at every level. Each test calls this first, so that
/// the capturing subscriber is the global one before anything is logged: a thread-local subscriber
/// races with the other tests' threads over which events are enabled, and misses some.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
}

/// A loopback port on which nothing listens.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_token_never_reaches_logs_or_debug_output() {
    logs();
    let mut server = FakeServer::start().await;
    // Telegram: a 5xx (retried), then a 400 (given up); the webhook answers 200.
    server.script_telegram([
        Reply::Status(500, "try later".into()),
        Reply::Status(400, r#"{"ok":false,"description":"Bad Request"}"#.into()),
    ]);
    let mut cfg = server.config(true, false);
    cfg.webhook = Some(server.webhook_url());
    let (notifier, _task) = Notifier::start(cfg.clone());
    notifier.send(failover_complete());
    notifier.flush().await;
    assert_eq!(server.drain().len(), 3, "telegram twice, the webhook once");

    // Nobody listening: network errors until the attempts run out.
    let unreachable = NotifierConfig {
        telegram: Some(TelegramTarget {
            api_base: format!("http://127.0.0.1:{}", closed_port().await)
                .parse()
                .unwrap(),
            bot_token: TOKEN.into(),
            chat_id: CHAT_ID.into(),
        }),
        webhook: None,
        attempts: 2,
        first_retry: Duration::from_millis(10),
    };
    let (notifier, _task) = Notifier::start(unreachable);
    notifier.send(status());
    notifier.flush().await;

    // Every test of this file logs into the buffer, all with the same token: none may leak it.
    let text = logs().text();
    assert!(text.contains("notification rejected"), "{text}");
    assert!(text.contains("notification attempt failed"), "{text}");
    assert!(text.contains("giving up"), "{text}");
    assert!(text.contains("bot<redacted>/sendMessage"), "{text}");
    let secret = TOKEN.split(':').nth(1).unwrap();
    assert!(
        !text.contains(secret),
        "the token leaked into the logs:\n{text}"
    );
    assert!(
        !text.contains("secretpath"),
        "the webhook path leaked into the logs:\n{text}"
    );

    let debug = format!("{cfg:?} {:?}", cfg.telegram.as_ref().unwrap());
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(!debug.contains("secretpath"), "{debug}");
    server.stop().await;
}

#[tokio::test]
async fn a_disabled_notifier_sends_nothing_and_flushes_at_once() {
    logs();
    let notifier = Notifier::disabled();
    notifier.send(status());
    tokio::time::timeout(Duration::from_secs(1), notifier.flush())
        .await
        .expect("nothing to wait for");
}

#[test]
fn from_manager_takes_the_targets_from_the_manager_config() {
    logs();
    let text = json!({
        "validator1": {"endpoint": "http://10.0.0.1:8080", "ip": "10.0.0.1"},
        "validator2": {"endpoint": "http://10.0.0.2:8080", "ip": "10.0.0.2"},
        "cluster_rpc": "http://127.0.0.1:8899",
        "staked_identity_pubkey": "11111111111111111111111111111111",
        "vote_account_pubkey": "Vote111111111111111111111111111111111111111",
        "telegram_bot_token": TOKEN,
        "telegram_chat_id": CHAT_ID,
        "telegram_api_base": "http://127.0.0.1:9",
        "webhook_url": "http://127.0.0.1:9/hooks/secretpath"
    })
    .to_string();
    let manager =
        failover_config::parse_manager(&text, std::path::Path::new("manager-config.json")).unwrap();
    let cfg = NotifierConfig::from_manager(&manager);
    let telegram = cfg.telegram.as_ref().expect("telegram configured");
    assert_eq!(telegram.bot_token, TOKEN);
    assert_eq!(telegram.chat_id, CHAT_ID);
    assert_eq!(telegram.api_base.as_str(), "http://127.0.0.1:9/");
    assert_eq!(
        cfg.webhook.as_ref().map(|u| u.as_str()),
        Some("http://127.0.0.1:9/hooks/secretpath")
    );
    assert_eq!(cfg.attempts, failover_monitor::notify::DEFAULT_ATTEMPTS);
    assert_eq!(
        cfg.first_retry,
        failover_monitor::notify::DEFAULT_FIRST_RETRY
    );
}
