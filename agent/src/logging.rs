//! Logging for the binaries: `tracing` to stderr (colours only on a terminal, so journald gets plain
//! text; or JSON lines), filtered by `--log-level` or `RUST_LOG`, and, when configured, appended to
//! a log file as well — which SIGHUP reopens, so that
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

/// How the binaries log, from their flags and config.
pub struct LogOptions<'a> {
    /// Also append to this file.
    pub file: Option<&'a PathBuf>,
    pub format: failover_config::LogFormat,
    /// `--log-level`: a level (`debug`) or `RUST_LOG`-style directives (`info,failover_agent=debug`).
    /// Without it `RUST_LOG` decides, and without that `info`.
    pub level: Option<&'a str>,
}

/// Installs the global subscriber. Call once, before anything logs. Returns the log file, for
/// [`reopen_on_sighup`]. A bad `--log-level` or `RUST_LOG` is an error, not a silent default.
pub fn init(options: LogOptions<'_>) -> anyhow::Result<Option<LogFile>> {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    use tracing_subscriber::EnvFilter;
    let filter = match options.level {
        Some(level) => EnvFilter::builder()
            .parse(level)
            .with_context(|| format!("--log-level {level:?}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.is_empty() => EnvFilter::builder()
                .parse(&directives)
                .with_context(|| format!("RUST_LOG={directives:?}"))?,
            _ => EnvFilter::new("info"),
        },
    };
    let file = options.file.map(|p| LogFile::open(p)).transpose()?;
    let writer = match &file {
        Some(file) => BoxMakeWriter::new(std::io::stderr.and(file.clone())),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match options.format {
        failover_config::LogFormat::Text => builder
            .with_ansi(file.is_none() && std::io::stderr().is_terminal())
            .init(),
        // One object per line: the event's fields at the top, the switch or step it belongs to
        // (term, from, to, reason; step) under "span".
        failover_config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(file)
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
