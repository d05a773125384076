//! Helpers of the suite, one concern a file: the server under test, the
//! client side of a socket, waits, seeded bytes, the chaos driver,
//! Markdown as GitHub reads it and commands run as the docs show them
//! (for the documentation checks).
//! /proc and the load generator's JSON come from `readyloop-harness`
//! (`harness/`), which the benchmark reads them with too.

pub mod activation;
pub mod chaos;
pub mod log_line;
pub mod markdown;
pub mod net;
pub mod rng;
pub mod scrape;
pub mod server;
pub mod shell;
pub mod stall;
pub mod uring;
pub mod wait;

pub use net::*;
pub use readyloop_harness::{load_json, proc};
pub use rng::{pattern, Rng};
pub use server::{
    assert_whole_records, serve, stop, ServerProcess, WARM_UP_BYTES,
};
pub use wait::{eventually, heavy, settle, wait_count, PATIENCE};

/// The log target of the `listening on` and `summary` lines: part of
/// the log-line contract docs/operating.md documents.
pub const STATUS: &str = "readyloop::status";
