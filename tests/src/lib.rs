//! `failover-sim`: a simulated Solana cluster that the agent and manager cannot tell from Agave on
//! the wire, for tests, benchmarks and the demo.
//!
//! Each simulated validator has its own JSON-RPC port, pubsub on the port above it, and an admin
//! RPC socket at `<ledger>/admin.rpc`; while it holds the staked identity (and the vote authority)
//! it votes every slot, updating the shared vote account and rewriting its tower file in Agave's
//! signed format. A cluster endpoint (the big "network" node) serves what the manager watches.
//! Faults are injected on demand, and a safety recorder notes every instant two nodes held the
//! staked identity, every slot voted twice, and every stale tower loaded.
//!
//! This crate is a test bed: product crates must never depend on it. It must not reach beyond
//! loopback.

pub mod admin;
pub mod agave_drill;
pub mod capture;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod drill;
pub mod durability;
pub mod etcd;
pub mod jsonrpc;
pub mod mutation;
pub mod pause;
mod process;
pub mod prometheus;
pub mod relay;
pub mod rpc;
pub mod safety;
pub mod server;
pub mod sshd;
pub mod world;

pub use cluster::{Cluster, ClusterInfo, Consensus, Endpoint, Fault, NodeInfo, SimConfig};
pub use safety::{SafetyReport, Violation};
