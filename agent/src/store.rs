//! Where the staked tower waits between machines.
//!
//! - Embedded (default): the manager relays it. The active agent returns its tower with each
//!   status answer and with `become_passive`; the manager keeps the latest on disk and hands it
//!   to `become_active`. Nothing to run.
//! - etcd: the tower lives at `<prefix>/tower`, written only while etcd's `<prefix>/term` is not
//!   newer than the writer's term (a transaction comparing the term — etcd's own recommendation
//!   instead of locks), so a demoted agent holding an old term can never overwrite a newer tower.
//!   Terms are stored as zero-padded decimals so that etcd's byte comparison orders them.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::api::VoteStateBlob;

/// Why the etcd store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd term is {current}, newer than this agent's term {mine}: refusing to overwrite the tower")]
    Fenced { current: u64, mine: u64 },
    #[error("etcd holds a malformed record at {key}: {detail}")]
    Malformed { key: String, detail: String },
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// The record stored at `<prefix>/tower`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredTower {
    pub term: u64,
    /// Which agent wrote it (its listen address or host name), for operators.
    pub written_by: String,
    pub written_at_ms: u64,
    pub tower: VoteStateBlob,
}

/// An etcd-backed tower store.
#[derive(Clone)]
pub struct EtcdTowers {
    client: Client,
    tower_key: String,
    term_key: String,
    /// Where the largest `fence_after` any agent published is kept, for the next elected
    /// manager (see [`EtcdTowers::raise_fence_after`]).
    fence_after_key: String,
    timeout: Duration,
}

/// What [`EtcdTowers::claim_term`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This caller raised etcd's term to the one it asked for: the term is its own.
    Taken,
    /// etcd's term was already at least the one asked for (another manager's switch).
    Lost { current: u64 },
}

/// What [`EtcdTowers::put_backup`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Backup {
    Stored,
    /// etcd holds this vote state or a newer one of the same term (or got one meanwhile).
    Kept,
}

/// Whether a last vote is past another (a vote state with no vote is past nothing).
fn newer(mine: Option<u64>, stored: Option<u64>) -> bool {
    match (mine, stored) {
        (Some(mine), Some(stored)) => mine > stored,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn pad(term: u64) -> String {
    format!("{term:020}")
}

impl EtcdTowers {
    /// Connects and makes sure the term key exists (term 0 if nobody set one yet).
    pub async fn connect(config: &failover_config::EtcdStore) -> Result<Self, StoreError> {
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect();
        let timeout = config.dial_timeout;
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout * 2);
        let client = tokio::time::timeout(timeout * 2, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| StoreError::Timeout(timeout * 2))??;
        let prefix = config.key_prefix.trim_end_matches('/');
        let store = Self {
            client,
            tower_key: format!("{prefix}/tower"),
            term_key: format!("{prefix}/term"),
            fence_after_key: format!("{prefix}/fence_after_ms"),
            timeout: timeout * 2,
        };
        let init = Txn::new()
            .when([Compare::version(
                store.term_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(store.term_key.as_str(), pad(0), None)]);
        store.txn(init).await?;
        Ok(store)
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let mut kv = self.client.kv_client();
        tokio::time::timeout(self.timeout, kv.txn(txn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(StoreError::from)
    }

    async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = tokio::time::timeout(self.timeout, kv.get(key, None))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// The current term in etcd.
    pub async fn term(&self) -> Result<u64, StoreError> {
        let value = self.get_value(&self.term_key).await?.unwrap_or_default();
        if value.is_empty() {
            return Ok(0);
        }
        std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| StoreError::Malformed {
                key: self.term_key.clone(),
                detail: "not a number".into(),
            })
    }

    /// Claims `term` for one switch (the manager's move at the start of every switch): written
    /// only while etcd's term is below it, in one transaction, so of two managers that computed
    /// the same next term exactly one gets it — and the other learns the term it lost to.
    ///
    /// `guard`: further comparisons the claim needs (an elected manager's: the leader key is still
    /// its own); when one fails, the claim is [`Claim::Lost`] with etcd's term below `term`.
    pub async fn claim_term(
        &self,
        term: u64,
        guard: impl IntoIterator<Item = Compare>,
    ) -> Result<Claim, StoreError> {
        let compares: Vec<Compare> = std::iter::once(Compare::value(
            self.term_key.as_str(),
            CompareOp::Less,
            pad(term),
        ))
        .chain(guard)
        .collect();
        let txn = Txn::new().when(compares).and_then([TxnOp::put(
            self.term_key.as_str(),
            pad(term),
            None,
        )]);
        if self.txn(txn).await?.succeeded() {
            return Ok(Claim::Taken);
        }
        Ok(Claim::Lost {
            current: self.term().await?,
        })
    }

    /// Records that an agent published `fence_after` (ms), unless etcd holds a larger one: a
    /// manager elected later, which never heard the agents, waits at least this long for an
    /// unreachable one instead of a worst case.
    pub async fn raise_fence_after(&self, ms: u64) -> Result<(), StoreError> {
        let key = self.fence_after_key.as_str();
        let larger = Txn::new()
            .when([Compare::value(key, CompareOp::Less, pad(ms))])
            .and_then([TxnOp::put(key, pad(ms), None)]);
        // A missing key compares as nothing at all: it takes the first value.
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, pad(ms), None)])
            .or_else([TxnOp::txn(larger)]);
        self.txn(txn).await.map(drop)
    }

    /// The largest `fence_after` (ms) recorded by [`EtcdTowers::raise_fence_after`].
    pub async fn fence_after(&self) -> Result<Option<u64>, StoreError> {
        let Some(value) = self.get_value(&self.fence_after_key).await? else {
            return Ok(None);
        };
        std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Malformed {
                key: self.fence_after_key.clone(),
                detail: "not a number".into(),
            })
    }

    /// Writes the tower, fenced: only while etcd's term is not newer than `term`.
    pub async fn put_tower(&self, term: u64, record: &StoredTower) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record).expect("record serializes");
        let txn = Txn::new()
            .when([Compare::value(
                self.term_key.as_str(),
                CompareOp::Less,
                pad(term.saturating_add(1)),
            )])
            .and_then([TxnOp::put(self.tower_key.as_str(), value, None)]);
        if self.txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                current: self.term().await?,
                mine: term,
            })
        }
    }

    /// Backs up the active's vote state between switches: written only while etcd's term is not
    /// newer than `term`, and only over a record of an older term or of an older last vote —
    /// checked and written in one transaction on the record's revision. A backup read before a
    /// demotion so never replaces the demotion's final vote state, in whatever order the two
    /// writes arrive, and a demotion never waits for a backup.
    pub async fn put_backup(&self, term: u64, record: &StoredTower) -> Result<Backup, StoreError> {
        let mut kv = self.client.kv_client();
        let found = tokio::time::timeout(self.timeout, kv.get(self.tower_key.as_str(), None))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        let revision = match found.kvs().first() {
            None => 0,
            Some(kv) => {
                let stored: StoredTower =
                    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Malformed {
                        key: self.tower_key.clone(),
                        detail: e.to_string(),
                    })?;
                if stored.term > term {
                    return Err(StoreError::Fenced {
                        current: stored.term,
                        mine: term,
                    });
                }
                if stored.term == term && !newer(record.tower.last_vote, stored.tower.last_vote) {
                    return Ok(Backup::Kept);
                }
                kv.mod_revision()
            }
        };
        let value = serde_json::to_vec(record).expect("record serializes");
        let txn = Txn::new()
            .when([
                Compare::value(
                    self.term_key.as_str(),
                    CompareOp::Less,
                    pad(term.saturating_add(1)),
                ),
                Compare::mod_revision(self.tower_key.as_str(), CompareOp::Equal, revision),
            ])
            .and_then([TxnOp::put(self.tower_key.as_str(), value, None)]);
        if self.txn(txn).await?.succeeded() {
            return Ok(Backup::Stored);
        }
        // The term moved on, or another write came between the read and this one: the next
        // heartbeat looks again.
        match self.term().await? {
            current if current > term => Err(StoreError::Fenced {
                current,
                mine: term,
            }),
            _ => Ok(Backup::Kept),
        }
    }

    /// The stored tower, if any.
    pub async fn get_tower(&self) -> Result<Option<StoredTower>, StoreError> {
        match self.get_value(&self.tower_key).await? {
            None => Ok(None),
            Some(value) => {
                serde_json::from_slice(&value)
                    .map(Some)
                    .map_err(|e| StoreError::Malformed {
                        key: self.tower_key.clone(),
                        detail: e.to_string(),
                    })
            }
        }
    }
}
