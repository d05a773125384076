//! The command line: `readyloop serve` and `readyloop load`.
//!
//! Exit codes: 0 on a clean stop, 1 when the server cannot start or its
//! loop fails (`error: …` on stderr), 2 for invalid flags (clap prints the
//! error and the usage).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log::LevelFilter;

use crate::config::{Config, Mode, Model};
use crate::secs::parse_secs;

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
    /// [::]:PORT to listen on every interface; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8989", value_name = "ADDR")]
    pub addr: SocketAddr,

    /// What to do with the bytes clients send.
    #[arg(long, value_enum, default_value_t = ModeArg::Log)]
    pub mode: ModeArg,

    /// How the server waits for IO.
    #[arg(long, value_enum, default_value_t = ModelArg::Mio)]
    pub model: ModelArg,

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

    /// Least severe log level shown; the `listening on` and `summary`
    /// lines are always shown.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Log every chunk read, escaped (what the teaching server printed).
    Log,
    /// Write every byte back, in order.
    Echo,
    /// Count the bytes and drop them.
    Discard,
}

/// `--model`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelArg {
    /// One thread, one mio::Poll over a slab of nonblocking sockets.
    Mio,
    /// One blocking connection at a time; others wait in the backlog.
    Iterative,
    /// A thread per connection with a small stack, blocking IO.
    Thread,
    /// A fork()ed child process per connection, blocking IO.
    Process,
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
        config.mode = match self.mode {
            ModeArg::Log => Mode::Log,
            ModeArg::Echo => Mode::Echo,
            ModeArg::Discard => Mode::Discard,
        };
        config.model = match self.model {
            ModelArg::Mio => Model::Mio,
            ModelArg::Iterative => Model::Iterative,
            ModelArg::Thread => Model::Thread,
            ModelArg::Process => Model::Process,
        };
        config.max_connections =
            usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        config.idle_timeout =
            (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        config.backlog = self.backlog;
        config.thread_stack_kib =
            usize::try_from(self.thread_stack_kib).unwrap_or(usize::MAX);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
