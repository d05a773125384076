//! Which signals the server handles and what each means. Every signal
//! whose default would end the process without a summary is either a
//! request (stop, stop now, stats) or ignored on purpose; docs/operating.md
//! ("Signals and exit codes") lists them. Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//! SIGABRT, SIGTRAP, SIGSYS) keep their default: after one, nothing the
//! process holds can be trusted.

use mio::{Interest, Registry};
use signal_hook::consts::signal::*;
use signal_hook_mio::v1_0::Signals;

use crate::error::Error;

use super::SIGNALS;

/// What a signal asks of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Meaning {
    /// Stop: stop accepting, flush and linger for the stop window.
    Stop,
    /// Stop at once: every open connection closes as `shutdown`.
    StopNow,
    /// Log the counters.
    Stats,
    /// Nothing; logged, at most once a second.
    Ignore,
}

/// What a batch of wake-ups asks of the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// Begin stopping (if not already).
    pub(crate) stop: bool,
    /// Stop now: no more flushing or lingering.
    pub(crate) now: bool,
}

impl Control {
    pub(crate) fn merge(&mut self, other: Control) {
        self.stop |= other.stop;
        self.now |= other.now;
    }
}

/// SIGINT (Ctrl-C), SIGTERM (kill, systemd) and SIGHUP (the terminal went
/// away) stop; a second one during the stop window stops at once.
const STOP: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];
/// SIGQUIT (Ctrl-\) stops at once.
const STOP_NOW: [i32; 1] = [SIGQUIT];
/// SIGUSR1 logs the counters.
const STATS: [i32; 1] = [SIGUSR1];
/// Signals whose default would end the process, and that mean nothing to
/// a server: a stray `kill -USR2`, a timer or profiler signal, a CPU or
/// file-size soft limit (with SIGXFSZ ignored, a write past the limit
/// fails with EFBIG instead, which the log sink counts as a drop).
const IGNORE: [i32; 9] = [
    SIGUSR2,
    SIGALRM,
    SIGVTALRM,
    SIGPROF,
    SIGIO,
    libc::SIGPWR,
    SIGXCPU,
    SIGXFSZ,
    libc::SIGSTKFLT,
];

/// What `signal` means to the server.
pub(super) fn meaning(signal: i32) -> Meaning {
    if STOP.contains(&signal) {
        Meaning::Stop
    } else if STOP_NOW.contains(&signal) {
        Meaning::StopNow
    } else if STATS.contains(&signal) {
        Meaning::Stats
    } else {
        Meaning::Ignore
    }
}

/// Every signal the server takes as an event, to ignore in a forked
/// child (whose parent answers them) except the ones it handles itself.
pub(crate) fn all() -> impl Iterator<Item = i32> {
    STOP.into_iter()
        .chain(STOP_NOW)
        .chain(STATS)
        .chain(IGNORE)
        .chain(realtime())
}

/// The real-time signals, which end the process by default (`SIGRTMIN`
/// is the first free one: the C library keeps two below it), except the
/// last, [`super::wake`]'s.
fn realtime() -> impl Iterator<Item = i32> {
    libc::SIGRTMIN()..libc::SIGRTMAX()
}

/// A signal's name, as `kill -l` prints it.
pub(super) fn name(signal: i32) -> String {
    match signal_hook::low_level::signal_name(signal) {
        Some(name) => name.to_string(),
        None => format!("signal {signal}"),
    }
}

/// Installs the handlers and registers them on the poll (trap 13).
pub(super) fn register(registry: &Registry) -> Result<Signals, Error> {
    let mut signals = Signals::new(all())
        .map_err(Error::setup("install the signal handlers"))?;
    super::wake::install()
        .map_err(Error::setup("install the wake-up signal handler"))?;
    super::wake::note_arrival(&STOP)
        .map_err(Error::setup("install the stop signals' clock"))?;
    registry
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(Error::setup("register the signals"))?;
    Ok(signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_one_meaning() {
        assert_eq!(meaning(SIGHUP), Meaning::Stop);
        assert_eq!(meaning(SIGQUIT), Meaning::StopNow);
        assert_eq!(meaning(SIGUSR1), Meaning::Stats);
        assert_eq!(meaning(SIGUSR2), Meaning::Ignore);
        let all: Vec<i32> = all().collect();
        for fault in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGKILL] {
            assert!(!all.contains(&fault), "{fault}");
        }
        assert_eq!(name(SIGHUP), "SIGHUP");
    }
}
