//! `failover-manager`: watches both validators and the cluster, decides with a pure engine, moves
//! the staked identity in the safe order through the agents, and alerts.
//!
//! It must not talk to a validator except through its agent (or, in secure mode, over SSH), must
//! not run or parse the `solana` CLI, and keeps every decision in the pure [`engine`] so that each
//! rule can be tested without IO.

pub mod control;
pub mod election;
pub mod engine;
pub mod hooks;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod observer;
pub mod ssh;
pub mod status;
pub mod switch;
pub mod vote_alert;

pub use manager::{run, Manager};
