//! Reads `validator-config.json` field by field into [`AgentConfig`], then checks how the fields
//! fit together. Every problem is collected; nothing stops at the first.

use std::path::{Path, PathBuf};

use serde_json::Value;
use solana_pubkey::Pubkey;
use url::Url;

use super::*;
use crate::duration::Go;
use crate::fields::{suggest, Diagnostics, Field, Object};
use crate::manager::MANAGER_ONLY_FIELDS;
use crate::paths::{check, Expect};
use crate::tower_store;
use crate::types::ConsensusSetting;
use crate::{or_default, zero_is_default};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agave,
    Firedancer,
    Command,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agave => "agave",
            Kind::Firedancer => "firedancer",
            Kind::Command => "command",
        }
    }
}

const KIND_NAMES: &[&str] = &["agave", "firedancer", "command"];

/// `passive_identity_symlink_command`, or the reference's older name for it.
fn passive_symlink_command(o: &mut Object<'_>, diag: &mut Diagnostics) -> Option<String> {
    let new = command(o, "passive_identity_symlink_command", diag);
    let old = command(o, "identity_symlink_command", diag);
    match (new, old) {
        (Some(_), Some(_)) => {
            diag.error(
                "identity_symlink_command",
                "the old name of passive_identity_symlink_command, which is set too: keep one",
            );
            None
        }
        (None, Some(old)) => {
            diag.warn(
                "identity_symlink_command",
                "renamed passive_identity_symlink_command in the reference design; read as that",
            );
            Some(old)
        }
        (new, None) => new,
    }
}

/// Reads an optional shell command; the empty string counts as absent.
fn command(object: &mut Object<'_>, name: &'static str, diag: &mut Diagnostics) -> Option<String> {
    object.get(name).and_then(|f| f.command(diag))
}

/// Reads an optional path that must exist as `expect` when given.
fn existing(
    object: &mut Object<'_>,
    name: &'static str,
    expect: Expect,
    diag: &mut Diagnostics,
) -> Option<PathBuf> {
    let field = object.get(name)?;
    let path = field.path(diag)?;
    check(diag, &field.path, &path, expect);
    Some(path)
}

fn read_kind(field: &Field<'_>, diag: &mut Diagnostics) -> Option<Kind> {
    let text = field.str(diag)?;
    match text {
        "agave" => Some(Kind::Agave),
        "firedancer" => Some(Kind::Firedancer),
        "command" => Some(Kind::Command),
        other => {
            let hint = suggest(other, KIND_NAMES)
                .map(|k| format!("; did you mean {k:?}?"))
                .unwrap_or_default();
            diag.error(
                &field.path,
                format!("unknown validator client {other:?}; expected \"agave\", \"firedancer\" or \"command\"{hint}"),
            );
            None
        }
    }
}

/// Reads and validates the agent config. Returns `None` only after reporting problems; the caller
/// rejects the file whenever any problem was reported.
pub(crate) fn read(root: &Value, diag: &mut Diagnostics) -> Option<AgentConfig> {
    let mut o = Object::root(root, diag)?;

    // Reference fields, in the order of the reference example.
    let listen_addr = or_default(o.get("listen_addr"), DEFAULT_LISTEN_ADDR, |f| {
        f.listen_addr(diag)
    });
    let allowed_ips = or_default(o.get("allowed_ips"), Vec::new(), |f| {
        f.array_of(diag, |i, d| i.ip(d))
    });
    let local_rpc = match o.get("local_rpc") {
        Some(field) => field.url(diag, &["http", "https"]),
        None => Url::parse(DEFAULT_LOCAL_RPC).ok(),
    };
    let process_name = or_default(
        o.get("process_name"),
        DEFAULT_PROCESS_NAME.to_string(),
        |f| f.non_empty(diag).map(str::to_string),
    );
    let manager_timeout = zero_is_default(
        o.get("manager_timeout"),
        Go(DEFAULT_MANAGER_TIMEOUT),
        diag,
        |f, diag| f.positive_duration(diag).map(Go),
    )
    .map(|d| d.0);
    let tower_settle = or_default(o.get("tower_settle"), DEFAULT_TOWER_SETTLE, |f| {
        f.positive_duration(diag)
    });
    let tower_backup_command = command(&mut o, "tower_backup_command", diag);
    let tower_restore_command = command(&mut o, "tower_restore_command", diag);
    let identity_change_command = command(&mut o, "identity_change_command", diag);
    let identity_remove_command = command(&mut o, "identity_remove_command", diag);
    let dry_run = or_default(o.get("dry_run"), false, |f| f.bool(diag));
    let tower_file_path = o.get("tower_file_path").and_then(|f| f.non_empty(diag));
    let validator_identity = o
        .required("validator_identity", diag)
        .and_then(|f| f.pubkey(diag));
    let gossip_check_command = command(&mut o, "gossip_check_command", diag);
    let log_file = o.get("log_file").and_then(|f| f.path(diag));
    let log_format = or_default(o.get("log_format"), crate::LogFormat::Text, |f| {
        crate::LogFormat::read(f, diag)
    });
    if let Some(path) = &log_file {
        crate::paths::check_writable(diag, "log_file", path, false);
    }
    let switch_hooks = crate::SwitchHooks::read(
        &mut o,
        "pre_role_change_command",
        "post_role_change_command",
        None,
        diag,
    );
    let hooks = Hooks {
        validator_restart_command: command(&mut o, "validator_restart_command", diag),
        agent_stop_command: command(&mut o, "agent_stop_command", diag),
        active_identity_symlink_command: command(&mut o, "active_identity_symlink_command", diag),
        passive_identity_symlink_command: passive_symlink_command(&mut o, diag),
    };
    // Reference fields (its Go code's, some not in its README) that mean nothing here.
    o.no_effect(
        "is_active_on_start",
        "the role is the validator's live identity, read at start-up through the admin RPC or \
         getIdentity",
        diag,
    );
    o.no_effect(
        "local_ip",
        "the role is read from the validator's identity, not from gossip by address",
        diag,
    );
    o.no_effect(
        "identity_check_command",
        "the identity is read through the admin RPC (agave) or getIdentity on local_rpc",
        diag,
    );
    o.no_effect(
        "peer_endpoint",
        "the peer check became the connectivity check (connectivity_targets)",
        diag,
    );

    // Fields this design adds.
    let kind_field = o.get("validator_client");
    let kind_given = kind_field.as_ref().and_then(|f| read_kind(f, diag));
    let ledger_path = existing(&mut o, "ledger_path", Expect::Dir, diag);
    let admin_socket = o.get("admin_socket").and_then(|f| f.path(diag));
    let tower_dir = o.get("tower_dir").and_then(|f| f.path(diag));
    let staked_identity_keypair =
        existing(&mut o, "staked_identity_keypair", Expect::PrivateFile, diag);
    let authorized_voter_keypair = existing(
        &mut o,
        "authorized_voter_keypair",
        Expect::PrivateFile,
        diag,
    );
    let unstaked_identity_keypair = existing(
        &mut o,
        "unstaked_identity_keypair",
        Expect::PrivateFile,
        diag,
    );
    let require_tower = or_default(o.get("require_tower"), true, |f| f.bool(diag));
    let add_authorized_voter = or_default(o.get("add_authorized_voter"), false, |f| f.bool(diag));
    let fdctl_field = o.get("fdctl_path");
    let firedancer_field = o.get("firedancer_config");
    let pubkeys_field = o.get("manager_pubkeys");
    let legacy_auth = pubkeys_field.is_none() && !o.has("require_signed_commands");
    let manager_pubkeys = or_default(pubkeys_field, Vec::new(), |f| {
        f.array_of(diag, |i, d| i.pubkey(d))
    });
    // A reference-design file sets neither field; it keeps the reference's unsigned commands.
    let require_signed_commands = or_default(o.get("require_signed_commands"), !legacy_auth, |f| {
        f.bool(diag)
    });
    let command_max_age = or_default(o.get("command_max_age"), DEFAULT_COMMAND_MAX_AGE, |f| {
        f.positive_duration(diag)
    });
    let tower_store = tower_store::read(&mut o, diag);
    let consensus = or_default(o.get("consensus"), ConsensusSetting::Auto, |f| {
        ConsensusSetting::read(f, diag)
    });
    let connectivity = read_connectivity(&mut o, diag);
    let state_dir = or_default(
        o.get("state_dir"),
        PathBuf::from(DEFAULT_AGENT_STATE_DIR),
        |f| f.path(diag),
    );
    if let Some(path) = &state_dir {
        crate::paths::check_writable(diag, "state_dir", path, true);
    }
    o.finish(diag, Some((MANAGER_ONLY_FIELDS, "manager-config.json")));

    // Cross-field validation.
    if allowed_ips.as_ref().is_some_and(Vec::is_empty) {
        diag.warn(
            "allowed_ips",
            "empty: commands are accepted from any IP address (list the manager's IPs)",
        );
    }
    if dry_run == Some(true) {
        diag.warn(
            "dry_run",
            "true: the agent logs identity and tower changes but does not make them",
        );
    }
    let kind = match (kind_field.is_some(), kind_given) {
        (true, given) => given,
        (false, _) if ledger_path.is_some() || diag.failed("ledger_path") => Some(Kind::Agave),
        (false, _) => {
            diag.warn(
                "validator_client",
                "not set and no ledger_path: the reference shell commands (identity_change_command, \
                 identity_remove_command, ...) will be used; set ledger_path to switch identity \
                 through Agave's admin RPC instead",
            );
            Some(Kind::Command)
        }
    };
    let admin_socket = admin_socket.or_else(|| ledger_path.as_ref().map(|l| l.join("admin.rpc")));
    let (tower_dir, tower_file) = resolve_tower(
        tower_file_path,
        tower_dir,
        ledger_path.as_deref(),
        validator_identity.as_ref(),
        kind,
        diag,
    )
    .unzip();
    if require_signed_commands == Some(true) && manager_pubkeys.as_ref().is_some_and(Vec::is_empty)
    {
        diag.error(
            "manager_pubkeys",
            "at least one manager public key is required when require_signed_commands is true",
        );
    }
    if require_signed_commands == Some(false) {
        let why = if legacy_auth {
            "not set and no manager_pubkeys (a reference-design config)"
        } else {
            "false"
        };
        diag.warn(
            "require_signed_commands",
            format!(
                "{why}: UNSIGNED COMMANDS ARE ACCEPTED; anyone who can reach listen_addr from an \
                 allowed IP can move the staked identity; set manager_pubkeys to require signatures"
            ),
        );
    }

    let client_fields = ClientFields {
        identity_change_command,
        identity_remove_command,
        tower_backup_command,
        tower_restore_command,
        gossip_check_command,
        admin_socket,
        unstaked_identity_keypair,
        fdctl_field,
        firedancer_field,
    };
    let validator_client =
        kind.and_then(|kind| resolve_client(kind, kind_field.is_none(), client_fields, diag));
    if matches!(kind, Some(Kind::Agave | Kind::Firedancer)) && staked_identity_keypair.is_none() {
        diag.warn(
            "staked_identity_keypair",
            "not set: this agent can only be promoted with skip_identity (secure identity mode, \
             where the manager sets the identity over SSH)",
        );
    }

    let vote_history_file = ledger_path
        .as_ref()
        .zip(validator_identity.as_ref())
        .map(|(ledger, id)| ledger.join(format!("vote_history-{id}.bin")));
    Some(AgentConfig {
        listen_addr: listen_addr?,
        allowed_ips: allowed_ips?,
        local_rpc: local_rpc?,
        process_name: process_name?,
        manager_timeout: manager_timeout?,
        tower_settle: tower_settle?,
        dry_run: dry_run?,
        validator_identity: validator_identity?,
        log_file,
        log_format: log_format?,
        switch_hooks: switch_hooks?,
        validator_client: validator_client?,
        ledger_path,
        tower_dir: tower_dir?,
        tower_file: tower_file?,
        vote_history_file,
        consensus: consensus?,
        staked_identity_keypair,
        authorized_voter_keypair,
        require_tower: require_tower?,
        add_authorized_voter: add_authorized_voter?,
        hooks,
        auth: CommandAuth {
            manager_pubkeys: manager_pubkeys?,
            require_signed_commands: require_signed_commands?,
            command_max_age: command_max_age?,
        },
        tower_store: tower_store?,
        connectivity: connectivity?,
        state_dir: state_dir?,
        warnings: Vec::new(),
    })
}

/// The fields that depend on the validator client, before it is known which of them are used.
struct ClientFields<'a> {
    identity_change_command: Option<String>,
    identity_remove_command: Option<String>,
    tower_backup_command: Option<String>,
    tower_restore_command: Option<String>,
    gossip_check_command: Option<String>,
    admin_socket: Option<PathBuf>,
    unstaked_identity_keypair: Option<PathBuf>,
    fdctl_field: Option<Field<'a>>,
    firedancer_field: Option<Field<'a>>,
}

/// Builds the [`ValidatorClient`] of `kind`: requires what it needs, and warns about the fields it
/// ignores. `defaulted` says whether `validator_client` was left out of the file.
fn resolve_client(
    kind: Kind,
    defaulted: bool,
    fields: ClientFields<'_>,
    diag: &mut Diagnostics,
) -> Option<ValidatorClient> {
    let ClientFields {
        identity_change_command,
        identity_remove_command,
        tower_backup_command,
        tower_restore_command,
        gossip_check_command,
        admin_socket,
        unstaked_identity_keypair: unstaked,
        fdctl_field,
        firedancer_field,
    } = fields;
    let name = kind.name();
    let why = if defaulted {
        format!("required when validator_client is {name:?} (the default here)")
    } else {
        format!("required when validator_client is {name:?}")
    };
    if kind != Kind::Firedancer {
        for field in [&fdctl_field, &firedancer_field].into_iter().flatten() {
            diag.warn(
                &field.path,
                format!("ignored: validator_client is {name:?}, not \"firedancer\""),
            );
        }
    }
    if kind == Kind::Command {
        if unstaked.is_some() {
            diag.warn(
                "unstaked_identity_keypair",
                "not used when validator_client is \"command\" (identity_remove_command switches identity)",
            );
        }
        if identity_change_command.is_none() && !diag.failed("identity_change_command") {
            diag.warn(
                "identity_change_command",
                "not set: this agent can only be promoted with skip_identity (secure identity mode)",
            );
        }
        if identity_remove_command.is_none() && !diag.failed("identity_remove_command") {
            diag.error("identity_remove_command", why);
        }
        return Some(ValidatorClient::Command(CommandClient {
            identity_change_command,
            identity_remove_command: identity_remove_command?,
            tower_backup_command,
            tower_restore_command,
            gossip_check_command,
        }));
    }
    let ignored = [
        (
            "identity_change_command",
            identity_change_command.is_some(),
            "the identity is switched natively",
        ),
        (
            "identity_remove_command",
            identity_remove_command.is_some(),
            "the identity is switched natively",
        ),
        (
            "tower_backup_command",
            tower_backup_command.is_some(),
            "the agent moves the tower itself (tower_store)",
        ),
        (
            "tower_restore_command",
            tower_restore_command.is_some(),
            "the agent moves the tower itself (tower_store)",
        ),
        (
            "gossip_check_command",
            gossip_check_command.is_some(),
            "the agent asks the validator for its identity",
        ),
    ];
    for (field, given, reason) in ignored {
        if given {
            diag.warn(
                field,
                format!("ignored: validator_client is {name:?} and {reason}"),
            );
        }
    }
    if unstaked.is_none() && !diag.failed("unstaked_identity_keypair") {
        diag.error("unstaked_identity_keypair", why.clone());
    }
    if kind == Kind::Agave {
        if admin_socket.is_none() && !diag.failed("admin_socket") && !diag.failed("ledger_path") {
            diag.error("ledger_path", format!("{why} (or set admin_socket)"));
        }
        return Some(ValidatorClient::Agave(AgaveClient {
            admin_socket: admin_socket?,
            unstaked_identity_keypair: unstaked?,
        }));
    }
    let fdctl_path = match fdctl_field {
        None => Some(PathBuf::from(DEFAULT_FDCTL_PATH)),
        Some(field) => field.path(diag).inspect(|path| {
            // A bare name is looked up on PATH when run; a path with a directory must exist.
            if path.components().count() > 1 {
                check(diag, &field.path, path, Expect::File);
            }
        }),
    };
    let firedancer_config = match firedancer_field {
        None => {
            diag.error("firedancer_config", why);
            None
        }
        Some(field) => field
            .path(diag)
            .inspect(|path| check(diag, &field.path, path, Expect::File)),
    };
    Some(ValidatorClient::Firedancer(FiredancerClient {
        fdctl_path: fdctl_path?,
        firedancer_config: firedancer_config?,
        admin_socket,
        unstaked_identity_keypair: unstaked?,
    }))
}

/// Works out the tower directory and the staked tower file (see [`AgentConfig::tower_file`]).
fn resolve_tower(
    template: Option<&str>,
    tower_dir: Option<PathBuf>,
    ledger_path: Option<&Path>,
    identity: Option<&Pubkey>,
    kind: Option<Kind>,
    diag: &mut Diagnostics,
) -> Option<(PathBuf, PathBuf)> {
    let identity = identity?;
    let file_name = format!("tower-1_9-{identity}.bin");
    let dir = tower_dir.or_else(|| ledger_path.map(Path::to_path_buf));
    let Some(template) = template else {
        if dir.is_none()
            && !["tower_file_path", "tower_dir", "ledger_path"]
                .iter()
                .any(|f| diag.failed(f))
        {
            diag.error(
                "tower_file_path",
                "cannot tell where the tower file is: set tower_file_path, tower_dir or ledger_path",
            );
        }
        let dir = dir?;
        let file = dir.join(&file_name);
        return Some((dir, file));
    };
    let file = PathBuf::from(template.replace(TOWER_FILE_PLACEHOLDER, &identity.to_string()));
    let native = matches!(kind, Some(Kind::Agave | Kind::Firedancer));
    let read_from = dir
        .clone()
        .or_else(|| file.parent().map(Path::to_path_buf))
        .map(|d| d.join(&file_name));
    if native && read_from.as_ref().is_some_and(|expected| *expected != file) {
        diag.error(
            "tower_file_path",
            format!(
                "resolves to {:?}, but the validator reads the tower from {:?}; \
                 remove tower_file_path or make them agree",
                file.display().to_string(),
                read_from.unwrap_or_default().display().to_string()
            ),
        );
    } else if file.file_name() != Some(file_name.as_ref()) {
        diag.warn(
            "tower_file_path",
            format!("the file name is not {file_name}, the name the validator reads"),
        );
    }
    let dir = dir.or_else(|| file.parent().map(Path::to_path_buf))?;
    Some((dir, file))
}

fn read_connectivity(o: &mut Object<'_>, diag: &mut Diagnostics) -> Option<ConnectivityCheck> {
    let targets = match o.get("connectivity_targets") {
        None => Some(
            DEFAULT_CONNECTIVITY_TARGETS
                .iter()
                .map(|t| HostPort::parse(t).expect("the default targets are valid"))
                .collect(),
        ),
        Some(field) => {
            field
                .array_of(diag, |i, d| i.host_port(d))
                .filter(|targets: &Vec<HostPort>| {
                    if targets.is_empty() {
                        diag.error(
                            &field.path,
                            "must list at least one host:port to check connectivity against",
                        );
                    }
                    !targets.is_empty()
                })
        }
    };
    let failures = match o.get("connectivity_failures_to_fence") {
        None => targets.as_ref().map(|t| DEFAULT_CONNECTIVITY_FAILURES_TO_FENCE.min(t.len())),
        Some(field) => field.int_at_least::<usize>(diag, 1).and_then(|n| {
            let count = targets.as_ref()?.len();
            if n > count {
                diag.error(
                    &field.path,
                    format!("must be between 1 and {count} (the number of connectivity_targets), got {n}"),
                );
                return None;
            }
            Some(n)
        }),
    };
    let timeout = or_default(
        o.get("connectivity_timeout"),
        DEFAULT_CONNECTIVITY_TIMEOUT,
        |f| f.positive_duration(diag),
    );
    Some(ConnectivityCheck {
        targets: targets?,
        failures_to_fence: failures?,
        timeout: timeout?,
    })
}
