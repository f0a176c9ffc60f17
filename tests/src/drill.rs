//! A switchover drill on the simulated cluster: the manual procedure of DESIGN.md §2, done in the
//! safe order with the identity crate's admin-RPC client and timed phase by phase.
//!
//! It is the baseline a plain script achieves (the product's agent and manager must do at least as
//! well) and the demo's failover until the manager drives it.

use std::time::{Duration, Instant};

use failover_identity::tower::{tower_path, TowerFile};
use failover_identity::{AdminRpcClient, Pubkey, Timeouts};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::safety::SafetyReport;

/// How one switch went.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchTiming {
    pub from: String,
    pub to: String,
    /// `setIdentity(unstaked)` on the old active, confirmed by `contactInfo`.
    pub demote_ms: u64,
    /// Until the old active's staked tower was unchanged for `quiet_slots` slots.
    pub tower_settle_ms: u64,
    /// Copy, verify, install the tower on the new active.
    pub tower_copy_ms: u64,
    /// `setIdentity(staked, require_tower)` on the new active, confirmed by `contactInfo`.
    pub promote_ms: u64,
    pub total_ms: u64,
    /// The old active's last vote (from its settled tower).
    pub last_old_vote: u64,
    /// The first vote the vote account received from the new active.
    pub first_new_vote: u64,
    /// Slots without a vote between the two.
    pub vote_gap_slots: u64,
}

/// Every switch of a drill and what the safety recorder saw.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub switches: Vec<SwitchTiming>,
    pub safety: SafetyReport,
}

/// Bound on every wait of a drill, in slots.
const PATIENCE_SLOTS: u32 = 50;

/// Moves the staked identity from node `from` to node `to` in the safe order.
pub async fn switch(
    cluster: &Cluster,
    from: usize,
    to: usize,
    quiet_slots: u64,
) -> anyhow::Result<SwitchTiming> {
    let info = cluster.info();
    let staked = cluster.staked_pubkey();
    let patience = Duration::from_millis(info.slot_time_ms) * PATIENCE_SLOTS;
    let old = AdminRpcClient::new(&info.nodes[from].admin_socket, Timeouts::LOCAL);
    let new = AdminRpcClient::new(&info.nodes[to].admin_socket, Timeouts::LOCAL);
    let old_tower = tower_path(&info.nodes[from].ledger, &staked);
    let new_tower = tower_path(&info.nodes[to].ledger, &staked);

    let started = Instant::now();
    old.set_identity(&info.nodes[from].unstaked_keypair, false)
        .await?;
    let now = old.identity().await?;
    anyhow::ensure!(
        now != staked,
        "{} still reports the staked identity",
        info.nodes[from].name
    );
    let demoted = Instant::now();

    // Agave may cast one more vote with the identity it just left: wait for the tower to settle.
    let last = wait_tower_settled(cluster, from, quiet_slots).await?;
    let settled = Instant::now();
    let last_old_vote =
        last.ok_or_else(|| anyhow::anyhow!("the old active has no staked tower"))?;

    let bytes = std::fs::read(&old_tower)?;
    let file = TowerFile::parse(&bytes)?;
    file.verify(&staked)?;
    failover_identity::write_atomic(&new_tower, &bytes)?;
    let copied = Instant::now();

    new.set_identity(&info.staked_keypair, true).await?;
    anyhow::ensure!(
        new.identity().await? == staked,
        "{} did not take the staked identity",
        info.nodes[to].name
    );
    let promoted = Instant::now();

    cluster
        .wait_until(patience, |w| {
            w.vote.last_voter == Some(to) && w.vote.last_vote > last_old_vote
        })
        .await?;
    let first_new_vote = cluster.vote_account().last_vote;
    let ms = |a: Instant, b: Instant| b.duration_since(a).as_millis() as u64;
    Ok(SwitchTiming {
        from: info.nodes[from].name.clone(),
        to: info.nodes[to].name.clone(),
        demote_ms: ms(started, demoted),
        tower_settle_ms: ms(demoted, settled),
        tower_copy_ms: ms(settled, copied),
        promote_ms: ms(copied, promoted),
        total_ms: ms(started, promoted),
        last_old_vote,
        first_new_vote,
        vote_gap_slots: first_new_vote - last_old_vote - 1,
    })
}

/// Runs `switches` switchovers back and forth between the first two nodes.
pub async fn run(
    cluster: &Cluster,
    switches: usize,
    quiet_slots: u64,
) -> anyhow::Result<DrillReport> {
    anyhow::ensure!(cluster.info().nodes.len() >= 2, "a drill needs two nodes");
    let staked = cluster.staked_pubkey();
    let mut report = Vec::new();
    for _ in 0..switches {
        let from = (0..2)
            .find(|&i| cluster.identity(i) == Some(staked))
            .ok_or_else(|| anyhow::anyhow!("no node holds the staked identity"))?;
        report.push(switch(cluster, from, 1 - from, quiet_slots).await?);
    }
    Ok(DrillReport {
        switches: report,
        safety: cluster.safety(),
    })
}

/// Waits until node `node`'s staked tower has not changed for `quiet_slots` whole slots and
/// returns its last voted slot (`None` when there is no valid tower).
pub async fn wait_tower_settled(
    cluster: &Cluster,
    node: usize,
    quiet_slots: u64,
) -> anyhow::Result<Option<u64>> {
    let staked = cluster.staked_pubkey();
    let path = tower_path(&cluster.info().nodes[node].ledger, &staked);
    let patience = Duration::from_millis(cluster.info().slot_time_ms) * PATIENCE_SLOTS;
    let mut last = tower_last_vote(&path, &staked);
    let mut quiet_since = cluster.slot();
    loop {
        let slot = cluster.slot();
        cluster.wait_for_slot(slot + 1, patience).await?;
        let seen = tower_last_vote(&path, &staked);
        if seen != last {
            last = seen;
            quiet_since = cluster.slot();
        } else if cluster.slot() >= quiet_since + quiet_slots {
            return Ok(last);
        }
    }
}

fn tower_last_vote(path: &std::path::Path, identity: &Pubkey) -> Option<u64> {
    let file = TowerFile::read(path).ok()?;
    file.verify(identity).ok()?;
    file.tower.last_voted_slot()
}
