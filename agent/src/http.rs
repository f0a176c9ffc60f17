//! The agent's HTTP listener, built to stay available to the manager while someone else misbehaves:
//! the IP allow-list is checked at accept (a refused address never holds a connection), connections
//! are bounded in total and per source address, a request's headers must arrive within
//! [`HEADER_TIMEOUT`] (which also closes idle keep-alive connections) and its body within
//! [`BODY_TIMEOUT`]. Refusals are logged at most a few times a window.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::api::{ErrorResponse, MAX_BODY_BYTES};

/// A request's headers must be complete this long after the connection is ready for them; an idle
/// keep-alive connection is closed after the same time. The manager's client lets go of idle
/// connections sooner (see `client.rs`), so it never sends on one being closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must be complete this long after its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at once, in all.
pub const MAX_CONNECTIONS: usize = 128;
/// Open connections at once from one source address. The manager needs a handful (heartbeat,
/// held `/tower`, a switch command).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 16;
/// After a graceful stop is asked for, in-flight requests get this long to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Lets through the first `burst` log lines of each `window` and counts the rest, so that a flood
/// of bad requests cannot flood the log.
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl LogLimiter {
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(held back since the last line let through)` when this line may be logged.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().expect("log limiter");
        let (since, logged, held) = &mut *state;
        if since.elapsed() >= self.window {
            *since = Instant::now();
            *logged = 0;
        }
        if *logged < self.burst {
            *logged += 1;
            Some(std::mem::take(held))
        } else {
            *held += 1;
            None
        }
    }
}

/// Open connections per source address.
#[derive(Clone, Default)]
struct PerSource(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection; uncounted when dropped.
struct Counted(PerSource, IpAddr);

impl PerSource {
    fn enter(&self, ip: IpAddr) -> Option<Counted> {
        let mut open = self.0.lock().expect("per-source count");
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(Counted(self.clone(), ip))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().expect("per-source count");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Reads the whole request body within [`BODY_TIMEOUT`] and at most [`MAX_BODY_BYTES`] before any
/// handler sees the request (a layer on the router).
pub async fn bounded_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes, or cut off"),
        ),
        Err(_) => refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not complete within {BODY_TIMEOUT:?}"),
        ),
    }
}

fn refusal(status: StatusCode, error: String) -> Response {
    (status, axum::Json(ErrorResponse::new(error))).into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves; accepts connections only from `allowed`
/// (every address when empty).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    allowed: Vec<IpAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_source = PerSource::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused_log = LogLimiter::new(5, Duration::from_secs(10));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    if refused_log.admit().is_some() {
                        warn!(error = %e, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let refuse = |why: &str| {
            if let Some(held) = refused_log.admit() {
                warn!(%peer, held_back = held, "connection refused: {why}");
            }
        };
        if !allowed.is_empty() && !allowed.contains(&peer.ip()) {
            refuse("source address not in allowed_ips");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse("too many open connections");
            continue;
        };
        let Some(counted) = per_source.enter(peer.ip()) else {
            refuse("too many open connections from this address");
            continue;
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(Body::new))
            });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the peer's (reset, header timeout): nothing to act on.
            let _ = connection.await;
            drop((slot, counted));
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        info!("stopped with requests still in flight after {DRAIN:?}");
    }
    Ok(())
}
