//! Several managers, one leading: an etcd lease holds the leader key (`<key_prefix>/leader`), and
//! only the manager whose key it is may switch. The others wait, polling the key, and campaign
//! when etcd has dropped it (its holder stopped renewing: dead, paused, cut off).
//!
//! The rule that keeps two managers from acting at once (Patroni's "demote before the TTL"): a
//! leader counts its lease from when it *sent* its last renewal that etcd answered, and stops
//! acting [`STAND_DOWN`] before that renewal's TTL runs out — by its own monotonic clock, which a
//! SIGSTOP does not stop, so a paused leader that resumes finds its lease gone before it sends
//! anything. etcd cannot drop the key before that TTL has passed since it *received* the renewal,
//! and no successor acts before the key is gone. Beside the clocks, every term a leader claims is
//! a transaction that succeeds only while the leader key is its own under its lease
//! ([`Guard`]), and every agent refuses a command of a term below one it has seen.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long before its lease's end a leader stops acting: commands it sent just before must
/// have arrived before a successor can exist.
pub fn stand_down(ttl: Duration) -> Duration {
    (ttl / 3).max(STAND_DOWN)
}

/// The least [`stand_down`].
pub const STAND_DOWN: Duration = Duration::from_millis(1_000);

/// Where this manager stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// etcd has not answered yet (or not lately): this manager does not act.
    Unknown { error: Option<String> },
    /// Another manager holds the leader key.
    Following { leader: String },
    /// This manager holds the key under `lease` and may act until `until`.
    Leading { lease: i64, until: Instant },
}

/// What a leader's term claim is guarded by: the leader key still holds this manager's name under
/// its lease.
#[derive(Clone, Debug)]
pub struct Guard {
    pub key: String,
    pub value: String,
    pub lease: i64,
}

impl Guard {
    /// The comparisons a transaction adds to succeed only for this leader.
    pub fn compares(&self) -> [Compare; 2] {
        [
            Compare::value(self.key.as_str(), CompareOp::Equal, self.value.as_str()),
            Compare::lease(self.key.as_str(), CompareOp::Equal, self.lease),
        ]
    }
}

/// The election, run by a task of its own so that renewals never wait for a switch; stops when
/// dropped (the lease then runs out in etcd).
pub struct Election {
    view: Standing,
    task: tokio::task::JoinHandle<()>,
    /// Keeps this manager registered under `<key_prefix>/managers/` (for `status`).
    roster_task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts campaigning as `me` (a name operators recognise: host and process).
    pub fn start(cfg: &failover_config::Election, me: String) -> Self {
        let prefix = cfg.key_prefix.trim_end_matches('/');
        let key = format!("{prefix}/leader");
        let (tx, state) = watch::channel(Leadership::Unknown { error: None });
        let task = tokio::spawn(campaign(cfg.clone(), key.clone(), me.clone(), tx));
        let (roster_tx, roster) = watch::channel(None);
        let roster_task = tokio::spawn(register(
            cfg.clone(),
            Registration {
                members: format!("{prefix}/managers/"),
                leader: key.clone(),
                me: me.clone(),
            },
            roster_tx,
        ));
        Self {
            view: Standing {
                key,
                me,
                state,
                roster,
                ttl: cfg.lease_ttl,
            },
            task,
            roster_task,
        }
    }

    /// Where this manager stands, for whoever must check before acting.
    pub fn standing(&self) -> Standing {
        self.view.clone()
    }
}

/// Where this manager stands in the election (a cheap copy of the election's view).
#[derive(Clone)]
pub struct Standing {
    key: String,
    me: String,
    state: watch::Receiver<Leadership>,
    roster: watch::Receiver<Option<Roster>>,
    ttl: Duration,
}

/// The registered managers and the leader key, as etcd last answered.
#[derive(Clone, Debug)]
struct Roster {
    leader: Option<String>,
    names: Vec<String>,
    read: Instant,
}

impl Standing {
    /// This manager's name in the election.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// `Some` while this manager leads and its lease has not run out by its own clock.
    pub fn guard(&self) -> Option<Guard> {
        match *self.state.borrow() {
            Leadership::Leading { lease, until } if Instant::now() < until => Some(Guard {
                key: self.key.clone(),
                value: self.me.clone(),
                lease,
            }),
            _ => None,
        }
    }

    pub fn leading(&self) -> bool {
        self.guard().is_some()
    }

    /// Waits until this manager leads.
    pub async fn until_leading(&mut self) {
        loop {
            if self.leading() {
                return;
            }
            if self.state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until this manager no longer leads: its lease ran out by its clock (even when the
    /// election task has not said so yet), or the task gave it up.
    pub async fn until_not_leading(&mut self) {
        loop {
            let until = match *self.state.borrow_and_update() {
                Leadership::Leading { until, .. } if Instant::now() < until => until,
                _ => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Who leads and who follows, for `status`; `None` before etcd first answered.
    pub fn managers(&self) -> Option<crate::status::Managers> {
        let roster = self.roster.borrow().clone()?;
        Some(crate::status::Managers {
            me: self.me.clone(),
            followers: roster
                .names
                .iter()
                .filter(|n| Some(*n) != roster.leader.as_ref())
                .cloned()
                .collect(),
            leader: roster.leader,
            current: roster.read.elapsed() < self.ttl,
        })
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        match &*self.state.borrow() {
            Leadership::Leading { until, .. } if Instant::now() < *until => {
                format!("leading as {} (lease renewed through etcd)", self.me)
            }
            Leadership::Leading { .. } => format!(
                "{}: lease not renewed in time; not acting until etcd answers",
                self.me
            ),
            Leadership::Following { leader } => {
                format!(
                    "following: {leader} leads; {} takes over if it stops",
                    self.me
                )
            }
            Leadership::Unknown { error } => format!(
                "not leading: etcd {}",
                error.as_deref().unwrap_or("not answered yet")
            ),
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
        self.roster_task.abort();
    }
}

async fn connect(cfg: &failover_config::Election) -> Result<Client, String> {
    let endpoints: Vec<String> = cfg
        .endpoints
        .iter()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(cfg.dial_timeout)
        .with_timeout(cfg.dial_timeout * 2);
    match tokio::time::timeout(
        cfg.dial_timeout * 2,
        Client::connect(endpoints, Some(options)),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("did not answer within {:?}", cfg.dial_timeout * 2)),
    }
}

/// The election task: campaign while following, renew while leading, forever.
async fn campaign(
    cfg: failover_config::Election,
    key: String,
    me: String,
    tx: watch::Sender<Leadership>,
) {
    let ttl = cfg.lease_ttl;
    let look = ttl / 3;
    let mut said: Option<String> = None;
    let mut say = |tx: &watch::Sender<Leadership>, now: Leadership| {
        let line = match &now {
            Leadership::Leading { .. } => "leading".to_string(),
            Leadership::Following { leader } => format!("following {leader}"),
            Leadership::Unknown { error } => format!("unknown: {error:?}"),
        };
        if said.as_deref() != Some(line.as_str()) {
            match &now {
                Leadership::Leading { .. } => info!(me, "elected: this manager leads"),
                Leadership::Following { leader } => info!(me, leader, "another manager leads"),
                Leadership::Unknown { error } => {
                    warn!(
                        me,
                        error = error.as_deref().unwrap_or(""),
                        "etcd unavailable: not leading"
                    )
                }
            }
            said = Some(line);
        }
        tx.send_replace(now);
    };
    let mut client: Option<Client> = None;
    loop {
        let c = match &client {
            Some(c) => c.clone(),
            None => match connect(&cfg).await {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(e) => {
                    say(&tx, Leadership::Unknown { error: Some(e) });
                    tokio::time::sleep(look).await;
                    continue;
                }
            },
        };
        match try_lead(&c, &key, &me, ttl).await {
            Ok(Campaign::Won { lease, sent }) => {
                say(
                    &tx,
                    Leadership::Leading {
                        lease,
                        until: sent + ttl - stand_down(ttl),
                    },
                );
                let why = renew(&c, lease, ttl, &tx).await;
                warn!(me, "stopped leading: {why}");
                say(&tx, Leadership::Unknown { error: Some(why) });
                // Gone already if etcd dropped it; otherwise give the key up now, so that a
                // successor need not wait out the TTL.
                let mut c = c.clone();
                let _ = tokio::time::timeout(look, c.lease_revoke(lease)).await;
            }
            Ok(Campaign::Lost { leader }) => {
                say(&tx, Leadership::Following { leader });
                tokio::time::sleep(look).await;
            }
            Err(e) => {
                say(&tx, Leadership::Unknown { error: Some(e) });
                tokio::time::sleep(look).await;
            }
        }
    }
}

enum Campaign {
    Won { lease: i64, sent: Instant },
    Lost { leader: String },
}

/// One campaign: a fresh lease, and the leader key under it if nobody holds the key.
async fn try_lead(client: &Client, key: &str, me: &str, ttl: Duration) -> Result<Campaign, String> {
    let mut c = client.clone();
    let timeout = ttl / 3;
    let sent = Instant::now();
    let grant = tokio::time::timeout(timeout, c.lease_grant(ttl.as_secs() as i64, None))
        .await
        .map_err(|_| format!("lease grant unanswered within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let lease = grant.id();
    let txn = Txn::new()
        .when([Compare::version(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            me,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let answer = tokio::time::timeout(timeout, c.txn(txn)).await;
    let answer = match answer {
        Ok(Ok(a)) => a,
        other => {
            let _ = tokio::time::timeout(timeout, c.lease_revoke(lease)).await;
            return Err(match other {
                Ok(Err(e)) => e.to_string(),
                _ => format!("campaign unanswered within {timeout:?}"),
            });
        }
    };
    if answer.succeeded() {
        return Ok(Campaign::Won { lease, sent });
    }
    let _ = tokio::time::timeout(timeout, c.lease_revoke(lease)).await;
    let leader = answer
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "another manager".into());
    Ok(Campaign::Lost { leader })
}

/// Renews `lease` every third of the TTL while etcd answers in time; returns why it stopped.
async fn renew(
    client: &Client,
    lease: i64,
    ttl: Duration,
    tx: &watch::Sender<Leadership>,
) -> String {
    let look = ttl / 3;
    let (mut keeper, mut stream) = match keep_alive(client, lease, look).await {
        Ok(pair) => pair,
        Err(why) => return why,
    };
    let mut ticks = tokio::time::interval(look);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        match renew_once(&mut keeper, &mut stream, look).await {
            Ok(granted) => {
                tx.send_replace(Leadership::Leading {
                    lease,
                    until: sent + granted.min(ttl) - stand_down(ttl),
                });
            }
            Err(why) => return why,
        }
    }
}

/// Opens the renewal stream of `lease`.
async fn keep_alive(
    client: &Client,
    lease: i64,
    within: Duration,
) -> Result<(LeaseKeeper, LeaseKeepAliveStream), String> {
    let mut c = client.clone();
    match tokio::time::timeout(within, c.lease_keep_alive(lease)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(format!("cannot renew the lease: {e}")),
        Err(_) => Err(format!("lease renewal unanswered within {within:?}")),
    }
}

/// One renewal: the TTL etcd granted from now, or why there was none.
async fn renew_once(
    keeper: &mut LeaseKeeper,
    stream: &mut LeaseKeepAliveStream,
    within: Duration,
) -> Result<Duration, String> {
    keeper
        .keep_alive()
        .await
        .map_err(|e| format!("cannot renew the lease: {e}"))?;
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(answer))) if answer.ttl() > 0 => Ok(Duration::from_secs(answer.ttl() as u64)),
        Ok(Ok(Some(_))) => Err("etcd says the lease has expired".into()),
        Ok(Ok(None)) => Err("etcd closed the lease renewal stream".into()),
        Ok(Err(e)) => Err(format!("lease renewal failed: {e}")),
        Err(_) => Err(format!("lease renewal unanswered within {within:?}")),
    }
}

/// Where a manager registers and what it reads back for `status`.
struct Registration {
    /// The prefix every manager's key is under.
    members: String,
    leader: String,
    me: String,
}

/// Keeps `<key_prefix>/managers/<me>` under a lease of its own (gone a TTL after this manager
/// is), and every third of the TTL reads the registered managers and the leader key back. Apart
/// from the campaign: a status read never delays a renewal, and a registration that fails
/// changes nothing about who leads.
async fn register(
    cfg: failover_config::Election,
    at: Registration,
    tx: watch::Sender<Option<Roster>>,
) {
    let look = cfg.lease_ttl / 3;
    loop {
        if let Ok(client) = connect(&cfg).await {
            let why = stay_registered(&client, &at, cfg.lease_ttl, &tx).await;
            tracing::debug!(me = at.me, "manager registration lapsed: {why}");
        }
        tokio::time::sleep(look).await;
    }
}

async fn stay_registered(
    client: &Client,
    at: &Registration,
    ttl: Duration,
    tx: &watch::Sender<Option<Roster>>,
) -> String {
    let look = ttl / 3;
    let mut c = client.clone();
    let lease = match tokio::time::timeout(look, c.lease_grant(ttl.as_secs() as i64, None)).await {
        Ok(Ok(grant)) => grant.id(),
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return format!("lease grant unanswered within {look:?}"),
    };
    let key = format!("{}{}", at.members, at.me);
    let put = c.put(
        key.as_str(),
        at.me.as_str(),
        Some(PutOptions::new().with_lease(lease)),
    );
    match tokio::time::timeout(look, put).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return format!("registration unanswered within {look:?}"),
    }
    let (mut keeper, mut stream) = match keep_alive(client, lease, look).await {
        Ok(pair) => pair,
        Err(why) => return why,
    };
    let read = Txn::new().and_then([
        TxnOp::get(at.leader.as_str(), None),
        TxnOp::get(
            at.members.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        ),
    ]);
    let mut ticks = tokio::time::interval(look);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let answer = match tokio::time::timeout(look, c.txn(read.clone())).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return format!("roster read unanswered within {look:?}"),
        };
        let values = |i: usize| -> Vec<String> {
            match answer.op_responses().get(i) {
                Some(etcd_client::TxnOpResponse::Get(get)) => get
                    .kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut names = values(1);
        names.sort();
        tx.send_replace(Some(Roster {
            leader: values(0).into_iter().next(),
            names,
            read: Instant::now(),
        }));
        if let Err(why) = renew_once(&mut keeper, &mut stream, look).await {
            return why;
        }
    }
}
