//! Flags of `readyloop load`, and the [`Plan`] they describe.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::value_parser;

use super::pattern::Pattern;
use super::source::Sources;
use crate::secs::{at_least, parse_secs};

/// How long the run lasts when neither `--duration` nor `--messages` is
/// given.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// The shortest `--stall-timeout`: below it, scheduling noise would
/// pass for a stall.
const MIN_STALL: Duration = Duration::from_millis(1);

/// Exit codes, as `readyloop load --help` shows them.
const EXIT_CODES: &str = "\
Exit codes:
  0  the run completed and passed: messages completed, no error
  1  it could not run (error: ..., e.g. too few file descriptors)
  2  invalid flags
  3  it ran and failed: errors (connects, broken connections,
     mismatched echoes, stalls), no message completed, or (idle)
     fewer connections held than asked; the report is still printed
A reader that closes stdout early leaves the code as it was.";

/// Flags of `readyloop load`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct LoadArgs {
    /// Server to drive (any address; the project's tests and benchmark
    /// only ever use loopback).
    #[arg(long, default_value = "127.0.0.1:8989", value_name = "ADDR")]
    pub addr: SocketAddr,

    /// Connections open at once.
    #[arg(long, short = 'c', default_value_t = 100, value_name = "C",
          allow_negative_numbers = true,
          value_parser = value_parser!(i64).range(1..=10_000_000)
              .map(|n| n as u64))]
    pub connections: u64,

    /// Run for this many seconds (fractions allowed; default 5). Idle:
    /// hold the connections this long once all are established (giving
    /// up on establishing them after 30 s more).
    #[arg(long, value_name = "SECS", value_parser = parse_secs,
          allow_negative_numbers = true, conflicts_with = "messages")]
    pub duration: Option<Duration>,

    /// Stop after this many messages in all (round trips, streamed
    /// SIZE-byte messages, or connections for --pattern connect).
    #[arg(long, value_name = "N",
          allow_negative_numbers = true,
          value_parser = value_parser!(i64).range(1..)
              .map(|n| n as u64))]
    pub messages: Option<u64>,

    /// Bytes per message.
    #[arg(long, default_value_t = 64, value_name = "BYTES",
          allow_negative_numbers = true,
          value_parser = value_parser!(i64).range(1..=16 * 1024 * 1024)
              .map(|n| n as u64))]
    pub size: u64,

    /// A connection that waits this many seconds for its connect or for
    /// an echoed byte and gets nothing is counted as stalled (an error)
    /// and closed (fractions allowed).
    #[arg(long, default_value = "5", value_name = "SECS",
          value_parser = at_least(MIN_STALL), allow_negative_numbers = true)]
    pub stall_timeout: Duration,

    /// What each connection does.
    #[arg(long, value_enum, default_value_t = Pattern::Pingpong)]
    pub pattern: Pattern,

    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Source addresses to spread connections over (needed above about
    /// 28,000 connections to one server: 127.0.0.1,127.0.0.2,...).
    #[arg(long, value_name = "IP,IP,...", value_delimiter = ',')]
    pub source: Vec<IpAddr>,

    /// Client threads, each with its own poll and share of connections.
    #[arg(long, default_value_t = 1, value_name = "N",
          allow_negative_numbers = true,
          value_parser = value_parser!(i64).range(1..=256)
              .map(|n| n as u64))]
    pub threads: u64,

    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many messages in all.
    Messages(u64),
}

/// A validated load run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server.
    pub addr: SocketAddr,
    /// Connections open at once.
    pub connections: u64,
    /// When to stop.
    pub stop: Stop,
    /// Bytes per message.
    pub size: u64,
    /// What each connection does.
    pub pattern: Pattern,
    /// Where connections come from.
    pub sources: Sources,
    /// Client threads.
    pub threads: usize,
    /// Progress lines on stderr.
    pub progress: bool,
    /// How long a connection may wait without progress.
    pub stall_timeout: Duration,
}

/// Flags that are each valid but make no sense together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// `--pattern idle` with `--messages N`.
    IdleWithMessages(u64),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::IdleWithMessages(n) => write!(
                f,
                "--pattern idle holds connections for --duration; \
                 --messages {n} does not apply"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

impl LoadArgs {
    /// The plan these flags describe, or why they make no sense together
    /// (a usage error: exit 2).
    pub fn plan(&self) -> Result<Plan, PlanError> {
        let stop = match (self.duration, self.messages) {
            (_, Some(n)) if self.pattern == Pattern::Idle => {
                return Err(PlanError::IdleWithMessages(n))
            }
            (_, Some(n)) => Stop::Messages(n),
            (Some(d), None) => Stop::After(d),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        let threads = self.threads.min(self.connections);
        Ok(Plan {
            addr: self.addr,
            connections: self.connections,
            stop,
            size: self.size,
            pattern: self.pattern,
            sources: Sources::new(self.source.clone()),
            threads: usize::try_from(threads).unwrap_or(1),
            progress: !self.quiet,
            stall_timeout: self.stall_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn plan(line: &[&str]) -> Result<Plan, String> {
        let argv = std::iter::once("load").chain(line.iter().copied());
        let args = Wrap::try_parse_from(argv).map_err(|e| e.to_string())?;
        args.args.plan().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_run_pingpong_for_five_seconds() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.stop, Stop::After(DEFAULT_DURATION));
        assert_eq!(plan.pattern, Pattern::Pingpong);
        assert_eq!((plan.size, plan.threads), (64, 1));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(plan(&["--connections", "0"]).is_err());
        assert!(plan(&["--size", "0"]).is_err());
        assert!(plan(&["--duration", "1", "--messages", "5"]).is_err());
        assert!(plan(&["--pattern", "idle", "--messages", "5"]).is_err());
        assert!(plan(&["--source", "127.0.0.1,nope"]).is_err());
        assert!(plan(&["--pattern", "chatty"]).is_err());
        assert!(plan(&["--stall-timeout", "0"]).is_err());
    }

    #[test]
    fn bad_seconds_say_why() {
        let err = plan(&["--duration", "-1"]).unwrap_err();
        assert!(err.contains("seconds cannot be negative"), "{err}");
        let err = plan(&["--stall-timeout", "-0.5"]).unwrap_err();
        assert!(err.contains("seconds cannot be negative"), "{err}");
        let err = plan(&["--duration", "1e19"]).unwrap_err();
        assert!(err.contains("at most 3153600000 s"), "{err}");
    }

    #[test]
    fn the_stall_timeout_defaults_to_five_seconds() {
        assert_eq!(plan(&[]).unwrap().stall_timeout, Duration::from_secs(5));
        let plan = plan(&["--stall-timeout", "0.5"]).unwrap();
        assert_eq!(plan.stall_timeout, Duration::from_millis(500));
    }

    #[test]
    fn sources_split_on_commas() {
        let plan = plan(&["--source", "127.0.0.1,127.0.0.2"]).unwrap();
        assert_eq!(plan.sources.count(), 2);
    }

    #[test]
    fn threads_never_exceed_connections() {
        let plan = plan(&["-c", "2", "--threads", "8"]).unwrap();
        assert_eq!(plan.threads, 2);
    }
}
