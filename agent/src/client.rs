//! The typed client the manager (and tests) use to talk to an agent, signing every state-changing
//! request with the manager's key.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover_identity::Keypair;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::*;
use crate::auth;

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent {url} unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("agent {url} refused ({status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("agent {url} answered something unreadable: {detail}")]
    Malformed { url: String, detail: String },
}

impl ClientError {
    /// The HTTP status of a refusal, if the agent answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one agent.
#[derive(Clone)]
pub struct AgentClient {
    base: String,
    http: reqwest::Client,
    signer: Option<Arc<Keypair>>,
}

impl AgentClient {
    /// `base` is the agent's endpoint (`http://host:port`); `signer` signs commands (None sends
    /// them unsigned, for agents configured to accept that).
    pub fn new(base: &str, signer: Option<Arc<Keypair>>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("an HTTP client with a timeout");
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            signer,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    pub async fn status(&self, term: u64) -> Result<StatusResponse, ClientError> {
        self.post(PATH_STATUS, &StatusRequest { term }).await
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

    async fn send_post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, String), ClientError> {
        let body = serde_json::to_vec(body).expect("request serializes");
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(signer) = &self.signer {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            for (name, value) in auth::sign(signer, "POST", path, &body, now).headers() {
                request = request.header(name, value);
            }
        }
        self.send(request.body(body)).await
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
        let reason = serde_json::from_str::<ErrorResponse>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        ClientError::Refused {
            url: self.base.clone(),
            status,
            reason,
        }
    }
}
