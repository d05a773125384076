//! The log lines every model writes, in one place so that all five models
//! print exactly the same contract.
//!
//! Two lines are part of the machine-readable contract and go to the
//! [`STATUS`] target, which the binary always shows whatever the
//! `--log-level`: `listening on …` first, `summary …` last. (So do
//! `metrics on …`, second when `--metrics-addr` is set, and `stats …`.)
//!
//! Each line starts as [`log_prefix`](crate::log_prefix) decides (a
//! timestamp, or the journal's priority), then `LEVEL [target] message`.
//! Lines reach stderr through [`sink`](crate::sink), which never blocks
//! the caller: what it cannot write soon enough it drops and counts
//! (`log_dropped`). In log mode, chunk lines also pass the rate limits
//! of [`log_limit`](crate::log_limit) (`log_suppressed`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{info, log_enabled, warn, Level, Log, Metadata, Record};
use simple_logger::SimpleLogger;

use crate::config::{Mode, Model};
use crate::escape::{escape_into, LOG_LIMIT};
use crate::log_limit::{Bucket, Limits, Verdict};
use crate::log_prefix::{self, Timestamps};
use crate::sink;
use crate::stats::{Reason, Stats, Summary};

pub(crate) use crate::sink::{after_fork, flush, own_fd, retry_at, settle};

/// How long the lines pending at the end of a run may take before those
/// not yet begun are dropped, so that the summary comes next.
const PENDING_WAIT: Duration = Duration::from_millis(400);
/// The summary gives up on a stderr that took no byte for this long...
const STALL: Duration = Duration::from_secs(1);
/// ...and on one that keeps taking bytes, this long after the run ended.
const FINAL_CAP: Duration = Duration::from_secs(5);

thread_local! {
    /// The `--workers` worker this thread runs, if it runs one.
    static WORKER: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Names the calling thread's log lines after worker `n` (`w1 …`).
pub(crate) fn set_worker(n: usize) {
    WORKER.set(Some(n));
}

/// Log target of the lines that are always shown.
pub const STATUS: &str = "readyloop::status";

/// `listening on ADDR, ADDR (model=M, mode=MODE)`, the first line;
/// `listening on ADDR (socket activation) (model=…` when the sockets
/// came from systemd. With `--workers` above 1 the line ends
/// `workers=N)`.
pub fn listening(
    addrs: &[SocketAddr],
    activated: bool,
    model: Model,
    mode: Mode,
    workers: usize,
) {
    let mut list = String::new();
    for (n, addr) in addrs.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        list.push_str(&format!("{sep}{addr}"));
    }
    let how = if activated { " (socket activation)" } else { "" };
    let workers = match workers {
        0 | 1 => String::new(),
        n => format!(", workers={n}"),
    };
    info!(
        target: STATUS,
        "listening on {list}{how} (model={model}, mode={mode}{workers})"
    );
}

/// `metrics on http://ADDR/metrics`, right after the first line when
/// `--metrics-addr` is set.
pub fn metrics(addr: SocketAddr) {
    info!(target: STATUS, "metrics on http://{addr}/metrics");
}

/// Ends the log of a run: writes what is pending (dropping what stderr
/// does not take in time), adds this process's dropped lines to
/// `summary`, and writes the `summary …` line, the last one, waiting
/// for stderr a bounded time, so a stalled sink never keeps the process
/// from exiting.
///
/// The summary has priority over every line still queued: those the
/// sink did not take within [`PENDING_WAIT`] are dropped and counted
/// (one `N log lines dropped at stop` line says so), and the summary
/// goes out while stderr keeps taking bytes, up to [`FINAL_CAP`]; a
/// stderr that takes nothing for [`STALL`] is given up on.
pub fn finish(summary: &mut Summary) {
    let start = Instant::now();
    let (now, total) = sink::clear_for_last(start + PENDING_WAIT);
    summary.log_dropped += total;
    if now > 0 {
        warn!("{now} log lines dropped at stop");
    }
    info!(target: STATUS, "{summary}");
    sink::write_last(STALL, start + FINAL_CAP);
}

/// `stats open=N uptime_s=T accepted=…`: the counters so far (SIGUSR1,
/// `--stats-interval`), always shown, with the same fields as the
/// summary.
///
/// With `--workers`, `accepted_by_worker=A,B,…` ends the line: how the
/// kernel spread the connections.
pub fn stats(
    summary: &Summary,
    open: usize,
    uptime: Duration,
    by_worker: &[u64],
) {
    let line = summary.to_string();
    let fields = line.strip_prefix("summary ").unwrap_or(&line);
    let uptime = uptime.as_secs_f64();
    let mut workers = String::new();
    for (n, accepted) in by_worker.iter().enumerate() {
        let sep = if n == 0 { " accepted_by_worker=" } else { "," };
        workers.push_str(&format!("{sep}{accepted}"));
    }
    info!(
        target: STATUS,
        "stats open={open} uptime_s={uptime:.3} {fields}{workers}"
    );
}

/// A connection was accepted; `open` counts it.
pub fn accepted(peer: SocketAddr, open: usize) {
    info!("{} accepted ({open} open)", Peer(peer));
}

/// A connection closed; `open` no longer counts it.
pub fn closed(peer: SocketAddr, reason: &Reason, open: usize) {
    info!("{} closed: {reason} ({open} open)", Peer(peer));
}

/// A peer as the log names it: `unknown peer` for
/// [`UNKNOWN_PEER`](crate::net::UNKNOWN_PEER).
struct Peer(SocketAddr);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 == crate::net::UNKNOWN_PEER {
            true => f.write_str("unknown peer"),
            false => self.0.fmt(f),
        }
    }
}

/// What decides whether a connection's chunk line is logged: the
/// server's limits, the connection's bucket, and the counters that hold
/// the shared total and count what is suppressed.
#[derive(Debug)]
pub struct ChunkLimit<'a> {
    /// The server's `--log-rate`, `--log-burst` and `--log-total-rate`.
    pub limits: &'a Limits,
    /// This connection's bucket.
    pub bucket: &'a mut Bucket,
    /// The server's counters.
    pub stats: &'a Stats,
}

/// In log mode, one chunk read from `peer`, escaped and cut at
/// [`LOG_LIMIT`] bytes, if the rate limits admit it (else it is counted
/// as suppressed). `scratch` is reused so logging does not allocate.
pub fn chunk(
    peer: SocketAddr,
    bytes: &[u8],
    scratch: &mut String,
    limit: &mut ChunkLimit<'_>,
) {
    if !log_enabled!(Level::Info) {
        return;
    }
    let total = limit.stats.log_total();
    let verdict = limit.limits.admit(limit.bucket, total, Instant::now());
    match verdict {
        Verdict::Suppress => return limit.stats.log_suppressed(),
        Verdict::Log { resumed: 0 } => {}
        Verdict::Log { resumed } => report_suppressed(peer, resumed),
    }
    scratch.clear();
    escape_into(scratch, bytes, LOG_LIMIT);
    info!("{peer} sent {} bytes: {scratch}", bytes.len());
}

/// Reports the chunk lines of `peer` suppressed and not yet reported;
/// called as it closes.
pub fn suppressed(peer: SocketAddr, bucket: &mut Bucket) {
    match bucket.take_suppressed() {
        0 => {}
        n => report_suppressed(peer, n),
    }
}

fn report_suppressed(peer: SocketAddr, n: u32) {
    info!("{peer}: {n} chunk lines suppressed (log-rate)");
}

/// Limits a warning to one line a second however often it happens, and
/// says how many were folded into the next line.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    folded: u64,
}

impl RateLimited {
    /// Returns how many earlier occurrences were not logged if a line may
    /// be logged now, or `None` if this one is folded.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.folded += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.folded))
            }
        }
    }
}

/// A connection over `--max-connections` was closed at once.
pub fn rejected(limiter: &mut RateLimited, peer: SocketAddr, max: usize) {
    if let Some(folded) = limiter.admit(Instant::now()) {
        warn!(
            "{peer} rejected: {max} connections open (max-connections); \
             {folded} more rejected since the last line"
        );
    }
}

/// A connection over `--max-connections-per-ip` was closed at once.
pub fn rejected_per_address(
    limiter: &mut RateLimited,
    peer: SocketAddr,
    max: usize,
) {
    if let Some(folded) = limiter.admit(Instant::now()) {
        warn!(
            "{peer} rejected: its address has {max} connections open \
             (max-connections-per-ip); {folded} more rejected since the \
             last line"
        );
    }
}

/// Installs `logger` (its levels decide what is shown) so that each line
/// reaches stderr in one `write(2)`, through the sink that never blocks,
/// each starting as [`log_prefix`] decides from `timestamps` and from
/// whether stderr is the journal.
///
/// simple_logger prints a line as two writes, the text and then its
/// newline. Within one process stderr's lock keeps lines whole, but the
/// process model's children share the parent's stderr, and two children
/// logging at once produced merged lines (`…;INFO  […] …`) and empty
/// ones. One write of a line shorter than `PIPE_BUF` (a logged chunk is
/// at most about 1.1 KB) is never split or interleaved on a pipe.
pub fn init(
    logger: SimpleLogger,
    timestamps: Timestamps,
) -> Result<(), log::SetLoggerError> {
    sink::open();
    log_prefix::choose(timestamps);
    log::set_max_level(logger.max_level());
    log::set_boxed_logger(Box::new(OneWrite(logger)))
}

/// simple_logger's filter and format, written with one `write(2)`.
struct OneWrite(SimpleLogger);

impl Log for OneWrite {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = match record.target() {
            "" => record.module_path().unwrap_or_default(),
            target => target,
        };
        // The priority or timestamp, then the text simple_logger prints
        // (without its own timestamps and colours), newline included.
        // A worker of `--workers` names itself on its lines (not on the
        // status lines, which speak for the whole server).
        let mut line = String::new();
        log_prefix::write(&mut line, record.level());
        let _ = write!(line, "{:<5} [{target}] ", record.level().as_str());
        if let Some(n) = WORKER.get().filter(|_| target != STATUS) {
            let _ = write!(line, "w{n} ");
        }
        let _ = writeln!(line, "{}", record.args());
        sink::line(line.as_bytes());
    }

    fn flush(&self) {
        sink::flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_one_a_second_and_counts_the_rest() {
        let mut r = RateLimited::default();
        let t0 = Instant::now();
        assert_eq!(r.admit(t0), Some(0));
        assert_eq!(r.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.admit(t0 + Duration::from_millis(900)), None);
        assert_eq!(r.admit(t0 + Duration::from_millis(1000)), Some(2));
    }
}
