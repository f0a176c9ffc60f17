//! The drills' independent witness: both validators' identity through their admin RPC every
//! 25 ms, X's last vote from the network node every 100 ms, and X's vote-state file (tower or
//! vote history) on both ledgers every 25 ms. Nothing here goes through the agents or the manager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failover_identity::vote_history::VoteHistory;
use failover_identity::{AdminRpcClient, Timeouts, VoteState, VoteStateFile};

use super::RealCluster;

/// A tower's votes as (slot, locked until).
pub(super) type Votes = Vec<(u64, u64)>;

/// Every vote of X one node's vote history files showed during a drill. Votor prunes its history
/// below the root, so the drill keeps the union of what it saw.
#[derive(Default, Debug)]
pub(super) struct CastVotes {
    /// Slot → the blocks notarized for it.
    notar: BTreeMap<u64, BTreeSet<[u8; 32]>>,
    /// Slots with a first-round skip vote (not votor's `skipped`, which holds fallback votes too).
    skip: BTreeSet<u64>,
    /// Slots with any vote.
    voted: BTreeSet<u64>,
}

impl CastVotes {
    fn add(&mut self, history: &VoteHistory) {
        for (slot, block) in &history.voted_notar {
            self.notar.entry(*slot).or_default().insert(*block);
        }
        self.skip.extend(history.first_round_skips());
        self.voted.extend(history.voted.iter().copied());
        self.voted
            .extend(history.voted_notar.iter().map(|(s, _)| *s));
        self.voted.extend(history.skipped.iter().copied());
    }

    /// The slots at which X's votes on the two nodes disagree: notarize votes for two blocks, or a
    /// notarize vote on one and a skip vote on the other — what Alpenglow slashes.
    fn conflicts(nodes: &[CastVotes; 2]) -> Vec<String> {
        let mut found = Vec::new();
        let slots: BTreeSet<u64> = nodes.iter().flat_map(|n| n.notar.keys().copied()).collect();
        for slot in slots {
            let blocks: BTreeSet<&[u8; 32]> = nodes
                .iter()
                .filter_map(|n| n.notar.get(&slot))
                .flatten()
                .collect();
            if blocks.len() > 1 {
                found.push(format!("X notarized two blocks of slot {slot}"));
            }
            for (i, n) in nodes.iter().enumerate() {
                let other = &nodes[1 - i];
                if n.notar.contains_key(&slot) && other.skip.contains(&slot) {
                    found.push(format!(
                        "X notarized slot {slot} on node {} and skipped it on node {}",
                        i + 1,
                        2 - i
                    ));
                }
            }
        }
        found
    }
}

/// What the sampler saw.
#[derive(Default, Debug)]
pub(super) struct Samples {
    /// (when, node, holds X)
    pub identities: Vec<(Instant, usize, bool)>,
    pub both_held: u32,
    /// (when, lastVote of X's vote account)
    pub votes: Vec<(Instant, u64)>,
    /// (when, node, the newest slot X's vote state there has voted on)
    pub towers: Vec<(Instant, usize, u64)>,
    pub tower_backwards: Vec<String>,
    /// (when, node, the tower's votes), recorded when the tower changed (TowerBFT).
    pub lockouts: Vec<(Instant, usize, Votes)>,
    /// Per node, every vote its vote history files showed (Alpenglow).
    pub cast: [CastVotes; 2],
}

impl Samples {
    /// The first sampled instant after `after` at which `node` held X.
    pub fn first_held_by(&self, node: usize, after: Instant) -> Option<Instant> {
        self.identities
            .iter()
            .find(|(t, i, held)| *t >= after && *i == node && *held)
            .map(|(t, _, _)| *t)
    }

    /// Vote-state continuity across a switch from `from` to `to` that started at `started`: the
    /// tower or vote history the new active votes from is at least the old active's final one,
    /// and the old active's never changes once the new active holds X (a straggler vote after the
    /// copy would), until it holds X again.
    ///
    /// With `old_reachable` false (the old active was cut off, so its final vote state could not
    /// be fetched) the floor is the newest of X's votes that landed instead: votes an isolated
    /// node cast locally never reached the cluster.
    pub fn tower_continuity(
        &self,
        from: usize,
        to: usize,
        started: Instant,
        old_reachable: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(took_over) = self.first_held_by(to, started) else {
            return problems;
        };
        let old_final = self
            .towers
            .iter()
            .filter(|(t, i, _)| *i == from && *t <= took_over)
            .map(|(_, _, v)| *v)
            .max();
        // Until the old active takes X back (the manager gave it back after the new one died):
        // from then on it votes as X again.
        let gave_up = self
            .identities
            .iter()
            .find(|(t, i, held)| *t >= took_over && *i == from && !*held)
            .map(|(t, _, _)| *t);
        let back = gave_up.and_then(|t| self.first_held_by(from, t));
        let old_after = self
            .towers
            .iter()
            .filter(|(t, i, _)| *i == from && *t > took_over && back.is_none_or(|b| *t < b))
            .map(|(_, _, v)| *v)
            .max();
        if let (Some(before), Some(after)) = (old_final, old_after) {
            if after > before {
                problems.push(format!(
                    "the old active's X vote state moved from newest vote {before} to {after} after the new active took X"
                ));
            }
        }
        let new_first = self
            .towers
            .iter()
            .find(|(t, i, _)| *i == to && *t >= took_over)
            .map(|(_, _, v)| *v);
        let floor = if old_reachable {
            old_final
        } else {
            self.last_vote_at(took_over)
        };
        if let (Some(old), Some(new)) = (floor, new_first) {
            if new < old {
                problems.push(format!(
                    "the new active's first X vote state has newest vote {new}, older than {} {old}",
                    if old_reachable {
                        "the old active's final"
                    } else {
                        "X's last vote that landed,"
                    }
                ));
            }
        }
        problems
    }

    /// Under Alpenglow, a vote history installed older than the old active's final one (a host
    /// that died before its agent shipped its last vote) is safe when the new active's first
    /// vote of its own is above that final vote: votor casts none at or below its root, and the
    /// promotion waits for the root to pass every slot the old active may have voted on. Returns
    /// (installed, old final, first own vote) when that is what the samples show.
    pub fn older_history_passed(
        &self,
        from: usize,
        to: usize,
        started: Instant,
    ) -> Option<(u64, u64, u64)> {
        let took_over = self.first_held_by(to, started)?;
        let old_final = self
            .towers
            .iter()
            .filter(|(t, i, _)| *i == from && *t <= took_over)
            .map(|(_, _, v)| *v)
            .max()?;
        let mut after = self
            .towers
            .iter()
            .filter(|(t, i, _)| *i == to && *t >= took_over)
            .map(|(_, _, v)| *v);
        let installed = after.next()?;
        let own = after.find(|v| *v != installed)?;
        (installed < old_final && own > old_final).then_some((installed, old_final, own))
    }

    /// For a switch away from a node that could not be asked for its final tower (isolated): the
    /// votes of its final tower that the new active's tower lacks (cast while it was cut off,
    /// possibly on a fork of its own) must have expired their lockout before the new active's
    /// first vote; otherwise X broke its own lockout.
    pub fn lockouts_respected(&self, from: usize, to: usize, started: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(took_over) = self.first_held_by(to, started) else {
            return problems;
        };
        let Some(old_final) = self
            .lockouts
            .iter()
            .rfind(|(t, i, _)| *i == from && *t <= took_over)
            .map(|(_, _, v)| v.clone())
        else {
            return problems;
        };
        let Some(installed) = self
            .towers
            .iter()
            .find(|(t, i, _)| *i == to && *t >= took_over)
            .map(|(_, _, v)| *v)
        else {
            return problems;
        };
        let before = self.last_vote_at(took_over).unwrap_or(0);
        let Some(first_new) = self
            .votes
            .iter()
            .find(|(t, v)| *t >= took_over && *v > before)
            .map(|(_, v)| *v)
        else {
            return problems;
        };
        for (slot, until) in old_final.into_iter().filter(|(slot, _)| *slot > installed) {
            if first_new <= until {
                problems.push(format!(
                    "lockout broken: the cut-off node voted on slot {slot} (locked until {until}), which \
                     the new active's tower (last vote {installed}) lacks, and X voted on {first_new}"
                ));
            }
        }
        problems
    }

    /// Under Alpenglow: the slots at which X's votes on the two nodes disagree.
    pub fn conflicts(&self) -> Vec<String> {
        CastVotes::conflicts(&self.cast)
    }

    /// Under Alpenglow: the longest run of slots after `since` that no vote history of X on either
    /// node voted on (notarize or skip), up to the newest vote seen. A vote's landing on chain
    /// trails by the reward-certificate delay, so this counts votes as cast.
    pub fn history_gap(&self, since: Instant) -> u64 {
        let Some(from) = self
            .towers
            .iter()
            .filter(|(t, _, _)| *t <= since)
            .map(|(_, _, v)| *v)
            .max()
        else {
            return 0;
        };
        let voted: BTreeSet<u64> = self
            .cast
            .iter()
            .flat_map(|c| c.voted.range(from..).copied())
            .collect();
        voted
            .iter()
            .zip(voted.iter().skip(1))
            .map(|(a, b)| b - a - 1)
            .max()
            .unwrap_or(0)
    }

    /// The first sampled instant after `after` at which `node`'s vote state of X had voted past
    /// `slot`: the new active voting again.
    pub fn voted_past(&self, node: usize, slot: u64, after: Instant) -> Option<Instant> {
        self.towers
            .iter()
            .find(|(t, i, v)| *t >= after && *i == node && *v > slot)
            .map(|(t, _, _)| *t)
    }

    /// The newest slot `node`'s vote state of X had voted on at or before `at`.
    pub fn latest_on(&self, node: usize, at: Instant) -> Option<u64> {
        self.towers
            .iter()
            .filter(|(t, i, _)| *t <= at && *i == node)
            .map(|(_, _, v)| *v)
            .max()
    }

    /// The largest number of slots X's votes skipped after `since` (0 when every slot got one).
    pub fn vote_gap(&self, since: Instant) -> u64 {
        self.votes
            .windows(2)
            .filter(|w| w[1].0 >= since)
            .map(|w| w[1].1.saturating_sub(w[0].1).saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// X's last vote as sampled at or before `at`.
    pub fn last_vote_at(&self, at: Instant) -> Option<u64> {
        self.votes
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .map(|(_, v)| *v)
    }

    /// Whether `node` held X at any sample after `after`.
    pub fn held_after(&self, node: usize, after: Instant) -> bool {
        self.first_held_by(node, after).is_some()
    }
}

/// Samples both validators and the vote account until stopped.
pub(super) struct Sampler {
    samples: Arc<Mutex<Samples>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(cluster: &RealCluster) -> Self {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let mut tasks = Vec::new();
        // Identities, both nodes in the same tick, every 25 ms.
        {
            let samples = samples.clone();
            let x = cluster.x;
            let clients = [
                cluster.a.admin_socket.clone(),
                cluster.b.admin_socket.clone(),
            ]
            .map(|s| {
                AdminRpcClient::new(
                    s,
                    Timeouts {
                        connect: Duration::from_millis(200),
                        call: Duration::from_millis(500),
                    },
                )
            });
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                loop {
                    tick.tick().await;
                    let (a, b) = tokio::join!(clients[0].identity(), clients[1].identity());
                    let now = Instant::now();
                    let held = [
                        a.map(|i| i == x).unwrap_or(false),
                        b.map(|i| i == x).unwrap_or(false),
                    ];
                    let mut s = samples.lock().expect("samples");
                    for (i, h) in held.iter().enumerate() {
                        s.identities.push((now, i, *h));
                    }
                    if held[0] && held[1] {
                        s.both_held += 1;
                    }
                }
            }));
        }
        // X's last vote from the network node, every 100 ms.
        {
            let samples = samples.clone();
            let rpc = cluster.cluster_rpc.clone();
            let vote = cluster.vote_account.to_string();
            tasks.push(tokio::spawn(async move {
                let client = rpc_lite::Client::new(&rpc);
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    if let Some(last) = client.last_vote(&vote).await {
                        samples
                            .lock()
                            .expect("samples")
                            .votes
                            .push((Instant::now(), last));
                    }
                }
            }));
        }
        // X's vote state on both ledgers, every 25 ms: its newest vote must never go backwards.
        {
            let samples = samples.clone();
            let kind = cluster.kind;
            let x = cluster.x;
            let paths = [&cluster.a.ledger, &cluster.b.ledger].map(|l| l.join(kind.file_name(&x)));
            tasks.push(tokio::spawn(async move {
                let mut newest = 0u64;
                // Each file's newest vote when last read: a file left unchanged on a dead host's
                // disk (nobody demoted it) is not a vote state going backwards; one written or
                // installed older than a vote already seen is.
                let mut previous: [Option<u64>; 2] = [None, None];
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                // The files found on the first look were there before this run: a baseline.
                let mut first_look = true;
                loop {
                    tick.tick().await;
                    let baseline = std::mem::take(&mut first_look);
                    for (i, path) in paths.iter().enumerate() {
                        let Ok(file) = VoteStateFile::read(kind, path) else {
                            continue;
                        };
                        if file.verify(&x).is_err() {
                            continue;
                        }
                        let Some(last) = file.latest_vote() else {
                            continue;
                        };
                        let mut s = samples.lock().expect("samples");
                        match &file.state {
                            VoteState::Tower(tower) => {
                                let votes: Votes = tower
                                    .vote_state
                                    .votes
                                    .iter()
                                    .map(|l| {
                                        let lockout = 1u64
                                            .checked_shl(l.confirmation_count)
                                            .unwrap_or(u64::MAX);
                                        (l.slot, l.slot.saturating_add(lockout))
                                    })
                                    .collect();
                                if s.lockouts
                                    .iter()
                                    .rev()
                                    .find(|(_, n, _)| *n == i)
                                    .is_none_or(|(_, _, v)| *v != votes)
                                {
                                    s.lockouts.push((Instant::now(), i, votes));
                                }
                            }
                            VoteState::VoteHistory(history) => s.cast[i].add(history),
                        }
                        let rewritten = previous[i].replace(last) != Some(last) && !baseline;
                        if last < newest && rewritten {
                            let msg = format!(
                                "node {} {} newest vote {last} after {newest} was seen",
                                i + 1,
                                kind.label()
                            );
                            if !s.tower_backwards.contains(&msg) {
                                s.tower_backwards.push(msg);
                            }
                        }
                        newest = newest.max(last);
                        s.towers.push((Instant::now(), i, last));
                    }
                }
            }));
        }
        Self { samples, tasks }
    }

    /// What `f` reads from the samples so far; sampling goes on.
    pub fn peek<R>(&self, f: impl FnOnce(&Samples) -> R) -> R {
        f(&self.samples.lock().expect("samples"))
    }

    pub fn stop(self) -> Samples {
        for t in &self.tasks {
            t.abort();
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// The few JSON-RPC calls the drills make, over a plain HTTP/1.1 connection: this crate links
/// no HTTP client.
pub(super) mod rpc_lite {
    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        addr: String,
    }

    impl Client {
        pub fn new(url: &str) -> Self {
            Self {
                addr: url
                    .split("://")
                    .nth(1)
                    .unwrap_or(url)
                    .trim_end_matches('/')
                    .to_string(),
            }
        }

        /// The `result` of one call, or `None` on any failure or after 2 s (a stalled node must
        /// not stall a sampler: its gaps would read as no gap).
        pub async fn call(&self, method: &str, params: Value) -> Option<Value> {
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.call_once(method, params),
            )
            .await
            .ok()?
        }

        async fn call_once(&self, method: &str, params: Value) -> Option<Value> {
            let body =
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
            let mut stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
            let request = format!(
                "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            let (_, body) = response.split_once("\r\n\r\n")?;
            let mut v: Value = serde_json::from_str(body.trim()).ok()?;
            Some(v.get_mut("result")?.take())
        }

        /// X's `lastVote` at processed commitment.
        pub async fn last_vote(&self, vote: &str) -> Option<u64> {
            let result = self
                .call(
                    "getVoteAccounts",
                    json!([{"votePubkey": vote, "commitment": "processed", "keepUnstakedDelinquents": true}]),
                )
                .await?;
            result["current"]
                .as_array()?
                .iter()
                .chain(result["delinquent"].as_array()?.iter())
                .find(|a| a["votePubkey"] == vote)?["lastVote"]
                .as_u64()
        }

        /// The node's processed slot.
        pub async fn slot(&self) -> Option<u64> {
            self.call("getSlot", json!([{"commitment": "processed"}]))
                .await?
                .as_u64()
        }

        /// Whether the node's `getHealth` answers "ok" (an unhealthy node answers an error).
        pub async fn healthy(&self) -> bool {
            self.call("getHealth", json!([]))
                .await
                .is_some_and(|h| h == "ok")
        }

        /// The node's highest root (finalized slot).
        pub async fn root(&self) -> Option<u64> {
            self.call("getSlot", json!([{"commitment": "finalized"}]))
                .await?
                .as_u64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use failover_identity::vote_history::VoteHistoryFile;

    /// The old active's final vote history from a real Agave 4.2.2 drill: notarize votes for 92
    /// and 93, then skip-fallback votes for both. The same history on both nodes (the handover)
    /// is no double vote — the checker once reported it as one.
    #[test]
    fn a_handed_over_history_with_fallback_votes_is_no_conflict_but_a_first_round_skip_is() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../fixtures/agave-4.2.2/vote_history-4DLFgvCexG2nuSMcEkELk8GtxkEfTV5VWw5VkpeTqCNi.bin",
        );
        let file = VoteHistoryFile::parse(&std::fs::read(path).unwrap()).unwrap();
        let mut nodes = [CastVotes::default(), CastVotes::default()];
        nodes[0].add(&file.history);
        nodes[1].add(&file.history);
        assert_eq!(CastVotes::conflicts(&nodes), Vec::<String>::new());

        // The new active skipping slot 92 in the first round would be one.
        let mut skipper = file.history.clone();
        skipper.voted_notar.retain(|(slot, _)| *slot != 92);
        nodes[1].add(&skipper);
        assert_eq!(
            CastVotes::conflicts(&nodes),
            ["X notarized slot 92 on node 1 and skipped it on node 2"]
        );
    }

    /// A host down under Alpenglow on the relay bed (2026-12-07): the dead node's final vote 1510
    /// never reached the manager, so node 1 got a history with newest vote 1509. Its next vote
    /// state (1567) is past 1510: excused. Had it been at 1510 or below, it is not.
    #[test]
    fn an_older_history_is_excused_only_when_the_new_actives_own_votes_pass_the_old_final() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let identities = [(0, true, false), (100, false, false), (200, false, true)]
            .into_iter()
            .chain([(300, false, true)])
            .flat_map(|(ms, a, b)| [(at(ms), 0, a), (at(ms), 1, b)])
            .collect::<Vec<_>>();
        let samples = |own| Samples {
            identities: identities.clone(),
            towers: vec![(at(0), 0, 1510), (at(200), 1, 1509), (at(300), 1, own)],
            ..Samples::default()
        };
        assert_eq!(
            samples(1567).older_history_passed(0, 1, t0),
            Some((1509, 1510, 1567))
        );
        assert_eq!(samples(1510).older_history_passed(0, 1, t0), None);
    }

    /// A switch from node 0 to node 1, then node 1 dies and X goes back to node 0 (CI on Agave
    /// 4.2.2): node 0 voting as X again is no straggler; a vote of node 0 before it has X back is.
    #[test]
    fn the_old_active_voting_again_after_x_came_back_is_no_straggler() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut samples = Samples {
            // Every 100 ms, both nodes.
            identities: [(0, true, false), (100, false, false), (200, false, true)]
                .into_iter()
                .chain([(300, false, false), (400, true, false), (500, true, false)])
                .flat_map(|(ms, a, b)| [(at(ms), 0, a), (at(ms), 1, b)])
                .collect(),
            towers: vec![(at(0), 0, 523), (at(200), 1, 523), (at(500), 0, 571)],
            ..Samples::default()
        };
        assert_eq!(
            samples.tower_continuity(0, 1, t0, true),
            Vec::<String>::new()
        );
        samples.towers.push((at(250), 0, 524));
        assert_eq!(
            samples.tower_continuity(0, 1, t0, true),
            ["the old active's X vote state moved from newest vote 523 to 524 after the new active took X"]
        );
    }
}
