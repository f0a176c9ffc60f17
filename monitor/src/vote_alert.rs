//! Watchtower-style vote-staleness alerting: every interval, compare the vote account's last vote
//! with the cluster tip and tell operators when it lags (or is delinquent, or has vanished) and
//! when it recovers. Usable inside the manager or on its own.
//!
//! The decision is the pure state machine [`VoteWatch`]; [`run`] only reads the cluster over RPC
//! and sends what the machine says through a [`Notifier`]. This module must not decide or trigger
//! a failover — it alerts — and an RPC error is never taken as evidence that votes stopped: the
//! round is logged and skipped.

use std::future::Future;
use std::time::Duration;

use failover_identity::Pubkey;
use solana_commitment_config::CommitmentConfig;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::config::RpcGetVoteAccountsConfig;
use solana_rpc_client_api::response::RpcVoteAccountStatus;
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::notify::{Event, Notifier};

/// Consecutive samples over the threshold (or without the account) needed to raise an alert.
pub const SAMPLES_TO_RAISE: u32 = 2;

/// One look at the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteSample {
    /// The cluster's current (processed) slot.
    pub tip: u64,
    /// The vote account's last vote; `None` when the account is not in `getVoteAccounts`.
    pub last_vote: Option<u64>,
    /// Whether the cluster lists the account as delinquent.
    pub delinquent: bool,
}

/// Why an alert was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertReason {
    /// The last vote lagged the tip by more than the threshold in consecutive samples.
    Lagging,
    /// The cluster lists the account as delinquent.
    Delinquent,
    /// The account was missing from `getVoteAccounts` in consecutive samples.
    NotFound,
}

/// A change of the alert state, to be told to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertChange {
    /// The account went stale. `lag` and `last_vote` are `None` when it was not found.
    Raised {
        reason: AlertReason,
        lag: Option<u64>,
        last_vote: Option<u64>,
        tip: u64,
    },
    /// The account votes again: under the threshold and not delinquent.
    Cleared { last_vote: u64, tip: u64 },
}

impl std::fmt::Display for AlertChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = |s: &Option<u64>| s.map_or("unknown".to_string(), |v| v.to_string());
        match self {
            AlertChange::Raised {
                reason,
                lag,
                last_vote,
                tip,
            } => {
                let why = match reason {
                    AlertReason::Lagging => "lagging",
                    AlertReason::Delinquent => "delinquent",
                    AlertReason::NotFound => "not found",
                };
                write!(
                    f,
                    "{why}: last vote {}, tip {tip}, lag {}",
                    slot(last_vote),
                    slot(lag)
                )
            }
            AlertChange::Cleared { last_vote, tip } => {
                write!(f, "voting: last vote {last_vote}, tip {tip}")
            }
        }
    }
}

/// The alert state machine: feed it samples, it says when to raise and when to clear. Raises
/// once per episode.
#[derive(Clone, Debug)]
pub struct VoteWatch {
    threshold: u64,
    /// Consecutive samples over the threshold.
    lagging: u32,
    /// Consecutive samples without the account.
    missing: u32,
    raised: bool,
}

impl VoteWatch {
    /// A watch that calls a lag of more than `threshold` slots stale.
    pub fn new(threshold: u64) -> Self {
        Self {
            threshold,
            lagging: 0,
            missing: 0,
            raised: false,
        }
    }

    /// Whether an alert is currently raised.
    pub fn is_raised(&self) -> bool {
        self.raised
    }

    /// Takes one sample; returns the change to report, if any.
    pub fn observe(&mut self, sample: VoteSample) -> Option<AlertChange> {
        let Some(last_vote) = sample.last_vote else {
            self.lagging = 0;
            self.missing += 1;
            if !self.raised && self.missing >= SAMPLES_TO_RAISE {
                self.raised = true;
                return Some(AlertChange::Raised {
                    reason: AlertReason::NotFound,
                    lag: None,
                    last_vote: None,
                    tip: sample.tip,
                });
            }
            return None;
        };
        self.missing = 0;
        let lag = sample.tip.saturating_sub(last_vote);
        let over = lag > self.threshold;
        self.lagging = if over { self.lagging + 1 } else { 0 };
        let raise = |reason| AlertChange::Raised {
            reason,
            lag: Some(lag),
            last_vote: Some(last_vote),
            tip: sample.tip,
        };
        if self.raised {
            if !over && !sample.delinquent {
                self.raised = false;
                return Some(AlertChange::Cleared {
                    last_vote,
                    tip: sample.tip,
                });
            }
            return None;
        }
        if sample.delinquent {
            self.raised = true;
            return Some(raise(AlertReason::Delinquent));
        }
        if self.lagging >= SAMPLES_TO_RAISE {
            self.raised = true;
            return Some(raise(AlertReason::Lagging));
        }
        None
    }
}

/// The sample for `vote_account` in a `getVoteAccounts` answer taken at `tip`: an account listed
/// under `delinquent` is delinquent; one listed nowhere is not found.
pub fn sample_from(tip: u64, status: &RpcVoteAccountStatus, vote_account: &Pubkey) -> VoteSample {
    let key = vote_account.to_string();
    let find = |list: &[solana_rpc_client_api::response::RpcVoteAccountInfo]| {
        list.iter()
            .find(|a| a.vote_pubkey == key)
            .map(|a| a.last_vote)
    };
    match (find(&status.current), find(&status.delinquent)) {
        (Some(last_vote), _) => VoteSample {
            tip,
            last_vote: Some(last_vote),
            delinquent: false,
        },
        (None, Some(last_vote)) => VoteSample {
            tip,
            last_vote: Some(last_vote),
            delinquent: true,
        },
        (None, None) => VoteSample {
            tip,
            last_vote: None,
            delinquent: false,
        },
    }
}

/// The notification for an alert change. A vanished account has no last vote to report, so it
/// is told as a [`Event::Critical`] message.
pub fn event_for(vote_account: &Pubkey, change: &AlertChange) -> Event {
    let vote_account = vote_account.to_string();
    match *change {
        AlertChange::Raised {
            lag: Some(lag),
            last_vote: Some(last_vote),
            tip,
            reason,
        } => Event::VoteStale {
            vote_account,
            last_vote,
            tip,
            lag,
            delinquent: reason == AlertReason::Delinquent,
        },
        AlertChange::Raised { tip, .. } => Event::Critical {
            text: format!(
                "Vote account {vote_account} not found by getVoteAccounts at slot {tip} \
                 (unstaked and delinquent, or a wrong pubkey)"
            ),
        },
        AlertChange::Cleared { last_vote, tip } => Event::VoteRecovered {
            vote_account,
            last_vote,
            tip,
        },
    }
}

/// What to watch and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteAlertConfig {
    /// A cluster RPC endpoint.
    pub rpc_url: String,
    /// The vote account to watch.
    pub vote_account: Pubkey,
    /// A lag of more than this many slots is stale (the manager's `stale_vote_slot_threshold`);
    /// `None`: chosen for the cluster's consensus (8 on TowerBFT, 24 on Alpenglow, whose
    /// lastVote trails the tip by the certificate delay).
    pub threshold_slots: Option<u64>,
    /// Time between samples.
    pub interval: Duration,
}

/// A configuration [`run`] cannot work with.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VoteAlertError {
    #[error("the vote-alert interval must be longer than zero")]
    ZeroInterval,
}

/// Samples the cluster every `cfg.interval` until `shutdown` completes, sending
/// [`Event::VoteStale`] when the vote account goes stale and [`Event::VoteRecovered`] when it
/// recovers. RPC errors are logged and the round skipped. Fails only on an unusable config.
pub async fn run(
    cfg: VoteAlertConfig,
    notifier: Notifier,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if cfg.interval.is_zero() {
        return Err(VoteAlertError::ZeroInterval.into());
    }
    let timeout = cfg
        .interval
        .clamp(Duration::from_secs(1), Duration::from_secs(10));
    let client = RpcClient::new_with_timeout(cfg.rpc_url.clone(), timeout);
    let consensus = failover_agent::consensus::detect(&client)
        .await
        .unwrap_or(failover_agent::consensus::Consensus::Unknown);
    let threshold = cfg.threshold_slots.unwrap_or(match consensus {
        failover_agent::consensus::Consensus::TowerBft => {
            failover_config::DEFAULT_STALE_VOTE_SLOT_THRESHOLD
        }
        _ => failover_config::DEFAULT_ALPENGLOW_STALE_VOTE_SLOT_THRESHOLD,
    });
    let mut watch = VoteWatch::new(threshold);
    let mut ticks = tokio::time::interval(cfg.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = 0u64;
    info!(
        vote_account = %cfg.vote_account,
        threshold_slots = threshold,
        interval = %failover_config::format_duration(cfg.interval),
        %consensus,
        "watching vote staleness"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let sample = tokio::select! {
            _ = &mut shutdown => break,
            sample = read_sample(&client, &cfg.vote_account) => sample,
        };
        let sample = match sample {
            Ok(sample) => {
                if failures > 0 {
                    info!(failures, "vote-alert RPC answers again");
                    failures = 0;
                }
                sample
            }
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    warn!(rpc = %cfg.rpc_url, %error, "vote-alert RPC failed; sample skipped");
                } else {
                    debug!(
                        rpc = %cfg.rpc_url,
                        %error,
                        failures,
                        "vote-alert RPC failed; sample skipped"
                    );
                }
                continue;
            }
        };
        debug!(?sample, "vote sample");
        if let Some(change) = watch.observe(sample) {
            match change {
                AlertChange::Raised { .. } => {
                    warn!(vote_account = %cfg.vote_account, "vote account stale: {change}")
                }
                AlertChange::Cleared { .. } => {
                    info!(vote_account = %cfg.vote_account, "vote account recovered: {change}")
                }
            }
            notifier.send(event_for(&cfg.vote_account, &change));
        }
    }
    debug!("vote-staleness watch stopped");
    Ok(())
}

/// Reads the tip and the vote account, both at `processed`, concurrently.
async fn read_sample(
    client: &RpcClient,
    vote_account: &Pubkey,
) -> Result<VoteSample, solana_rpc_client_api::client_error::Error> {
    let config = RpcGetVoteAccountsConfig {
        vote_pubkey: Some(vote_account.to_string()),
        commitment: Some(CommitmentConfig::processed()),
        ..RpcGetVoteAccountsConfig::default()
    };
    let (tip, status) = tokio::join!(
        client.get_slot_with_commitment(CommitmentConfig::processed()),
        client.get_vote_accounts_with_config(config),
    );
    Ok(sample_from(tip?, &status?, vote_account))
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLD: u64 = 8;

    /// Found, current, `lag` slots behind a tip of 1000.
    fn behind(lag: u64) -> VoteSample {
        VoteSample {
            tip: 1_000,
            last_vote: Some(1_000 - lag),
            delinquent: false,
        }
    }

    fn delinquent(lag: u64) -> VoteSample {
        VoteSample {
            delinquent: true,
            ..behind(lag)
        }
    }

    fn missing() -> VoteSample {
        VoteSample {
            tip: 1_000,
            last_vote: None,
            delinquent: false,
        }
    }

    fn raised(reason: AlertReason, lag: u64) -> Option<AlertChange> {
        Some(AlertChange::Raised {
            reason,
            lag: Some(lag),
            last_vote: Some(1_000 - lag),
            tip: 1_000,
        })
    }

    fn not_found() -> Option<AlertChange> {
        Some(AlertChange::Raised {
            reason: AlertReason::NotFound,
            lag: None,
            last_vote: None,
            tip: 1_000,
        })
    }

    fn cleared(lag: u64) -> Option<AlertChange> {
        Some(AlertChange::Cleared {
            last_vote: 1_000 - lag,
            tip: 1_000,
        })
    }

    /// Each case: a name, the samples in order, and what `observe` must answer to each.
    #[allow(clippy::type_complexity)]
    fn cases() -> Vec<(&'static str, Vec<VoteSample>, Vec<Option<AlertChange>>)> {
        vec![
            // Rules that raise.
            (
                "two consecutive samples over the threshold raise",
                vec![behind(9), behind(12)],
                vec![None, raised(AlertReason::Lagging, 12)],
            ),
            (
                "one delinquent sample raises at once",
                vec![delinquent(200)],
                vec![raised(AlertReason::Delinquent, 200)],
            ),
            (
                "delinquent raises even under the lag threshold",
                vec![delinquent(3)],
                vec![raised(AlertReason::Delinquent, 3)],
            ),
            (
                "two samples without the account raise",
                vec![missing(), missing()],
                vec![None, not_found()],
            ),
            // Samples that must not raise.
            (
                "a healthy account raises nothing",
                vec![behind(1), behind(0), behind(2)],
                vec![None, None, None],
            ),
            (
                "a lag equal to the threshold is not stale",
                vec![behind(8), behind(8), behind(8)],
                vec![None, None, None],
            ),
            (
                "one sample over the threshold is not enough",
                vec![behind(50), behind(1)],
                vec![None, None],
            ),
            (
                "lagging samples must be consecutive",
                vec![behind(20), behind(1), behind(20), behind(1)],
                vec![None, None, None, None],
            ),
            (
                "one missing sample is not enough",
                vec![missing(), behind(1), missing()],
                vec![None, None, None],
            ),
            (
                "a missing and a lagging sample do not add up",
                vec![missing(), behind(20), missing()],
                vec![None, None, None],
            ),
            (
                "a last vote ahead of the tip counts as no lag",
                vec![
                    VoteSample {
                        tip: 10,
                        last_vote: Some(12),
                        delinquent: false,
                    };
                    2
                ],
                vec![None, None],
            ),
            // No duplicates while raised.
            (
                "still lagging after the raise sends nothing more",
                vec![
                    behind(9),
                    behind(10),
                    behind(11),
                    behind(40),
                    delinquent(200),
                ],
                vec![None, raised(AlertReason::Lagging, 10), None, None, None],
            ),
            (
                "still missing after the raise sends nothing more",
                vec![missing(), missing(), missing()],
                vec![None, not_found(), None],
            ),
            (
                "lagging after a delinquent raise sends nothing more",
                vec![delinquent(200), behind(20), behind(20)],
                vec![raised(AlertReason::Delinquent, 200), None, None],
            ),
            // Clearing.
            (
                "back under the threshold clears",
                vec![behind(9), behind(10), behind(1)],
                vec![None, raised(AlertReason::Lagging, 10), cleared(1)],
            ),
            (
                "found again and voting clears a not-found alert",
                vec![missing(), missing(), behind(1)],
                vec![None, not_found(), cleared(1)],
            ),
            (
                "delinquent under the threshold does not clear",
                vec![delinquent(200), delinquent(3), behind(3)],
                vec![raised(AlertReason::Delinquent, 200), None, cleared(3)],
            ),
            (
                "one good sample clears, and it takes two bad ones to raise again",
                vec![behind(9), behind(9), behind(0), behind(9), behind(9)],
                vec![
                    None,
                    raised(AlertReason::Lagging, 9),
                    cleared(0),
                    None,
                    raised(AlertReason::Lagging, 9),
                ],
            ),
        ]
    }

    #[test]
    fn vote_watch_table() {
        for (name, samples, expected) in cases() {
            assert_eq!(samples.len(), expected.len(), "case {name:?} is malformed");
            let mut watch = VoteWatch::new(THRESHOLD);
            for (i, (sample, want)) in samples.into_iter().zip(expected).enumerate() {
                assert_eq!(watch.observe(sample), want, "case {name:?}, sample {i}");
            }
        }
    }

    #[test]
    fn events_for_each_change() {
        let account = Pubkey::new_from_array([7; 32]);
        let stale = event_for(&account, &raised(AlertReason::Delinquent, 200).unwrap());
        assert_eq!(
            stale,
            Event::VoteStale {
                vote_account: account.to_string(),
                last_vote: 800,
                tip: 1_000,
                lag: 200,
                delinquent: true,
            }
        );
        let Event::Critical { text } = event_for(&account, &not_found().unwrap()) else {
            panic!("a vanished account is a critical message");
        };
        assert!(text.contains(&account.to_string()), "{text}");
        assert_eq!(
            event_for(&account, &cleared(1).unwrap()),
            Event::VoteRecovered {
                vote_account: account.to_string(),
                last_vote: 999,
                tip: 1_000,
            }
        );
    }

    #[test]
    fn sample_from_reads_current_delinquent_and_missing() {
        use solana_rpc_client_api::response::RpcVoteAccountInfo;
        let account = Pubkey::new_from_array([7; 32]);
        let entry = |last_vote| RpcVoteAccountInfo {
            vote_pubkey: account.to_string(),
            node_pubkey: Pubkey::new_from_array([8; 32]).to_string(),
            activated_stake: 1,
            commission: 0,
            epoch_vote_account: true,
            epoch_credits: vec![],
            last_vote,
            root_slot: 0,
        };
        let status = |current, delinquent| RpcVoteAccountStatus {
            current,
            delinquent,
        };
        assert_eq!(
            sample_from(100, &status(vec![entry(99)], vec![]), &account),
            VoteSample {
                tip: 100,
                last_vote: Some(99),
                delinquent: false
            }
        );
        assert_eq!(
            sample_from(500, &status(vec![], vec![entry(99)]), &account),
            VoteSample {
                tip: 500,
                last_vote: Some(99),
                delinquent: true
            }
        );
        assert_eq!(
            sample_from(500, &status(vec![], vec![]), &account),
            VoteSample {
                tip: 500,
                last_vote: None,
                delinquent: false
            }
        );
    }

    #[tokio::test]
    async fn a_zero_interval_is_refused() {
        let cfg = VoteAlertConfig {
            rpc_url: "http://127.0.0.1:1".into(),
            vote_account: Pubkey::new_from_array([7; 32]),
            threshold_slots: Some(8),
            interval: Duration::ZERO,
        };
        let err = run(cfg, Notifier::disabled(), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<VoteAlertError>(),
            Some(&VoteAlertError::ZeroInterval)
        );
    }
}
