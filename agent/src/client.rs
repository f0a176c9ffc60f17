//! The typed client the manager (and tests) use to talk to an agent, signing every state-changing
//! request with the manager's key, addressed to that agent (its id from `GET /health`, re-read
//! when the agent says it restarted) and to the staked identity it serves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover_identity::{Keypair, Pubkey};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::*;
use crate::auth;

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent {url} unreachable: {}", cause_of(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("agent {url} did not answer within {} ms", within.as_millis())]
    TimedOut { url: String, within: Duration },
    #[error("agent {url} refused ({status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
        /// The refusal's code, when the agent gave one (see [`ErrorResponse`]).
        code: Option<String>,
        /// With a stale-term refusal: the term the agent has accepted.
        term: Option<u64>,
    },
    #[error("agent {url} serves the staked identity {serves}, not {expected}: check validator_identity and the endpoint")]
    WrongIdentity {
        url: String,
        serves: String,
        expected: Pubkey,
    },
    #[error("agent {url} answered something unreadable: {detail}")]
    Malformed { url: String, detail: String },
    /// The caller decided not to send it (an elected manager that no longer leads).
    #[error("not sent to agent {url}: {why}")]
    NotSent { url: String, why: String },
}

impl ClientError {
    /// The HTTP status of a refusal, if the agent answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The request surely never reached the agent (no connection could be made to it), so
    /// whatever it asked for did not happen.
    pub fn never_delivered(&self) -> bool {
        match self {
            ClientError::Unreachable { source, .. } => source.is_connect(),
            ClientError::NotSent { .. } => true,
            _ => false,
        }
    }

    /// The agent's term when it refused an older one.
    pub fn agent_term(&self) -> Option<u64> {
        match self {
            ClientError::Refused {
                code: Some(code),
                term,
                ..
            } if code == CODE_STALE_TERM => *term,
            _ => None,
        }
    }

    fn is_wrong_audience(&self) -> bool {
        matches!(self, ClientError::Refused { code: Some(code), .. } if code == CODE_WRONG_AUDIENCE)
    }
}

/// What went wrong on the way to an agent, in an operator's words: "connection refused",
/// "timed out", … rather than reqwest's "error sending request for url (…)".
pub fn cause_of(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                std::io::ErrorKind::HostUnreachable => "host unreachable".into(),
                std::io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
                _ => io.to_string(),
            };
        }
        source = cause.source();
    }
    if error.is_connect() {
        "cannot connect".into()
    } else if error.is_body() || error.is_decode() {
        "the answer was cut off".into()
    } else {
        "the connection closed before an answer".into()
    }
}

/// The manager's command key and the staked identity its commands are about.
#[derive(Clone)]
pub struct CommandSigner {
    pub key: Arc<Keypair>,
    pub staked: Pubkey,
}

/// Idle connections are let go of sooner than the agent closes them (`http::HEADER_TIMEOUT`), so a
/// request is never sent on a connection the agent is closing.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// A client for one agent.
#[derive(Clone)]
pub struct AgentClient {
    base: String,
    http: reqwest::Client,
    signer: Option<CommandSigner>,
    /// The agent id commands are addressed to, from `GET /health`.
    audience: Arc<Mutex<Option<String>>>,
    /// The next heartbeat's number (starts at the creation time in microseconds, so a restarted
    /// manager never reuses an old one) and the last one answered in time (0: none yet).
    heartbeats: Arc<(AtomicU64, AtomicU64)>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

impl AgentClient {
    /// `base` is the agent's endpoint (`http://host:port`); `signer` signs commands (None sends
    /// them unsigned, for agents configured to accept that).
    pub fn new(base: &str, signer: Option<CommandSigner>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .expect("an HTTP client with a timeout");
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            signer,
            audience: Arc::new(Mutex::new(None)),
            heartbeats: Arc::new((AtomicU64::new(unix_micros()), AtomicU64::new(0))),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    pub async fn status(&self, term: u64) -> Result<StatusResponse, ClientError> {
        let (next, answered) = &*self.heartbeats;
        let seq = next.fetch_add(1, Ordering::Relaxed);
        let acked = answered.load(Ordering::Relaxed);
        let request = StatusRequest {
            term,
            seq: Some(seq),
            acked: (acked != 0).then_some(acked),
        };
        let answer = self.post(PATH_STATUS, &request).await;
        if answer.is_ok() {
            // In time by construction: the client's timeout bounds every request. The next
            // heartbeat tells the agent, which renews its lease from this one's admission.
            answered.fetch_max(seq, Ordering::Relaxed);
        }
        answer
    }

    /// [`AgentClient::status`], given up after `within` (shorter than the client's timeout).
    pub async fn status_within(
        &self,
        term: u64,
        within: Duration,
    ) -> Result<StatusResponse, ClientError> {
        tokio::time::timeout(within, self.status(term))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::TimedOut {
                    url: self.base.clone(),
                    within,
                })
            })
    }

    /// The staked tower on that server, unless its SHA-256 is `known`; with `wait` the agent
    /// holds the answer until the tower changes or `wait` passes (keep it under the client's
    /// request timeout).
    pub async fn tower(
        &self,
        term: u64,
        known: Option<String>,
        wait: Duration,
    ) -> Result<TowerResponse, ClientError> {
        self.post(
            PATH_TOWER,
            &TowerRequest {
                term,
                known_sha256: known,
                wait_ms: wait.as_millis() as u64,
            },
        )
        .await
    }

    /// Sends a failover command. An answer carrying a [`FailoverResponse`] is returned as `Ok`
    /// even when a phase failed (`ok == false`), so the caller sees every phase.
    pub async fn failover(
        &self,
        request: &FailoverRequest,
    ) -> Result<FailoverResponse, ClientError> {
        let (status, text) = self.send_post(PATH_FAILOVER, request).await?;
        if let Ok(response) = serde_json::from_str::<FailoverResponse>(&text) {
            return Ok(response);
        }
        Err(self.refusal(status, text))
    }

    pub async fn shutdown(&self, term: u64) -> Result<(), ClientError> {
        self.post::<_, serde_json::Value>(PATH_SHUTDOWN, &ShutdownRequest { term })
            .await
            .map(|_| ())
    }

    pub async fn identity(&self) -> Result<IdentityResponse, ClientError> {
        self.get(PATH_IDENTITY).await
    }

    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.get(PATH_HEALTH).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (status, text) = self.send_post(path, body).await?;
        self.decode(status, text)
    }

    /// Sends a POST, signed for the agent's current id; when the agent answers that the id is not
    /// its own (it restarted since), reads the new one and sends once more.
    async fn send_post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, String), ClientError> {
        let body = serde_json::to_vec(body).expect("request serializes");
        let Some(signer) = &self.signer else {
            return self.send(self.post_request(path, body)).await;
        };
        for attempt in 0..2 {
            let audience = auth::Audience {
                agent_id: self.audience(signer).await?,
                staked: signer.staked,
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let mut request = self.post_request(path, body.clone());
            for (name, value) in
                auth::sign(&signer.key, &audience, "POST", path, &body, now).headers()
            {
                request = request.header(name, value);
            }
            let (status, text) = self.send(request).await?;
            if attempt == 0
                && status == 401
                && self.refusal(status, text.clone()).is_wrong_audience()
            {
                *self.audience.lock().expect("audience") = None;
                continue;
            }
            return Ok((status, text));
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn post_request(&self, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
    }

    /// The agent id to address commands to, read from `/health` when not known; the agent must
    /// serve the staked identity the signer's commands are about.
    async fn audience(&self, signer: &CommandSigner) -> Result<String, ClientError> {
        if let Some(id) = self.audience.lock().expect("audience").clone() {
            return Ok(id);
        }
        let health = self.health().await?;
        if health.validator_identity != signer.staked.to_string() {
            return Err(ClientError::WrongIdentity {
                url: self.base.clone(),
                serves: health.validator_identity,
                expected: signer.staked,
            });
        }
        if health.agent_id.is_empty() {
            return Err(ClientError::Malformed {
                url: self.base.clone(),
                detail: "no agent_id in /health: an agent too old for signed commands".into(),
            });
        }
        *self.audience.lock().expect("audience") = Some(health.agent_id.clone());
        Ok(health.agent_id)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, text) = self
            .send(self.http.get(format!("{}{path}", self.base)))
            .await?;
        self.decode(status, text)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        Ok((status, text))
    }

    fn decode<T: DeserializeOwned>(&self, status: u16, text: String) -> Result<T, ClientError> {
        if !(200..300).contains(&status) {
            return Err(self.refusal(status, text));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Malformed {
            url: self.base.clone(),
            detail: e.to_string(),
        })
    }

    fn refusal(&self, status: u16, text: String) -> ClientError {
        let (reason, code, term) = match serde_json::from_str::<ErrorResponse>(&text) {
            Ok(e) => (e.error, e.code, e.term),
            Err(_) => (text, None, None),
        };
        ClientError::Refused {
            url: self.base.clone(),
            status,
            reason,
            code,
            term,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_agent_is_described_by_its_cause() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = AgentClient::new(
            &format!("http://127.0.0.1:{port}"),
            None,
            Duration::from_secs(2),
        );
        let err = client.health().await.unwrap_err().to_string();
        assert!(err.ends_with("unreachable: connection refused"), "{err}");
        // A listener that never answers: timed out.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = AgentClient::new(
            &format!("http://{}", silent.local_addr().unwrap()),
            None,
            Duration::from_millis(200),
        );
        let err = client.health().await.unwrap_err().to_string();
        assert!(err.ends_with("unreachable: timed out"), "{err}");
    }
}
