//! A chaos client driver: many echo clients on a few threads, each thread
//! one `mio::Poll` over its clients, so a thousand clients do not need a
//! thousand threads. Each client follows a script picked at random from
//! [`Behaviour`] and tallies what it did: its address, bytes written,
//! bytes read back (each compared, in order, with what was written) and
//! the close reasons the server may report for it.

mod client;
mod driver;
mod script;

use std::net::SocketAddr;
use std::time::Duration;

pub use driver::run;
pub use script::Behaviour;

/// How many clients, how fast, how long.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Clients open at once, over all driver threads.
    pub concurrency: usize,
    /// Clients in all.
    pub total: usize,
    /// No client starts after this.
    pub duration: Duration,
    /// Driver threads.
    pub drivers: usize,
    pub seed: u64,
    /// Server closes and resets are not failures (a shutdown test).
    pub tolerant: bool,
    /// Scales message and burst sizes (1 = the CI sizes).
    pub scale: usize,
}

/// How one client ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its script ran to the end.
    Done,
    /// The server closed or reset it early; only a tolerant plan allows it.
    CutOff(String),
    /// A broken promise: wrong or missing bytes, an early close, stuck.
    Failed(String),
    /// Its driver was starved (two busy cores) until it had moved no
    /// byte for the server's idle timeout, and the server closed it as
    /// idle, as the idle contract says: not the server's fault, and
    /// counted as an idle close.
    Starved(String),
}

/// The server's `--idle-timeout` in a chaos run: well above the
/// clients' longest pause (250 ms), so only the idle clients, and a
/// client whose driver was starved that long, are closed as idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client did.
#[derive(Clone, Debug)]
pub struct Tally {
    pub behaviour: Behaviour,
    /// Its address as the server saw it, once connected.
    pub peer: Option<SocketAddr>,
    /// Bytes the kernel took from it.
    pub written: u64,
    /// Bytes read back, each equal to the byte written at its place.
    pub verified: u64,
    pub outcome: Outcome,
}
