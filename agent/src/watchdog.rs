//! Self-fencing. While this server's validator holds the staked identity and the manager's lease
//! (`lease.rs`) has expired, the watchdog looks every period, for the whole silence, for evidence
//! that the validator may go on voting — the reference design's "manager gone but the outside
//! reachable: keep voting", made provable:
//! - its votes land: the vote account's last vote at confirmed commitment advanced within the
//!   lease length;
//! - the outside is reachable: fewer than `connectivity_failures_to_fence` targets fail;
//! - the validator answers (its identity, within [`PROBE_DEADLINE`]).
//!
//! Without all three it fences: it pauses the votes (empties the authorized voters, the fast and
//! reversible step), or — when the validator does not answer that either — kills the validator
//! process it found by its ledger, and then demotes it fully (the same `become_passive`; after a
//! kill that hands the final vote state over from disk, and with `passive_identity_symlink_command`
//! and `validator_restart_command` restarts it as passive). Each decision is logged and reported
//! in `/status`; "staying active" once per silence.
//!
//! And whatever the lease: a node whose last completed change was a demotion and whose validator
//! holds the staked identity again (a restart with it on the command line after a failover) is
//! demoted at once — only a `become_active` makes a node the active.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover_config::HostPort;
use failover_identity::{Keypair, Permissions};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{error, info, warn};

use crate::agent::{unix_ms, Agent};
use crate::api::FenceReport;
use crate::lease::{self, PAUSE_DEADLINE, PROBE_DEADLINE};
use crate::state::Role;

/// The confirmed last vote as the watchdog follows it: the value, when it was read, and since when
/// it has surely advanced (`None` until it has been seen to advance: a first reading proves
/// nothing).
#[derive(Default)]
struct Votes {
    seen: Option<u64>,
    read_at: Option<Instant>,
    advanced: Option<Instant>,
}

impl Votes {
    fn note(&mut self, vote: u64) {
        if self.seen.is_some_and(|s| vote > s) {
            // It moved after the previous reading, perhaps just after it: credit the advance to
            // that reading, never later, so that evidence is never younger than it is.
            self.advanced = self.read_at;
        }
        if self.seen.is_none_or(|s| vote > s) {
            self.seen = Some(vote);
        }
        self.read_at = Some(Instant::now());
    }

    fn landed_within(&self, window: Duration) -> bool {
        self.advanced.is_some_and(|at| at.elapsed() < window)
    }
}

/// How often the confirmed last vote is read while the lease is fresh: often enough that, when
/// the lease ends, the evidence covers the whole lease and not only its last third (a run of
/// skipped leaders on a real cluster holds the confirmed last vote still for a second or more).
fn fresh_reading_every(lease: Duration) -> Duration {
    lease / 6
}

/// Runs until aborted.
pub async fn run(agent: Arc<Agent>) {
    let period = lease::period(agent.lease.length());
    // The validator's identity when it last answered: a validator that stops answering is treated
    // as what it was (never read, or read before a promotion began: as possibly active).
    let mut last_staked = Identity::default();
    let mut votes = Votes::default();
    let fresh_every = fresh_reading_every(agent.lease.length());
    let mut last_fresh_read = Instant::now() - fresh_every;
    let mut said_staying = false;
    let mut role_checked = Instant::now();
    let mut role_every = Duration::ZERO;
    // The validator process whose command line was last looked at.
    let mut inspected: Option<u32> = None;
    loop {
        tokio::time::sleep(period).await;
        if role_checked.elapsed() >= role_every {
            role_checked = Instant::now();
            // A validator that does not answer may be starting: look again at the next period,
            // as votes may follow its start-up within a slot.
            role_every = if demote_unauthorised(&agent, &mut inspected).await {
                ROLE_CHECK_EVERY
            } else {
                Duration::ZERO
            };
        }
        // A fresh lease needs no decision, only the evidence for the one at its end: the confirmed
        // last vote, read now and then. Only looking in the last third (a second with the default
        // lease) fenced a voting active whose manager died during a run of skipped leaders.
        if agent.lease.since_renewal() < agent.lease.length() * 2 / 3 {
            said_staying = false;
            if last_fresh_read.elapsed() >= fresh_every {
                last_fresh_read = Instant::now();
                match read_if_active(&agent, period, &mut last_staked).await {
                    Some(Some(vote)) => votes.note(vote),
                    Some(None) => {}
                    None => votes = Votes::default(),
                }
            }
            continue;
        }
        // The probes run side by side, so that one look takes at most the longest of them (the
        // published fence_after counts one): the identity, the confirmed last vote and — once the
        // lease has expired and this validator may be the active — the connectivity targets.
        let expired = agent.lease.expired_for();
        let check_outside = expired.is_some() && last_staked.staked(&agent) != Some(false);
        let asked = last_staked.asking(&agent);
        let (answer, vote, unreachable) = tokio::join!(
            timeout(PROBE_DEADLINE, agent.validator.identity()),
            timeout(PROBE_DEADLINE, agent.confirmed_last_vote()),
            async {
                if check_outside {
                    unreachable_targets(
                        &agent.cfg.connectivity.targets,
                        agent.cfg.connectivity.timeout,
                    )
                    .await
                } else {
                    Vec::new()
                }
            }
        );
        let maybe_active = match &answer {
            // What it answers now, whatever a promotion is doing.
            Ok(Ok(id)) => {
                last_staked.answered(asked, *id == agent.staked());
                *id == agent.staked()
            }
            // Not answering: only a running process can vote.
            _ => last_staked.staked(&agent) != Some(false) && agent.find_validator().is_some(),
        };
        let answering = matches!(answer, Ok(Ok(_)));
        if !maybe_active {
            votes = Votes::default();
            said_staying = false;
            continue;
        }
        if let Ok(Ok(Some(vote))) = vote {
            votes.note(vote);
        }
        let Some(expired) = expired else {
            said_staying = false;
            continue;
        };
        let silent_for = agent.lease.since_renewal();
        let landing = votes.landed_within(agent.lease.length());
        let isolated = unreachable.len() >= agent.cfg.connectivity.failures_to_fence;
        let mut reason = format!(
            "no acknowledged manager heartbeat for {} ms (lease expired {} ms ago)",
            silent_for.as_millis(),
            expired.as_millis()
        );
        if answering && landing && !isolated {
            if !said_staying {
                said_staying = true;
                reason.push_str(&format!(
                    "; votes land (confirmed last vote {}), {} of {} connectivity targets \
                     unreachable",
                    votes.seen.unwrap_or_default(),
                    unreachable.len(),
                    agent.cfg.connectivity.targets.len()
                ));
                info!(%reason, "manager silent but my votes land and the outside is reachable: staying active");
                report(&agent, reason, "stayed_active", unreachable);
            }
            continue;
        }
        reason.push_str(&if !answering {
            "; the validator does not answer".to_string()
        } else if !landing {
            format!(
                "; no vote landed (confirmed) in the last {} ms",
                agent.lease.length().as_millis()
            )
        } else {
            format!(
                "; {} of {} connectivity targets unreachable",
                unreachable.len(),
                agent.cfg.connectivity.targets.len()
            )
        });
        // Not in the middle of a switch the manager ordered (a promotion renews the lease before
        // it lets go of the lock), and only if the lease is still expired once it is ours.
        let Ok(guard) = agent.switching.try_lock() else {
            continue;
        };
        if agent.lease.expired_for().is_none() {
            continue;
        }
        warn!(%reason, unreachable = unreachable.join(", "), "fencing: stopping my votes so the other server can take over");
        let outcome = fence(&agent, &reason, guard).await;
        report(&agent, reason, outcome, unreachable);
        votes = Votes::default();
        said_staying = false;
    }
}

/// The validator's identity as the watchdog last read it, and the promotion count when it asked.
/// A reading asked for before or during a promotion is no reading: a validator found
/// unstaked while passive, then promoted and hung before the next answer, was taken for unstaked
/// and never fenced — on real Agave its agent let the manager promote the other node "by time"
/// while the stopped process still held X.
#[derive(Default)]
struct Identity {
    read: Option<(bool, u64)>,
}

impl Identity {
    /// The promotion count when a reading is asked for (before it is sent).
    fn asking(&self, agent: &Agent) -> u64 {
        agent.promotions.load(Ordering::SeqCst)
    }

    fn answered(&mut self, asked: u64, staked: bool) {
        self.read = Some((staked, asked));
    }

    /// Whether the validator held the staked identity when it last answered, if it was asked
    /// while no promotion ran and none began since.
    fn staked(&self, agent: &Agent) -> Option<bool> {
        self.read
            .filter(|(_, asked)| {
                asked % 2 == 0 && *asked == agent.promotions.load(Ordering::SeqCst)
            })
            .map(|(staked, _)| staked)
    }
}

/// While the lease is fresh: the confirmed last vote if the validator holds the staked identity
/// (`Some(None)` when either did not answer within `within`, one watchdog period, so that these
/// readings never delay the look at the lease's end); `None` when it does not hold it. Notes the
/// identity in `seen`.
async fn read_if_active(
    agent: &Agent,
    within: Duration,
    seen: &mut Identity,
) -> Option<Option<u64>> {
    let asked = seen.asking(agent);
    match timeout(within, agent.validator.identity()).await {
        Ok(Ok(id)) => {
            seen.answered(asked, id == agent.staked());
            if id != agent.staked() {
                return None;
            }
        }
        _ => return Some(None),
    }
    match timeout(within, agent.confirmed_last_vote()).await {
        Ok(Ok(vote)) => Some(vote),
        _ => Some(None),
    }
}

/// How often a demoted node looks whether its validator took the staked identity back.
const ROLE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A validator whose last change here was a demotion, found holding the staked identity again
/// (restarted with it on its command line after a failover, or set by hand): no `become_active`
/// authorised it and the other node may be voting with it, so it is demoted at once. Checked
/// under the switching lock: a promotion holds it until it has recorded itself. False when the
/// validator of a demoted node did not answer.
///
/// Agave answers nothing but its start-up progress until it has started, and then may vote within
/// a slot (3.1.12 restarted with X rebuilt a tower from the vote account, voted a slot the active
/// had voted, and panicked with "Submitting old vote"): a validator process new since the last
/// look (not the one demoted, which was started as the active) whose command line names the
/// staked keypair is killed before it gets there.
async fn demote_unauthorised(agent: &Agent, inspected: &mut Option<u32>) -> bool {
    let Some(Role::Passive {
        term: demoted,
        validator_pid,
    }) = agent.last_role().await
    else {
        *inspected = None;
        return true;
    };
    if agent.validator.manages_voters() {
        // The process that was demoted keeps the staked keypair on its command line (it was
        // started as the active); only one started since is looked at.
        if let Some(found) = agent.find_validator() {
            let new = Some(found.pid) != validator_pid && Some(found.pid) != *inspected;
            if new && !kill_if_started_staked(agent, found.pid, demoted).await {
                return false;
            }
            *inspected = Some(found.pid);
        }
    }
    let Ok(Ok(id)) = timeout(PROBE_DEADLINE, agent.validator.identity()).await else {
        return false;
    };
    if id != agent.staked() {
        return true;
    }
    let Ok(guard) = agent.switching.try_lock() else {
        return true;
    };
    if !still_demoted(agent, demoted).await {
        return true;
    }
    let reason = format!(
        "the validator holds the staked identity, but this node was demoted in term {demoted} \
         and no promotion gave it back since (restarted with the staked identity on its command \
         line, or set by hand?)"
    );
    error!(%reason, "demoting: only a become_active from the manager makes this node the active (to take the identity by hand, stop this agent first)");
    let term = agent.term().await;
    let response = agent
        .become_passive_locked(&guard, term, &format!("unauthorised: {reason}"))
        .await;
    let outcome = if response.ok {
        "demoted_unauthorised"
    } else {
        error!(
            error = response.error.as_deref().unwrap_or("unknown"),
            "demoting the unauthorised staked identity failed"
        );
        "demote_failed"
    };
    drop(guard);
    report(agent, reason, outcome, Vec::new());
    true
}

/// Kills validator `pid` when its command line names a keypair file holding the staked identity
/// (this node was demoted in term `demoted`). False when it could not be looked at now (a switch
/// holds the lock): look again at the next period.
async fn kill_if_started_staked(agent: &Agent, pid: u32, demoted: u64) -> bool {
    let Some(path) = crate::process::identity_arg(pid) else {
        return true;
    };
    // Only the public key is kept; the keypair is zeroized when dropped.
    let staked = Keypair::read_file(&path, Permissions::AllowInsecure)
        .is_ok_and(|k| k.pubkey() == agent.staked());
    if !staked {
        return true;
    }
    let Ok(guard) = agent.switching.try_lock() else {
        return false;
    };
    if !still_demoted(agent, demoted).await {
        return true;
    }
    let reason = format!(
        "validator pid {pid} was started with the staked identity ({}) after this node was \
         demoted in term {demoted}: killed before it could vote (point the identity a restart \
         uses at the unstaked key: passive_identity_symlink_command)",
        path.display()
    );
    error!(%reason, "killing an unauthorised start with the staked identity");
    let outcome = match agent.kill_validator().await {
        Ok(_) => "killed_unauthorised",
        Err(e) => {
            error!(error = %e, "could not kill the validator started with the staked identity");
            "fence_failed"
        }
    };
    drop(guard);
    report(agent, reason, outcome, Vec::new());
    true
}

/// Whether the last change here is still the demotion in `demoted` (checked under the switching
/// lock: no promotion came since).
async fn still_demoted(agent: &Agent, demoted: u64) -> bool {
    matches!(agent.last_role().await, Some(Role::Passive { term, .. }) if term == demoted)
}

fn report(agent: &Agent, reason: String, outcome: &str, unreachable: Vec<String>) {
    agent.metrics.fence(outcome);
    agent.last_fence.send_replace(Some(FenceReport {
        at_ms: unix_ms(),
        reason,
        outcome: outcome.into(),
        unreachable_targets: unreachable,
    }));
}

/// Stops this validator's votes — pause, or kill when it does not answer — then demotes it, all
/// under the switching lock (`guard`).
async fn fence(
    agent: &Agent,
    reason: &str,
    guard: tokio::sync::MutexGuard<'_, ()>,
) -> &'static str {
    if agent.cfg.dry_run {
        info!("[dry-run] would pause the votes and demote the validator");
        return "dry_run";
    }
    let paused = if agent.validator.manages_voters() {
        match timeout(PAUSE_DEADLINE, agent.validator.remove_voters()).await {
            Ok(Ok(_)) => {
                info!("votes paused: authorized voters removed");
                true
            }
            Ok(Err(e)) => {
                warn!(error = %e, "could not pause the votes");
                false
            }
            Err(_) => {
                warn!(
                    deadline_ms = PAUSE_DEADLINE.as_millis() as u64,
                    "the validator did not answer the pause"
                );
                false
            }
        }
    } else {
        false
    };
    let term = agent.term().await;
    let why = format!("self-fence: {reason}");
    if paused || !agent.validator.manages_voters() {
        let response = agent.become_passive_locked(&guard, term, &why).await;
        if response.ok {
            return "demoted";
        }
        error!(
            error = response.error.as_deref().unwrap_or("unknown"),
            "self-fencing demotion failed"
        );
        if paused {
            // No vote can be signed; the identity stays until someone demotes it.
            return "paused";
        }
    }
    match agent.kill_validator().await {
        Ok(pid) => {
            warn!(pid, "validator process killed: it can cast no vote");
            // The process is gone: this hands the final vote state over from disk.
            let response = agent.become_passive_locked(&guard, term, &why).await;
            if !response.ok {
                error!(
                    error = response.error.as_deref().unwrap_or("unknown"),
                    "handing over the killed validator's vote state failed"
                );
            }
            restart_as_passive(agent, &response).await;
            "killed"
        }
        Err(e) => {
            error!(error = %e, "fencing failed: the validator may still vote");
            "fence_failed"
        }
    }
}

/// Restarts the killed validator, but only once its identity points at the unstaked key (the
/// symlink hook ran): a restart with the staked identity on its command line would vote again.
async fn restart_as_passive(agent: &Agent, demotion: &crate::api::FailoverResponse) {
    let Some(restart) = agent.cfg.hooks.validator_restart_command.as_deref() else {
        return;
    };
    let symlinked = agent.cfg.hooks.passive_identity_symlink_command.is_some()
        && demotion
            .phases
            .iter()
            .any(|p| p.name == "hook" && p.detail.starts_with("ran "));
    if !symlinked {
        warn!("not restarting the killed validator: passive_identity_symlink_command did not run, and it would start with the staked identity");
        return;
    }
    match crate::commands::run_shell(restart, None, crate::switch::HOOK_TIMEOUT).await {
        Ok(_) => info!(command = restart, "validator restarted as passive"),
        Err(e) => error!(error = %e, "validator_restart_command failed"),
    }
}

/// Tries each target concurrently; returns the ones that did not accept a TCP connection in time.
pub async fn unreachable_targets(targets: &[HostPort], timeout: Duration) -> Vec<String> {
    let mut checks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let addr = target.to_string();
        checks.spawn(async move {
            let ok = matches!(
                tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await,
                Ok(Ok(_))
            );
            (i, (!ok).then_some(addr))
        });
    }
    let mut results: Vec<(usize, Option<String>)> = checks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().filter_map(|(_, a)| a).collect()
}
