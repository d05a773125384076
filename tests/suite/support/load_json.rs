//! What `readyloop load --json` prints, read with serde. Shared with the
//! benchmark (`benches/compare`). Fields the generator adds later are
//! ignored, so an older reader keeps working.
#![allow(dead_code)] // the benchmark and the tests read different fields

use serde::Deserialize;

/// One run of the load generator: the one JSON object it prints.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadReport {
    /// `--pattern`, by name.
    pub pattern: String,
    pub connections: u64,
    pub size: u64,
    pub elapsed_s: f64,
    /// Messages completed (round trips, or connections for `connect`).
    pub messages: u64,
    pub messages_per_s: f64,
    /// Echoed bytes received and verified.
    pub bytes: u64,
    pub mb_per_s: f64,
    /// Latency percentiles in µs; `null` where the pattern records none.
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Pingpong: round trips of the least and most served connection.
    pub rounds_min: Option<u64>,
    pub rounds_max: Option<u64>,
    /// Connections open (and, for idle, proven) at the end.
    pub held: u64,
    /// Every error: the four counts below.
    pub errors: u64,
    pub connect_errors: u64,
    pub io_errors: u64,
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
