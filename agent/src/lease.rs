//! The agent's lease from the manager, and the one number the manager waits for.
//!
//! The invariant (ARCHITECTURE.md, "The lease"): an active whose agent the manager last heard at
//! T (its clock, when the answer arrived) has stopped voting by T + `fence_after`, unless its votes
//! kept landing on the cluster — and then by `fence_after` after the last of them landed.
//!
//! Why it holds:
//! - Only a heartbeat the manager *acknowledged* renews the lease: the manager numbers each
//!   `/status` and names, in the next one, the last whose answer reached it in time. The lease
//!   then runs from the instant this agent admitted that heartbeat, which is before the manager
//!   received its answer. A heartbeat admitted and answered too late (a validator that stalls the
//!   status calls) renews nothing, however long the agent keeps admitting them.
//! - A `become_active` that this agent carried out starts a lease when it completes (at most
//!   [`PROMOTION_LEASE_WITHIN`] after its admission); the manager counts that node from the moment
//!   it received the answer or gave up on it, which is later.
//! - Once the lease has expired the watchdog looks every `period` for the whole silence, not once:
//!   it stays active only with evidence that its votes land (the vote account's last vote at
//!   *confirmed* commitment — blocks two thirds of the stake voted on — advanced within the lease
//!   length), that the outside is reachable, and that its validator answers. Without it, it stops
//!   the votes: first the authorized voters (one admin call, [`PAUSE_DEADLINE`]); if the validator
//!   does not answer that, it kills the validator process ([`KILL_DEADLINE`]). The full demotion
//!   follows, not within the promise.
//!
//! - The lease survives a restart of the agent: each renewal is written (as wall-clock time) to
//!   `<state_dir>/manager-lease.json`, and a restarted agent resumes it — an agent restarted in
//!   a silence used to grant itself a whole new lease. A lease found expired, unreadable or
//!   stamped in the future (the clock stepped back) leaves the restarted agent the last third of
//!   a lease to see its votes land (what a running agent has before its lease ends), so a restart
//!   delays a fence by at most `length / 3` — inside the manager's `fence_margin`.
//!
//! So `fence_after` = lease + one look + the evidence checks + the pause + the kill.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The validator gets this long to empty its authorized voters (it normally takes a millisecond;
/// no answer means it is hung).
pub const PAUSE_DEADLINE: Duration = Duration::from_millis(500);
/// After SIGKILL, how long until the process must be gone (or a zombie).
pub const KILL_DEADLINE: Duration = Duration::from_secs(1);
/// Each evidence check (identity read, vote account, connectivity) gets at most this long.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// Heartbeats remembered until acknowledged (the manager acks the latest, a second later).
const PENDING: usize = 64;
/// A promotion's lease starts when it completes, but never later than this after the command was
/// admitted: the manager gives up on a switch command after 60 s, and the listener allows 10 s for
/// a request to arrive, so the lease still starts before the manager counts the node from its
/// giving up.
pub const PROMOTION_LEASE_WITHIN: Duration = Duration::from_secs(45);

/// How often the watchdog looks.
pub fn period(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// The lease and the heartbeats that may renew it.
pub struct Lease {
    length: Duration,
    connectivity_timeout: Duration,
    /// When the current lease started (admission of the last acknowledged heartbeat, of a
    /// promotion, or this agent's start).
    granted: Mutex<Instant>,
    /// Heartbeats admitted and not yet acknowledged: (seq, admitted at).
    pending: Mutex<VecDeque<(u64, Instant)>>,
    /// Where each renewal is written, so that a restart resumes the lease (none in unit tests).
    file: Option<PathBuf>,
}

const FILE_NAME: &str = "manager-lease.json";

/// What `manager-lease.json` holds.
#[derive(Serialize, Deserialize)]
struct Persisted {
    renewed_unix_ms: u64,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lease {
    /// A lease of `length`, starting now: an agent that just started has heard nobody, and gives
    /// a manager one lease to find it before it asks for evidence.
    pub fn new(length: Duration, connectivity_timeout: Duration) -> Self {
        Self {
            length,
            connectivity_timeout,
            granted: Mutex::new(Instant::now()),
            pending: Mutex::new(VecDeque::new()),
            file: None,
        }
    }

    /// The lease this agent held before it (re)started, as recorded in `state_dir` (see the
    /// module docs); renewals are recorded there from now on.
    pub fn resume(length: Duration, connectivity_timeout: Duration, state_dir: &Path) -> Self {
        let file = state_dir.join(FILE_NAME);
        let renewed = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Persisted>(&bytes).ok())
            .map(|p| p.renewed_unix_ms);
        let now = Instant::now();
        let age = renewed.and_then(|ms| unix_ms(SystemTime::now()).checked_sub(ms));
        let last_third = now.checked_sub(length * 2 / 3).unwrap_or(now);
        let granted = match (renewed, age.map(Duration::from_millis)) {
            (_, Some(age)) => now.checked_sub(age).unwrap_or(now).max(last_third),
            // Never renewed on this state dir: there is no earlier lease to resume, and a
            // manager that never heard this agent assumes the worst case from its own start.
            (None, None) if !file.exists() => now,
            _ => last_third,
        };
        Self {
            length,
            connectivity_timeout,
            granted: Mutex::new(granted),
            pending: Mutex::new(VecDeque::new()),
            file: Some(file),
        }
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    /// The published number (see the module docs).
    pub fn fence_after(&self) -> Duration {
        self.length
            + period(self.length)
            + PROBE_DEADLINE.max(self.connectivity_timeout)
            + PAUSE_DEADLINE
            + KILL_DEADLINE
    }

    /// A heartbeat was admitted: remember when, and renew from the one it acknowledges.
    pub fn heartbeat(&self, seq: Option<u64>, acked: Option<u64>, admitted: Instant) {
        let mut pending = self.pending.lock().expect("lease");
        if let Some(acked) = acked {
            if let Some(&(_, at)) = pending.iter().find(|(s, _)| *s == acked) {
                self.renew(at);
            }
            pending.retain(|(s, _)| *s > acked);
        }
        if let Some(seq) = seq {
            pending.retain(|(s, _)| *s != seq);
            if pending.len() == PENDING {
                pending.pop_front();
            }
            pending.push_back((seq, admitted));
        }
    }

    /// This agent carried out a promotion admitted at `admitted`, completed now: the new active
    /// gets a lease from its completion (a promotion may wait seconds for a root; the manager
    /// sends no heartbeat meanwhile), capped at [`PROMOTION_LEASE_WITHIN`] after its admission.
    pub fn promoted(&self, admitted: Instant) {
        self.renew(Instant::now().min(admitted + PROMOTION_LEASE_WITHIN));
    }

    fn renew(&self, from: Instant) {
        {
            let mut granted = self.granted.lock().expect("lease");
            if from <= *granted {
                return;
            }
            *granted = from;
        }
        if let Some(file) = &self.file {
            let at = SystemTime::now() - from.elapsed();
            if let Err(e) = write(file, unix_ms(at)) {
                // Only a restart in a silence would need it; then it is treated as expired.
                warn!(file = %file.display(), error = %e, "cannot record the lease renewal");
            }
        }
    }

    /// How long ago the lease expired; `None` while it holds.
    pub fn expired_for(&self) -> Option<Duration> {
        let since = self.granted.lock().expect("lease").elapsed();
        since.checked_sub(self.length).filter(|d| !d.is_zero())
    }

    /// How long since the lease was last renewed.
    pub fn since_renewal(&self) -> Duration {
        self.granted.lock().expect("lease").elapsed()
    }
}

/// Writes the renewal atomically (a temp file renamed over the old one). Not fsynced: the file
/// matters across a restart of the agent process, and a host that lost power restarts its
/// validator too.
fn write(file: &Path, renewed_unix_ms: u64) -> std::io::Result<()> {
    let tmp = file.with_extension("json.new");
    let bytes = serde_json::to_vec(&Persisted { renewed_unix_ms }).expect("serializes");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease_in(dir: &Path) -> Lease {
        Lease::resume(Duration::from_secs(3), Duration::from_secs(1), dir)
    }

    #[test]
    fn a_restarted_agent_resumes_its_lease_instead_of_granting_itself_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let lease = lease_in(dir.path());
        // A heartbeat admitted now and acknowledged: the renewal is on disk.
        let admitted = Instant::now() + Duration::from_millis(1);
        lease.heartbeat(Some(1), None, admitted);
        lease.heartbeat(None, Some(1), admitted);
        let file = dir.path().join(FILE_NAME);
        let renewed: Persisted = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let now = unix_ms(SystemTime::now());
        assert!(now.abs_diff(renewed.renewed_unix_ms) < 100);
        // Renewed 2 s before a restart: the restarted agent has 1 s left, not a new 3 s.
        write(&file, now - 2_000).unwrap();
        let since = lease_in(dir.path()).since_renewal();
        assert!(
            since >= Duration::from_millis(1_950) && since < Duration::from_millis(2_200),
            "resumed from the renewal, not from the restart: {since:?}"
        );
    }

    #[test]
    fn a_lease_expired_unreadable_or_from_the_future_leaves_only_the_last_third() {
        let dir = tempfile::tempdir().unwrap();
        let last_third = |lease: &Lease| {
            let since = lease.since_renewal();
            since >= Duration::from_secs(2) && since < Duration::from_millis(2_200)
        };
        let fresh = lease_in(dir.path()).since_renewal();
        assert!(
            fresh < Duration::from_millis(200),
            "never renewed here: {fresh:?}"
        );
        let file = dir.path().join(FILE_NAME);
        let now = unix_ms(SystemTime::now());
        write(&file, now - 60_000).unwrap();
        let expired = lease_in(dir.path());
        assert!(last_third(&expired), "expired a minute ago");
        write(&file, now + 60_000).unwrap();
        assert!(last_third(&lease_in(dir.path())), "clock stepped back");
        std::fs::write(&file, b"{garbage").unwrap();
        assert!(last_third(&lease_in(dir.path())), "unreadable");
    }

    #[test]
    fn only_an_acknowledged_heartbeat_renews_and_from_its_admission() {
        let lease = Lease::new(Duration::from_secs(3), Duration::from_secs(1));
        let start = *lease.granted.lock().unwrap();
        let t1 = start + Duration::from_secs(1);
        let t2 = start + Duration::from_secs(2);
        // Admitted, not acknowledged: nothing renewed, however many.
        lease.heartbeat(Some(10), None, t1);
        lease.heartbeat(Some(11), Some(3), t2);
        assert_eq!(*lease.granted.lock().unwrap(), start);
        // 10 acknowledged: the lease runs from 10's admission, not from the ack's.
        lease.heartbeat(Some(12), Some(10), start + Duration::from_secs(5));
        assert_eq!(*lease.granted.lock().unwrap(), t1);
        // An ack never moves the lease back.
        lease.heartbeat(None, Some(10), start + Duration::from_secs(6));
        assert_eq!(*lease.granted.lock().unwrap(), t1);
        lease.heartbeat(None, Some(11), start + Duration::from_secs(6));
        assert_eq!(*lease.granted.lock().unwrap(), t2);
    }

    #[test]
    fn a_promotion_renews_from_its_completion_but_never_past_the_cap() {
        let lease = Lease::new(Duration::from_secs(3), Duration::from_secs(1));
        let admitted = Instant::now() - Duration::from_secs(4);
        lease.promoted(admitted);
        assert!(
            lease.expired_for().is_none(),
            "a slow promotion still gets a lease"
        );
        let long_ago = Instant::now() - Duration::from_secs(120);
        let lease = Lease::new(Duration::from_secs(3), Duration::from_secs(1));
        *lease.granted.lock().unwrap() = long_ago;
        lease.promoted(long_ago);
        assert_eq!(
            *lease.granted.lock().unwrap(),
            long_ago + PROMOTION_LEASE_WITHIN
        );
    }

    #[test]
    fn a_forgotten_or_unknown_seq_renews_nothing() {
        let lease = Lease::new(Duration::from_secs(3), Duration::from_secs(1));
        let start = *lease.granted.lock().unwrap();
        for seq in 0..(PENDING as u64 + 5) {
            lease.heartbeat(Some(seq), None, start + Duration::from_millis(seq + 1));
        }
        // The oldest fell out of the window; an ack for it is worthless.
        lease.heartbeat(None, Some(0), start + Duration::from_secs(9));
        assert_eq!(*lease.granted.lock().unwrap(), start);
        lease.heartbeat(None, Some(999), start + Duration::from_secs(9));
        assert_eq!(*lease.granted.lock().unwrap(), start);
    }

    #[test]
    fn fence_after_is_the_lease_plus_every_deadline_of_the_fence() {
        let lease = Lease::new(Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(
            lease.fence_after(),
            Duration::from_millis(3_000 + 300 + 2_000 + 500 + 1_000)
        );
    }
}
