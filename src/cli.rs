//! The command line: `readyloop serve`, `readyloop load` and
//! `readyloop client`.
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
use crate::net;
use crate::secs::{parse_secs, zero_or_at_least};

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
    /// Connect to a server, send stdin, print what comes back; `-v`
    /// narrates the handshake, the half-close and any reset.
    Client(crate::client::ClientArgs),
}

/// Flags of `readyloop serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT: loopback by default; 0.0.0.0:PORT
    /// or `[::]:PORT` to listen on every interface (both may be given:
    /// IPv6 listeners are IPv6-only); port 0 picks a free port. Give it
    /// again for more listeners; a host name listens on every address it
    /// resolves to (`localhost:8989`: 127.0.0.1 and ::1). Ignored when
    /// systemd passes the listening sockets (socket activation).
    #[arg(long = "addr", default_value = "127.0.0.1:8989", value_name = "ADDR",
          action = clap::ArgAction::Append, value_parser = addr_arg)]
    pub addrs: Vec<AddrArg>,

    /// What to do with the bytes clients send.
    #[arg(long, value_enum, default_value_t = Mode::Log)]
    pub mode: Mode,

    /// How the server waits for IO.
    #[arg(long, value_enum, default_value_t = Model::Mio)]
    pub model: Model,

    /// Open connections allowed; one more is accepted and closed at once.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: u32,

    /// Open connections allowed per client address (IPv6: per /64); one
    /// more from that address is accepted and closed at once, and counted
    /// as rejected. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub max_connections_per_ip: u32,

    /// mio model: memory for output held for clients whose writes block
    /// (bytes, or with a K, M or G suffix: 512K, 32M); past it those
    /// clients are not read until they read. The blocking models hold no
    /// output: a blocked write holds its thread or process.
    #[arg(long, default_value = "32M", value_name = "BYTES",
          allow_negative_numbers = true, value_parser = parse_bytes)]
    pub max_output_memory: u64,

    /// SO_SNDBUF of accepted sockets (bytes, or K/M suffix), bounding the
    /// kernel memory a client that does not read can hold; the kernel
    /// doubles it for its bookkeeping. Unset: the kernel's autotuning.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true,
          value_parser = parse_send_buffer)]
    pub send_buffer: Option<u64>,

    /// Close a connection after this many seconds without traffic
    /// (fractions allowed); 0 never closes idle connections.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = zero_or_at_least(Duration::from_millis(1)))]
    pub idle_timeout: Duration,

    /// Listen backlog: connections the kernel queues before they are
    /// accepted (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 1024, value_name = "N",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub backlog: u32,

    /// Stack size of each connection thread in the thread model, in KiB.
    #[arg(long, default_value_t = 64, value_name = "KIB",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub thread_stack_kib: u32,

    /// Log mode: chunk lines per second each connection may log once its
    /// burst is spent; the rest are counted (`log_suppressed`) and
    /// reported. 0: no limit.
    #[arg(long, default_value_t = 20, value_name = "LINES_PER_SEC",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub log_rate: u32,

    /// Log mode: chunk lines a connection may log at once (a pasted
    /// screen) before `--log-rate` applies.
    #[arg(long, default_value_t = 200, value_name = "LINES",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub log_burst: u32,

    /// Log mode: chunk lines per second for all connections together
    /// (with one second of it as a burst). 0: no limit.
    #[arg(long, default_value_t = 500, value_name = "LINES_PER_SEC",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub log_total_rate: u32,

    /// Log a `stats` line (the summary's counters so far, open
    /// connections and uptime) every SECS seconds, at least 0.1; 0: only
    /// on SIGUSR1.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = zero_or_at_least(Duration::from_millis(100)))]
    pub stats_interval: Duration,

    /// When a stop begins (SIGTERM, SIGINT, SIGHUP), keep accepting and
    /// serving for SECS seconds (fractions allowed) with /healthz on
    /// --metrics-addr answering 503, so a load balancer stops sending
    /// new clients; then stop as usual. A second signal stops now.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = parse_secs)]
    pub drain: Duration,

    /// mio and uring models: run N independent loops, one thread each, every one
    /// with its own listening sockets on the same addresses
    /// (SO_REUSEPORT: the kernel spreads new connections among them); 0:
    /// one per available CPU. --max-connections is split among them.
    #[arg(long, default_value_t = 1, value_name = "N",
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub workers: u32,

    /// mio and uring models: pin each worker's thread to one CPU (round robin over
    /// the CPUs the process may use).
    #[arg(long)]
    pub pin: bool,

    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g.
    /// 127.0.0.1:9898; it must not overlap a client address. Unset: no
    /// metrics endpoint.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Every client connection must begin with a PROXY protocol header
    /// (v1 or v2, as HAProxy's send-proxy, nginx's proxy_protocol or a
    /// cloud balancer send it); its source address becomes the
    /// connection's peer in the log and the per-address limit. A
    /// connection without a valid header within 5 s is closed (counted
    /// as error, `proxy: …`).
    #[arg(long)]
    pub proxy_protocol: bool,

    /// With --proxy-protocol: the only networks that may send a header,
    /// CIDR[,CIDR…] (a header lets its sender claim any client address,
    /// so only the balancers may); others are closed at once.
    #[arg(long, value_name = "CIDRS", default_value = "127.0.0.0/8,::1/128",
          value_parser = crate::proxy::Trust::parse)]
    pub proxy_from: crate::proxy::Trust,

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

/// One `--addr`: an IP address, or a host name resolved when the server
/// starts.
#[derive(Clone, Debug)]
pub enum AddrArg {
    /// `127.0.0.1:8989`, `[::1]:8989`.
    Ip(SocketAddr),
    /// `localhost:8989`: every address the name resolves to.
    Name(String, u16),
}

const ADDR_FORM: &str =
    "not HOST:PORT (like 127.0.0.1:8989, [::1]:8989 or localhost:8989)";

/// Parses `--addr` (the form only; a name is resolved by
/// [`ServeArgs::addrs`]).
fn addr_arg(text: &str) -> Result<AddrArg, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(AddrArg::Ip(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(ADDR_FORM.into());
    };
    let port: u16 =
        port.parse().map_err(|_| format!("not a port number: {port:?}"))?;
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
    if host.is_empty() || !host.chars().all(name_char) {
        return Err(ADDR_FORM.into());
    }
    Ok(AddrArg::Name(host.to_string(), port))
}

impl ServeArgs {
    /// The addresses of every `--addr`, in order, each once (port 0
    /// excepted: each asks for a port of its own), host names resolved
    /// to every address they have; why not, in one line.
    pub fn addrs(&self) -> Result<Vec<SocketAddr>, String> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for arg in &self.addrs {
            let resolved = match arg {
                AddrArg::Ip(addr) => vec![*addr],
                AddrArg::Name(host, port) => resolve(host, *port)?,
            };
            for addr in resolved {
                if addr.port() == 0 || !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        let max = crate::listener::MAX_LISTENERS;
        if addrs.len() > max {
            return Err(format!(
                "--addr names {} addresses; a server can listen on at most \
                 {max}",
                addrs.len()
            ));
        }
        Ok(addrs)
    }

    /// The server configuration these flags describe, or why they
    /// describe none (a host name that does not resolve).
    pub fn config(&self) -> Result<Config, String> {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.addrs = self.addrs()?;
        config.mode = self.mode;
        config.model = self.model;
        config.max_connections =
            usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        config.max_connections_per_ip =
            usize::try_from(self.max_connections_per_ip).unwrap_or(usize::MAX);
        config.max_output_memory =
            usize::try_from(self.max_output_memory).unwrap_or(usize::MAX);
        config.send_buffer =
            self.send_buffer.and_then(|b| usize::try_from(b).ok());
        config.idle_timeout =
            (!self.idle_timeout.is_zero()).then_some(self.idle_timeout);
        config.backlog = self.backlog;
        config.thread_stack_kib =
            usize::try_from(self.thread_stack_kib).unwrap_or(usize::MAX);
        config.log_rate = self.log_rate;
        config.log_burst = self.log_burst;
        config.log_total_rate = self.log_total_rate;
        config.stats_interval =
            (!self.stats_interval.is_zero()).then_some(self.stats_interval);
        config.drain = self.drain;
        config.workers = match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        config.pin = self.pin;
        let one_loop = matches!(config.model, Model::Mio | Model::Uring);
        if !one_loop && (self.workers != 1 || self.pin) {
            return Err(format!(
                "--workers and --pin need --model mio or uring: the {} \
                 model has no loop to repeat or pin",
                config.model
            ));
        }
        if config.workers > config.max_connections {
            return Err(format!(
                "--workers {} is more than --max-connections {}: every \
                 worker needs room for at least one connection",
                config.workers, config.max_connections
            ));
        }
        config.metrics_addr = self.metrics_addr;
        config.proxy = self
            .proxy_protocol
            .then(|| crate::proxy::Proxy { trust: self.proxy_from.clone() });
        match metrics_clash(&config) {
            Some(clash) => Err(clash),
            None => Ok(config),
        }
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
    let mut config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    config.handle_signals = true;
    // Nothing else runs yet: taking systemd's sockets (and unsetting its
    // variables) is sound here.
    config.systemd = true;
    // Each connection is a descriptor: allow as many as the hard limit
    // does. When they still run out, accept pauses and says so.
    match crate::rlimit::raise_to_hard() {
        Ok(limit) => {
            if let Some(warning) = descriptor_shortfall(&config, limit) {
                log::warn!("{warning}");
            }
        }
        Err(e) => eprintln!("warning: cannot raise the descriptor limit: {e}"),
    }
    match crate::bind(config).and_then(crate::Server::run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Why `--metrics-addr` cannot be served beside the client listeners,
/// if it cannot: scrapers and clients on one address would each get
/// the other's connections.
pub(crate) fn metrics_clash(config: &Config) -> Option<String> {
    let metrics = config.metrics_addr?;
    let client = config.addrs.iter().find(|&&c| net::overlaps(metrics, c))?;
    Some(format!(
        "--metrics-addr {metrics} overlaps the client address {client}: \
         scrapers and clients need addresses of their own"
    ))
}

/// Every address `host` has, with `port`.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
    match addrs.is_empty() {
        true => Err(format!("cannot resolve {host}: no address")),
        false => Ok(addrs),
    }
}

/// Descriptors a server process needs besides its connections: stdio,
/// the listener, the poll, the waker, the signal pipes, and room to spare.
const SPARE_FDS: u64 = 32;

/// A one-line warning when `--max-connections` needs more descriptors
/// than RLIMIT_NOFILE (`limit`, already raised to the hard limit) allows:
/// the connections past it would wait unserved in the backlog. The limit
/// stays as asked (an operator may raise the descriptor limit of a
/// running process); the line says what to change. The process model's
/// parent keeps no client socket open and each child holds one, and the
/// iterative model holds one connection, so only the mio and thread
/// models can run short.
pub(crate) fn descriptor_shortfall(
    config: &Config,
    limit: u64,
) -> Option<String> {
    let connections = match config.model {
        Model::Mio | Model::Thread | Model::Uring => {
            config.max_connections as u64
        }
        Model::Iterative | Model::Process => 1,
    };
    let need = connections.saturating_add(SPARE_FDS);
    (need > limit).then(|| {
        format!(
            "--max-connections {connections} needs about {need} open files \
             but RLIMIT_NOFILE is {limit}: clients past about {} would \
             wait unserved in the backlog; raise the limit (ulimit -Hn, \
             LimitNOFILE=) or lower --max-connections",
            limit.saturating_sub(SPARE_FDS)
        )
    })
}

/// Parses a size in bytes: a whole number with an optional K, M or G
/// suffix (binary: 1K = 1024), as `32M` or `65536`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, 'k' | 'K')) => (&trimmed[..i], 10),
        Some((i, 'm' | 'M')) => (&trimmed[..i], 20),
        Some((i, 'g' | 'G')) => (&trimmed[..i], 30),
        _ => (trimmed, 0),
    };
    if trimmed.starts_with('-') {
        return Err(format!("a size cannot be negative: {text}"));
    }
    let bad =
        || format!("not a size in bytes (like 65536, 512K, 32M): {text}");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `--send-buffer`: a size the kernel's `int` option can take.
fn parse_send_buffer(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("--send-buffer must be at least 1 byte".into()),
        n if n > 1 << 30 => Err(format!("--send-buffer above 1G: {text}")),
        n => Ok(n),
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

    #[test]
    fn sizes_parse_with_binary_suffixes_and_reject_nonsense() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("32M"), Ok(32 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "M", "-1", "1.5M", "32MB", "lots", "99999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_send_buffer("0").is_err());
        assert!(parse_send_buffer("2G").is_err());
    }

    #[test]
    fn a_metrics_address_that_overlaps_the_clients_is_named() {
        let mut config = Config::new("127.0.0.1:8989".parse().unwrap());
        assert_eq!(metrics_clash(&config), None);
        config.metrics_addr = Some("127.0.0.1:9898".parse().unwrap());
        assert_eq!(metrics_clash(&config), None);
        config.metrics_addr = Some("0.0.0.0:8989".parse().unwrap());
        let clash = metrics_clash(&config).unwrap();
        assert!(clash.contains("0.0.0.0:8989"), "{clash}");
        assert!(clash.contains("127.0.0.1:8989"), "{clash}");
    }

    #[test]
    fn too_few_descriptors_for_max_connections_are_named() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        config.max_connections = 10_000;
        let warning = descriptor_shortfall(&config, 1024).unwrap();
        assert!(warning.contains("RLIMIT_NOFILE is 1024"), "{warning}");
        assert!(warning.contains("--max-connections"), "{warning}");
        assert!(!warning.contains('\n'));
        assert_eq!(descriptor_shortfall(&config, 20_000), None);
        config.model = Model::Process;
        assert_eq!(descriptor_shortfall(&config, 1024), None);
    }
}
