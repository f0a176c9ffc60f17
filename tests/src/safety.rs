//! The safety recorder: what every failover test asserts never happened.
//!
//! Three properties (DESIGN.md §3), each recorded as it is violated rather than sampled, so no
//! instant is missed:
//! - the staked identity held by two live nodes at once;
//! - the vote account receiving votes from two nodes for one slot, or a vote cast with an identity
//!   another node holds at that moment;
//! - a node loading a tower older than the newest vote already cast with that identity.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use failover_identity::Pubkey;
use serde::Serialize;

/// One recorded change of a node's identity.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityChange {
    /// Milliseconds since the cluster started.
    pub at_ms: u64,
    pub node: usize,
    /// `None` when the node stopped holding any identity (crash).
    pub identity: Option<String>,
}

/// A broken safety property, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    TwoHolders {
        at_ms: u64,
        identity: String,
        nodes: Vec<usize>,
    },
    DoubleVote {
        slot: u64,
        nodes: Vec<usize>,
    },
    VoteWhileHeldElsewhere {
        slot: u64,
        voter: usize,
        holder: usize,
    },
    TowerBackwards {
        node: usize,
        identity: String,
        loaded_last_vote: Option<u64>,
        newest_vote: u64,
    },
}

/// What a test asserts at the end.
#[derive(Clone, Debug, Serialize)]
pub struct SafetyReport {
    pub staked_held_twice: bool,
    pub double_votes: bool,
    pub tower_went_backwards: bool,
    pub violations: Vec<Violation>,
    pub identity_changes: Vec<IdentityChange>,
    pub votes: u64,
}

impl SafetyReport {
    /// Panics with every violation listed unless all three properties held.
    pub fn assert_safe(&self) {
        assert!(
            self.violations.is_empty(),
            "safety violated: {:#?}",
            self.violations
        );
    }
}

pub struct SafetyRecorder {
    started: Instant,
    staked: Pubkey,
    changes: Vec<IdentityChange>,
    violations: Vec<Violation>,
    /// The voter of each slot of the staked vote account (bounded: old slots are dropped).
    voters_by_slot: BTreeMap<u64, usize>,
    newest_vote: HashMap<Pubkey, u64>,
    current: Vec<Option<Pubkey>>,
    votes: u64,
}

/// Slots of voter history kept for the double-vote check.
const VOTE_HISTORY: u64 = 10_000;

impl SafetyRecorder {
    pub fn new(staked: Pubkey, nodes: usize) -> Self {
        Self {
            started: Instant::now(),
            staked,
            changes: Vec::new(),
            violations: Vec::new(),
            voters_by_slot: BTreeMap::new(),
            newest_vote: HashMap::new(),
            current: vec![None; nodes],
            votes: 0,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Node `node` now holds `identity`; `holders` is every node's identity after the change.
    pub fn identity_changed(&mut self, node: usize, identity: Pubkey, holders: &[Option<Pubkey>]) {
        let at_ms = self.now_ms();
        self.changes.push(IdentityChange {
            at_ms,
            node,
            identity: Some(identity.to_string()),
        });
        self.current = holders.to_vec();
        let staked_nodes: Vec<usize> = holders
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == Some(self.staked))
            .map(|(i, _)| i)
            .collect();
        if staked_nodes.len() > 1 {
            self.violations.push(Violation::TwoHolders {
                at_ms,
                identity: self.staked.to_string(),
                nodes: staked_nodes,
            });
        }
    }

    /// Node `node` stopped holding any identity (it crashed).
    pub fn identity_lost(&mut self, node: usize, holders: &[Option<Pubkey>]) {
        self.changes.push(IdentityChange {
            at_ms: self.now_ms(),
            node,
            identity: None,
        });
        self.current = holders.to_vec();
    }

    /// Node `voter` voted on `slot` with `identity`.
    pub fn vote_cast(&mut self, voter: usize, identity: Pubkey, slot: u64) {
        self.votes += 1;
        if identity != self.staked {
            return;
        }
        if let Some(holder) = self
            .current
            .iter()
            .enumerate()
            .find(|(i, h)| *i != voter && **h == Some(identity))
            .map(|(i, _)| i)
        {
            self.violations.push(Violation::VoteWhileHeldElsewhere {
                slot,
                voter,
                holder,
            });
        }
        match self.voters_by_slot.get(&slot) {
            Some(&other) if other != voter => self.violations.push(Violation::DoubleVote {
                slot,
                nodes: vec![other, voter],
            }),
            _ => {
                self.voters_by_slot.insert(slot, voter);
            }
        }
        while self
            .voters_by_slot
            .first_key_value()
            .is_some_and(|(s, _)| *s + VOTE_HISTORY < slot)
        {
            self.voters_by_slot.pop_first();
        }
    }

    /// A tower for `identity` with last vote `slot` was written by node `node`.
    pub fn tower_written(&mut self, _node: usize, identity: Pubkey, slot: u64) {
        let newest = self.newest_vote.entry(identity).or_insert(slot);
        *newest = (*newest).max(slot);
    }

    /// Node `node` loaded a tower for `identity` whose last vote is `last_vote`.
    pub fn tower_loaded(&mut self, node: usize, identity: Pubkey, last_vote: Option<u64>) {
        if let Some(&newest) = self.newest_vote.get(&identity) {
            if last_vote.is_none_or(|l| l < newest) {
                self.violations.push(Violation::TowerBackwards {
                    node,
                    identity: identity.to_string(),
                    loaded_last_vote: last_vote,
                    newest_vote: newest,
                });
            }
        }
    }

    /// Node `node` loaded a vote history for `identity` (Alpenglow) while its root was `root`:
    /// older than the newest vote is a violation unless the root has passed that vote.
    pub fn history_loaded(
        &mut self,
        node: usize,
        identity: Pubkey,
        last_vote: Option<u64>,
        root: u64,
    ) {
        if self.newest_vote.get(&identity).is_some_and(|&n| root >= n) {
            return;
        }
        self.tower_loaded(node, identity, last_vote);
    }

    /// The first slot after `after` that node `node` voted on with the staked identity.
    pub fn first_vote_after(&self, node: usize, after: u64) -> Option<u64> {
        self.voters_by_slot
            .range(after + 1..)
            .find(|(_, voter)| **voter == node)
            .map(|(slot, _)| *slot)
    }

    /// The newest slot any node voted on with the staked identity (cast, not yet necessarily on
    /// chain: under Alpenglow the vote account learns it a few slots later).
    pub fn last_vote_cast(&self) -> Option<u64> {
        self.voters_by_slot.last_key_value().map(|(slot, _)| *slot)
    }

    pub fn report(&self) -> SafetyReport {
        let has = |f: fn(&Violation) -> bool| self.violations.iter().any(f);
        SafetyReport {
            staked_held_twice: has(|v| matches!(v, Violation::TwoHolders { .. })),
            double_votes: has(|v| {
                matches!(
                    v,
                    Violation::DoubleVote { .. } | Violation::VoteWhileHeldElsewhere { .. }
                )
            }),
            tower_went_backwards: has(|v| matches!(v, Violation::TowerBackwards { .. })),
            violations: self.violations.clone(),
            identity_changes: self.changes.clone(),
            votes: self.votes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Pubkey, Pubkey, Pubkey) {
        (
            Pubkey::new_unique(),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        )
    }

    #[test]
    fn a_clean_handover_records_nothing() {
        let (x, a, b) = keys();
        let mut r = SafetyRecorder::new(x, 2);
        r.identity_changed(0, x, &[Some(x), Some(b)]);
        r.vote_cast(0, x, 10);
        r.tower_written(0, x, 10);
        r.identity_changed(0, a, &[Some(a), Some(b)]);
        r.tower_loaded(1, x, Some(10));
        r.identity_changed(1, x, &[Some(a), Some(x)]);
        r.vote_cast(1, x, 11);
        let report = r.report();
        report.assert_safe();
        assert_eq!(report.identity_changes.len(), 3);
    }

    #[test]
    fn each_property_is_flagged() {
        let (x, _, b) = keys();
        let mut r = SafetyRecorder::new(x, 2);
        r.identity_changed(0, x, &[Some(x), Some(b)]);
        r.vote_cast(0, x, 10);
        r.tower_written(0, x, 12);
        r.identity_changed(1, x, &[Some(x), Some(x)]);
        r.vote_cast(1, x, 10);
        r.tower_loaded(1, x, Some(11));
        let report = r.report();
        assert!(report.staked_held_twice);
        assert!(report.double_votes);
        assert!(report.tower_went_backwards);
    }
}
