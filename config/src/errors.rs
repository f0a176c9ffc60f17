//! The problems found in a config file, and the errors that carry them to the caller.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// One thing wrong with (or worth warning about in) a config file.
///
/// `path` names the field with dots for nested objects and brackets for array elements
/// (`validator1.endpoint`, `tower_store.endpoints[1]`); it is displayed as `path: message`.
/// Problems that concern the whole document use a path such as `(top level)` or `line 3, column 7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document the problem is.
    pub path: String,
    /// What is wrong, as a sentence fragment that follows the path.
    pub message: String,
}

impl Problem {
    /// Creates a problem for the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one config file; the file is rejected as a whole.
///
/// It displays as a header line followed by one indented line per problem:
///
/// ```text
/// invalid config /etc/failover/manager-config.json: 2 problems
///   validator1.endpoint: "htp:/x" is not a URL (expected http:// or https://)
///   heartbeat_intervall: unknown field; did you mean "heartbeat_interval"?
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the problems were found in, when the text came from a file.
    pub file: Option<PathBuf>,
    /// The problems, never empty, in the order the parser found them.
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// Returns true when some problem is reported for exactly this field path.
    pub fn has_path(&self, path: &str) -> bool {
        self.problems.iter().any(|p| p.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        match &self.file {
            Some(file) => write!(f, "invalid config {}: {count} {noun}", file.display())?,
            None => write!(f, "invalid config: {count} {noun}")?,
        }
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why a config file could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read at all (missing, unreadable, a directory, ...).
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said (part of the message: it says what to fix).
        error: io::Error,
    },
    /// The file was read but its content is not a valid config.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}
