//! A loopback HTTP server for the alerting tests that plays the Telegram Bot API, a webhook or a
//! broken RPC node: it records every request (path and JSON body) onto a channel the test awaits,
//! and answers from a script of replies per path (then `200 {"ok":true}`). It binds 127.0.0.1:0
//! and stops when dropped.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Router;
use failover_monitor::notify::{NotifierConfig, TelegramTarget};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use url::Url;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The bot token the fake Bot API expects.
pub const TOKEN: &str = "123456789:AAE-secret-TOKEN_abcdefghijklmnopq";
/// A group chat id, negative as Telegram's are.
pub const CHAT_ID: &str = "-1001234567890";

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// An answer the server gives: a status and a body, or no answer at all.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16, String),
    Hang,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    seen: mpsc::UnboundedSender<Recorded>,
}

/// The running fake.
pub struct FakeServer {
    pub base: Url,
    pub requests: mpsc::UnboundedReceiver<Recorded>,
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let (seen, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(HashMap::new()));
        let shared = Shared {
            script: script.clone(),
            seen,
        };
        let app = Router::new().fallback(record).with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            base,
            requests,
            script,
            stop: Some(stop),
            task,
        }
    }

    /// Queues replies for the next requests to `path`, in order.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// Queues replies for the next requests to the Bot API.
    pub fn script_telegram(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script(&Self::telegram_path(), replies);
    }

    /// The Bot API path for [`TOKEN`].
    pub fn telegram_path() -> String {
        format!("/bot{TOKEN}/sendMessage")
    }

    /// The webhook's URL on this server.
    pub fn webhook_url(&self) -> Url {
        self.base.join("hooks/T000/B000/secretpath").unwrap()
    }

    /// A Telegram target on this server.
    pub fn telegram(&self) -> TelegramTarget {
        TelegramTarget {
            api_base: self.base.clone(),
            bot_token: TOKEN.into(),
            chat_id: CHAT_ID.into(),
        }
    }

    /// A config with the given targets and quick retries.
    pub fn config(&self, telegram: bool, webhook: bool) -> NotifierConfig {
        NotifierConfig {
            telegram: telegram.then(|| self.telegram()),
            webhook: webhook.then(|| self.webhook_url()),
            attempts: 5,
            first_retry: Duration::from_millis(20),
        }
    }

    /// The next request, waiting up to [`PATIENCE`].
    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("a request within the patience")
            .expect("the server is running")
    }

    /// Every request received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Recorded> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            out.push(r);
        }
        out
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Keep-alive connections of a still-running client may hold the graceful shutdown open.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn record(State(shared): State<Shared>, uri: Uri, body: String) -> (StatusCode, String) {
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = shared.seen.send(Recorded {
        path: uri.path().to_string(),
        body,
        at: Instant::now(),
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .get_mut(uri.path())
        .and_then(VecDeque::pop_front);
    match reply {
        None => (StatusCode::OK, r#"{"ok":true}"#.into()),
        Some(Reply::Status(code, body)) => (StatusCode::from_u16(code).unwrap(), body),
        Some(Reply::Hang) => std::future::pending().await,
    }
}
