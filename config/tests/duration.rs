//! Durations follow Go's `time.ParseDuration`, which the reference design's files were written for.

use std::time::Duration;

use failover_config::{format_duration, parse_duration};

#[test]
fn valid_go_durations() {
    let cases: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("+0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("8s", Duration::from_secs(8)),
        ("30s", Duration::from_secs(30)),
        ("1m30s", Duration::from_secs(90)),
        ("500ms", Duration::from_millis(500)),
        ("1.5h", Duration::from_secs(5400)),
        ("250us", Duration::from_micros(250)),
        ("250\u{b5}s", Duration::from_micros(250)),
        ("250\u{3bc}s", Duration::from_micros(250)),
        ("42ns", Duration::from_nanos(42)),
        ("4h", Duration::from_secs(4 * 3600)),
        ("10m", Duration::from_secs(600)),
        (".5s", Duration::from_millis(500)),
        ("5.s", Duration::from_secs(5)),
        ("1h2m3.5s", Duration::from_millis(3_723_500)),
        ("1.000000001s", Duration::from_nanos(1_000_000_001)),
        ("+3s", Duration::from_secs(3)),
        ("2562047h", Duration::from_secs(2_562_047 * 3600)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(*expected), "{text}");
    }
}

#[test]
fn invalid_go_durations() {
    let cases: &[(&str, &str)] = &[
        ("", "empty duration"),
        (
            "30",
            "missing unit in duration \"30\" (did you mean \"30s\"?)",
        ),
        ("1.5", "did you mean \"1.5s\"?"),
        ("1m30", "missing unit in duration \"1m30\""),
        ("-5s", "negative duration \"-5s\" is not allowed"),
        ("5sec", "unknown unit \"sec\""),
        ("5 s", "unknown unit \" s\""),
        ("s", "invalid duration"),
        (".s", "invalid duration"),
        ("thirty seconds", "invalid duration"),
        (" 5s", "invalid duration"),
        ("1d", "unknown unit \"d\""),
        ("3000000h", "out of range"),
        ("99999999999999999999999999999999999999999s", "out of range"),
    ];
    for (text, fragment) in cases {
        match parse_duration(text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(message) => assert!(message.contains(fragment), "{text:?}: {message}"),
        }
    }
}

#[test]
fn formatted_durations_parse_back() {
    for d in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(4 * 3600 + 61),
        Duration::from_nanos(1),
    ] {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}
