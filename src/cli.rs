//! The command line: `readyloop serve` and `readyloop load`.
//!
//! Exit codes: 0 on a clean stop, 1 when the server cannot start or its
//! loop fails (`error: …` on stderr), 2 for invalid flags (clap prints the
//! error and the usage).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log::LevelFilter;
use simple_logger::SimpleLogger;

use crate::config::{Config, Mode, Model};
use crate::journal::{self, STATUS};

/// A single-threaded readiness-IO TCP server, the classic models it is
/// compared with, and a load generator to compare them.
#[derive(Debug, Parser)]
#[command(name = "readyloop", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM, then print a summary.
    Serve(ServeArgs),
    /// Drive a server with many connections and report what it did.
    Load(crate::load::LoadArgs),
}

/// Flags of `readyloop serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: loopback by default; 0.0.0.0:PORT or
    /// `[::]:PORT` to listen on every interface; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8989", value_name = "ADDR")]
    pub addr: SocketAddr,

    /// What to do with the bytes clients send.
    #[arg(long, value_enum, default_value_t = Mode::Log)]
    pub mode: Mode,

    /// How the server waits for IO.
    #[arg(long, value_enum, default_value_t = Model::Mio)]
    pub model: Model,

    /// Open connections allowed; one more is accepted and closed at once.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,

    /// Close a connection after this many seconds without traffic
    /// (fractions allowed); 0 never closes idle connections.
    #[arg(long, default_value = "0", value_name = "SECS",
          value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Listen backlog: connections the kernel queues before they are
    /// accepted (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// Stack size of each connection thread in the thread model, in KiB.
    #[arg(long, default_value_t = 64, value_name = "KIB",
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub thread_stack_kib: u64,

    /// Log mode: chunk lines per second each connection may log once its
    /// burst is spent; the rest are counted (`log_suppressed`) and
    /// reported. 0: no limit.
    #[arg(long, default_value_t = 20, value_name = "LINES_PER_SEC",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub log_rate: u32,

    /// Log mode: chunk lines a connection may log at once (a pasted
    /// screen) before `--log-rate` applies.
    #[arg(long, default_value_t = 200, value_name = "LINES",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub log_burst: u32,

    /// Log mode: chunk lines per second for all connections together
    /// (with one second of it as a burst). 0: no limit.
    #[arg(long, default_value_t = 500, value_name = "LINES_PER_SEC",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub log_total_rate: u32,

    /// Least severe log level shown; the `listening on` and `summary`
    /// lines are always shown.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[allow(missing_docs)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The `log` filter of this level.
    pub fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Trace => LevelFilter::Trace,
        }
    }
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.addr);
        config.mode = self.mode;
        config.model = self.model;
        config.max_connections =
            usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        config.idle_timeout =
            (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        config.backlog = self.backlog;
        config.thread_stack_kib =
            usize::try_from(self.thread_stack_kib).unwrap_or(usize::MAX);
        config.log_rate = self.log_rate;
        config.log_burst = self.log_burst;
        config.log_total_rate = self.log_total_rate;
        config
    }
}

/// Runs `readyloop serve`: sets up logging, raises the descriptor limit,
/// runs the server until it is stopped, and maps the outcome to an exit
/// code.
pub fn serve(args: &ServeArgs) -> ExitCode {
    // Logs go to stderr; stdout stays free for machine-readable output.
    let logger = SimpleLogger::new()
        .with_level(args.log_level.filter())
        .with_module_level(STATUS, LevelFilter::Info);
    if let Err(e) = journal::init(logger) {
        eprintln!("error: cannot set up logging: {e}");
        return ExitCode::from(1);
    }
    let mut config = args.config();
    config.handle_signals = true;
    // Each connection is a descriptor: allow as many as the hard limit
    // does. When they still run out, accept pauses and says so.
    if let Err(e) = crate::rlimit::raise_to_hard() {
        eprintln!("warning: cannot raise the descriptor limit: {e}");
    }
    match crate::bind(config).and_then(crate::Server::run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses a non-negative number of seconds, fractions allowed.
pub(crate) fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("not a usable number of seconds: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse_with_fractions_and_reject_nonsense() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("1e30").is_err());
        assert!(parse_secs("soon").is_err());
    }
}
