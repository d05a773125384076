//! One measurement, and the statistics over rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::kernel::{self, PerConn, Snapshot};
use crate::load::Test;

/// What one run of one server on one test measured.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Round number, from 1.
    pub round: u32,
    /// Server name.
    pub server: &'static str,
    /// The test.
    pub test: Test,
    /// Workers (or worker threads, or cores) in the scaling table; `None`
    /// in the main matrix.
    pub workers: Option<usize>,
    /// Why nothing was measured, if nothing was.
    pub skipped: Option<String>,
    /// Messages completed.
    pub messages: u64,
    /// Messages (or connections) per second.
    pub rate: f64,
    /// Verified echo MB/s.
    pub mb_per_s: f64,
    /// Round-trip latency percentiles in µs, where recorded.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// Server CPU time per message in µs.
    pub cpu_us_per_msg: Option<f64>,
    /// Server CPU busy over the run, in percent of one core (near 100:
    /// the server was the limit; well below: the load generator was).
    pub util_pct: Option<f64>,
    /// The load generator's CPU over the run, in percent of one core.
    pub load_util_pct: Option<f64>,
    /// Server memory before and after (idle test), kB (PSS, children
    /// included).
    pub mem_kb: Option<(u64, u64)>,
    /// Host-wide kernel memory before and after (idle test).
    pub kernel: Option<(Snapshot, Snapshot)>,
    /// Pingpong: round trips of the least and most served connection.
    pub rounds: Option<(u64, u64)>,
    /// Connections held at the end.
    pub held: u64,
    /// Errors the load generator counted.
    pub errors: u64,
}

impl Sample {
    /// A sample that records why nothing was measured.
    pub fn skipped(
        round: u32,
        server: &'static str,
        test: Test,
        why: String,
    ) -> Sample {
        Sample {
            round,
            server,
            test,
            workers: None,
            skipped: Some(why),
            messages: 0,
            rate: 0.0,
            mb_per_s: 0.0,
            p50_us: None,
            p99_us: None,
            cpu_us_per_msg: None,
            util_pct: None,
            load_util_pct: None,
            mem_kb: None,
            kernel: None,
            rounds: None,
            held: 0,
            errors: 0,
        }
    }

    /// One line for the progress output.
    pub fn brief(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("skipped ({why})");
        }
        let mut out =
            format!("{:.0} msg/s {:.1} MB/s", self.rate, self.mb_per_s);
        if let Some(p) = self.p99_us {
            let _ = write!(out, " p99 {p:.0} µs");
        }
        if let Some(c) = self.cpu_us_per_msg {
            let _ = write!(out, " cpu {c:.2} µs/msg");
        }
        if let Some(b) = self.bytes_per_conn() {
            let _ = write!(out, " {b:.0} B/conn");
        }
        if self.errors > 0 {
            let _ = write!(out, " errors {}", self.errors);
        }
        out
    }

    /// Server memory per held connection, in bytes.
    pub fn bytes_per_conn(&self) -> Option<f64> {
        let (before, after) = self.mem_kb?;
        (self.held > 0).then(|| {
            (after as f64 - before as f64) * 1024.0 / self.held as f64
        })
    }

    /// Kernel memory per held connection, both ends.
    pub fn kernel_per_conn(&self) -> Option<PerConn> {
        let (before, after) = self.kernel.as_ref()?;
        PerConn::between(before, after, self.held)
    }

    /// Bytes per held connection of each slab cache, both ends.
    pub fn cache_per_conn(&self) -> Option<BTreeMap<String, f64>> {
        let (before, after) = self.kernel.as_ref()?;
        kernel::per_cache(before, after, self.held)
    }

    /// What one connection costs the server's host at most: its own
    /// memory plus its share of the kernel's.
    pub fn server_total_per_conn(&self) -> Option<f64> {
        Some(self.bytes_per_conn()? + self.kernel_per_conn()?.server_at_most?)
    }
}

/// Median and spread of some values.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// The median.
    pub median: f64,
    /// (max - min) / median, in percent.
    pub spread_pct: f64,
    /// How many values.
    pub n: usize,
}

/// The median and spread of `values`, if any.
pub fn stat(mut values: Vec<f64>) -> Option<Stat> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let median = match n % 2 {
        1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    let spread = values[n - 1] - values[0];
    let spread_pct = match median {
        m if m.abs() > 0.0 => spread / m.abs() * 100.0,
        _ => 0.0,
    };
    Some(Stat { median, spread_pct, n })
}

/// CPU per message of server `name` in round `round`, if measured.
pub fn cpu_in(samples: &[Sample], name: &str, round: u32) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.server == name && s.round == round)?
        .cpu_us_per_msg
}

/// Median over rounds of `a`'s CPU per message over `b`'s in the same
/// round.
pub fn cpu_ratio(samples: &[Sample], a: &str, b: &str) -> Option<f64> {
    let ratios = samples
        .iter()
        .filter(|s| s.server == a)
        .filter_map(|s| {
            Some(cpu_in(samples, a, s.round)? / cpu_in(samples, b, s.round)?)
        })
        .collect();
    stat(ratios).map(|s| s.median)
}

/// Median CPU per message, in µs, of server `name`.
pub fn cpu_median(samples: &[Sample], name: &str) -> Option<f64> {
    let values = samples
        .iter()
        .filter(|s| s.server == name)
        .filter_map(|s| s.cpu_us_per_msg)
        .collect();
    stat(values).map(|s| s.median)
}
