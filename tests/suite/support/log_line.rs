//! How a server's log line begins: a syslog priority (`<6>`) when its
//! stderr is the journal, an RFC 3339 UTC timestamp
//! (`2026-12-06T22:30:01.123Z `) unless `--log-timestamps never`, and
//! then the record (`INFO  [readyloop::status] …`) the suite reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The parts of one line: its priority, its time, and the record.
#[derive(Debug, PartialEq)]
pub struct Parts<'a> {
    /// The `<N>` priority, if the line starts with one.
    pub priority: Option<u8>,
    /// The timestamp, if one comes next.
    pub time: Option<SystemTime>,
    /// The rest: `LEVEL [target] message`.
    pub record: &'a str,
}

/// Splits `line` into its priority, timestamp and record. Only a
/// well-formed prefix is taken off: anything else stays in `record`.
pub fn parts(line: &str) -> Parts<'_> {
    let (priority, rest) = priority(line);
    let (time, record) = match rest.split_once(' ') {
        Some((stamp, record)) => match rfc3339(stamp) {
            Some(time) => (Some(time), record),
            None => (None, rest),
        },
        None => (None, rest),
    };
    Parts { priority, time, record }
}

/// `line` without its priority and timestamp: the record.
pub fn record(line: &str) -> &str {
    parts(line).record
}

/// A `<N>` prefix, N one digit 0 to 7 (the priorities there are).
fn priority(line: &str) -> (Option<u8>, &str) {
    match line.as_bytes() {
        [b'<', d @ b'0'..=b'7', b'>', ..] => (Some(d - b'0'), &line[3..]),
        _ => (None, line),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly, as a time; `None` for anything
/// else.
pub fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let shape = b.len() == 24
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'.'
        && b[23] == b'Z';
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = &s[from..to];
        digits.bytes().all(|c| c.is_ascii_digit()).then_some(())?;
        digits.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let millis = num(20, 23)?;
    let ok = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in(year, month)).contains(&day)
        && hour < 24
        && min < 60
        && sec < 60;
    if !ok {
        return None;
    }
    let days = days_before_year(year)
        + (1..month).map(|m| days_in(year, m)).sum::<u64>()
        + day
        - 1;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
}

fn leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in(year: u64, month: u64) -> u64 {
    match month {
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to 1 January of `year`, counted year by year:
/// slow and obviously right, unlike the server's arithmetic it checks.
fn days_before_year(year: u64) -> u64 {
    (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum()
}

/// The checker agrees with known instants and refuses near misses.
#[test]
fn the_timestamp_reader_knows_the_calendar() {
    let at = |s: &str| {
        rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis())
    };
    assert_eq!(at("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(at("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
    assert_eq!(at("2026-12-06T22:30:01.123Z"), Some(1_796_596_201_123));
    for bad in [
        "2026-12-06T22:30:01Z",
        "2026-12-06 22:30:01.123Z",
        "2026-12-06T22:30:01.123+00:00",
        "2025-02-29T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-12-06T24:00:00.000Z",
        "+026-12-06T22:30:01.123Z",
    ] {
        assert_eq!(rfc3339(bad), None, "{bad}");
    }
    let line = "<6>INFO  [x] hi";
    assert_eq!(parts(line).priority, Some(6));
    assert_eq!(record(line), "INFO  [x] hi");
    assert_eq!(record("<66>INFO"), "<66>INFO");
    assert_eq!(record("2026-12-06T22:30:01.123Z WARN  [x] y"), "WARN  [x] y");
}
