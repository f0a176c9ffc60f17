//! The simulated cluster's state and rules, advanced one slot at a time.
//!
//! What it models, from Agave 3.1's replay and admin code:
//! - A node votes for its current slot only when its identity is the vote account's node pubkey and
//!   the vote account's authorized voter is among the node's authorized-voter keypairs
//!   (`replay_stage.rs` `generate_vote_tx`); otherwise it is a hot spare and never rewrites a tower.
//! - Each vote pushes a lockout and rewrites `tower-1_9-<identity>.bin` in Agave's signed format,
//!   atomically.
//! - `setIdentity` with `require_tower` refuses unless the new identity's tower loads and verifies;
//!   without it, a missing tower means a fresh tower from the on-chain vote state, and an invalid one
//!   makes the validator exit.
//! - After `setIdentity` away from a voting identity, the replay loop may still cast one more vote
//!   with the old identity (the race DESIGN.md §2 describes); `straggler_votes` models it.
//!
//! Under Alpenglow (`Consensus::Alpenglow`, from agave-votor 4.2) a node votes notarize and
//! finalize each slot and rewrites `vote_history-<identity>.bin` after each; the vote account's
//! `lastVote` moves only when a certificate carrying the vote lands, [`CERTIFICATE_DELAY`] slots
//! later; `setIdentity` takes three parameters, requires the vote history when the vote account
//! has Alpenglow votes, and votor restores it — silently empty on any error — when it dequeues the
//! change, late (the straggler again); a restart as X without a loadable vote history refuses to
//! start. Agave 4.3 (a node reporting 4.3) also refuses a switch between two staked identities,
//! and a fault makes a switch partial ("Failed to apply new identity to …").
//!
//! Every identity change, vote and tower load is reported to the [`SafetyRecorder`].

mod history;
mod tower;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover_identity::tower::{tower_path, TowerFile};
use failover_identity::vote_history::vote_history_path;
use failover_identity::{write_atomic, Keypair, Pubkey};

use crate::safety::SafetyRecorder;
pub use history::block_id;
use history::{load_history, LoadHistoryError, NodeHistory};
use tower::{load_tower, LoadTowerError, NodeTower};

/// Slots between an Alpenglow vote and the block whose footer certifies it (agave-votor-messages
/// `NUM_SLOTS_FOR_REWARD`): the vote account's `lastVote` trails the tip by this much.
pub const CERTIFICATE_DELAY: u64 = 8;

/// Slots from the Alpenglow feature's activation to the migration slot.
pub const MIGRATION_SLOT_OFFSET: u64 = 5000;

/// What the simulated cluster runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Consensus {
    #[default]
    Tower,
    /// Alpenglow since `genesis_slot` (its genesis certificate is final).
    Alpenglow { genesis_slot: u64 },
    /// The Alpenglow feature is active since `activated_at`; no genesis certificate yet (the
    /// nodes still vote TowerBFT here).
    Migrating { activated_at: u64 },
}

/// A vote account is delinquent once its last vote is this many slots behind
/// (`DELINQUENT_VALIDATOR_SLOT_DISTANCE`); also Agave's default health-check distance.
pub const DELINQUENT_SLOT_DISTANCE: u64 = 128;

/// How far roots trail the tip on a healthy TowerBFT cluster.
pub const ROOT_DISTANCE: u64 = 32;
/// Under Alpenglow a block is rooted when it is finalized, a slot or less behind the tip (as a
/// real 4.2.2 cluster shows).
pub const ALPENGLOW_ROOT_DISTANCE: u64 = 1;

/// Faults a node can be put into on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Faults {
    /// The process is gone: no RPC, no admin socket, no gossip, no votes.
    pub crashed: bool,
    /// Stopped (like SIGSTOP): connections are accepted but nothing answers and nothing votes.
    pub hung: bool,
    /// The node replays this many slots behind the cluster.
    pub behind: u64,
    /// Up and answering, but casts no votes.
    pub stop_voting: bool,
    /// Votes, but its votes reach nobody (never land on the vote account).
    pub cut_off: bool,
    /// Every admin-RPC answer is delayed by this much.
    pub admin_delay_ms: u64,
    /// `setIdentity` fails.
    pub refuse_set_identity: bool,
    /// The next this many `setIdentity` calls apply the new key only in part and fail with Agave
    /// 4.3's "Failed to apply new identity to …" (nothing else switched).
    pub partial_set_identity: u32,
    /// Still starting up (after a restart) until the cluster reaches this slot: the admin RPC
    /// answers "Retry once validator start up is complete" and the node does not vote.
    pub starting_until: Option<u64>,
}

/// One validator of the failover pair.
pub struct Node {
    pub name: String,
    pub ledger: PathBuf,
    pub identity: Arc<Keypair>,
    /// The identity it comes back with after a restart (its `--identity` flag) when it has no
    /// identity symlink.
    pub startup_identity: Arc<Keypair>,
    /// The `--identity` symlink: on restart the node loads whatever keypair it points at.
    pub identity_link: Option<PathBuf>,
    /// Keypairs it may vote with (`--authorized-voter`, or its startup identity); the admin RPC
    /// adds and removes them.
    pub authorized_voters: Vec<Arc<Keypair>>,
    /// The `--authorized-voter` list of its command line: a restart starts from it again.
    startup_voters: Vec<Arc<Keypair>>,
    pub faults: Faults,
    /// Agave version it reports; decides its `setIdentity` arity.
    pub version: String,
    tower: Option<NodeTower>,
    history: Option<NodeHistory>,
    /// An identity just switched away from that still casts one vote (Agave's replay race).
    straggler: Option<Arc<Keypair>>,
}

impl Node {
    pub fn new(
        name: String,
        ledger: PathBuf,
        identity: Arc<Keypair>,
        authorized_voters: Vec<Arc<Keypair>>,
        version: String,
    ) -> Self {
        Self {
            name,
            ledger,
            startup_identity: identity.clone(),
            identity_link: None,
            identity,
            startup_voters: authorized_voters.clone(),
            authorized_voters,
            faults: Faults::default(),
            version,
            tower: None,
            history: None,
            straggler: None,
        }
    }

    /// Whether it answers at all (RPC, admin socket).
    pub fn responsive(&self) -> bool {
        !self.faults.crashed && !self.faults.hung
    }

    /// The last slot this node voted on with its current identity's tower or vote history.
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.tower
            .as_ref()
            .and_then(|t| t.last_vote())
            .or_else(|| self.history.as_ref().and_then(|h| h.latest()))
    }

    /// Whether it reports Agave 4.2 or later (three-parameter `setIdentity`, 4.2 answers).
    pub fn is_4_2_or_later(&self) -> bool {
        let mut parts = self.version.split(['.', '-']);
        let major: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (4, 2)
    }

    /// Whether it reports Agave 4.3 or later (the 4.3 admin RPC rules).
    pub fn is_4_3_or_later(&self) -> bool {
        let mut parts = self.version.split(['.', '-']);
        let major: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (4, 3)
    }
}

/// The failover pair's shared vote account, as `getVoteAccounts` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VoteAccount {
    pub vote_pubkey: Pubkey,
    pub node_pubkey: Pubkey,
    pub authorized_voter: Pubkey,
    pub activated_stake: u64,
    pub commission: u8,
    pub last_vote: u64,
    pub root_slot: u64,
    pub credits: u64,
    /// Which node cast the last vote.
    pub last_voter: Option<usize>,
}

/// The bigger-staked third node that keeps the cluster going and serves the cluster RPC.
#[derive(Clone, Debug)]
pub struct NetworkNode {
    pub identity: Pubkey,
    pub vote_pubkey: Pubkey,
    pub activated_stake: u64,
    /// Its pubsub keeps every connection and subscription open and sends nothing (a stalled RPC
    /// node's websocket).
    pub pubsub_silent: bool,
    /// Gossip as it stood when it froze: each node's identity then (`None`: absent). Gossip takes
    /// seconds to spread a new identity; frozen, it never does.
    pub gossip_frozen: Option<Vec<Option<Pubkey>>>,
}

/// Everything the simulator knows; guarded by one mutex in [`crate::Cluster`].
pub struct World {
    pub slot: u64,
    pub vote: VoteAccount,
    pub network: NetworkNode,
    pub nodes: Vec<Node>,
    pub safety: SafetyRecorder,
    pub straggler_votes: bool,
    pub slots_in_epoch: u64,
    pub transaction_count: u64,
    pub consensus: Consensus,
    /// Alpenglow votes cast and not yet certified on chain: (slot, voter).
    pending_votes: VecDeque<(u64, usize)>,
    /// No block lands before this slot (the cluster's leaders skip theirs): votes are cast and
    /// written, none reaches the vote account until then.
    blocks_skipped_until: u64,
}

/// `setIdentity` refused, with Agave's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetIdentityRefused {
    pub code: i64,
    pub message: String,
}

impl World {
    /// A world at `slot` with no Alpenglow vote in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slot: u64,
        vote: VoteAccount,
        network: NetworkNode,
        nodes: Vec<Node>,
        safety: SafetyRecorder,
        straggler_votes: bool,
        consensus: Consensus,
    ) -> Self {
        Self {
            slot,
            vote,
            network,
            nodes,
            safety,
            straggler_votes,
            slots_in_epoch: 432_000,
            transaction_count: 292,
            consensus,
            pending_votes: VecDeque::new(),
            blocks_skipped_until: 0,
        }
    }

    pub fn is_alpenglow(&self) -> bool {
        matches!(self.consensus, Consensus::Alpenglow { .. })
    }

    /// The slot the Alpenglow feature was activated at, when it was.
    pub fn alpenglow_activated_at(&self) -> Option<u64> {
        match self.consensus {
            Consensus::Tower => None,
            Consensus::Migrating { activated_at } => Some(activated_at),
            Consensus::Alpenglow { genesis_slot } => {
                Some(genesis_slot.saturating_sub(MIGRATION_SLOT_OFFSET))
            }
        }
    }

    pub fn root(&self) -> u64 {
        self.slot.saturating_sub(self.root_distance())
    }

    /// How far roots trail the tip under the cluster's consensus.
    pub fn root_distance(&self) -> u64 {
        match self.consensus {
            Consensus::Alpenglow { genesis_slot } if self.slot >= genesis_slot => {
                ALPENGLOW_ROOT_DISTANCE
            }
            _ => ROOT_DISTANCE,
        }
    }

    /// The slot a node has replayed to.
    pub fn node_slot(&self, i: usize) -> u64 {
        self.slot.saturating_sub(self.nodes[i].faults.behind)
    }

    pub fn epoch(&self) -> u64 {
        self.slot / self.slots_in_epoch
    }

    /// Which nodes currently hold `pubkey` as their identity (crashed nodes hold nothing).
    pub fn holders(&self, pubkey: &Pubkey) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                !self.nodes[i].faults.crashed && self.nodes[i].identity.pubkey() == *pubkey
            })
            .collect()
    }

    /// Sets up a node's tower or vote history at start: the staked node starts from its file,
    /// else from the on-chain vote.
    pub fn boot_node(&mut self, i: usize) {
        let identity = self.nodes[i].identity.pubkey();
        if self.is_alpenglow() {
            let path = vote_history_path(&self.nodes[i].ledger, &identity);
            self.nodes[i].history = Some(match load_history(&path, &identity) {
                Ok(h) => NodeHistory::from_history(h),
                Err(_) => NodeHistory::fresh(identity, self.onchain_floor(&identity)),
            });
            self.nodes[i].tower = None;
        } else {
            let path = tower_path(&self.nodes[i].ledger, &identity);
            let tower = match load_tower(&path, &identity) {
                Ok(t) => NodeTower::from_tower(&t),
                Err(_) => NodeTower::fresh(identity, self.onchain_floor(&identity)),
            };
            self.nodes[i].tower = Some(tower);
        }
        self.nodes[i].straggler = None;
        self.safety
            .identity_changed(i, identity, &self.holders_snapshot());
    }

    fn holders_snapshot(&self) -> Vec<Option<Pubkey>> {
        self.nodes
            .iter()
            .map(|n| (!n.faults.crashed).then(|| n.identity.pubkey()))
            .collect()
    }

    fn onchain_floor(&self, identity: &Pubkey) -> Option<u64> {
        (*identity == self.vote.node_pubkey && self.vote.last_vote > 0)
            .then_some(self.vote.last_vote)
    }

    /// The next `slots` slots produce no block (a run of skipped leaders, as on a real cluster):
    /// the vote account's last vote stands still for them, then moves on with the next vote.
    pub fn skip_blocks(&mut self, slots: u64) {
        self.blocks_skipped_until = self.slot + 1 + slots;
    }

    fn blocks_skipped(&self) -> bool {
        self.slot < self.blocks_skipped_until
    }

    /// Advances the cluster one slot and lets every node that may vote do so.
    pub fn tick(&mut self) {
        self.slot += 1;
        self.land_certified_votes();
        self.transaction_count += 1 + self.nodes.len() as u64;
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node
                .faults
                .starting_until
                .is_some_and(|until| self.slot >= until)
            {
                node.faults.starting_until = None;
            }
            if !node.responsive() || node.faults.stop_voting || node.faults.starting_until.is_some()
            {
                continue;
            }
            let slot = self.node_slot(i);
            if let Some(old) = self.nodes[i].straggler.take() {
                self.vote_with(i, &old, slot, true);
            }
            let identity = self.nodes[i].identity.clone();
            self.vote_with(i, &identity, slot, false);
        }
    }

    /// Whether node `i` may vote with `identity` under the vote account's current authority.
    fn may_vote(&self, i: usize, identity: &Keypair) -> bool {
        identity.pubkey() == self.vote.node_pubkey
            && self.nodes[i]
                .authorized_voters
                .iter()
                .any(|k| k.pubkey() == self.vote.authorized_voter)
    }

    /// Alpenglow votes reach the vote account with the certificate in a later block's footer.
    fn land_certified_votes(&mut self) {
        while let Some(&(slot, voter)) = self.pending_votes.front() {
            if slot + CERTIFICATE_DELAY > self.slot || self.blocks_skipped() {
                break;
            }
            self.pending_votes.pop_front();
            if slot > self.vote.last_vote {
                self.vote.last_vote = slot;
                self.vote.credits += 1;
            }
            self.vote.root_slot = self.vote.root_slot.max(slot.saturating_sub(1));
            self.vote.last_voter = Some(voter);
        }
    }

    /// Casts node `i`'s vote on `slot` with `identity`, rewriting that identity's tower file (or
    /// vote history). A straggler vote uses what the file it last wrote holds.
    fn vote_with(&mut self, i: usize, identity: &Arc<Keypair>, slot: u64, straggler: bool) {
        if !self.may_vote(i, identity) {
            return;
        }
        if self.is_alpenglow() {
            return self.vote_alpenglow(i, identity, slot, straggler);
        }
        let pubkey = identity.pubkey();
        let mut tower = if straggler {
            match load_tower(&tower_path(&self.nodes[i].ledger, &pubkey), &pubkey) {
                Ok(t) => NodeTower::from_tower(&t),
                Err(_) => return,
            }
        } else {
            match self.nodes[i].tower.take() {
                Some(t) if t.identity == pubkey => t,
                _ => NodeTower::fresh(pubkey, self.onchain_floor(&pubkey)),
            }
        };
        if tower.last_vote().is_some_and(|last| slot <= last) {
            // Lockouts forbid voting on a slot at or below the last vote.
            if !straggler {
                self.nodes[i].tower = Some(tower);
            }
            return;
        }
        tower.push(slot);
        let bytes = TowerFile::sign(&tower.to_tower(slot), identity);
        let path = tower_path(&self.nodes[i].ledger, &pubkey);
        if let Err(e) = write_atomic(&path, &bytes) {
            // The ledger directory vanished (test teardown): the node cannot persist, so no vote.
            eprintln!(
                "failover-sim: {}: cannot write tower: {e}",
                self.nodes[i].name
            );
            return;
        }
        self.record_vote(i, pubkey, slot);
        if !straggler {
            self.nodes[i].tower = Some(tower.clone());
        }
        if self.nodes[i].faults.cut_off || self.blocks_skipped() {
            return;
        }
        if slot > self.vote.last_vote {
            self.vote.last_vote = slot;
            self.vote.credits += 1;
        }
        if let Some(root) = tower.root {
            self.vote.root_slot = self.vote.root_slot.max(root);
        }
        self.vote.last_voter = Some(i);
    }

    /// Node `i`'s Alpenglow vote on `slot`: notarize and finalize, the file rewritten after each.
    fn vote_alpenglow(&mut self, i: usize, identity: &Arc<Keypair>, slot: u64, straggler: bool) {
        let pubkey = identity.pubkey();
        let path = vote_history_path(&self.nodes[i].ledger, &pubkey);
        let mut history = if straggler {
            match load_history(&path, &pubkey) {
                Ok(h) => NodeHistory::from_history(h),
                Err(_) => return,
            }
        } else {
            match self.nodes[i].history.take() {
                Some(h) if h.identity() == pubkey => h,
                _ => NodeHistory::fresh(pubkey, self.onchain_floor(&pubkey)),
            }
        };
        if history.latest().is_some_and(|last| slot <= last) {
            if !straggler {
                self.nodes[i].history = Some(history);
            }
            return;
        }
        let mut persist =
            |h: &failover_identity::VoteHistory| write_atomic(&path, &history::sign(h, identity));
        if let Err(e) = history.vote(slot, &mut persist) {
            eprintln!(
                "failover-sim: {}: Unable to save vote history to storage: {e}",
                self.nodes[i].name
            );
            return;
        }
        self.record_vote(i, pubkey, slot);
        if !self.nodes[i].faults.cut_off {
            self.pending_votes.push_back((slot, i));
        }
        if !straggler {
            self.nodes[i].history = Some(history);
        }
    }

    /// Tells the recorder about a vote cast and its file written. A cut-off node's votes count
    /// against double voting like any, but not as the newest vote state a switch must carry on
    /// from: nobody can have them until its network is back.
    fn record_vote(&mut self, i: usize, pubkey: Pubkey, slot: u64) {
        self.safety.vote_cast(i, pubkey, slot);
        if !self.nodes[i].faults.cut_off {
            self.safety.tower_written(i, pubkey, slot);
        }
    }

    /// Who leads `slot`: leader windows of 4 slots (Agave's `NUM_CONSECUTIVE_LEADER_SLOTS`), one
    /// in four the staked identity's — whichever node holds it — the rest the network node's.
    pub fn slot_leader(&self, slot: u64) -> Pubkey {
        if (slot / 4).is_multiple_of(4) {
            self.vote.node_pubkey
        } else {
            self.network.identity
        }
    }

    /// Whether `pubkey` has stake (the staked identity and the network node do).
    fn is_staked(&self, pubkey: &Pubkey) -> bool {
        *pubkey == self.vote.node_pubkey || *pubkey == self.network.identity
    }

    /// Agave's `setIdentity`: switch node `i` to `keypair`. `require_vote_history` is the third
    /// parameter of Agave 4.2+ (false from a two-parameter call).
    pub fn set_identity(
        &mut self,
        i: usize,
        keypair: Arc<Keypair>,
        require_tower: bool,
        require_vote_history: bool,
    ) -> Result<(), SetIdentityRefused> {
        if self.nodes[i].faults.refuse_set_identity {
            return Err(SetIdentityRefused {
                code: -32603,
                message: "Internal error".into(),
            });
        }
        let new = keypair.pubkey();
        let old_pubkey = self.nodes[i].identity.pubkey();
        if self.nodes[i].is_4_3_or_later()
            && old_pubkey != new
            && self.is_staked(&old_pubkey)
            && self.is_staked(&new)
        {
            // agave-validator 4.3 `admin_rpc_service.rs`.
            return Err(SetIdentityRefused {
                code: -32602,
                message: format!(
                    "Changing identity from staked node {old_pubkey} to staked node {new} is not supported"
                ),
            });
        }
        if self.is_alpenglow() {
            return self.set_identity_alpenglow(i, keypair, require_tower, require_vote_history);
        }
        if self.nodes[i].faults.partial_set_identity > 0 {
            return Err(self.partial_switch(i));
        }
        let path = tower_path(&self.nodes[i].ledger, &new);
        let tower = match load_tower(&path, &new) {
            Ok(t) => {
                self.safety.tower_loaded(i, new, t.last_voted_slot());
                NodeTower::from_tower(&t)
            }
            Err(e) if require_tower => {
                return Err(SetIdentityRefused {
                    code: -32602,
                    message: format!("Unable to load tower file for identity {new}: {e}"),
                })
            }
            Err(LoadTowerError::Missing(_)) => NodeTower::fresh(new, self.onchain_floor(&new)),
            Err(e) => {
                // Agave exits when the new identity's tower exists but cannot be used.
                eprintln!(
                    "failover-sim: {}: Unable to load new tower when attempting to change identity \
                     on set-identity, Exiting: {e}",
                    self.nodes[i].name
                );
                self.nodes[i].identity = keypair;
                self.nodes[i].faults.crashed = true;
                self.safety
                    .identity_changed(i, new, &self.holders_snapshot());
                return Ok(());
            }
        };
        let old = std::mem::replace(&mut self.nodes[i].identity, keypair);
        if self.straggler_votes && old.pubkey() != new && self.may_vote(i, &old) {
            self.nodes[i].straggler = Some(old);
        }
        self.nodes[i].tower = Some(tower);
        self.safety
            .identity_changed(i, new, &self.holders_snapshot());
        Ok(())
    }

    /// Agave 4.3's partial switch: a key updater failed; the identity is unchanged.
    fn partial_switch(&mut self, i: usize) -> SetIdentityRefused {
        self.nodes[i].faults.partial_set_identity -= 1;
        SetIdentityRefused {
            code: -32603,
            message: "Failed to apply new identity to Votor: simulated key updater failure".into(),
        }
    }

    /// `setIdentity` on an Alpenglow node (agave-validator 4.2 `set_identity_keypair`, then votor's
    /// `handle_set_identity` when it dequeues the event).
    fn set_identity_alpenglow(
        &mut self,
        i: usize,
        keypair: Arc<Keypair>,
        require_tower: bool,
        require_vote_history: bool,
    ) -> Result<(), SetIdentityRefused> {
        let new = keypair.pubkey();
        let ledger = self.nodes[i].ledger.clone();
        if require_tower {
            if let Err(e) = load_tower(&tower_path(&ledger, &new), &new) {
                return Err(SetIdentityRefused {
                    code: -32602,
                    message: format!("Unable to load tower file for identity {new}: {e}"),
                });
            }
        }
        let path = vote_history_path(&ledger, &new);
        if require_vote_history && self.requires_vote_history(&new) {
            if let Err(e) = load_history(&path, &new) {
                return Err(SetIdentityRefused {
                    code: -32602,
                    message: format!(
                        "Unable to load vote history file for identity {new}: {e}. The vote \
                         account {} has prior Alpenglow votes. Ensure the vote history file is \
                         present or (dangerous) use --do-not-require-vote-history if you know \
                         what you're doing",
                        self.vote.vote_pubkey
                    ),
                });
            }
        }
        if self.nodes[i].faults.partial_set_identity > 0 {
            return Err(self.partial_switch(i));
        }
        // Votor restores the new identity's history when it dequeues the change; any error gives
        // an empty one, silently.
        let restored = match load_history(&path, &new) {
            Ok(h) => NodeHistory::from_history(h),
            Err(_) => NodeHistory::fresh(new, None),
        };
        // Votor votes on no slot at or below its root: an older history is harmless once the
        // root has passed every vote cast with this identity.
        let root = self.node_slot(i).saturating_sub(self.root_distance());
        self.safety
            .history_loaded(i, new, restored.history.latest_voted_slot(), root);
        let old = std::mem::replace(&mut self.nodes[i].identity, keypair);
        if self.straggler_votes && old.pubkey() != new && self.may_vote(i, &old) {
            self.nodes[i].straggler = Some(old);
        }
        let history_root = restored.history.root;
        self.nodes[i].history = Some(restored);
        self.safety
            .identity_changed(i, new, &self.holders_snapshot());
        // Votor asserts that every slot it looks at is at or above its history's root
        // (agave-votor 4.2.2 `vote_history.rs`): a history rooted above this node's own root
        // meets a block it replayed below it and the process aborts — a real 4.2.2 validator did,
        // seconds after the change. Here it aborts at once, whether or not such a block exists.
        if history_root > root {
            eprintln!(
                "failover-sim: {}: votor panicked: assertion failed: slot >= self.root (vote history root \
                 {history_root}, this node's root {root}); the validator exits",
                self.nodes[i].name
            );
            self.crash(i);
        }
        Ok(())
    }

    /// solana-core `should_require_vote_history_file`: the vote account names `identity` as its
    /// node and has voted since the Alpenglow genesis.
    fn requires_vote_history(&self, identity: &Pubkey) -> bool {
        let Consensus::Alpenglow { genesis_slot } = self.consensus else {
            return false;
        };
        *identity == self.vote.node_pubkey && self.vote.last_vote > genesis_slot
    }

    /// Marks node `i` crashed: it holds no identity until restarted.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].faults.crashed = true;
        self.nodes[i].straggler = None;
        self.safety.identity_lost(i, &self.holders_snapshot());
    }

    /// Restarts node `i` with its startup identity, faults cleared; it is starting up for
    /// `startup_slots` slots.
    pub fn restart(&mut self, i: usize, startup_slots: u64) {
        let until = self.slot + startup_slots;
        let node = &mut self.nodes[i];
        node.faults = Faults {
            starting_until: (startup_slots > 0).then_some(until),
            ..Faults::default()
        };
        node.identity = node
            .identity_link
            .as_deref()
            .and_then(|link| {
                Keypair::read_file(link, failover_identity::Permissions::AllowInsecure).ok()
            })
            .map(Arc::new)
            .unwrap_or_else(|| node.startup_identity.clone());
        node.authorized_voters = node.startup_voters.clone();
        // agave-validator 4.2 requires the vote history at start-up too: as X with Alpenglow
        // votes on chain and no loadable file, it refuses to start.
        let identity = node.identity.pubkey();
        if self.requires_vote_history(&identity) {
            let path = vote_history_path(&self.nodes[i].ledger, &identity);
            if let Err(e) = load_history(&path, &identity) {
                let e: LoadHistoryError = e;
                eprintln!(
                    "failover-sim: {}: Unable to retrieve vote history for identity {identity}. \
                     The vote account {} has prior Alpenglow votes. If this is intentional, use \
                     --do-not-require-vote-history: {e}",
                    self.nodes[i].name, self.vote.vote_pubkey
                );
                self.nodes[i].faults.crashed = true;
                self.safety.identity_lost(i, &self.holders_snapshot());
                return;
            }
        }
        self.boot_node(i);
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
