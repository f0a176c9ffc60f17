//! Small value types shared by the agent and manager configs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use url::Host;

use crate::fields::quote;

/// A secret string (such as the Telegram bot token). Its `Debug` output is `"<redacted>"`, and it
/// has no `Display`, so it cannot end up in logs by accident; call [`Secret::expose`] to use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A host (IP address or DNS name) and a port, such as `1.1.1.1:53` or `etcd-1.internal:2379`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host; an IPv6 address displays with brackets.
    pub host: Host<String>,
    /// The port, never 0.
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port`, `IPv4:port` or `[IPv6]:port`. The error is a message for a problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let error = || {
            format!(
                "{} is not host:port (expected such as \"1.1.1.1:53\", \"[::1]:53\" or \"dns.example:53\")",
                quote(text)
            )
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(error());
            }
            let host = match addr.ip() {
                IpAddr::V4(ip) => Host::Ipv4(ip),
                IpAddr::V6(ip) => Host::Ipv6(ip),
            };
            return Ok(HostPort {
                host,
                port: addr.port(),
            });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(error)?;
        let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(error)?;
        if !is_dns_name(host) {
            return Err(error());
        }
        Ok(HostPort {
            host: Host::Domain(host.to_ascii_lowercase()),
            port,
        })
    }

    /// The socket address when the host is an IP address (no name resolution happens here).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ipv4(ip) => Some(SocketAddr::from((*ip, self.port))),
            Host::Ipv6(ip) => Some(SocketAddr::from((*ip, self.port))),
            Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens, with at least one letter
/// somewhere (so that a mistyped IPv4 address such as `1.1.1` is not taken for a name).
pub(crate) fn is_dns_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && text.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            HostPort::parse("1.1.1.1:53").unwrap().to_string(),
            "1.1.1.1:53"
        );
        assert_eq!(HostPort::parse("[::1]:53").unwrap().to_string(), "[::1]:53");
        assert_eq!(
            HostPort::parse("Dns.Example:53").unwrap().to_string(),
            "dns.example:53"
        );
        for bad in [
            "1.1.1.1",
            "1.1.1:53",
            ":53",
            "host:0",
            "host:99999",
            "a b:53",
            "::1:53",
        ] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("123:abc".to_string());
        assert_eq!(format!("{secret:?}"), "\"<redacted>\"");
        assert_eq!(secret.expose(), "123:abc");
    }
}

/// `log_format`: how log lines are written — `text` for people (the default), `json` (one object
/// per line, with the fields of the switch or step it belongs to) for log shippers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// Parses `text` or `json` (a flag's value or a config field's).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "{other:?} is not a log format (expected \"text\" or \"json\")"
            )),
        }
    }

    pub(crate) fn read(
        field: &crate::fields::Field<'_>,
        diag: &mut crate::fields::Diagnostics,
    ) -> Option<Self> {
        Self::parse(field.str(diag)?)
            .map_err(|e| diag.error(&field.path, e))
            .ok()
    }
}

/// `consensus`: which consensus the cluster runs — read from the cluster at run time (`auto`,
/// the default), or fixed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsensusSetting {
    #[default]
    Auto,
    /// TowerBFT: the tower moves with the identity.
    Tower,
    /// Alpenglow: the vote history moves with the identity.
    Alpenglow,
}

impl ConsensusSetting {
    pub(crate) fn read(
        field: &crate::fields::Field<'_>,
        diag: &mut crate::fields::Diagnostics,
    ) -> Option<Self> {
        match field.str(diag)? {
            "auto" => Some(Self::Auto),
            "tower" | "towerbft" => Some(Self::Tower),
            "alpenglow" => Some(Self::Alpenglow),
            other => {
                diag.error(
                    &field.path,
                    format!("{other:?} is not a consensus (expected \"auto\", \"tower\" or \"alpenglow\")"),
                );
                None
            }
        }
    }
}
