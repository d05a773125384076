//! Counters every model keeps, why connections close, and the `summary`
//! line printed at shutdown.
//!
//! The counters are atomics in a `#[repr(C)]` struct of plain words so the
//! process model can place one in shared memory before it forks and every
//! child adds to the same numbers the parent prints.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::log_limit::Total;

/// Why a connection ended. Every accepted connection ends with exactly one.
#[derive(Debug)]
pub enum Reason {
    /// The client closed its side (`read` returned 0) and all output went.
    Eof,
    /// The client reset the connection (`ECONNRESET`, or `EPIPE` on a
    /// write after its RST arrived).
    Reset,
    /// No traffic for `--idle-timeout`.
    Idle,
    /// Any other IO error.
    Error(io::Error),
    /// Still open when the server was told to stop.
    Shutdown,
}

impl Reason {
    /// Classifies an IO error from a connection's read or write.
    pub fn from_io(e: io::Error) -> Reason {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                Reason::Reset
            }
            _ => Reason::Error(e),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Eof => f.write_str("eof"),
            Reason::Reset => f.write_str("reset"),
            Reason::Idle => f.write_str("idle"),
            Reason::Error(e) => write!(f, "error: {e}"),
            Reason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// Bytes moved by one thread, in plain integers: the mio model counts
/// into one of these on its hot path (an atomic add per read and write
/// is work the loop does not need, having no other thread to tell) and
/// adds it to [`Stats`] when it stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

/// Live counters, shared by every thread or process of one server.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    closed_eof: AtomicU64,
    closed_reset: AtomicU64,
    closed_error: AtomicU64,
    closed_idle: AtomicU64,
    closed_shutdown: AtomicU64,
    rejected: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    log_dropped: AtomicU64,
    log_suppressed: AtomicU64,
    /// The `--log-total-rate` bucket, shared like the counters.
    log_total: Total,
    /// Output memory held for clients (mio and uring), as of the
    /// worker's last turn: a gauge, not a summary counter.
    output_held: AtomicU64,
}

impl Stats {
    /// A connection was accepted and will be served.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    /// A connection over `--max-connections` was accepted and closed.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// A served connection ended for `reason`.
    pub fn closed(&self, reason: &Reason) {
        let counter = match reason {
            Reason::Eof => &self.closed_eof,
            Reason::Reset => &self.closed_reset,
            Reason::Idle => &self.closed_idle,
            Reason::Error(_) => &self.closed_error,
            Reason::Shutdown => &self.closed_shutdown,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// `n` bytes were read from a client.
    pub fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// `n` bytes were written to a client.
    pub fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// Adds bytes counted elsewhere (see [`Traffic`]).
    pub fn add(&self, traffic: Traffic) {
        self.bytes_in.fetch_add(traffic.bytes_in, Relaxed);
        self.bytes_out.fetch_add(traffic.bytes_out, Relaxed);
    }

    /// `n` log lines were dropped by a process (a forked child) whose
    /// own count would otherwise be lost with it.
    pub fn log_dropped(&self, n: u64) {
        self.log_dropped.fetch_add(n, Relaxed);
    }

    /// A chunk line was suppressed by the log rate limits.
    pub fn log_suppressed(&self) {
        self.log_suppressed.fetch_add(1, Relaxed);
    }

    /// Output memory the loop holds now (stored once a turn).
    pub fn set_output_held(&self, bytes: usize) {
        self.output_held.store(bytes as u64, Relaxed);
    }

    /// Output memory held as of the last turn.
    pub fn output_held(&self) -> u64 {
        self.output_held.load(Relaxed)
    }

    /// The server's `--log-total-rate` bucket.
    pub fn log_total(&self) -> &Total {
        &self.log_total
    }

    /// A copy of the counters as they are now.
    pub fn summary(&self) -> Summary {
        Summary {
            accepted: self.accepted.load(Relaxed),
            closed_eof: self.closed_eof.load(Relaxed),
            closed_reset: self.closed_reset.load(Relaxed),
            closed_error: self.closed_error.load(Relaxed),
            closed_idle: self.closed_idle.load(Relaxed),
            closed_shutdown: self.closed_shutdown.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            log_dropped: self.log_dropped.load(Relaxed),
            log_suppressed: self.log_suppressed.load(Relaxed),
        }
    }
}

/// What a server did over its life: the numbers of the `summary` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the summary key of the same name
pub struct Summary {
    pub accepted: u64,
    pub closed_eof: u64,
    pub closed_reset: u64,
    pub closed_error: u64,
    pub closed_idle: u64,
    pub closed_shutdown: u64,
    pub rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub log_dropped: u64,
    pub log_suppressed: u64,
}

impl Summary {
    /// Adds `other`'s counts to these (the workers' summaries make the
    /// server's).
    pub fn add(&mut self, other: &Summary) {
        self.accepted += other.accepted;
        self.closed_eof += other.closed_eof;
        self.closed_reset += other.closed_reset;
        self.closed_error += other.closed_error;
        self.closed_idle += other.closed_idle;
        self.closed_shutdown += other.closed_shutdown;
        self.rejected += other.rejected;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.log_dropped += other.log_dropped;
        self.log_suppressed += other.log_suppressed;
    }

    /// Connections that ended, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_eof
            + self.closed_reset
            + self.closed_error
            + self.closed_idle
            + self.closed_shutdown
    }

    /// Parses a `summary …` line (or any text holding one), as the tests
    /// and the benchmark read it from a server's stderr.
    pub fn parse(line: &str) -> Option<Summary> {
        let rest = &line[line.find("summary ")? + "summary ".len()..];
        let mut s = Summary::default();
        for pair in rest.split_whitespace() {
            let (key, value) = pair.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            let field = match key {
                "accepted" => &mut s.accepted,
                "closed_eof" => &mut s.closed_eof,
                "closed_reset" => &mut s.closed_reset,
                "closed_error" => &mut s.closed_error,
                "closed_idle" => &mut s.closed_idle,
                "closed_shutdown" => &mut s.closed_shutdown,
                "rejected" => &mut s.rejected,
                "bytes_in" => &mut s.bytes_in,
                "bytes_out" => &mut s.bytes_out,
                "log_dropped" => &mut s.log_dropped,
                "log_suppressed" => &mut s.log_suppressed,
                _ => return None,
            };
            *field = value;
        }
        Some(s)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary accepted={} closed_eof={} closed_reset={} \
             closed_error={} closed_idle={} closed_shutdown={} rejected={} \
             bytes_in={} bytes_out={} log_dropped={} log_suppressed={}",
            self.accepted,
            self.closed_eof,
            self.closed_reset,
            self.closed_error,
            self.closed_idle,
            self.closed_shutdown,
            self.rejected,
            self.bytes_in,
            self.bytes_out,
            self.log_dropped,
            self.log_suppressed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_round_trips() {
        let stats = Stats::default();
        stats.accepted();
        stats.accepted();
        stats.closed(&Reason::Eof);
        stats.closed(&Reason::from_io(io::ErrorKind::BrokenPipe.into()));
        stats.rejected();
        stats.read(10);
        stats.wrote(7);
        stats.log_dropped(3);
        stats.log_suppressed();
        let s = stats.summary();
        let line = s.to_string();
        assert_eq!(
            line,
            "summary accepted=2 closed_eof=1 closed_reset=1 closed_error=0 \
             closed_idle=0 closed_shutdown=0 rejected=1 bytes_in=10 \
             bytes_out=7 log_dropped=3 log_suppressed=1"
        );
        assert_eq!(Summary::parse(&format!("INFO  [x] {line}")), Some(s));
        assert_eq!(s.closed(), 2);
    }
}
