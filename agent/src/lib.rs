//! `failover-agent`: runs on each validator server and carries out what the manager decides —
//! reporting the validator's state, moving the staked identity and its tower in the safe order,
//! and demoting its own validator when it is cut off (self-fencing).
//!
//! It must not decide when to fail over (that is the manager's job), must not accept a command
//! that is unsigned (unless configured so, loudly), stale in term or time, or replayed, and must
//! never install a tower that fails verification or is older than one it has seen.
//!
//! The API types ([`api`]) and the typed client ([`client`]) are shared with the manager.

mod agent;
pub mod api;
pub mod auth;
pub mod client;
pub mod commands;
pub mod consensus;
pub mod http;
mod journal;
pub mod keys;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod pause;
pub mod process;
mod routes;
pub mod state;
pub mod store;
mod switch;
mod validator;
pub mod vote_state;
mod watchdog;

pub use agent::{state_dir, Agent, AGENT_VERSION};
pub use client::{AgentClient, ClientError, CommandSigner};
pub use routes::{app, run};
pub use watchdog::unreachable_targets;
