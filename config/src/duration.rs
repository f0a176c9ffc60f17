//! Durations written the way Go's `time.ParseDuration` reads them, because the reference design's
//! config files (`"manager_timeout": "30s"`, `"heartbeat_interval": "10s"`) use that syntax.

use std::time::Duration;

/// The largest duration Go can represent (an `int64` count of nanoseconds, about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// The units Go accepts, longest spelling first so that `ms` is not read as `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // Micro sign.
    ("\u{3bc}s", 1_000), // Greek small letter mu.
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

const EXAMPLES: &str = "such as \"30s\", \"1m30s\" or \"500ms\"";

/// Parses a duration in Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each with
/// an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `"8s"`, `"1m30s"`,
/// `"1.5h"` or `"250us"`. `"0"` is the only value allowed without a unit.
///
/// Unlike Go, negative durations are rejected: no setting in these configs can be negative. The error
/// is a sentence fragment meant to follow a field path, with a hint when a unit is missing.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let quoted = format!("{text:?}");
    let mut rest = text;
    if let Some(stripped) = rest.strip_prefix('-') {
        if !stripped.is_empty() {
            return Err(format!("negative duration {quoted} is not allowed"));
        }
    }
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(format!(
            "empty duration {quoted} (expected a number with a unit, {EXAMPLES})"
        ));
    }
    let invalid =
        || format!("invalid duration {quoted} (expected a number with a unit, {EXAMPLES})");
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The number: integer digits, then an optional fraction.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // The unit: everything up to the next digit or dot.
        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(missing_unit(text, &quoted));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit {unit:?} in duration {quoted} (valid units are ns, us, \u{b5}s, ms, s, m, h)"
            ));
        };
        total += component_nanos(int_digits, frac_digits, unit_nanos)
            .ok_or_else(|| format!("duration {quoted} is out of range"))?;
        if total > MAX_NANOS {
            return Err(format!("duration {quoted} is out of range"));
        }
        rest = after_unit;
    }
    // The total fits an i64 and so a u64.
    Ok(Duration::from_nanos(total as u64))
}

/// Explains a missing unit, suggesting seconds when the whole value is a plain number.
fn missing_unit(text: &str, quoted: &str) -> String {
    let plain_number = text.parse::<f64>().is_ok();
    if plain_number {
        format!("missing unit in duration {quoted} (did you mean \"{text}s\"?)")
    } else {
        format!("missing unit in duration {quoted} (valid units are ns, us, \u{b5}s, ms, s, m, h)")
    }
}

/// Converts one `<int>.<frac><unit>` component to nanoseconds, or `None` when it is out of range.
fn component_nanos(int_digits: &str, frac_digits: &str, unit_nanos: u128) -> Option<u128> {
    let int: u128 = if int_digits.is_empty() {
        0
    } else {
        // More than 39 digits does not fit a u128; anything near that is out of range anyway.
        int_digits.parse().ok()?
    };
    let mut nanos = int.checked_mul(unit_nanos)?;
    if nanos > MAX_NANOS {
        return None;
    }
    // Digits beyond the 18th cannot change the result by a nanosecond, as in Go.
    let frac_digits = &frac_digits[..frac_digits.len().min(18)];
    if !frac_digits.is_empty() {
        let frac: u128 = frac_digits.parse().ok()?;
        let scale = 10u128.pow(frac_digits.len() as u32);
        nanos += frac * unit_nanos / scale;
    }
    Some(nanos)
}

/// Formats a duration so that [`parse_duration`] reads it back: `"4h"`, `"1m30s"`, `"500ms"`, `"0s"`.
pub fn format_duration(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{unit}", nanos / size));
            nanos %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        for text in ["4h", "1m30s", "500ms", "1h2m3s4ms5us6ns", "0s"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
    }
}

/// A duration shown as Go writes it (`"5s"`), for messages.
#[derive(Clone, Copy)]
pub(crate) struct Go(pub Duration);

impl std::fmt::Display for Go {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format_duration(self.0))
    }
}
