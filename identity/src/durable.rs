//! Files that must survive a crash or a power cut — fencing terms, roles, leases, towers: written
//! to a temp file that is fsynced, renamed over the old one, and the directory fsynced, so that a
//! reader never sees a partial file and a rename is not lost with the page cache.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through `<path>.new`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    write_via(&PathBuf::from(tmp), path, bytes)
}

/// Writes `bytes` to `path` through the temp file `tmp` (in the same directory).
pub fn write_via(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    {
        let mut file = fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    rename(tmp, path)
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
