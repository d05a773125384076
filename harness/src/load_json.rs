//! What `readyloop load --json` prints, read with serde. Fields the
//! generator adds later are ignored, so an older reader keeps working.

use serde::Deserialize;

/// One run of the load generator: the one JSON object it prints.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadReport {
    /// `--pattern`, by name.
    pub pattern: String,
    /// `--connections`.
    pub connections: u64,
    /// `--size`: bytes a message.
    pub size: u64,
    /// How long the run took, in seconds.
    pub elapsed_s: f64,
    /// Messages completed (round trips, or connections for `connect`).
    pub messages: u64,
    /// `messages` a second.
    pub messages_per_s: f64,
    /// Echoed bytes received and verified.
    pub bytes: u64,
    /// `bytes` a second, in MB.
    pub mb_per_s: f64,
    /// Median latency in µs, as are the percentiles below; `null` where
    /// the pattern records none.
    pub p50_us: Option<f64>,
    /// 90th percentile.
    pub p90_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// 99.9th percentile.
    pub p999_us: Option<f64>,
    /// The slowest.
    pub max_us: Option<f64>,
    /// Pingpong: round trips of the least served connection.
    pub rounds_min: Option<u64>,
    /// Round trips of the most served connection.
    pub rounds_max: Option<u64>,
    /// Connections open (and, for idle, proven) at the end.
    pub held: u64,
    /// Every error: the four counts below.
    pub errors: u64,
    /// Connections that could not be made.
    pub connect_errors: u64,
    /// Reads and writes that failed.
    pub io_errors: u64,
    /// Echoed bytes that differed from those sent.
    pub mismatches: u64,
    /// Connections closed for making no progress (`--stall-timeout`).
    pub stalls: u64,
}

impl LoadReport {
    /// Reads the generator's stdout: exactly one JSON object on one line.
    pub fn parse(stdout: &str) -> Result<LoadReport, String> {
        let line = stdout.trim();
        if line.lines().count() != 1 {
            return Err(format!("not one JSON line: {line:?}"));
        }
        serde_json::from_str(line).map_err(|e| format!("{e} in {line:?}"))
    }
}
