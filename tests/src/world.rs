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
//! Every identity change, vote and tower load is reported to the [`SafetyRecorder`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failover_identity::tower::{
    tower_path, write_atomic, BlockTimestamp, LastVote, Lockout, Tower, TowerError, TowerFile,
    TowerVoteState,
};
use failover_identity::{Keypair, Pubkey};
use sha2::{Digest, Sha256};

use crate::safety::SafetyRecorder;

/// Agave keeps at most 31 lockouts (`MAX_LOCKOUT_HISTORY`).
const MAX_LOCKOUT_HISTORY: usize = 31;

/// A vote account is delinquent once its last vote is this many slots behind
/// (`DELINQUENT_VALIDATOR_SLOT_DISTANCE`); also Agave's default health-check distance.
pub const DELINQUENT_SLOT_DISTANCE: u64 = 128;

/// How far roots trail the tip on a healthy cluster.
pub const ROOT_DISTANCE: u64 = 32;

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
    /// Every admin-RPC answer is delayed by this much.
    pub admin_delay_ms: u64,
    /// `setIdentity` fails.
    pub refuse_set_identity: bool,
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
            straggler: None,
        }
    }

    /// Whether it answers at all (RPC, admin socket).
    pub fn responsive(&self) -> bool {
        !self.faults.crashed && !self.faults.hung
    }

    /// The last slot this node voted on with its current identity's tower.
    pub fn last_voted_slot(&self) -> Option<u64> {
        self.tower.as_ref().and_then(|t| t.last_vote())
    }
}

/// The tower a node holds in memory for its current identity.
#[derive(Clone, Debug)]
struct NodeTower {
    identity: Pubkey,
    lockouts: Vec<Lockout>,
    root: Option<u64>,
    /// Slots at or below this are never voted on again (a fresh tower starts at the on-chain vote).
    floor: Option<u64>,
}

impl NodeTower {
    fn fresh(identity: Pubkey, floor: Option<u64>) -> Self {
        Self {
            identity,
            lockouts: Vec::new(),
            root: None,
            floor,
        }
    }

    fn from_tower(tower: &Tower) -> Self {
        Self {
            identity: tower.node_pubkey,
            lockouts: tower.vote_state.votes.clone(),
            root: tower.root(),
            floor: tower.last_voted_slot(),
        }
    }

    fn last_vote(&self) -> Option<u64> {
        self.lockouts.last().map(|l| l.slot).or(self.floor)
    }

    /// Records a vote on `slot`: the newest lockout has one confirmation, each older one more;
    /// the oldest falls off into the root once there are more than 31.
    fn push(&mut self, slot: u64) {
        self.lockouts.push(Lockout {
            slot,
            confirmation_count: 1,
        });
        if self.lockouts.len() > MAX_LOCKOUT_HISTORY {
            let rooted = self.lockouts.remove(0);
            self.root = Some(rooted.slot);
        }
        let n = self.lockouts.len();
        for (i, l) in self.lockouts.iter_mut().enumerate() {
            l.confirmation_count = (n - i) as u32;
        }
        self.floor = Some(slot);
    }

    fn to_tower(&self, slot: u64) -> Tower {
        let hash: [u8; 32] = Sha256::digest(slot.to_le_bytes()).into();
        let block_id: [u8; 32] = Sha256::digest((slot ^ u64::MAX).to_le_bytes()).into();
        let now = unix_now();
        Tower {
            node_pubkey: self.identity,
            threshold_depth: 8,
            threshold_size: 2.0 / 3.0,
            vote_state: TowerVoteState::new(self.lockouts.clone(), self.root),
            last_vote: LastVote::TowerSync {
                lockouts: self.lockouts.clone(),
                root: self.root,
                hash,
                timestamp: Some(now),
                block_id,
            },
            last_timestamp: BlockTimestamp {
                slot,
                timestamp: now,
            },
        }
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
}

/// `setIdentity` refused, with Agave's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetIdentityRefused {
    pub code: i64,
    pub message: String,
}

impl World {
    pub fn root(&self) -> u64 {
        self.slot.saturating_sub(ROOT_DISTANCE)
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

    /// Sets up a node's tower at start: the staked node starts from the on-chain vote.
    pub fn boot_node(&mut self, i: usize) {
        let identity = self.nodes[i].identity.pubkey();
        let path = tower_path(&self.nodes[i].ledger, &identity);
        let tower = match load_tower(&path, &identity) {
            Ok(t) => NodeTower::from_tower(&t),
            Err(_) => NodeTower::fresh(identity, self.onchain_floor(&identity)),
        };
        self.nodes[i].tower = Some(tower);
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

    /// Advances the cluster one slot and lets every node that may vote do so.
    pub fn tick(&mut self) {
        self.slot += 1;
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

    /// Casts node `i`'s vote on `slot` with `identity`, rewriting that identity's tower file.
    /// A straggler vote uses a tower read back from the file it last wrote.
    fn vote_with(&mut self, i: usize, identity: &Arc<Keypair>, slot: u64, straggler: bool) {
        if !self.may_vote(i, identity) {
            return;
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
        self.safety.vote_cast(i, pubkey, slot);
        self.safety.tower_written(i, pubkey, slot);
        if slot > self.vote.last_vote {
            self.vote.last_vote = slot;
            self.vote.credits += 1;
        }
        if let Some(root) = tower.root {
            self.vote.root_slot = self.vote.root_slot.max(root);
        }
        self.vote.last_voter = Some(i);
        if !straggler {
            self.nodes[i].tower = Some(tower);
        }
    }

    /// Agave's `setIdentity`: switch node `i` to `keypair`.
    pub fn set_identity(
        &mut self,
        i: usize,
        keypair: Arc<Keypair>,
        require_tower: bool,
    ) -> Result<(), SetIdentityRefused> {
        if self.nodes[i].faults.refuse_set_identity {
            return Err(SetIdentityRefused {
                code: -32603,
                message: "Internal error".into(),
            });
        }
        let new = keypair.pubkey();
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
        self.boot_node(i);
    }
}

/// Why a tower file could not be loaded, displayed as Agave's `TowerError`.
#[derive(Debug)]
enum LoadTowerError {
    Missing(std::io::Error),
    Io(std::io::Error),
    Invalid(TowerError),
}

impl std::fmt::Display for LoadTowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Agave's strings (solana-core consensus.rs `TowerError`).
        match self {
            LoadTowerError::Missing(e) | LoadTowerError::Io(e) => write!(f, "IO Error: {e}"),
            LoadTowerError::Invalid(TowerError::BadSignature(_)) => {
                write!(f, "The signature on the saved tower is invalid")
            }
            LoadTowerError::Invalid(TowerError::WrongIdentity { expected, found }) => write!(
                f,
                "The tower does not match this validator: node_pubkey is {expected:?} but found tower for {found:?}"
            ),
            LoadTowerError::Invalid(e) => write!(f, "Serialization Error: {e}"),
        }
    }
}

fn load_tower(path: &Path, identity: &Pubkey) -> Result<Tower, LoadTowerError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadTowerError::Missing(e),
        _ => LoadTowerError::Io(e),
    })?;
    let file = TowerFile::parse(&bytes).map_err(LoadTowerError::Invalid)?;
    file.verify(identity).map_err(LoadTowerError::Invalid)?;
    Ok(file.tower)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
