//! The load generator, `readyloop load`: drives a server with many
//! connections and reports what it did.
//!
//! Like the server it is a readiness loop: one thread (or `--threads N`,
//! each with its own poll and share of the connections) runs a
//! `mio::Poll` over a slab of nonblocking client sockets, so thousands of
//! connections cost one thread, and the generator is rarely the
//! bottleneck of the server it measures.
//!
//! | file | what it holds |
//! |---|---|
//! | `args.rs` | the flags and the validated [`Plan`] |
//! | `client.rs` | one client thread's loop, and its stall checks |
//! | `conn.rs` | one connection: send, receive, verify, apply the rule |
//! | `pattern.rs` | pingpong, stream, idle, connect as rules |
//! | `verify.rs` | each connection's byte sequence and its check |
//! | `source.rs` | opening sockets, spread over source addresses |
//! | `report.rs` | counters, latency percentiles, table and JSON |
//! | `verdict.rs` | whether a completed run shows a working server |
//! | `out.rs` | stdout and stderr writes that cannot panic |
//!
//! The descriptor limit it needs comes from [`crate::rlimit`].
//!
//! # Exit codes
//!
//! | code | when |
//! |---|---|
//! | 0 | the run completed and passed: at least one message, no error |
//! | 1 | it could not run (`error: …`: too few descriptors or client ports, a poll or thread that could not be created) |
//! | 2 | invalid flags (clap's one-line error and the usage) |
//! | 3 | it ran, and failed: errors (connects, broken connections, mismatched echoes, stalls), no message completed, or (idle) fewer connections held than asked; the report is printed all the same, and one stderr line says why |
//!
//! A reader that closes stdout before the report is written (`| head
//! -c0`) does not change the code: the generator stops writing, says
//! nothing, and exits with the run's own 0 or 3. Any other failure to
//! write the report is exit 1.

mod args;
mod client;
mod conn;
mod out;
mod pattern;
mod report;
mod source;
mod verdict;
mod verify;

use std::error::Error;
use std::fmt;
use std::io;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use args::{LoadArgs, Plan, PlanError, Stop};
pub use pattern::Pattern;
pub use report::{Latency, Live, Report, Tally};
pub use source::{SourceError, Sources};
pub use verdict::Shortfall;
pub use verify::Sequence;

use crate::rlimit::NofileError;
use client::Share;
use out::say;

/// How long the idle pattern may take to establish its connections
/// before it holds them for `--duration`.
const IDLE_PATIENCE: Duration = Duration::from_secs(30);

/// Progress lines start after this long, then come once a second.
const QUIET_START: Duration = Duration::from_secs(3);

/// Exit code of a run that could not happen.
const CANNOT_RUN: u8 = 1;
/// Exit code of a run that completed and failed (see [`Shortfall`]).
const FAILED: u8 = 3;

/// Why a run could not happen (not errors of single connections: those
/// are counted in the report).
#[derive(Debug)]
pub enum LoadError {
    /// The source addresses cannot carry the connections.
    Sources(SourceError),
    /// This process may not open enough descriptors.
    Descriptors(NofileError),
    /// Creating or waiting on a poll, or starting a thread, failed.
    Setup {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl LoadError {
    fn setup(what: &'static str) -> impl FnOnce(io::Error) -> LoadError {
        move |source| LoadError::Setup { what, source }
    }
}

/// What went wrong, without the [`source`](Error::source): print the
/// chain (as [`main`] does) for the OS error behind it.
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Sources(e) => e.fmt(f),
            LoadError::Descriptors(e) => e.fmt(f),
            LoadError::Setup { what, .. } => write!(f, "cannot {what}"),
        }
    }
}

impl Error for LoadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            // Shown as these errors themselves, so their causes come next.
            LoadError::Sources(e) => e.source(),
            LoadError::Descriptors(e) => e.source(),
            LoadError::Setup { source, .. } => Some(source),
        }
    }
}

/// Runs `readyloop load`, prints the report, and maps the outcome to an
/// exit code (see [Exit codes](self#exit-codes)).
pub fn main(args: LoadArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(why) => clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!("{why}\n"),
        )
        .exit(),
    };
    let report = match run(&plan) {
        Ok(report) => report,
        Err(e) => {
            say(format_args!("error: {}", Chain(&e)));
            return ExitCode::from(CANNOT_RUN);
        }
    };
    let printed = match args.json {
        true => out::print(format_args!("{}\n", report.json())),
        false => out::print(format_args!("{report}")),
    };
    match printed {
        Err(e) if !out::reader_gone(&e) => {
            say(format_args!("error: cannot write the report: {e}"));
            return ExitCode::from(CANNOT_RUN);
        }
        _ => {}
    }
    let shortfalls = Shortfall::of(&report);
    if shortfalls.is_empty() {
        return ExitCode::SUCCESS;
    }
    let why: Vec<String> = shortfalls.iter().map(|s| s.to_string()).collect();
    say(format_args!("load: failed: {}", why.join(", ")));
    ExitCode::from(FAILED)
}

/// An error and its sources, `: `-separated, on one line.
struct Chain<'a>(&'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Runs the plan: checks resources, starts the client threads, prints
/// progress while they run, and merges their tallies.
pub fn run(plan: &Plan) -> Result<Report, LoadError> {
    plan.sources
        .check(plan.addr, plan.connections)
        .map_err(LoadError::Sources)?;
    crate::rlimit::ensure_nofile(plan.connections)
        .map_err(LoadError::Descriptors)?;
    let live = Live::default();
    let start = Instant::now();
    // Idle holds for the duration once every connection is held, and
    // gives up establishing them after IDLE_PATIENCE more.
    let (deadline, hold) = match (plan.stop, plan.pattern) {
        (Stop::After(d), Pattern::Idle) => {
            (Some(start + d + IDLE_PATIENCE), Some(d))
        }
        (Stop::After(d), _) => (Some(start + d), None),
        (Stop::Messages(_), _) => (None, None),
    };
    let threads = plan.threads.max(1) as u64;
    let shares = (0..threads).map(|i| Share {
        first: i,
        step: threads,
        count: split(plan.connections, threads, i),
        quota: match plan.stop {
            Stop::Messages(n) => Some(split(n, threads, i)),
            Stop::After(_) => None,
        },
        deadline,
        hold,
    });
    let (done, finished) = mpsc::channel();
    let mut tally = Tally::default();
    thread::scope(|scope| {
        for share in shares {
            let (tx, live) = (done.clone(), &live);
            let spawned = thread::Builder::new()
                .name("readyloop-load".into())
                .spawn_scoped(scope, move || {
                    let _ = tx.send(client::run(plan, share, live));
                });
            if let Err(e) = spawned {
                let _ = done.send(Err(LoadError::setup("start a thread")(e)));
            }
        }
        drop(done);
        watch(plan, &live, start, &finished, &mut tally)
    })?;
    Ok(Report {
        pattern: plan.pattern,
        connections: plan.connections,
        size: plan.size,
        elapsed: start.elapsed(),
        tally,
    })
}

/// Collects the threads' tallies; meanwhile prints progress and, for the
/// idle pattern, one line once every connection is held (the benchmark
/// waits for it before it measures the server's memory).
fn watch(
    plan: &Plan,
    live: &Live,
    start: Instant,
    finished: &mpsc::Receiver<Result<Tally, LoadError>>,
    tally: &mut Tally,
) -> Result<(), LoadError> {
    let mut first_error = None;
    let mut next_progress = start + QUIET_START;
    let mut announced = false;
    loop {
        match finished.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(one)) => tally.merge(&one),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let settled = Live::get(&live.settled);
        if plan.pattern == Pattern::Idle
            && !announced
            && settled >= plan.connections
        {
            announced = true;
            say(format_args!(
                "load: holding {} of {} connections",
                Live::get(&live.held),
                plan.connections
            ));
        }
        let now = Instant::now();
        if plan.progress && now >= next_progress {
            next_progress = now + Duration::from_secs(1);
            let secs = now.duration_since(start).as_secs_f64();
            let (messages, errors) =
                (Live::get(&live.messages), Live::get(&live.errors));
            match plan.pattern {
                Pattern::Idle => say(format_args!(
                    "load: {secs:.0} s, {messages} messages, {} held, \
                     {errors} errors",
                    Live::get(&live.held),
                )),
                _ => say(format_args!(
                    "load: {secs:.0} s, {messages} messages, {errors} errors"
                )),
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Share `i` of `total` split over `parts` as evenly as possible.
fn split(total: u64, parts: u64, i: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(10, 3), (1, 4), (100_000, 7)] {
            let sum: u64 = (0..parts).map(|i| split(total, parts, i)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn an_error_prints_with_its_cause_on_one_line() {
        let e = LoadError::setup("create a poll")(
            io::Error::from_raw_os_error(libc::EMFILE),
        );
        let line = Chain(&e).to_string();
        assert!(line.starts_with("cannot create a poll: "), "{line}");
        assert!(line.contains("Too many open files"), "{line}");
        assert_eq!(e.to_string(), "cannot create a poll");
    }
}
