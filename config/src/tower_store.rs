//! Where the tower travels between the two validators: relayed by the manager (embedded, the
//! default) or kept in etcd. The agent and manager configs share this field and its parser, and a
//! deployment must give both the same value.

use std::time::Duration;

use url::Url;

use crate::fields::{suggest, Diagnostics, Field, Object};
use crate::types::HostPort;

/// The default etcd key prefix, the key the reference design's `etcdctl` commands used.
pub const DEFAULT_ETCD_KEY_PREFIX: &str = "/solana/tower/active";
/// The default time allowed to connect to etcd.
pub const DEFAULT_ETCD_DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The `tower_store` field: `{ "kind": "embedded" }` (the default when the field is absent) or
/// `{ "kind": "etcd", "endpoints": [...], "key_prefix": "...", "dial_timeout": "2s" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TowerStore {
    /// The manager relays the tower: the agent returns it on `become_passive`, the manager keeps the
    /// latest backup on disk and hands it to `become_active`. Needs nothing else.
    Embedded,
    /// Towers, the fencing term and the active lease live in etcd.
    Etcd(EtcdStore),
}

impl TowerStore {
    /// A short description for summaries: `embedded` or `etcd (2 endpoints, /solana/tower/active)`.
    pub fn describe(&self) -> String {
        match self {
            TowerStore::Embedded => "embedded".to_string(),
            TowerStore::Etcd(etcd) => format!(
                "etcd ({} endpoint{}, {})",
                etcd.endpoints.len(),
                if etcd.endpoints.len() == 1 { "" } else { "s" },
                etcd.key_prefix
            ),
        }
    }
}

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdStore {
    /// `endpoints`: at least one; each given as a URL (`http://127.0.0.1:2379`) or as `host:port`,
    /// which is read as `http://host:port`.
    pub endpoints: Vec<Url>,
    /// `key_prefix`: the prefix of every key written (default `/solana/tower/active`); starts with `/`.
    pub key_prefix: String,
    /// `dial_timeout`: the time allowed to connect (default `2s`); greater than zero.
    pub dial_timeout: Duration,
}

const KINDS: &[&str] = &["embedded", "etcd"];

/// Reads the `tower_store` field of `parent`; absent means [`TowerStore::Embedded`].
/// Returns `None` only after reporting a problem.
pub(crate) fn read(parent: &mut Object<'_>, diag: &mut Diagnostics) -> Option<TowerStore> {
    let Some(field) = parent.get("tower_store") else {
        return Some(TowerStore::Embedded);
    };
    let mut object = field.object(diag)?;
    let kind = object.required("kind", diag).and_then(|kind| {
        let text = kind.str(diag)?;
        if KINDS.contains(&text) {
            return Some(text);
        }
        let hint = match suggest(text, KINDS) {
            Some(close) => format!("; did you mean {close:?}?"),
            None => String::new(),
        };
        diag.error(
            &kind.path,
            format!("unknown kind {text:?}; expected \"embedded\" or \"etcd\"{hint}"),
        );
        None
    });
    let endpoints = object.get("endpoints");
    let key_prefix = object.get("key_prefix");
    let dial_timeout = object.get("dial_timeout");
    object.finish(diag, None);
    match kind? {
        "embedded" => {
            for field in [endpoints, key_prefix, dial_timeout].into_iter().flatten() {
                diag.error(&field.path, "only used when tower_store.kind is \"etcd\"");
            }
            Some(TowerStore::Embedded)
        }
        _ => read_etcd(&field.path, endpoints, key_prefix, dial_timeout, diag),
    }
}

fn read_etcd(
    path: &str,
    endpoints: Option<Field<'_>>,
    key_prefix: Option<Field<'_>>,
    dial_timeout: Option<Field<'_>>,
    diag: &mut Diagnostics,
) -> Option<TowerStore> {
    let endpoints = match endpoints {
        None => {
            diag.error(
                format!("{path}.endpoints"),
                "required when tower_store.kind is \"etcd\"",
            );
            None
        }
        Some(field) => {
            let list = field.array_of(diag, |item, diag| etcd_endpoint(item, diag))?;
            if list.is_empty() {
                diag.error(&field.path, "must list at least one etcd endpoint");
                None
            } else {
                Some(list)
            }
        }
    };
    let key_prefix = match key_prefix {
        None => Some(DEFAULT_ETCD_KEY_PREFIX.to_string()),
        Some(field) => self::key_prefix(&field, diag),
    };
    let dial_timeout = match dial_timeout {
        None => Some(DEFAULT_ETCD_DIAL_TIMEOUT),
        Some(field) => field.positive_duration(diag),
    };
    Some(TowerStore::Etcd(EtcdStore {
        endpoints: endpoints?,
        key_prefix: key_prefix?,
        dial_timeout: dial_timeout?,
    }))
}

/// An etcd key prefix: starts with `/`, no spaces.
pub(crate) fn key_prefix(field: &Field<'_>, diag: &mut Diagnostics) -> Option<String> {
    let prefix = field.str(diag)?;
    if prefix.starts_with('/') && !prefix.contains(char::is_whitespace) {
        Some(prefix.to_string())
    } else {
        diag.error(
            &field.path,
            format!("{prefix:?} must start with '/' and contain no spaces"),
        );
        None
    }
}

/// One etcd endpoint: an `http(s)://` URL, or `host:port` read as `http://host:port`.
pub(crate) fn etcd_endpoint(item: &Field<'_>, diag: &mut Diagnostics) -> Option<Url> {
    let text = item.str(diag)?;
    if text.contains("://") {
        return item.url(diag, &["http", "https"]);
    }
    match HostPort::parse(text).map(|hp| Url::parse(&format!("http://{hp}"))) {
        Ok(Ok(url)) => Some(url),
        _ => {
            diag.error(
                &item.path,
                format!(
                    "{text:?} is not an etcd endpoint (expected a URL such as \"http://127.0.0.1:2379\" or host:port)"
                ),
            );
            None
        }
    }
}
