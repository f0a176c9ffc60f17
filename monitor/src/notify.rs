//! Notifications to operators — Telegram (as the reference design sends them) and an optional
//! Slack/Discord-style webhook — delivered by one background task so that alerting never slows
//! the control loop.
//!
//! [`Notifier::send`] only puts the event on a bounded queue and returns; when the queue is full
//! the event is dropped with a warning. The sender task renders each event as plain text
//! ([`render`]), posts it to every configured target, and retries network errors, 5xx answers and
//! rate limits with a capped exponential backoff. This module must never block or fail the caller,
//! and must never let the bot token reach a log line or `Debug` output: URLs are logged redacted
//! (a webhook URL carries its secret in the path, so only its origin is logged).

use std::fmt;
use std::time::Duration;

use failover_config::ManagerConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use url::Url;

/// Events waiting for the sender task; beyond this, [`Notifier::send`] drops them.
pub const QUEUE_CAPACITY: usize = 256;
/// [`NotifierConfig::attempts`] default.
pub const DEFAULT_ATTEMPTS: u32 = 5;
/// [`NotifierConfig::first_retry`] default; each further retry waits twice as long.
pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts, also the cap on a server's `retry_after`.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Timeout of one HTTP request to a target.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error response's body is kept for the log.
const BODY_SNIPPET_CHARS: usize = 200;

/// A Telegram chat to post to through the Bot API.
#[derive(Clone, PartialEq, Eq)]
pub struct TelegramTarget {
    /// The Bot API base, `https://api.telegram.org` in production; tests point it at loopback.
    pub api_base: Url,
    /// The bot token: secret, never printed.
    pub bot_token: String,
    /// The chat id as configured: a (for groups negative) number or `@channel`, sent as a string.
    pub chat_id: String,
}

impl TelegramTarget {
    /// The `sendMessage` URL, which contains the token: for requests only, never for logs.
    fn send_message_url(&self) -> Result<Url, url::ParseError> {
        let base = self.api_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/bot{}/sendMessage", self.bot_token))
    }

    /// The `sendMessage` URL with the token replaced, for logs.
    pub fn redacted_url(&self) -> String {
        let base = self.api_base.as_str().trim_end_matches('/');
        format!("{base}/bot<redacted>/sendMessage")
    }
}

impl fmt::Debug for TelegramTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramTarget")
            .field("api_base", &self.api_base.as_str())
            .field("bot_token", &"<redacted>")
            .field("chat_id", &self.chat_id)
            .finish()
    }
}

/// Where notifications go and how hard to try.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifierConfig {
    /// Telegram, as in the reference design; `None` sends nothing there.
    pub telegram: Option<TelegramTarget>,
    /// A webhook receiving `{"text": …, "content": …}` (Slack reads `text`, Discord `content`).
    pub webhook: Option<Url>,
    /// Attempts per message and target, the first included. Default 5.
    pub attempts: u32,
    /// Wait before the first retry; it doubles with each retry up to [`MAX_RETRY_DELAY`].
    /// Default 1 s.
    pub first_retry: Duration,
}

impl NotifierConfig {
    /// Where messages go, safe to log (no token, no webhook path).
    pub fn describe(&self) -> String {
        let mut targets = Vec::new();
        if let Some(t) = &self.telegram {
            targets.push(format!(
                "Telegram chat {} via {}",
                t.chat_id,
                t.api_base.host_str().unwrap_or("?")
            ));
        }
        if let Some(w) = &self.webhook {
            targets.push(format!("webhook at {}", w.host_str().unwrap_or("?")));
        }
        format!(
            "{}; {} attempts each, first retry after {}",
            targets.join(", "),
            self.attempts,
            failover_config::format_duration(self.first_retry)
        )
    }

    /// The given targets with the default retry policy.
    pub fn new(telegram: Option<TelegramTarget>, webhook: Option<Url>) -> Self {
        Self {
            telegram,
            webhook,
            attempts: DEFAULT_ATTEMPTS,
            first_retry: DEFAULT_FIRST_RETRY,
        }
    }

    /// The targets named by the manager config, with the default retry policy.
    pub fn from_manager(cfg: &ManagerConfig) -> Self {
        let telegram = cfg.telegram.as_ref().map(|t| TelegramTarget {
            api_base: t.api_base.clone(),
            bot_token: t.bot_token.expose().to_string(),
            chat_id: t.chat_id.clone(),
        });
        Self::new(telegram, cfg.webhook_url.clone())
    }

    /// Whether any target is configured.
    pub fn has_targets(&self) -> bool {
        self.telegram.is_some() || self.webhook.is_some()
    }
}

impl fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierConfig")
            .field("telegram", &self.telegram)
            .field("webhook", &self.webhook.as_ref().map(redacted_webhook))
            .field("attempts", &self.attempts)
            .field("first_retry", &self.first_retry)
            .finish()
    }
}

/// A webhook URL for logs: its origin only, as Slack and Discord put the secret in the path.
fn redacted_webhook(url: &Url) -> String {
    format!("{}/<redacted>", url.origin().ascii_serialization())
}

/// Something operators are told about: the reference design's messages and the manager's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A switch finished; `from` and `to` describe the validators, such as `validator1 (10.0.0.1)`.
    FailoverComplete {
        reason: String,
        from: String,
        to: String,
        term: u64,
        /// How long each phase took, as one line.
        summary: String,
    },
    /// A validator's agent stopped answering (sent once per outage).
    ServerUnreachable {
        name: String,
        endpoint: String,
        error: String,
    },
    /// A validator's agent answers again.
    ServerBackOnline { name: String, endpoint: String },
    /// The periodic status report, one fact per line.
    Status { lines: Vec<String> },
    /// A switch was attempted and did not complete.
    FailoverFailed {
        reason: String,
        error: String,
        /// The old active was made active again.
        rolled_back: bool,
    },
    /// Anything else that needs a human now.
    Critical { text: String },
    /// Something a human should fix before it matters (a standby that could not take over).
    Warning { text: String },
    /// The vote account's last vote lags the cluster tip (or the account is delinquent).
    VoteStale {
        vote_account: String,
        last_vote: u64,
        tip: u64,
        lag: u64,
        delinquent: bool,
    },
    /// The vote account votes again.
    VoteRecovered {
        vote_account: String,
        last_vote: u64,
        tip: u64,
    },
}

impl Event {
    /// A short name of the event's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::FailoverComplete { .. } => "failover_complete",
            Event::ServerUnreachable { .. } => "server_unreachable",
            Event::ServerBackOnline { .. } => "server_back_online",
            Event::Status { .. } => "status",
            Event::FailoverFailed { .. } => "failover_failed",
            Event::Critical { .. } => "critical",
            Event::Warning { .. } => "warning",
            Event::VoteStale { .. } => "vote_stale",
            Event::VoteRecovered { .. } => "vote_recovered",
        }
    }
}

/// The plain-text message for an event: an emoji heading, then one fact per line.
pub fn render(event: &Event) -> String {
    let mut lines: Vec<String> = Vec::new();
    match event {
        Event::FailoverComplete {
            reason,
            from,
            to,
            term,
            summary,
        } => {
            lines.push("🔄 Failover complete".into());
            lines.push(format!("Reason: {reason}"));
            lines.push(format!("From: {from}"));
            lines.push(format!("To: {to}"));
            lines.push(format!("Term: {term}"));
            if !summary.is_empty() {
                lines.push(format!("Timing: {summary}"));
            }
        }
        Event::ServerUnreachable {
            name,
            endpoint,
            error,
        } => {
            lines.push("🔴 Server unreachable".into());
            lines.push(format!("Server: {name}"));
            lines.push(format!("Endpoint: {endpoint}"));
            lines.push(format!("Error: {error}"));
        }
        Event::ServerBackOnline { name, endpoint } => {
            lines.push("🟢 Server back online".into());
            lines.push(format!("Server: {name}"));
            lines.push(format!("Endpoint: {endpoint}"));
        }
        Event::Status { lines: facts } => {
            lines.push("🟢 Server status".into());
            lines.extend(facts.iter().cloned());
        }
        Event::FailoverFailed {
            reason,
            error,
            rolled_back,
        } => {
            lines.push(match rolled_back {
                true => "↩️ Failover failed and was rolled back".into(),
                false => "❌ Failover failed".into(),
            });
            lines.push(format!("Reason: {reason}"));
            lines.push(format!("Error: {error}"));
        }
        Event::Critical { text } => lines.push(format!("🚨 {text}")),
        Event::Warning { text } => lines.push(format!("⚠️ {text}")),
        Event::VoteStale {
            vote_account,
            last_vote,
            tip,
            lag,
            delinquent,
        } => {
            lines.push("⚠️ Vote account lagging".into());
            lines.push(format!("Vote account: {vote_account}"));
            lines.push(format!("Last vote: {last_vote}"));
            lines.push(format!("Tip: {tip}"));
            lines.push(format!("Lag: {lag} slots"));
            lines.push(format!(
                "Delinquent: {}",
                if *delinquent { "yes" } else { "no" }
            ));
        }
        Event::VoteRecovered {
            vote_account,
            last_vote,
            tip,
        } => {
            lines.push("✅ Votes recovered".into());
            lines.push(format!("Vote account: {vote_account}"));
            lines.push(format!("Last vote: {last_vote}"));
            lines.push(format!("Tip: {tip}"));
        }
    }
    lines.join("\n")
}

/// What travels on the queue to the sender task.
enum Message {
    Deliver(Event),
    /// Answered once every message queued before it has been attempted.
    Barrier(oneshot::Sender<()>),
}

/// The handle the rest of the manager sends events through. Cheap to clone; the sender task ends
/// once every clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Message>>,
    deliveries: Deliveries,
}

/// What became of each notification, by target (`telegram`, `webhook`; `queue` for one dropped
/// before any target saw it) and outcome (`delivered`, `rejected`, `gave_up`, `dropped`). The
/// manager's metrics register it as `failover_manager_notifications`.
pub type Deliveries = Family<DeliveryLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub target: &'static str,
    pub outcome: &'static str,
}

fn count(deliveries: &Deliveries, target: &'static str, outcome: &'static str) {
    deliveries
        .get_or_create(&DeliveryLabels { target, outcome })
        .inc();
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.queue.is_some())
            .finish()
    }
}

impl Notifier {
    /// Spawns the sender task (on the current tokio runtime) and returns the handle feeding it.
    /// The task ends when every [`Notifier`] clone has been dropped and the queue is drained.
    pub fn start(cfg: NotifierConfig) -> (Notifier, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        if cfg.has_targets() {
            info!("notifications enabled: {}", cfg.describe());
        } else {
            info!("no notification target configured; notifications are only logged");
        }
        let deliveries = Deliveries::default();
        let task = tokio::spawn(sender_task(cfg, rx, deliveries.clone()));
        let queue = Some(queue);
        (Notifier { queue, deliveries }, task)
    }

    /// A notifier that only logs what it would have sent.
    pub fn disabled() -> Notifier {
        Notifier {
            queue: None,
            deliveries: Deliveries::default(),
        }
    }

    /// The delivery counters, for the manager's metrics.
    pub fn deliveries(&self) -> Deliveries {
        self.deliveries.clone()
    }

    /// Queues `event` for delivery and returns at once. When the queue is full (the targets are
    /// slow or down) the event is dropped with a warning.
    pub fn send(&self, event: Event) {
        let Some(queue) = &self.queue else {
            info!(event = event.kind(), text = %render(&event), "notifications disabled; not sent");
            return;
        };
        let kind = event.kind();
        match queue.try_send(Message::Deliver(event)) {
            Ok(()) => debug!(event = kind, "notification queued"),
            Err(mpsc::error::TrySendError::Full(_)) => {
                count(&self.deliveries, "queue", "dropped");
                warn!(
                    event = kind,
                    capacity = QUEUE_CAPACITY,
                    "notification queue full; message dropped"
                )
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                count(&self.deliveries, "queue", "dropped");
                warn!(event = kind, "notification sender stopped; message dropped")
            }
        }
    }

    /// Waits until every event queued before this call has been attempted (delivered or given up
    /// on). For tests and for a clean shutdown; the control loop must not call it.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else { return };
        let (done, wait) = oneshot::channel();
        if queue.send(Message::Barrier(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// [`Notifier::flush`], waiting at most `limit`; false when something was still pending.
    pub async fn flush_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.flush()).await.is_ok()
    }
}

/// One place to post to, prepared once.
struct Target {
    /// A description safe to log (no token, no webhook path).
    label: String,
    url: Url,
    kind: TargetKind,
    /// A secret that must not reach a log, even inside an error message or a response body.
    secret: Option<String>,
}

enum TargetKind {
    Telegram { chat_id: String },
    Webhook,
}

impl TargetKind {
    fn label(&self) -> &'static str {
        match self {
            TargetKind::Telegram { .. } => "telegram",
            TargetKind::Webhook => "webhook",
        }
    }
}

impl Target {
    fn body(&self, text: &str) -> serde_json::Value {
        match &self.kind {
            TargetKind::Telegram { chat_id } => serde_json::json!({
                "chat_id": chat_id,
                "text": text,
                "disable_web_page_preview": true,
            }),
            TargetKind::Webhook => serde_json::json!({"text": text, "content": text}),
        }
    }

    fn redact(&self, s: &str) -> String {
        match &self.secret {
            Some(secret) if !secret.is_empty() => s.replace(secret.as_str(), "<redacted>"),
            _ => s.to_string(),
        }
    }
}

fn targets(cfg: &NotifierConfig) -> Vec<Target> {
    let mut targets = Vec::new();
    if let Some(t) = &cfg.telegram {
        match t.send_message_url() {
            Ok(url) => targets.push(Target {
                label: format!("telegram {} chat {}", t.redacted_url(), t.chat_id),
                url,
                kind: TargetKind::Telegram {
                    chat_id: t.chat_id.clone(),
                },
                secret: Some(t.bot_token.clone()),
            }),
            // The parse error names no part of the URL, so it is safe to log.
            Err(e) => {
                error!(
                    url = %t.redacted_url(),
                    error = %e,
                    "telegram URL is invalid; telegram disabled"
                )
            }
        }
    }
    if let Some(url) = &cfg.webhook {
        targets.push(Target {
            label: format!("webhook {}", redacted_webhook(url)),
            url: url.clone(),
            kind: TargetKind::Webhook,
            secret: Some(url.as_str().to_string()),
        });
    }
    targets
}

async fn sender_task(cfg: NotifierConfig, mut rx: mpsc::Receiver<Message>, deliveries: Deliveries) {
    // Building fails only when the TLS backend cannot initialise, a broken build rather than a
    // runtime condition.
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("the HTTP client for notifications builds");
    let targets = targets(&cfg);
    while let Some(message) = rx.recv().await {
        match message {
            Message::Deliver(event) => {
                let text = render(&event);
                info!(event = event.kind(), %text, "notification");
                futures_util::future::join_all(targets.iter().map(|t| async {
                    let outcome = deliver(&client, t, &cfg, event.kind(), &text).await;
                    count(&deliveries, t.kind.label(), outcome);
                }))
                .await;
            }
            Message::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
    debug!("notification sender stopped");
}

/// Why one attempt failed.
#[derive(Debug, Error)]
enum DeliveryError {
    /// The request did not complete (connect error, timeout); retried.
    #[error("request failed: {0}")]
    Network(String),
    /// The target answered 5xx; retried.
    #[error("server error {status}: {body}")]
    Server { status: u16, body: String },
    /// The target answered 429; retried after the wait it asked for, if any.
    #[error("rate limited (429): {body}")]
    RateLimited {
        retry_after: Option<Duration>,
        body: String,
    },
    /// Any other answer that is not a success; retrying would not help.
    #[error("rejected with {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// Posts `text` to one target, retrying as configured. Every failure is logged; the outcome
/// (`delivered`, `rejected`, `gave_up`) is returned for the counters.
async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    cfg: &NotifierConfig,
    kind: &str,
    text: &str,
) -> &'static str {
    let attempts = cfg.attempts.max(1);
    let mut backoff = cfg.first_retry;
    for attempt in 1..=attempts {
        let error = match attempt_once(client, target, text).await {
            Ok(()) => {
                debug!(to = %target.label, event = kind, attempt, "notification delivered");
                return "delivered";
            }
            Err(e) => e,
        };
        let wait = match &error {
            DeliveryError::Rejected { .. } => {
                error!(
                    to = %target.label,
                    event = kind,
                    attempt,
                    %error,
                    "notification rejected; not retried"
                );
                return "rejected";
            }
            DeliveryError::RateLimited {
                retry_after: Some(after),
                ..
            } => (*after).min(MAX_RETRY_DELAY),
            _ => backoff,
        };
        if attempt == attempts {
            error!(
                to = %target.label,
                event = kind,
                attempts,
                %error,
                "notification not delivered; giving up"
            );
            return "gave_up";
        }
        warn!(
            to = %target.label,
            event = kind,
            attempt,
            attempts,
            %error,
            retry_in = ?wait,
            "notification attempt failed"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_RETRY_DELAY);
    }
    // The last attempt returns above.
    "gave_up"
}

async fn attempt_once(
    client: &reqwest::Client,
    target: &Target,
    text: &str,
) -> Result<(), DeliveryError> {
    let response = client
        .post(target.url.clone())
        .json(&target.body(text))
        .send()
        .await
        .map_err(|e| DeliveryError::Network(target.redact(&describe(e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let header_wait = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok());
    let body = response.text().await.unwrap_or_default();
    let snippet = target.redact(&snippet(&body));
    let code = status.as_u16();
    Err(if code == 429 {
        DeliveryError::RateLimited {
            retry_after: body_retry_after(&body)
                .or(header_wait)
                .and_then(seconds_to_duration),
            body: snippet,
        }
    } else if status.is_server_error() {
        DeliveryError::Server {
            status: code,
            body: snippet,
        }
    } else {
        DeliveryError::Rejected {
            status: code,
            body: snippet,
        }
    })
}

/// The wait a 429 body asks for: Telegram's `parameters.retry_after` or Discord's `retry_after`.
fn body_retry_after(body: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value
        .pointer("/parameters/retry_after")
        .or_else(|| value.get("retry_after"))
        .and_then(serde_json::Value::as_f64)
}

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_RETRY_DELAY.as_secs_f64())))
}

/// A reqwest error with its causes, without the URL (which may hold the token).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn snippet(body: &str) -> String {
    let mut s: String = body.chars().take(BODY_SNIPPET_CHARS).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s
}
