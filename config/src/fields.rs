//! The object walker: reads a parsed JSON document field by field into rich types, collecting every
//! problem instead of stopping at the first, and reports the fields nobody asked for as unknown
//! (with a suggestion when the name looks like a typo).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};
use solana_pubkey::Pubkey;
use url::Url;

use crate::duration::parse_duration;
use crate::errors::Problem;
use crate::types::{HostPort, Secret};

/// Collects problems (which reject the file) and warnings (which do not) while a file is read.
pub(crate) struct Diagnostics {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    /// True when a problem was already reported for this field (or inside it), so that checks that
    /// depend on it can stay quiet instead of piling a second, confusing problem on top.
    pub fn failed(&self, path: &str) -> bool {
        self.problems.iter().any(|p| {
            p.path
                .strip_prefix(path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }
}

/// Joins a field name onto the path of the object that holds it.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A JSON object being read. Every name looked up is remembered as known, so that
/// [`Object::finish`] can report the remaining fields as unknown.
pub(crate) struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    /// The top level of a document, which must be an object.
    pub fn root(value: &'a Value, diag: &mut Diagnostics) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Object {
                path: String::new(),
                map,
                known: Vec::new(),
            }),
            other => {
                diag.error(
                    "(top level)",
                    format!("expected a JSON object {{ ... }}, got {}", describe(other)),
                );
                None
            }
        }
    }

    /// This object's own path (`validators[0]`; empty at the top level).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of a field of this object.
    pub fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Looks a field up and marks the name as known. A `null` value, and an empty string (the
    /// reference design's Go code reads `""` as "not set"), count as absent.
    pub fn get(&mut self, name: &'static str) -> Option<Field<'a>> {
        self.known.push(name);
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(value) => Some(Field {
                path: self.path_of(name),
                value,
            }),
        }
    }

    /// True when the field is present and not `null`; does not mark it as known.
    pub fn has(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    /// Looks a field up like [`Object::get`], reporting a problem when it is absent.
    pub fn required(&mut self, name: &'static str, diag: &mut Diagnostics) -> Option<Field<'a>> {
        let field = self.get(name);
        if field.is_none() {
            let message = if self.map.get(name).is_some_and(|v| v == "") {
                "required field is empty"
            } else {
                "required field is missing"
            };
            diag.error(self.path_of(name), message);
        }
        field
    }

    /// Accepts a field of the reference design that has no effect here, saying why.
    pub fn no_effect(&mut self, name: &'static str, why: &str, diag: &mut Diagnostics) {
        if let Some(field) = self.get(name) {
            diag.warn(
                field.path,
                format!("accepted from the reference design, no effect here: {why}"),
            );
        }
    }

    /// Reports every field that was never looked up as unknown, suggesting a close known name.
    /// `elsewhere` names fields that belong in another file, with that file's name, so that a field
    /// put into the wrong file gets a helpful message instead of a far-fetched suggestion.
    pub fn finish(self, diag: &mut Diagnostics, elsewhere: Option<(&[&str], &str)>) {
        for name in self.map.keys() {
            // `_comment…` keys are how JSON files carry comments (the reference's own examples
            // do); they are not typos.
            if self.known.contains(&name.as_str()) || name.starts_with("_comment") {
                continue;
            }
            let belongs_elsewhere = elsewhere.filter(|(fields, _)| fields.contains(&name.as_str()));
            let message = match (belongs_elsewhere, suggest(name, &self.known)) {
                (Some((_, file)), _) => format!("unknown field; it belongs in {file}"),
                (None, Some(known)) => format!("unknown field; did you mean {known:?}?"),
                (None, None) => "unknown field".to_string(),
            };
            diag.error(self.path_of(name), message);
        }
    }
}

/// The known name closest to `name`: within Levenshtein distance 2, or one a prefix of the other
/// (at least three characters long), ignoring case. Returns `None` when nothing is close.
pub(crate) fn suggest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .filter_map(|&candidate| {
            let distance = levenshtein(&lower, candidate);
            let (short, long) = if lower.len() <= candidate.len() {
                (lower.as_str(), candidate)
            } else {
                (candidate, lower.as_str())
            };
            let prefix = short.len() >= 3 && long.starts_with(short);
            (distance <= 2 || prefix).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The number of single-character insertions, deletions and substitutions between two strings.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Describes a JSON value for a type error: `string "3"`, `number -1`, `an array`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Quotes a string for a message, shortening very long values.
pub(crate) fn quote(text: &str) -> String {
    const LIMIT: usize = 60;
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{:?}...", head)
    }
}

/// One present field: its path and its raw value, with typed readers that report problems.
pub(crate) struct Field<'a> {
    pub path: String,
    pub value: &'a Value,
}

impl<'a> Field<'a> {
    fn type_error(&self, diag: &mut Diagnostics, expected: &str) {
        diag.error(
            &self.path,
            format!("expected {expected}, got {}", describe(self.value)),
        );
    }

    /// Any string, including an empty one.
    pub fn str(&self, diag: &mut Diagnostics) -> Option<&'a str> {
        match self.value {
            Value::String(s) => Some(s),
            _ => {
                self.type_error(diag, "a string");
                None
            }
        }
    }

    /// A string that is not empty or blank.
    pub fn non_empty(&self, diag: &mut Diagnostics) -> Option<&'a str> {
        let text = self.str(diag)?;
        if text.trim().is_empty() {
            diag.error(&self.path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// An optional shell command: the empty string means "not set", as in the reference design.
    pub fn command(&self, diag: &mut Diagnostics) -> Option<String> {
        let text = self.str(diag)?;
        (!text.trim().is_empty()).then(|| text.to_string())
    }

    /// A secret string. Messages about it never repeat its value.
    pub fn secret(&self, diag: &mut Diagnostics) -> Option<Secret> {
        match self.value {
            Value::String(s) if !s.trim().is_empty() => Some(Secret::new(s.clone())),
            Value::String(_) => {
                diag.error(&self.path, "must not be empty");
                None
            }
            _ => {
                diag.error(
                    &self.path,
                    "expected a string (the value is not shown because it is secret)",
                );
                None
            }
        }
    }

    pub fn bool(&self, diag: &mut Diagnostics) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.type_error(diag, "true or false");
                None
            }
        }
    }

    /// A non-negative integer.
    pub fn u64(&self, diag: &mut Diagnostics) -> Option<u64> {
        match self.value.as_u64() {
            Some(n) => Some(n),
            None => {
                self.type_error(diag, "a non-negative integer");
                None
            }
        }
    }

    /// An integer at least `min` that fits `T`.
    pub fn int_at_least<T: TryFrom<u64>>(&self, diag: &mut Diagnostics, min: u64) -> Option<T> {
        let n = self.u64(diag)?;
        if n < min {
            diag.error(&self.path, format!("must be at least {min}, got {n}"));
            return None;
        }
        match T::try_from(n) {
            Ok(value) => Some(value),
            Err(_) => {
                diag.error(&self.path, format!("{n} is too large"));
                None
            }
        }
    }

    /// A duration in Go syntax, such as `"30s"`.
    pub fn duration(&self, diag: &mut Diagnostics) -> Option<Duration> {
        match self.value {
            Value::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(message) => {
                    diag.error(&self.path, message);
                    None
                }
            },
            // Go's time.Duration reads a JSON number as nanoseconds; so does this, out loud.
            Value::Number(n) => match n.as_u64() {
                Some(nanos) => {
                    let duration = Duration::from_nanos(nanos);
                    diag.warn(
                        &self.path,
                        format!(
                            "the number {n} is read as nanoseconds ({}), as the reference design \
                             does; write \"{}\" to say so",
                            crate::format_duration(duration),
                            crate::format_duration(duration)
                        ),
                    );
                    Some(duration)
                }
                None => {
                    diag.error(
                        &self.path,
                        format!(
                            "expected a duration string such as \"30s\" (a number would be \
                             nanoseconds), got number {n}"
                        ),
                    );
                    None
                }
            },
            _ => {
                self.type_error(diag, "a duration string such as \"30s\"");
                None
            }
        }
    }

    /// A duration that must be greater than zero.
    pub fn positive_duration(&self, diag: &mut Diagnostics) -> Option<Duration> {
        let duration = self.duration(diag)?;
        if duration.is_zero() {
            diag.error(&self.path, "must be greater than 0");
            return None;
        }
        Some(duration)
    }

    /// An RPC URL, or one of the `solana` CLI's cluster monikers (`mainnet-beta`, `testnet`,
    /// `devnet`, `localhost` and their one-letter forms).
    pub fn cluster_url(&self, diag: &mut Diagnostics) -> Option<Url> {
        let text = crate::cli::cluster_url(self.str(diag)?);
        self.parse_url(text, diag, &["http", "https"])
    }

    /// An absolute URL with a host and one of the given schemes (`["http", "https"]`).
    pub fn url(&self, diag: &mut Diagnostics, schemes: &[&str]) -> Option<Url> {
        let text = self.str(diag)?;
        self.parse_url(text, diag, schemes)
    }

    fn parse_url(&self, text: &str, diag: &mut Diagnostics, schemes: &[&str]) -> Option<Url> {
        let expected = schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        match Url::parse(text) {
            Ok(url) if schemes.contains(&url.scheme()) && url.host().is_some() => Some(url),
            _ => {
                diag.error(
                    &self.path,
                    format!("{} is not a URL (expected {expected})", quote(text)),
                );
                None
            }
        }
    }

    pub fn pubkey(&self, diag: &mut Diagnostics) -> Option<Pubkey> {
        let text = self.str(diag)?;
        match Pubkey::from_str(text) {
            Ok(pubkey) => Some(pubkey),
            Err(_) => {
                diag.error(
                    &self.path,
                    format!("{} is not a base58 public key (32 bytes)", quote(text)),
                );
                None
            }
        }
    }

    pub fn ip(&self, diag: &mut Diagnostics) -> Option<IpAddr> {
        let text = self.str(diag)?;
        match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                diag.error(&self.path, format!("{} is not an IP address", quote(text)));
                None
            }
        }
    }

    /// A listen address: `IP:port`, `[IPv6]:port`, or Go's `:port` meaning every IPv4 interface.
    pub fn listen_addr(&self, diag: &mut Diagnostics) -> Option<SocketAddr> {
        let text = self.str(diag)?;
        let parsed = match text.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|port| SocketAddr::from(([0, 0, 0, 0], port))),
            None => text.parse().ok(),
        };
        if parsed.is_none() {
            diag.error(
                &self.path,
                format!(
                    "{} is not a listen address (expected IP:port, [IPv6]:port or :port)",
                    quote(text)
                ),
            );
        }
        parsed
    }

    /// A `host:port` pair such as `1.1.1.1:53`, `[::1]:53` or `dns.example:53`.
    pub fn host_port(&self, diag: &mut Diagnostics) -> Option<HostPort> {
        let text = self.str(diag)?;
        match HostPort::parse(text) {
            Ok(host_port) => Some(host_port),
            Err(message) => {
                diag.error(&self.path, message);
                None
            }
        }
    }

    /// A non-empty path; a leading `~/` is `$HOME` (relative paths are relative to the working
    /// directory).
    pub fn path(&self, diag: &mut Diagnostics) -> Option<PathBuf> {
        let text = self.non_empty(diag)?;
        crate::paths::expand_home(diag, &self.path, text)
    }

    /// The elements of an array, each with its own path (`field[0]`, `field[1]`, ...).
    pub fn array(&self, diag: &mut Diagnostics) -> Option<Vec<Field<'a>>> {
        match self.value {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, value)| Field {
                        path: format!("{}[{i}]", self.path),
                        value,
                    })
                    .collect(),
            ),
            _ => {
                self.type_error(diag, "an array [ ... ]");
                None
            }
        }
    }

    /// An array whose elements are all read with `read`; `None` if the field or any element is bad.
    pub fn array_of<T>(
        &self,
        diag: &mut Diagnostics,
        mut read: impl FnMut(&Field<'a>, &mut Diagnostics) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(diag)?;
        let values: Vec<Option<T>> = items.iter().map(|item| read(item, diag)).collect();
        values.into_iter().collect()
    }

    pub fn object(&self, diag: &mut Diagnostics) -> Option<Object<'a>> {
        match self.value {
            Value::Object(map) => Some(Object {
                path: self.path.clone(),
                map,
                known: Vec::new(),
            }),
            _ => {
                self.type_error(diag, "an object { ... }");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = ["heartbeat_interval", "request_timeout", "dry_run"];
        assert_eq!(
            suggest("heartbeat_intervall", &known),
            Some("heartbeat_interval")
        );
        assert_eq!(suggest("heartbeat", &known), Some("heartbeat_interval"));
        assert_eq!(suggest("Dry_Run", &known), Some("dry_run"));
        assert_eq!(suggest("dryrun", &known), Some("dry_run"));
        assert_eq!(suggest("colour", &known), None);
        assert_eq!(suggest("d", &known), None);
    }

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", "abc"), 0);
    }
}
