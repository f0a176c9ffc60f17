//! Files that must survive a crash or a power cut — fencing terms, roles, leases, towers: written
//! to a temp file that is fsynced, renamed over the old one, and the directory fsynced, so that a
//! reader never sees a partial file and a rename is not lost with the page cache.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes `bytes` to `path` through `<path>.new`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    write_via(&PathBuf::from(tmp), path, bytes)
}

/// Writes `bytes` to `path` through the temp file `tmp` (in the same directory). On a full disk
/// it gives up the directory's reserve ([`keep_reserve`]), if it has one, and tries once more.
pub fn write_via(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let attempt = || {
        {
            let mut file = fs::File::create(tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        rename(tmp, path)
    };
    match attempt() {
        Err(e) if is_full(&e) && release_reserve(tmp) => attempt(),
        done => done,
    }
    .inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// The file that holds a directory's reserve (see [`keep_reserve`]).
pub const RESERVE_FILE: &str = ".failover-reserve";
/// How much a reserve holds: a switch's records (term, journal, a vote-state archive) many
/// times over.
pub const RESERVE_BYTES: usize = 1 << 20;

static RELEASED: AtomicBool = AtomicBool::new(false);

/// Keeps [`RESERVE_BYTES`] of space in `dir` (a file of non-zero bytes, so that no copy makes it
/// sparse): a disk that fills up — a validator's ledger on the same disk, most often — then
/// still has room for the records a demotion or a promotion must write before it acts. Without
/// them no switch could leave a node whose validator died of the full disk. Returns whether the
/// reserve is in place; one that does not fit is not kept (a partial reserve frees too little).
///
/// Not fsynced: a filesystem counts the space as used when the bytes are written (delayed
/// allocation reserves it), and an fsync of a megabyte would hold up the small durable writes
/// that follow it in the journal — a term, at an agent's start.
pub fn keep_reserve(dir: &Path) -> io::Result<bool> {
    let path = dir.join(RESERVE_FILE);
    if fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
        return Ok(true);
    }
    let tmp = dir.join(format!("{RESERVE_FILE}.new"));
    let made = (|| {
        fs::File::create(&tmp)?.write_all(&vec![0xa5; RESERVE_BYTES])?;
        fs::rename(&tmp, &path)
    })();
    match made {
        Ok(()) => {
            RELEASED.store(false, Ordering::Relaxed);
            Ok(true)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if is_full(&e) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Whether a write gave up a reserve since the last call (and since the reserve was last made).
pub fn reserve_was_released() -> bool {
    RELEASED.swap(false, Ordering::Relaxed)
}

fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// Removes the reserve of the directory `file` is in; whether there was one.
fn release_reserve(file: &Path) -> bool {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let released = fs::remove_file(dir.join(RESERVE_FILE)).is_ok();
    if released {
        RELEASED.store(true, Ordering::Relaxed);
    }
    released
}

/// Renames `from` to `to` and fsyncs the directory that holds `to`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_kept_once_and_given_up_by_a_write_that_finds_no_room() {
        let dir = tempfile::tempdir().unwrap();
        assert!(keep_reserve(dir.path()).unwrap());
        let reserve = dir.path().join(RESERVE_FILE);
        let bytes = fs::read(&reserve).unwrap();
        // Non-zero bytes: a copy cannot make it sparse.
        assert_eq!(bytes.len(), RESERVE_BYTES);
        assert!(bytes.iter().all(|&b| b != 0));
        assert!(keep_reserve(dir.path()).unwrap());
        assert!(!dir.path().join(format!("{RESERVE_FILE}.new")).exists());
        // What a write that hit a full disk does before it tries again.
        assert!(release_reserve(&dir.path().join("agent-state.json.new")));
        assert!(reserve_was_released());
        assert!(!reserve.exists());
        assert!(!release_reserve(&dir.path().join("agent-state.json.new")));
    }
}
