//! Who a validator is: Solana keypair files (validated with ed25519-dalek, zeroized, never printed),
//! ed25519 signing and verification, the codec of Agave's signed tower file, and the client for Agave's admin RPC through which a validator
//! reports and changes its identity.
//!
//! This crate must not decide anything about failover and must not know the agent's or manager's
//! configuration: it answers "what key is this" and "what does the validator say it is", and carries
//! out one identity change when asked. It never logs or displays secret key bytes.

pub mod admin_rpc;
pub mod durable;
pub mod keypair;
pub mod vote_state;

pub use vote_state::{tower, vote_history};

pub use admin_rpc::{
    AdminRpcClient, AdminRpcError, ContactInfo, Require, SetIdentityArity, Timeouts,
};
pub use keypair::{
    verify_signature, Keypair, KeypairError, KeypairErrorKind, Permissions, Signature,
};
pub use solana_pubkey::Pubkey;
pub use tower::{tower_path, Tower, TowerFile};
pub use vote_state::{
    tower_hash, write_atomic, VoteHistory, VoteHistoryFile, VoteState, VoteStateError,
    VoteStateFile, VoteStateKind,
};
