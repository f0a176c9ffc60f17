//! Logging for the binaries: `tracing` to stderr (colours only on a terminal, so journald gets plain
//! text) and, when configured, appended to a log file as well.

use std::path::PathBuf;

use anyhow::Context;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log_file: Option<&PathBuf>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log_file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::io::stderr.and(std::sync::Mutex::new(file)))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
