//! How a log line begins: with its syslog priority (`<6>`) when stderr
//! is the journal, which keeps the priority as the line's `PRIORITY=`
//! and adds its own timestamp; otherwise with an RFC 3339 UTC timestamp
//! (`2026-12-06T22:30:01.123Z `), unless `--log-timestamps` says not to.
//!
//! Whether stderr is the journal is what systemd.exec(5) documents:
//! `JOURNAL_STREAM` holds `DEVICE:INODE` of the stream it connected
//! stderr to, and names stderr only while fstat(2) of stderr gives that
//! same device and inode. A variable inherited by a process whose
//! stderr was redirected names another file, and is ignored.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use log::Level;

/// `--log-timestamps`: when a line starts with the time it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Timestamps {
    /// Never: for a collector that stamps lines itself.
    Never,
    /// Always, even in the journal (which stamps lines too).
    Always,
    /// Unless stderr is the journal.
    Auto,
}

/// The priority prefix is written.
const PRIORITY: u8 = 1;
/// The timestamp is written.
const TIME: u8 = 2;

/// What each line starts with: [`PRIORITY`] and [`TIME`] bits. Set once
/// before the first line; the process model's children inherit it.
static PREFIX: AtomicU8 = AtomicU8::new(0);

/// Decides, once, how lines begin: a priority when stderr is the
/// journal, a timestamp as `timestamps` says.
pub(crate) fn choose(timestamps: Timestamps) {
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok());
    let time = match timestamps {
        Timestamps::Never => false,
        Timestamps::Always => true,
        Timestamps::Auto => !journal,
    };
    let mut bits = 0;
    if journal {
        bits |= PRIORITY;
    }
    if time {
        bits |= TIME;
    }
    PREFIX.store(bits, Relaxed);
}

/// Whether `stream` (`JOURNAL_STREAM`'s value) names stderr's device
/// and inode.
fn stderr_is_journal(stream: Option<String>) -> bool {
    let Some((dev, ino)) = stream.as_deref().and_then(parse_stream) else {
        return false;
    };
    // fstat(2) of a copy of descriptor 2: the copy shares the file.
    let Ok(copy) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(copy).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// `DEVICE:INODE`, both decimal, as systemd writes them.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// Appends the start of a line of `level` to `out`: nothing, `<N>`,
/// a timestamp and a space, or both, as [`choose`] decided.
pub(crate) fn write(out: &mut String, level: Level) {
    let bits = PREFIX.load(Relaxed);
    if bits & PRIORITY != 0 {
        // Writing to a String cannot fail.
        let _ = write!(out, "<{}>", priority(level));
    }
    if bits & TIME != 0 {
        rfc3339(out, SystemTime::now());
        out.push(' ');
    }
}

/// `error: MESSAGE`, the line a failed `serve` ends with, preceded by
/// `<3>` when stderr is the journal (so `journalctl -p err` shows why a
/// service failed). It is the command's answer, not a log record: no
/// timestamp, so it reads as a usage error does (`error: …`).
pub(crate) fn error_line(message: &dyn std::fmt::Display) -> String {
    match PREFIX.load(Relaxed) & PRIORITY {
        0 => format!("error: {message}"),
        _ => format!("<{}>error: {message}", priority(Level::Error)),
    }
}

/// The syslog priority of `level` (syslog(3)): LOG_ERR, LOG_WARNING,
/// LOG_INFO, and LOG_DEBUG for both debug and trace.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Appends `time` as RFC 3339 in UTC with milliseconds:
/// `2026-12-06T22:30:01.123Z`. A time before 1970 (a clock set wrong)
/// is written as the epoch.
fn rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date `days` days after 1970-01-01, by
/// Howard Hinnant's `civil_from_days` (days since the epoch counted in
/// 400-year eras of 146,097 days, each starting on a 1 March so that a
/// leap day ends its year), for days that are not before the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // from 1 March
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        let mut out = String::new();
        let time = UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
        rfc3339(&mut out, time);
        out
    }

    #[test]
    fn known_instants_are_written_as_rfc3339_utc() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00.000Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(1_740_787_200, 0), "2025-03-01T00:00:00.000Z");
        // 2100 is not a leap year: 28 February, then 1 March.
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(at(1_796_596_201, 123), "2026-12-06T22:30:01.123Z");
        assert_eq!(at(1_798_761_599, 0), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut last = civil_from_days(0);
        for days in 1..200_000 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (y, m, d) == (last.0, last.1, last.2 + 1);
            let next_month = d == 1 && (y, m) == (last.0, last.1 + 1);
            let next_year = (m, d) == (1, 1) && y == last.0 + 1;
            assert!(
                next_day || next_month || next_year,
                "{last:?} {y}-{m}-{d}"
            );
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            assert!(d <= len, "{y}-{m}-{d}");
            last = (y, m, d);
        }
    }

    #[test]
    fn journal_stream_is_read_as_device_and_inode() {
        assert_eq!(parse_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_stream("8:"), None);
        assert_eq!(parse_stream("8-1234"), None);
        assert_eq!(parse_stream(":1"), None);
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("0:0".into())));
        assert!(!stderr_is_journal(Some("nonsense".into())));
    }

    #[test]
    fn priorities_are_syslogs() {
        let levels = [Level::Error, Level::Warn, Level::Info, Level::Debug];
        let got: Vec<u8> = levels.into_iter().map(priority).collect();
        assert_eq!(got, [3, 4, 6, 7]);
        assert_eq!(priority(Level::Trace), 7);
    }
}
