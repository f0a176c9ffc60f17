//! The agent's HTTP routes and what a request goes through before any of them acts: the
//! allow-list and the signature (`auth.rs`), the body, the fencing term. Only a heartbeat the
//! manager acknowledged renews the lease (`lease.rs`); admitting a request is not contact. The
//! listener itself (`http.rs`) bounds connections and their timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tracing::{debug, error, info, warn};

use crate::agent::{unix_ms, Agent, AGENT_VERSION};
use crate::api::*;
use crate::auth::AuthError;
use crate::commands::run_shell;
use crate::switch::HOOK_TIMEOUT;

/// A refused request: its status code and the reason, sent as an [`ErrorResponse`].
pub(crate) struct Refusal {
    status: StatusCode,
    body: ErrorResponse,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn refuse(status: StatusCode, reason: String) -> Refusal {
    Refusal {
        status,
        body: ErrorResponse::new(reason),
    }
}

impl Agent {
    /// Checks the source address and the signature of a state-changing request.
    pub(crate) fn authorize(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        path: &str,
        body: &[u8],
    ) -> Result<(), Refusal> {
        // The listener refuses other addresses at accept; this is for requests that reach the
        // routes another way (tests call them directly).
        if !self.cfg.allowed_ips.is_empty() && !self.cfg.allowed_ips.contains(&peer.ip()) {
            self.log_rejection(peer, path, "source address not in allowed_ips");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("{} is not in allowed_ips", peer.ip()),
            ));
        }
        if let Some(verifier) = &self.verifier {
            if let Err(e) = verifier.verify(headers, peer.ip(), "POST", path, body, unix_ms()) {
                self.log_rejection(peer, path, &e.to_string());
                let status = if e.is_throttle() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let mut refusal = refuse(status, e.to_string());
                refusal.body.code = Some(e.code().to_string());
                if let AuthError::WrongAudience { mine, .. } = &e {
                    refusal.body.agent_id = Some(mine.clone());
                }
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Logs a refused command, a few times per window at most.
    fn log_rejection(&self, peer: SocketAddr, path: &str, reason: &str) {
        if let Some(held_back) = self.rejected_log.admit() {
            if held_back > 0 {
                warn!(%peer, path, reason, "rejected command ({held_back} more rejections not logged)");
            } else {
                warn!(%peer, path, reason, "rejected command");
            }
        }
    }

    /// Accepts `term` if it is not older than the newest accepted, persisting a newer one before
    /// anything acts on it.
    pub(crate) async fn accept_term(&self, term: u64, what: &str) -> Result<(), Refusal> {
        let mut state = self.state.lock().await;
        if term < state.state.term {
            // A heartbeat or tower read racing a switch's new term is routine; a command is not.
            if what == "status" || what == "tower" {
                debug!(term, current = state.state.term, what, "stale term refused");
            } else {
                warn!(
                    term,
                    current = state.state.term,
                    what,
                    "rejected: stale fencing term"
                );
            }
            let mut refusal = refuse(
                StatusCode::CONFLICT,
                format!(
                    "term {term} is older than term {} already accepted",
                    state.state.term
                ),
            );
            refusal.body.code = Some(CODE_STALE_TERM.into());
            refusal.body.term = Some(state.state.term);
            return Err(refusal);
        }
        if term > state.state.term {
            if let Err(e) = state.update(|s| s.term = term) {
                error!(error = %e, "cannot persist the fencing term");
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot persist term {term}: {e}"),
                ));
            }
            info!(term, what, "accepted new fencing term");
        }
        Ok(())
    }
}

impl Agent {
    /// A term is one switch's: the first command of a term names its switch, and a command of
    /// that term naming another is refused (the term is a compare-and-swap, not "≥"). A command
    /// that names none (a reference manager) claims nothing.
    pub(crate) async fn claim_term(&self, term: u64, switch: Option<&str>) -> Result<(), Refusal> {
        let Some(switch) = switch else {
            return Ok(());
        };
        let mut state = self.state.lock().await;
        match &state.state.term_owner {
            Some((owned, owner)) if *owned == term && owner != switch => {
                warn!(
                    term,
                    owner, switch, "rejected: the term belongs to another switch"
                );
                let mut refusal = refuse(
                    StatusCode::CONFLICT,
                    format!(
                        "term {term} already belongs to another switch (a second manager with the \
                         same term?)"
                    ),
                );
                refusal.body.code = Some(CODE_STALE_TERM.into());
                refusal.body.term = Some(state.state.term);
                Err(refusal)
            }
            Some((owned, _)) if *owned >= term => Ok(()),
            _ => {
                let owner = Some((term, switch.to_string()));
                state.update(|s| s.term_owner = owner).map_err(|e| {
                    error!(error = %e, "cannot persist the term's switch");
                    refuse(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot persist the switch of term {term}: {e}"),
                    )
                })
            }
        }
    }
}

type Ctx = State<Arc<Agent>>;

/// How often a held `/tower` request looks at the tower file.
const TOWER_WAIT_LOOK: Duration = Duration::from_millis(10);

/// The agent's routes.
pub fn app(agent: Arc<Agent>) -> Router {
    Router::new()
        .route(PATH_STATUS, post(status))
        .route(PATH_FAILOVER, post(failover))
        .route(PATH_SHUTDOWN, post(shutdown))
        .route(PATH_IDENTITY, get(identity))
        .route(PATH_HEALTH, get(health))
        .route(PATH_TOWER, post(tower))
        .route(PATH_METRICS, get(metrics))
        // Only matched routes are counted: an unknown path adds no label.
        .route_layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            count_request,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(crate::http::bounded_body))
        .with_state(agent)
}

async fn count_request(
    State(agent): Ctx,
    path: MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    agent
        .metrics
        .request(path.as_str(), response.status().as_u16());
    response
}

/// `GET /metrics`: the gauges that mirror state are read from memory here, then the text.
async fn metrics(State(agent): Ctx) -> Response {
    let m = &agent.metrics;
    m.term.set(agent.term().await as i64);
    m.since_lease_renewal
        .set(agent.lease.since_renewal().as_secs_f64());
    m.lease_expired
        .set(i64::from(agent.lease.expired_for().is_some()));
    m.fence_after.set(agent.fence_after().as_secs_f64());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        m.encode(),
    )
        .into_response()
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// What a heartbeat-like request goes through before it is answered: the allow-list and the
/// signature, the body, the term.
async fn admit<T: DeserializeOwned + Default>(
    agent: &Agent,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    what: &str,
    term: impl Fn(&T) -> u64,
) -> Result<T, Refusal> {
    agent.authorize(peer, headers, path, body)?;
    let req: T = parse(body)?;
    agent.accept_term(term(&req), what).await?;
    Ok(req)
}

async fn status(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let admitted = admit(
        &agent,
        peer,
        &headers,
        PATH_STATUS,
        &body,
        "status",
        |r: &StatusRequest| r.term,
    );
    let req = match admitted.await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    agent.lease.heartbeat(req.seq, req.acked, at);
    Json(agent.status().await).into_response()
}

async fn tower(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = admit(
        &agent,
        peer,
        &headers,
        PATH_TOWER,
        &body,
        "tower",
        |r: &TowerRequest| r.term,
    );
    let req = match admitted.await {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let known = req.known_sha256.as_deref();
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms.min(TOWER_WAIT_MAX_MS));
    loop {
        let answer = agent.current_vote_state(known).await;
        if answer.tower.is_some() || Instant::now() >= deadline {
            return Json(answer).into_response();
        }
        // A stat of the file per look while it is unchanged; Agave rewrites it once per vote.
        tokio::time::sleep(TOWER_WAIT_LOOK).await;
    }
}

async fn failover(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    if let Err(r) = agent.authorize(peer, &headers, PATH_FAILOVER, &body) {
        return r.into_response();
    }
    let req: FailoverRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("bad failover request: {e}"),
            )
            .into_response()
        }
    };
    if let Err(r) = agent.accept_term(req.term, "failover").await {
        return r.into_response();
    }
    if let Err(r) = agent.claim_term(req.term, req.switch_id.as_deref()).await {
        return r.into_response();
    }
    let response = agent.run_step(req, at).await;
    let code = if response.ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (code, Json(response)).into_response()
}

async fn shutdown(
    State(agent): Ctx,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = agent.authorize(peer, &headers, PATH_SHUTDOWN, &body) {
        return r.into_response();
    }
    let req: ShutdownRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = agent.accept_term(req.term, "shutdown").await {
        return r.into_response();
    }
    info!(%peer, "shutdown requested by the manager");
    if let Some(cmd) = agent.cfg.hooks.agent_stop_command.clone() {
        // Stop through the service manager, or it would restart the agent.
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = agent
                .act(
                    &format!("run agent_stop_command: {cmd}"),
                    run_shell(&cmd, None, HOOK_TIMEOUT),
                )
                .await
            {
                error!(error = %e, "agent_stop_command failed; stopping by myself");
            }
            let _ = agent.shutdown.send(true);
        });
    } else {
        let _ = agent.shutdown.send(true);
    }
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn identity(State(agent): Ctx) -> Response {
    let response = match agent.validator.identity().await {
        Ok(id) => IdentityResponse {
            identity: Some(id.to_string()),
            error: None,
        },
        Err(e) => IdentityResponse {
            identity: None,
            error: Some(e),
        },
    };
    Json(response).into_response()
}

async fn health(State(agent): Ctx) -> Response {
    Json(HealthResponse {
        ok: true,
        agent_version: AGENT_VERSION.into(),
        agent_id: agent.id.clone(),
        validator_identity: agent.staked().to_string(),
    })
    .into_response()
}

/// Serves the agent on `listener` until `shutdown` resolves or a manager asks it to stop; runs the
/// self-fencing watchdog alongside.
pub async fn run(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut stop = agent.shutdown.subscribe();
    agent.finish_interrupted_demotion().await;
    let watchdog = tokio::spawn(crate::watchdog::run(agent.clone()));
    let etcd_backups = matches!(agent.cfg.tower_store, failover_config::TowerStore::Etcd(_))
        .then(|| tokio::spawn(agent.clone().back_up_each_save()));
    let allowed = agent.cfg.allowed_ips.clone();
    let result = crate::http::serve(listener, app(agent.clone()), allowed, async move {
        tokio::select! {
            _ = shutdown => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
    .await;
    watchdog.abort();
    if let Some(task) = etcd_backups {
        task.abort();
    }
    info!("agent stopped");
    result
}
