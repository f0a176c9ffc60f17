//! The manager's `election` field: several managers with the same config, one leading at a time
//! through an etcd lease (the others wait to take over), and the fencing term kept in etcd.

use std::time::Duration;

use url::Url;

use crate::fields::{Diagnostics, Object};
use crate::tower_store::{etcd_endpoint, key_prefix};

/// `election.key_prefix` default: the leader key and (with the embedded tower store) the term.
pub const DEFAULT_ELECTION_KEY_PREFIX: &str = "/solana/failover/manager";
/// `election.lease_ttl` default: a leader that cannot renew its lease stops acting before this has
/// passed since its last renewal was sent; another manager takes over once etcd drops the key.
pub const DEFAULT_ELECTION_LEASE_TTL: Duration = Duration::from_secs(3);
/// The shortest `election.lease_ttl`: etcd's own minimum lease (1.5 × its 1 s election timeout,
/// rounded up to whole seconds).
pub const MIN_ELECTION_LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest `election.lease_ttl` accepted: a dead leader must not leave the validators
/// unwatched for longer.
pub const MAX_ELECTION_LEASE_TTL: Duration = Duration::from_secs(60);

/// `election`: `{ "endpoints": [...], "key_prefix": "...", "lease_ttl": "3s", "dial_timeout": "2s" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    /// `endpoints` (required): the etcd cluster, as for `tower_store`.
    pub endpoints: Vec<Url>,
    /// `key_prefix`: default `/solana/failover/manager`; starts with `/`.
    pub key_prefix: String,
    /// `lease_ttl`: whole seconds, 2s to 60s. Default 3s.
    pub lease_ttl: Duration,
    /// `dial_timeout`: the time allowed to connect to etcd. Default 2s.
    pub dial_timeout: Duration,
}

/// Reads the optional `election` field of `parent`. `Some(None)`: absent (one manager, as
/// before); `None`: a problem was reported.
pub(crate) fn read(parent: &mut Object<'_>, diag: &mut Diagnostics) -> Option<Option<Election>> {
    let Some(field) = parent.get("election") else {
        return Some(None);
    };
    let mut object = field.object(diag)?;
    let endpoints = match object.required("endpoints", diag) {
        None => None,
        Some(f) => {
            let list = f.array_of(diag, |item, diag| etcd_endpoint(item, diag))?;
            if list.is_empty() {
                diag.error(&f.path, "must list at least one etcd endpoint");
                None
            } else {
                Some(list)
            }
        }
    };
    let prefix = match object.get("key_prefix") {
        None => Some(DEFAULT_ELECTION_KEY_PREFIX.to_string()),
        Some(f) => key_prefix(&f, diag),
    };
    let lease_ttl = match object.get("lease_ttl") {
        None => Some(DEFAULT_ELECTION_LEASE_TTL),
        Some(f) => f.positive_duration(diag).and_then(|ttl| {
            let whole = ttl.subsec_nanos() == 0;
            if whole && (MIN_ELECTION_LEASE_TTL..=MAX_ELECTION_LEASE_TTL).contains(&ttl) {
                Some(ttl)
            } else {
                diag.error(
                    &f.path,
                    format!(
                        "{} is not a whole number of seconds from 2s to 60s (etcd leases are in \
                         seconds, and shorter than 2s etcd itself refuses)",
                        crate::format_duration(ttl)
                    ),
                );
                None
            }
        }),
    };
    let dial_timeout = match object.get("dial_timeout") {
        None => Some(crate::DEFAULT_ETCD_DIAL_TIMEOUT),
        Some(f) => f.positive_duration(diag),
    };
    object.finish(diag, None);
    Some(Some(Election {
        endpoints: endpoints?,
        key_prefix: prefix?,
        lease_ttl: lease_ttl?,
        dial_timeout: dial_timeout?,
    }))
}
