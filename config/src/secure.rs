//! The reference design's Secure Identity Mode, validated as a whole: the staked keypair lives only
//! on the manager, which pipes it over SSH into `agave-validator set-identity` on the new active.

use std::path::PathBuf;

use crate::fields::{Diagnostics, Field, Object};
use crate::paths::{check, check_placeholders, expand_home, Expect};

/// The placeholder in the SSH command templates replaced by the validator's `ledger_path`.
pub const LEDGER_PLACEHOLDER: &str = "{ledger}";

/// Everything secure identity mode needs; present in the manager config only when
/// `secure_identity_mode` is true.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureMode {
    /// `identity_keypair_path` (reference, required): the staked keypair on the manager (exists,
    /// mode 0600).
    pub identity_keypair_path: PathBuf,
    /// `ssh_user` (reference, required): the user to log in as on both validator servers.
    pub ssh_user: String,
    /// `ssh_key_path` (reference, required): the SSH private key, with a leading `~/` expanded from
    /// `$HOME` (exists, mode 0600).
    pub ssh_key_path: PathBuf,
    /// `ssh_known_hosts`: a known-hosts file pinning the validators' host keys (exists), if given.
    pub ssh_known_hosts: Option<PathBuf>,
    /// `ssh_set_identity_command` (reference, required): the remote command reading the keypair
    /// from standard input; `{ledger}` is replaced by the validator's `ledger_path`.
    pub ssh_set_identity_command: String,
    /// `ssh_authorized_voter_command` (reference): the remote command adding the authorized voter
    /// from standard input, with the same placeholder. Absent means it is not run.
    pub ssh_authorized_voter_command: Option<String>,
    /// `ssh_require_tower`: run set-identity with `--require-tower`. Default true.
    pub ssh_require_tower: bool,
    /// `ssh_program`: the OpenSSH client to run. Default `ssh` (from `PATH`).
    pub ssh_program: PathBuf,
}

/// The outcome of reading the secure-mode fields.
pub(crate) enum Secure {
    /// `secure_identity_mode` is false (or absent).
    Off,
    /// Secure mode is on and valid. `uses_ledger` names a template that contains `{ledger}`.
    On {
        mode: SecureMode,
        uses_ledger: Option<&'static str>,
    },
    /// A problem was reported.
    Invalid,
}

/// The secure-mode fields as found in the file.
struct Fields<'a> {
    identity: Option<Field<'a>>,
    user: Option<Field<'a>>,
    key: Option<Field<'a>>,
    set_identity: Option<Field<'a>>,
    voter: Option<Field<'a>>,
    known_hosts: Option<Field<'a>>,
    require_tower: Option<Field<'a>>,
    program: Option<Field<'a>>,
}

/// Reads `secure_identity_mode` and the fields that go with it.
pub(crate) fn read(o: &mut Object<'_>, diag: &mut Diagnostics) -> Secure {
    let enabled = match o.get("secure_identity_mode") {
        None => Some(false),
        Some(field) => field.bool(diag),
    };
    let fields = Fields {
        identity: o.get("identity_keypair_path"),
        user: o.get("ssh_user"),
        key: o.get("ssh_key_path"),
        set_identity: o.get("ssh_set_identity_command"),
        voter: o.get("ssh_authorized_voter_command"),
        known_hosts: o.get("ssh_known_hosts"),
        require_tower: o.get("ssh_require_tower"),
        program: o.get("ssh_program"),
    };
    match enabled {
        None => Secure::Invalid,
        Some(false) => {
            let given = [
                fields.identity,
                fields.user,
                fields.key,
                fields.set_identity,
                fields.voter,
                fields.known_hosts,
                fields.require_tower,
            ];
            for field in given.into_iter().flatten() {
                diag.warn(field.path, "ignored because secure_identity_mode is false");
            }
            Secure::Off
        }
        Some(true) => read_enabled(fields, diag),
    }
}

/// The reference design's `ssh_set_identity_command` when none is set.
pub const REFERENCE_SET_IDENTITY: &str = "agave-validator --ledger {ledger} set-identity";
/// The reference design's `ssh_authorized_voter_command` when none is set.
pub const REFERENCE_AUTHORIZED_VOTER: &str =
    "agave-validator --ledger {ledger} authorized-voter add";

fn required<'a>(name: &str, field: Option<Field<'a>>, diag: &mut Diagnostics) -> Option<Field<'a>> {
    if field.is_none() {
        diag.error(name, "required when secure_identity_mode is true");
    }
    field
}

fn read_enabled(fields: Fields<'_>, diag: &mut Diagnostics) -> Secure {
    let identity_keypair_path =
        required("identity_keypair_path", fields.identity, diag).and_then(|f| {
            let path = f.path(diag)?;
            check(diag, &f.path, &path, Expect::PrivateFile);
            Some(path)
        });
    let ssh_user = required("ssh_user", fields.user, diag).and_then(|f| {
        let user = f.non_empty(diag)?;
        let valid = !user.starts_with('-')
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            diag.error(
                &f.path,
                format!("{user:?} is not a user name (letters, digits, '.', '_' and '-'; not starting with '-')"),
            );
        }
        valid.then(|| user.to_string())
    });
    let ssh_key_path = required("ssh_key_path", fields.key, diag).and_then(|f| {
        let text = f.non_empty(diag)?;
        let path = expand_home(diag, &f.path, text)?;
        check(diag, &f.path, &path, Expect::PrivateFile);
        Some(path)
    });
    let mut uses_ledger = None;
    // Absent, each command is the reference design's own default (its Go code's), said aloud.
    let mut template =
        |field: Option<Field<'_>>, name: &'static str, default: &str, diag: &mut Diagnostics| {
            let text = match field {
                Some(f) => {
                    let text = f.command(diag)?;
                    check_placeholders(diag, &f.path, &text, &["ledger"]);
                    text
                }
                None => {
                    diag.warn(
                        name,
                        format!("not set: the reference design's default `{default}`"),
                    );
                    default.to_string()
                }
            };
            if text.contains(LEDGER_PLACEHOLDER) && uses_ledger.is_none() {
                uses_ledger = Some(name);
            }
            Some(text)
        };
    let ssh_set_identity_command = template(
        fields.set_identity,
        "ssh_set_identity_command",
        REFERENCE_SET_IDENTITY,
        diag,
    );
    let ssh_authorized_voter_command = template(
        fields.voter,
        "ssh_authorized_voter_command",
        REFERENCE_AUTHORIZED_VOTER,
        diag,
    );
    let ssh_known_hosts = fields.known_hosts.and_then(|f| {
        let path = f.path(diag)?;
        check(diag, &f.path, &path, Expect::File);
        Some(path)
    });
    let ssh_require_tower = match fields.require_tower {
        None => Some(true),
        Some(field) => field.bool(diag),
    };
    let ssh_program = match fields.program {
        None => Some(PathBuf::from("ssh")),
        Some(f) => f.path(diag),
    };
    let mode = (|| {
        Some(SecureMode {
            identity_keypair_path: identity_keypair_path?,
            ssh_user: ssh_user?,
            ssh_key_path: ssh_key_path?,
            ssh_known_hosts,
            ssh_set_identity_command: ssh_set_identity_command?,
            ssh_authorized_voter_command,
            ssh_require_tower: ssh_require_tower?,
            ssh_program: ssh_program?,
        })
    })();
    match mode {
        Some(mode) => Secure::On { mode, uses_ledger },
        None => Secure::Invalid,
    }
}
