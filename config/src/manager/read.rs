//! Reads `manager-config.json` field by field into [`ManagerConfig`], then checks how the fields
//! fit together. Every problem is collected; nothing stops at the first.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use url::{Host, Url};

use super::*;
use crate::agent::AGENT_ONLY_FIELDS;
use crate::duration::Go;
use crate::fields::{Diagnostics, Field, Object};
use crate::paths::{check, Expect};
use crate::secure::{self, Secure};
use crate::tower_store::{self, TowerStore};
use crate::types::ConsensusSetting;
use crate::types::{is_dns_name, Secret};
use crate::{or_default, zero_is_default};

/// A validator object as read, with its path and the paths of its secure-mode-only fields.
struct ReadValidator {
    /// `validator1`, or `validators[0]`.
    path: String,
    endpoint: Option<ValidatorEndpoint>,
    ssh_fields: Vec<String>,
}

/// Reads `validator1` or `validator2`, the reference's pair.
fn read_validator(o: &mut Object<'_>, key: &'static str, diag: &mut Diagnostics) -> ReadValidator {
    match o.required(key, diag).and_then(|f| f.object(diag)) {
        Some(v) => read_validator_object(v, key.to_string(), diag),
        None => ReadValidator {
            path: key.to_string(),
            endpoint: None,
            ssh_fields: Vec::new(),
        },
    }
}

/// Reads `validators`: any number of nodes for the staked identity, in standby priority order,
/// instead of `validator1` and `validator2`. Their default names are `validator1`, `validator2`, …
fn read_validator_list(field: Field<'_>, diag: &mut Diagnostics) -> Vec<ReadValidator> {
    let Some(items) = field.array(diag) else {
        return Vec::new();
    };
    if items.len() < 2 {
        diag.error(
            &field.path,
            format!(
                "names {} validator(s); failover needs at least two (one active, one standby)",
                items.len()
            ),
        );
    }
    if items.len() > MAX_VALIDATORS {
        diag.error(
            &field.path,
            format!(
                "names {} validators; at most {MAX_VALIDATORS} are watched by one manager",
                items.len()
            ),
        );
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.object(diag) {
            Some(v) => read_validator_object(v, format!("validator{}", i + 1), diag),
            None => ReadValidator {
                path: item.path.clone(),
                endpoint: None,
                ssh_fields: Vec::new(),
            },
        })
        .collect()
}

/// The nodes: `validators`, or the reference's `validator1` and `validator2` (not both forms).
fn read_validators(o: &mut Object<'_>, diag: &mut Diagnostics) -> Vec<ReadValidator> {
    let Some(list) = o.get("validators") else {
        return vec![
            read_validator(o, "validator1", diag),
            read_validator(o, "validator2", diag),
        ];
    };
    for key in ["validator1", "validator2"] {
        if let Some(field) = o.get(key) {
            diag.error(
                field.path,
                "set beside validators: name every node in validators (validator1 and \
                 validator2 are the reference's form of a list of two)",
            );
        }
    }
    read_validator_list(list, diag)
}

/// Reads one validator object; `default_name` names it when it has no `name`.
fn read_validator_object(
    mut v: Object<'_>,
    default_name: String,
    diag: &mut Diagnostics,
) -> ReadValidator {
    let mut read = ReadValidator {
        path: v.path().to_string(),
        endpoint: None,
        ssh_fields: Vec::new(),
    };
    let endpoint = v
        .required("endpoint", diag)
        .and_then(|f| f.url(diag, &["http", "https"]));
    let ip = v.required("ip", diag).and_then(|f| f.ip(diag));
    let ledger_path = v.get("ledger_path").and_then(|f| f.path(diag));
    let name = or_default(v.get("name"), default_name, |f| {
        f.non_empty(diag).map(str::to_string)
    });
    let ssh_host_field = v.get("ssh_host");
    let ssh_port_field = v.get("ssh_port");
    read.ssh_fields = [&ssh_host_field, &ssh_port_field]
        .into_iter()
        .flatten()
        .map(|f| f.path.clone())
        .collect();
    let ssh_host = match ssh_host_field {
        None => ip.map(|ip| ip.to_string()),
        Some(field) => field.non_empty(diag).and_then(|host| {
            if host.parse::<IpAddr>().is_ok() || is_dns_name(host) {
                Some(host.to_string())
            } else {
                diag.error(
                    &field.path,
                    format!("{host:?} is not a host name or IP address"),
                );
                None
            }
        }),
    };
    let ssh_port = or_default(ssh_port_field, DEFAULT_SSH_PORT, |f| {
        f.int_at_least(diag, 1)
    });
    v.finish(diag, None);
    read.endpoint = (|| {
        Some(ValidatorEndpoint {
            name: name?,
            endpoint: endpoint?,
            ip: ip?,
            ledger_path,
            ssh_host: ssh_host?,
            ssh_port: ssh_port?,
        })
    })();
    read
}

/// Reads a Telegram chat id: a string or an integer, a number (usually negative) or `@channel`.
fn chat_id(field: &Field<'_>, diag: &mut Diagnostics) -> Option<String> {
    let text = match field.value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => field.non_empty(diag)?.to_string(),
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let channel = text.len() > 1
        && text.starts_with('@')
        && text[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if numeric || channel {
        Some(text)
    } else {
        diag.error(
            &field.path,
            format!("{text:?} is not a Telegram chat id (expected a number such as \"-1001234567890\" or \"@channel\")"),
        );
        None
    }
}

/// Checks the shape `<bot id>:<secret>` of a bot token without ever repeating it.
fn bot_token(field: &Field<'_>, diag: &mut Diagnostics) -> Option<Secret> {
    let token = field.secret(diag)?;
    let valid = token.expose().split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !valid {
        diag.error(
            &field.path,
            "is not a Telegram bot token (expected <bot id>:<secret> as given by @BotFather; \
             the value is not shown because it is secret)",
        );
    }
    valid.then_some(token)
}

/// The default pubsub URL for a cluster RPC URL (see [`ManagerConfig::cluster_ws`]).
pub(crate) fn derive_cluster_ws(rpc: &Url) -> Option<Url> {
    let mut ws = rpc.clone();
    ws.set_scheme(if rpc.scheme() == "https" { "wss" } else { "ws" })
        .ok()?;
    if let Some(port) = rpc.port() {
        ws.set_port(Some(port.checked_add(1)?)).ok()?;
    }
    Some(ws)
}

/// Reads and validates the manager config. Returns `None` only after reporting problems.
pub(crate) fn read(root: &Value, diag: &mut Diagnostics) -> Option<ManagerConfig> {
    let mut o = Object::root(root, diag)?;

    // Reference fields, in the order of the reference example.
    let validators = read_validators(&mut o, diag);
    o.no_effect(
        "gossip_check_command",
        "the manager reads gossip with getClusterNodes over cluster_rpc",
        diag,
    );
    // Reference fields (its Go code's, not its README's) that mean nothing here.
    for name in ["active_validator", "passive_validator"] {
        o.no_effect(
            name,
            "which validator is active is read from both agents (their validators' identity) \
             and from gossip; validators (or validator1 and validator2) name them",
            diag,
        );
    }
    o.no_effect(
        "slot_check_interval",
        "the cluster tip comes from slotSubscribe on cluster_ws, with getSlot only while it is \
         down (capped by rpc_requests_per_second)",
        diag,
    );
    let startup_grace_period = or_default(o.get("startup_grace_period"), Duration::ZERO, |f| {
        f.duration(diag)
    });
    let cluster_rpc = o
        .required("cluster_rpc", diag)
        .and_then(|f| f.cluster_url(diag));
    let heartbeat_interval = zero_is_default(
        o.get("heartbeat_interval"),
        Go(DEFAULT_HEARTBEAT_INTERVAL),
        diag,
        |f, diag| f.positive_duration(diag).map(Go),
    )
    .map(|d| d.0);
    let misses_before_failover = zero_is_default(
        o.get("misses_before_failover"),
        DEFAULT_MISSES_BEFORE_FAILOVER,
        diag,
        |f, diag| f.int_at_least(diag, 1),
    );
    let slot_diff_threshold = zero_is_default(
        o.get("slot_diff_threshold"),
        DEFAULT_SLOT_DIFF_THRESHOLD,
        diag,
        |f, diag| f.int_at_least(diag, 1),
    );
    let request_timeout = zero_is_default(
        o.get("request_timeout"),
        Go(DEFAULT_REQUEST_TIMEOUT),
        diag,
        |f, diag| f.positive_duration(diag).map(Go),
    )
    .map(|d| d.0);
    let dry_run = or_default(o.get("dry_run"), false, |f| f.bool(diag));
    let token_field = o.get("telegram_bot_token");
    let token = token_field.as_ref().and_then(|f| bot_token(f, diag));
    let chat_field = o.get("telegram_chat_id");
    let chat = chat_field.as_ref().and_then(|f| chat_id(f, diag));
    let log_file = o.get("log_file").and_then(|f| f.path(diag));
    let log_format = or_default(o.get("log_format"), crate::LogFormat::Text, |f| {
        crate::LogFormat::read(f, diag)
    });
    if let Some(path) = &log_file {
        crate::paths::check_writable(diag, "log_file", path, false);
    }
    let staked_identity_pubkey = o
        .required("staked_identity_pubkey", diag)
        .and_then(|f| f.pubkey(diag));
    let vote_field = o.get("vote_account_pubkey");
    let vote_account_pubkey = vote_field.as_ref().and_then(|f| f.pubkey(diag));
    let stale_vote_slot_threshold = zero_is_default(
        o.get("stale_vote_slot_threshold"),
        DEFAULT_STALE_VOTE_SLOT_THRESHOLD,
        diag,
        |f, diag| f.int_at_least(diag, 1),
    );
    let secure = secure::read(&mut o, diag);

    // Fields this design adds.
    let cluster_ws = match o.get("cluster_ws") {
        Some(field) => field.url(diag, &["ws", "wss"]),
        None => cluster_rpc.as_ref().and_then(|rpc| {
            let ws = derive_cluster_ws(rpc);
            if ws.is_none() {
                diag.error("cluster_ws", "cannot be derived from cluster_rpc; set it");
            }
            ws
        }),
    };
    let api_base_field = o.get("telegram_api_base");
    let api_base = match &api_base_field {
        Some(field) => field.url(diag, &["http", "https"]),
        None => Url::parse(DEFAULT_TELEGRAM_API_BASE).ok(),
    };
    let status_report_interval = or_default(
        o.get("status_report_interval"),
        DEFAULT_STATUS_REPORT_INTERVAL,
        |f| f.positive_duration(diag),
    );
    let signing_field = o.get("signing_keypair_path");
    // A reference-design file sets neither field; it keeps the reference's unsigned commands.
    let legacy_signing = signing_field.is_none() && !o.has("sign_commands");
    let sign_commands = or_default(o.get("sign_commands"), !legacy_signing, |f| f.bool(diag));
    let tower_store = tower_store::read(&mut o, diag);
    let election = crate::election::read(&mut o, diag);
    let consensus = or_default(o.get("consensus"), ConsensusSetting::Auto, |f| {
        ConsensusSetting::read(f, diag)
    });
    // Alpenglow's lastVote comes from certificates in later blocks: it trails the tip by about
    // 8 slots on a healthy cluster, so it gets its own, larger threshold.
    let alpenglow_stale_vote_slot_threshold = match o.get("alpenglow_stale_vote_slot_threshold") {
        Some(f) => f.int_at_least(diag, 1),
        None => {
            stale_vote_slot_threshold.map(|t| t.max(DEFAULT_ALPENGLOW_STALE_VOTE_SLOT_THRESHOLD))
        }
    };
    let state_dir = or_default(
        o.get("state_dir"),
        PathBuf::from(DEFAULT_MANAGER_STATE_DIR),
        |f| f.path(diag),
    );
    if let Some(path) = &state_dir {
        crate::paths::check_writable(diag, "state_dir", path, true);
    }
    let failover_cooldown =
        or_default(o.get("failover_cooldown"), DEFAULT_FAILOVER_COOLDOWN, |f| {
            f.duration(diag)
        });
    let planned_switch_leader_slots = or_default(
        o.get("planned_switch_leader_slots"),
        DEFAULT_PLANNED_SWITCH_LEADER_SLOTS,
        |f| f.int_at_least(diag, 1),
    );
    let planned_switch_leader_wait = or_default(
        o.get("planned_switch_leader_wait"),
        DEFAULT_PLANNED_SWITCH_LEADER_WAIT,
        |f| f.duration(diag),
    );
    let rpc_requests_per_second = or_default(
        o.get("rpc_requests_per_second"),
        DEFAULT_RPC_REQUESTS_PER_SECOND,
        |f| f.int_at_least(diag, 1),
    );
    let webhook_url = o
        .get("webhook_url")
        .and_then(|f| f.url(diag, &["http", "https"]));
    let metrics_listen_addr = o
        .get("metrics_listen_addr")
        .and_then(|f| f.listen_addr(diag));
    let switch_hooks = crate::SwitchHooks::read(
        &mut o,
        "pre_switch_command",
        "post_switch_command",
        Some("pre_switch_must_succeed"),
        diag,
    );
    let fence_margin = or_default(o.get("fence_margin"), DEFAULT_FENCE_MARGIN, |f| {
        f.duration(diag)
    });
    o.finish(diag, Some((AGENT_ONLY_FIELDS, "validator-config.json")));

    // Cross-field validation.
    for (j, later) in validators.iter().enumerate() {
        let Some(v2) = &later.endpoint else { continue };
        for earlier in &validators[..j] {
            let Some(v1) = &earlier.endpoint else {
                continue;
            };
            let (at, first) = (&later.path, &earlier.path);
            if v1.ip == v2.ip {
                diag.error(
                    format!("{at}.ip"),
                    format!("{} is also {first}.ip; the validators must differ", v1.ip),
                );
            }
            if v1.endpoint == v2.endpoint {
                diag.error(
                    format!("{at}.endpoint"),
                    format!("is also {first}.endpoint; the agents must differ"),
                );
            }
            if v1.name == v2.name {
                diag.error(
                    format!("{at}.name"),
                    format!("{:?} is also the name of {first}", v1.name),
                );
            }
        }
    }
    for read in &validators {
        let (key, Some(v)) = (&read.path, &read.endpoint) else {
            continue;
        };
        let endpoint_ip = match v.endpoint.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if endpoint_ip.is_some_and(|ip| ip != v.ip) {
            diag.warn(
                format!("{key}.ip"),
                format!(
                    "{} differs from the host of {key}.endpoint ({}); is one of them a typo?",
                    v.ip, v.endpoint
                ),
            );
        }
    }
    // The term is claimed in one etcd transaction guarded by the leader key: both must live in
    // the same etcd cluster.
    if let (Some(Some(election)), Some(TowerStore::Etcd(store))) = (&election, &tower_store) {
        if election.endpoints != store.endpoints {
            diag.error(
                "election.endpoints",
                "must be the same as tower_store.endpoints: the term is kept in the tower store's \
                 etcd and claimed there under the leader's lease",
            );
        }
    }
    // Each manager keeps its own copy of the embedded store's tower: a new leader on another
    // server starts without the copy the last one took, and after a host dies it can only fail
    // over once the chain's vote state has outlived every lockout.
    if let (Some(Some(_)), Some(TowerStore::Embedded)) = (&election, &tower_store) {
        diag.warn(
            "tower_store",
            "embedded with an election: each manager keeps its own tower copy, so a new leader \
             does not have the last one's; use the etcd tower store with several managers",
        );
    }
    if misses_before_failover == Some(1) {
        diag.warn(
            "misses_before_failover",
            "1: a single missed heartbeat triggers a failover",
        );
    }
    if dry_run == Some(true) {
        diag.warn(
            "dry_run",
            "true: failures are detected and logged but no failover is performed",
        );
    }
    if failover_cooldown == Some(Duration::ZERO) {
        diag.warn(
            "failover_cooldown",
            "0: nothing stops failovers from flapping back and forth",
        );
    }
    let telegram = match (token_field.is_some(), chat_field.is_some()) {
        (true, true) => token
            .zip(chat)
            .zip(api_base)
            .map(|((bot_token, chat_id), api_base)| Telegram {
                bot_token,
                chat_id,
                api_base,
            }),
        (true, false) => {
            diag.error(
                "telegram_chat_id",
                "required when telegram_bot_token is set",
            );
            None
        }
        (false, true) => {
            diag.error(
                "telegram_bot_token",
                "required when telegram_chat_id is set",
            );
            None
        }
        (false, false) => {
            diag.warn(
                "telegram_bot_token",
                "not set: no Telegram alerts will be sent (set telegram_bot_token and telegram_chat_id)",
            );
            if let Some(field) = api_base_field {
                diag.warn(field.path, "ignored because no Telegram bot is configured");
            }
            None
        }
    };
    match (
        vote_field.is_some(),
        vote_account_pubkey,
        staked_identity_pubkey,
    ) {
        (false, _, _) => diag.warn(
            "vote_account_pubkey",
            "not set: vote-staleness checks are disabled",
        ),
        (true, Some(vote), Some(identity)) if vote == identity => diag.error(
            "vote_account_pubkey",
            "must differ from staked_identity_pubkey (the vote account is its own key)",
        ),
        _ => {}
    }
    let secure = match secure {
        Secure::Invalid => None,
        Secure::Off => {
            for path in validators.iter().flat_map(|v| &v.ssh_fields) {
                diag.warn(path, "ignored because secure_identity_mode is false");
            }
            Some(None)
        }
        Secure::On { mode, uses_ledger } => {
            if let Some(template) = uses_ledger {
                for read in &validators {
                    let key = &read.path;
                    if read
                        .endpoint
                        .as_ref()
                        .is_some_and(|v| v.ledger_path.is_none())
                    {
                        diag.error(
                            format!("{key}.ledger_path"),
                            format!("required because {template} uses {{ledger}}"),
                        );
                    }
                }
            }
            Some(Some(mode))
        }
    };
    let signing_keypair_path = match (sign_commands, signing_field) {
        (Some(true), None) => {
            diag.error(
                "signing_keypair_path",
                "required unless sign_commands is false",
            );
            None
        }
        (Some(true), Some(field)) => field.path(diag).inspect(|path| {
            check(diag, &field.path, path, Expect::PrivateFile);
        }),
        (Some(false), field) => {
            let why = if legacy_signing {
                "not set and no signing_keypair_path (a reference-design config)"
            } else {
                "false"
            };
            diag.warn(
                "sign_commands",
                format!(
                    "{why}: COMMANDS TO AGENTS ARE NOT SIGNED; agents must accept unsigned commands, \
                     so anyone who can reach them can move the staked identity; set \
                     signing_keypair_path to sign them"
                ),
            );
            if let Some(field) = field {
                diag.warn(field.path, "ignored because sign_commands is false");
            }
            None
        }
        (None, _) => None,
    };

    Some(ManagerConfig {
        validators: validators
            .into_iter()
            .map(|v| v.endpoint)
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() >= 2)?,
        cluster_rpc: cluster_rpc?,
        cluster_ws: cluster_ws?,
        heartbeat_interval: heartbeat_interval?,
        misses_before_failover: misses_before_failover?,
        slot_diff_threshold: slot_diff_threshold?,
        request_timeout: request_timeout?,
        dry_run: dry_run?,
        telegram,
        status_report_interval: status_report_interval?,
        log_file,
        log_format: log_format?,
        staked_identity_pubkey: staked_identity_pubkey?,
        vote_account_pubkey,
        stale_vote_slot_threshold: stale_vote_slot_threshold?,
        alpenglow_stale_vote_slot_threshold: alpenglow_stale_vote_slot_threshold?,
        consensus: consensus?,
        secure: secure?,
        signing_keypair_path,
        tower_store: tower_store?,
        state_dir: state_dir?,
        startup_grace_period: startup_grace_period?,
        failover_cooldown: failover_cooldown?,
        planned_switch_leader_slots: planned_switch_leader_slots?,
        planned_switch_leader_wait: planned_switch_leader_wait?,
        rpc_requests_per_second: rpc_requests_per_second?,
        webhook_url,
        metrics_listen_addr,
        switch_hooks: switch_hooks?,
        fence_margin: fence_margin?,
        election: election?,
        warnings: Vec::new(),
    })
}
