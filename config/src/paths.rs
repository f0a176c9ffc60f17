//! The only file-system access besides reading the config file itself: checking that paths named
//! by the config exist, have the right kind, and (for keypairs and SSH keys) are private.

use std::io;
use std::path::{Path, PathBuf};

use crate::fields::Diagnostics;

/// What a configured path must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// An existing directory.
    Dir,
    /// An existing file.
    File,
    /// An existing file readable only by its owner, as the keypair loader and ssh require.
    PrivateFile,
}

/// Reports a problem at `field` unless `path` exists and is what `expect` says.
pub(crate) fn check(diag: &mut Diagnostics, field: &str, path: &Path, expect: Expect) {
    let shown = format!("{:?}", path.display().to_string());
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            diag.error(field, format!("{shown} does not exist"));
            return;
        }
        Err(error) => {
            diag.error(field, format!("cannot access {shown}: {error}"));
            return;
        }
    };
    match expect {
        Expect::Dir if !meta.is_dir() => {
            diag.error(field, format!("{shown} is not a directory"));
        }
        Expect::File | Expect::PrivateFile if !meta.is_file() => {
            diag.error(field, format!("{shown} is not a regular file"));
        }
        Expect::PrivateFile => check_private(diag, field, &shown, &meta),
        _ => {}
    }
}

#[cfg(unix)]
fn check_private(diag: &mut Diagnostics, field: &str, shown: &str, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        diag.error(
            field,
            format!(
                "{shown} is readable by group or others (mode {mode:04o}); run `chmod 600` on it"
            ),
        );
    }
}

#[cfg(not(unix))]
fn check_private(_: &mut Diagnostics, _: &str, _: &str, _: &std::fs::Metadata) {}

/// Reports a problem at `field` unless this process could create `path` (a directory, or a file
/// to append to) or write to it if it exists: the nearest existing ancestor must be a directory
/// it may write into. What the service starts with is then what the check passed.
pub(crate) fn check_writable(diag: &mut Diagnostics, field: &str, path: &Path, is_dir: bool) {
    let shown = format!("{:?}", path.display().to_string());
    if let Ok(meta) = std::fs::metadata(path) {
        let problem = match (is_dir, meta.is_dir()) {
            (true, false) => Some(format!("{shown} exists and is not a directory")),
            (false, true) => Some(format!("{shown} is a directory, not a file")),
            _ if !may_write(path) => Some(format!("{shown} is not writable by this user")),
            _ => None,
        };
        if let Some(problem) = problem {
            diag.error(field, problem);
        }
        return;
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                if !may_write(dir) {
                    diag.error(
                        field,
                        format!(
                            "{shown} does not exist and cannot be created: {:?} is not writable \
                             by this user (create it, or run as the service's user)",
                            dir.display().to_string()
                        ),
                    );
                }
                return;
            }
            Ok(_) => {
                diag.error(
                    field,
                    format!(
                        "{shown} cannot be created: {:?} is not a directory",
                        dir.display().to_string()
                    ),
                );
                return;
            }
            Err(_) => ancestor = dir.parent(),
        }
    }
}

/// Whether this process may write to `path` (and enter it, for a directory).
fn may_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mode = if path.is_dir() {
        libc::W_OK | libc::X_OK
    } else {
        libc::W_OK
    };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c_path.as_ptr(), mode) == 0 }
}

/// Expands a leading `~/` (or a lone `~`) with `$HOME`, as the reference design does for
/// `ssh_key_path`. Reports a problem when `HOME` is needed but not set.
pub(crate) fn expand_home(diag: &mut Diagnostics, field: &str, text: &str) -> Option<PathBuf> {
    let rest = match text.strip_prefix("~/") {
        Some(rest) => rest,
        None if text == "~" => "",
        None => return Some(PathBuf::from(text)),
    };
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Some(PathBuf::from(home).join(rest)),
        None => {
            diag.error(
                field,
                "starts with ~ but HOME is not set; write the full path",
            );
            None
        }
    }
}

/// Reports `{name}` placeholders in a command template that are not in `allowed`. A `${NAME}`
/// shell expansion is not a placeholder and is left alone.
pub(crate) fn check_placeholders(
    diag: &mut Diagnostics,
    field: &str,
    template: &str,
    allowed: &[&str],
) {
    let bytes = template.as_bytes();
    for (open, _) in template.match_indices('{') {
        let is_shell = open > 0 && bytes[open - 1] == b'$';
        let after = &template[open + 1..];
        let Some(close) = after.find('}') else {
            continue;
        };
        let name = &after[..close];
        let looks_like_placeholder =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if looks_like_placeholder && !is_shell && !allowed.contains(&name) {
            let known: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            diag.error(
                field,
                format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    known.join(", ")
                ),
            );
        }
    }
}
