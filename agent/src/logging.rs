//! Logging for the binaries: `tracing` to stderr (colours only on a terminal, so journald gets plain
//! text) and, when configured, appended to a log file as well — which SIGHUP reopens, so that
//! logrotate's `postrotate kill -HUP` moves the service to a fresh file without stopping it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

/// The log file, reopenable in place.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens `path` for appending, creating its directory when missing.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open_append(path)?)),
        })
    }

    /// Opens the path again (after logrotate moved the old file away); the old file is closed.
    pub fn reopen(&self) -> anyhow::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().expect("log file") = fresh;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the log_file directory {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log_file {}", path.display()))
}

/// One write to the current file.
pub struct LogFileWriter(Arc<Mutex<File>>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log file").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("log file").flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file.clone())
    }
}

/// Installs the global subscriber. Call once, before anything logs. Returns the log file, for
/// [`reopen_on_sighup`].
pub fn init(log_file: Option<&PathBuf>) -> anyhow::Result<Option<LogFile>> {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match log_file {
        Some(path) => {
            let file = LogFile::open(path)?;
            builder
                .with_ansi(false)
                .with_writer(std::io::stderr.and(file.clone()))
                .init();
            Ok(Some(file))
        }
        None => {
            builder.with_writer(std::io::stderr).init();
            Ok(None)
        }
    }
}

/// Reopens `file` on every SIGHUP and keeps the process running (SIGHUP's default would end it).
/// Must be called inside the runtime; returns once the handler is installed.
pub fn reopen_on_sighup(file: Option<LogFile>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &file {
                Some(file) => match file.reopen() {
                    Ok(()) => {
                        tracing::info!(log_file = %file.path().display(), "SIGHUP: log file reopened")
                    }
                    Err(e) => tracing::error!("SIGHUP: {e:#}; still writing to the old file"),
                },
                None => tracing::info!("SIGHUP: no log_file to reopen; still running"),
            }
        }
    });
    Ok(())
}
