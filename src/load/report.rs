//! What a run counted: each thread's [`Tally`], the live counters behind
//! the progress lines, and the merged [`Report`] as a table or JSON.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::pattern::Pattern;

/// Latencies are recorded in nanoseconds, up to a minute, to 3
/// significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .expect("constant bounds are valid")
}

/// What one client thread counted.
#[derive(Debug)]
pub struct Tally {
    /// Messages completed (see [`Pattern::unit`]).
    pub messages: u64,
    /// Echoed bytes received and verified.
    pub bytes: u64,
    /// Connections open (and, for idle, proven) at the end.
    pub held: u64,
    /// Connects that failed.
    pub connect_errors: u64,
    /// Connections that broke: reset, unexpected EOF, other IO errors.
    pub io_errors: u64,
    /// Echoes whose content differed from what was sent.
    pub mismatches: u64,
    /// Connections that waited longer than `--stall-timeout` for their
    /// connect or an echoed byte.
    pub stalls: u64,
    /// Pingpong: round trips of the least and the most served connection
    /// still open at the end.
    pub rounds_min: Option<u64>,
    /// See `rounds_min`.
    pub rounds_max: Option<u64>,
    /// Latency of each message, in ns.
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            messages: 0,
            bytes: 0,
            held: 0,
            connect_errors: 0,
            io_errors: 0,
            mismatches: 0,
            stalls: 0,
            rounds_min: None,
            rounds_max: None,
            latency: histogram(),
        }
    }
}

impl Tally {
    /// Adds another thread's tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.held += other.held;
        self.connect_errors += other.connect_errors;
        self.io_errors += other.io_errors;
        self.mismatches += other.mismatches;
        self.stalls += other.stalls;
        self.rounds_min = merge(self.rounds_min, other.rounds_min, u64::min);
        self.rounds_max = merge(self.rounds_max, other.rounds_max, u64::max);
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    /// Every error: failed connects, broken connections, mismatches and
    /// stalls.
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.io_errors + self.mismatches + self.stalls
    }
}

/// Counters the client threads bump as they go, for the progress lines.
#[derive(Debug, Default)]
pub struct Live {
    /// Messages completed so far.
    pub messages: AtomicU64,
    /// Connections established and proven (idle) or broken so far.
    pub settled: AtomicU64,
    /// Connections held now (idle).
    pub held: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
}

impl Live {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Takes `n` from a counter.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// The pattern run.
    pub pattern: Pattern,
    /// Connections asked for.
    pub connections: u64,
    /// Bytes per message.
    pub size: u64,
    /// Wall time from the first connect to the end.
    pub elapsed: Duration,
    /// Everything counted.
    pub tally: Tally,
}

impl Report {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        per_second(self.tally.messages as f64, self.elapsed)
    }

    /// Verified echoed megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        per_second(self.tally.bytes as f64 / 1e6, self.elapsed)
    }

    /// Percentiles, when any latency was recorded.
    pub fn latency(&self) -> Option<Latency> {
        let h = &self.tally.latency;
        let us = |ns: u64| ns as f64 / 1000.0;
        (!h.is_empty()).then(|| Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }

    /// One JSON object on one line; latency fields are `null` when the
    /// pattern records none. Written by hand: every value is a number
    /// or a fixed identifier, so nothing needs escaping.
    pub fn json(&self) -> String {
        let t = &self.tally;
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            "{{\"pattern\":\"{}\",\"connections\":{},\"size\":{},\
             \"elapsed_s\":{:.3},\"messages\":{},\"messages_per_s\":{:.1},\
             \"bytes\":{},\"mb_per_s\":{:.3}",
            self.pattern,
            self.connections,
            self.size,
            self.elapsed.as_secs_f64(),
            t.messages,
            self.rate(),
            t.bytes,
            self.mb_per_s(),
        );
        let lat = self.latency();
        for (key, value) in [
            ("p50_us", lat.map(|l| l.p50)),
            ("p90_us", lat.map(|l| l.p90)),
            ("p99_us", lat.map(|l| l.p99)),
            ("p999_us", lat.map(|l| l.p999)),
            ("max_us", lat.map(|l| l.max)),
        ] {
            match value {
                Some(v) => write!(out, ",\"{key}\":{v:.1}"),
                None => write!(out, ",\"{key}\":null"),
            }
            .ok();
        }
        for (key, value) in
            [("rounds_min", t.rounds_min), ("rounds_max", t.rounds_max)]
        {
            match value {
                Some(v) => write!(out, ",\"{key}\":{v}"),
                None => write!(out, ",\"{key}\":null"),
            }
            .ok();
        }
        let _ = write!(
            out,
            ",\"held\":{},\"errors\":{},\"connect_errors\":{},\
             \"io_errors\":{},\"mismatches\":{},\"stalls\":{}}}",
            t.held,
            t.errors(),
            t.connect_errors,
            t.io_errors,
            t.mismatches,
            t.stalls,
        );
        out
    }
}

/// The human table.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| {
            writeln!(f, "{k:<16} {v}")
        };
        row(
            f,
            "pattern",
            format!("{} ({})", self.pattern, self.pattern.unit()),
        )?;
        row(f, "connections", self.connections.to_string())?;
        row(f, "size", format!("{} B", self.size))?;
        row(f, "elapsed", format!("{:.3} s", self.elapsed.as_secs_f64()))?;
        row(f, "messages", t.messages.to_string())?;
        row(f, "messages/s", format!("{:.0}", self.rate()))?;
        row(f, "MB/s", format!("{:.2}", self.mb_per_s()))?;
        if let Some(l) = self.latency() {
            row(
                f,
                "latency (µs)",
                format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            )?;
        }
        if let (Some(min), Some(max)) = (t.rounds_min, t.rounds_max) {
            row(f, "per connection", format!("{min} to {max} round trips"))?;
        }
        // Only the idle pattern holds connections; elsewhere "held"
        // would count the ones open at the deadline, which says nothing.
        if self.pattern == Pattern::Idle {
            row(f, "held", format!("{} of {}", t.held, self.connections))?;
        }
        row(
            f,
            "errors",
            format!(
                "{} (connect {}, io {}, mismatched echoes {}, stalls {})",
                t.errors(),
                t.connect_errors,
                t.io_errors,
                t.mismatches,
                t.stalls,
            ),
        )
    }
}

/// Combines two optional figures, either of which may be missing.
fn merge(
    a: Option<u64>,
    b: Option<u64>,
    f: fn(u64, u64) -> u64,
) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

fn per_second(amount: f64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        secs if secs > 0.0 => amount / secs,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut tally =
            Tally { messages: 1000, bytes: 64_000, ..Tally::default() };
        for us in 1..=1000 {
            tally.latency.record(us * 1000).unwrap();
        }
        Report {
            pattern: Pattern::Pingpong,
            connections: 10,
            size: 64,
            elapsed: Duration::from_secs(2),
            tally,
        }
    }

    #[test]
    fn json_is_one_flat_object_with_the_figures() {
        let json = report().json();
        assert!(json.starts_with("{\"pattern\":\"pingpong\""), "{json}");
        assert!(json.ends_with('}') && !json.contains('\n'));
        assert!(json.contains("\"messages_per_s\":500.0"), "{json}");
        assert!(json.contains("\"mb_per_s\":0.032"), "{json}");
        assert!(json.contains("\"p50_us\":500."), "{json}");
        assert!(json.contains("\"max_us\":1000."), "{json}");
        assert!(json.contains("\"errors\":0"), "{json}");
        assert!(json.ends_with(",\"stalls\":0}"), "{json}");
    }

    #[test]
    fn stalls_are_errors_of_their_own_kind() {
        let mut r = report();
        r.tally.stalls = 3;
        assert_eq!(r.tally.errors(), 3);
        assert!(r.json().contains("\"errors\":3"));
        assert!(r.json().contains("\"stalls\":3"));
        assert!(r.to_string().contains("stalls 3"), "{r}");
    }

    #[test]
    fn no_latency_is_null() {
        let mut r = report();
        r.tally.latency.reset();
        assert!(r.json().contains("\"p99_us\":null"));
        assert!(!r.to_string().contains("latency"));
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = report().tally;
        let b = report().tally;
        a.merge(&b);
        assert_eq!(a.messages, 2000);
        assert_eq!(a.latency.len(), 2000);
        assert_eq!(a.errors(), 0);
    }
}
