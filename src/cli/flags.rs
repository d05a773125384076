//! The flags of `readyloop serve`, as clap reads them and `serve --help`
//! shows them: the doc comment of each field is its help text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use log::LevelFilter;

use crate::config::{Mode, Model};
use crate::log_prefix::Timestamps;
use crate::secs::{parse_secs, zero_or_at_least};

use super::values::{addr_arg, parse_buffer, parse_bytes, AddrArg, Whole};

/// Flags of `readyloop serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:8989];
    /// 0.0.0.0:PORT or `[::]:PORT` to listen on every interface (both may
    /// be given: IPv6 listeners are IPv6-only); port 0 picks a free port.
    /// Give it again for more listeners; a host name listens on every
    /// address it resolves to (`localhost:8989`: 127.0.0.1 and ::1).
    /// Ignored, with a warning, when systemd passes the listening sockets
    /// (socket activation).
    #[arg(long = "addr", value_name = "ADDR",
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
          value_parser = Whole::new(1, 10_000_000))]
    pub max_connections: u32,

    /// Open connections allowed per client address (IPv6: per /64); one
    /// more from that address is accepted and closed at once, and counted
    /// as rejected. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N",
          allow_negative_numbers = true,
          value_parser = Whole::new(0, 10_000_000))]
    pub max_connections_per_ip: u32,

    /// mio and uring models: memory for output held for clients whose
    /// writes block (bytes, or with a K, M or G suffix: 512K, 32M)
    /// [default: 32M]; past it those clients are not read until they
    /// read. Refused with the blocking models, which hold no output (a
    /// blocked write holds its thread or process).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true,
          value_parser = parse_bytes)]
    pub max_output_memory: Option<u64>,

    /// SO_SNDBUF of accepted sockets (bytes, or K/M suffix), bounding the
    /// kernel memory a client that does not read can hold; the kernel
    /// doubles it for its bookkeeping. Unset: the kernel's autotuning.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true,
          value_parser = parse_buffer)]
    pub send_buffer: Option<u64>,

    /// SO_RCVBUF of the listening sockets, which accepted sockets
    /// inherit (set before listen, so the TCP window is scaled for it):
    /// bytes, or K/M suffix. Bounds the kernel memory a client can fill
    /// with input the server does not read yet; the kernel doubles it.
    /// Unset: the kernel's autotuning.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true,
          value_parser = parse_buffer)]
    pub receive_buffer: Option<u64>,

    /// Close a connection once nothing moved either way for SECS seconds
    /// (fractions allowed): no byte read from it, none written to it,
    /// none delivered by the kernel from its send buffer. A client that
    /// sends and never reads is closed as idle (closed_idle) once both
    /// directions are blocked; a slow reader that keeps taking bytes is
    /// never cut, and gets all of its echo. 0: never.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = zero_or_at_least(Duration::from_millis(1)))]
    pub idle_timeout: Duration,

    /// Listen backlog: connections the kernel queues before they are
    /// accepted (capped by net.core.somaxconn) [default: 1024]. Under
    /// socket activation the socket unit's Backlog= applies instead.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = Whole::new(1, i32::MAX as u32))]
    pub backlog: Option<u32>,

    /// Stack size of each connection thread in the thread model, in KiB
    /// [default: 64].
    #[arg(long, value_name = "KIB", allow_negative_numbers = true,
          value_parser = Whole::new(16, 1_048_576))]
    pub thread_stack_kib: Option<u32>,

    /// Log mode: chunk lines per second each connection may log once its
    /// burst is spent; the rest are counted (`log_suppressed`) and
    /// reported. 0: no limit [default: 20].
    #[arg(long, value_name = "LINES_PER_SEC", allow_negative_numbers = true,
          value_parser = Whole::new(0, 1_000_000))]
    pub log_rate: Option<u32>,

    /// Log mode: chunk lines a connection may log at once (a pasted
    /// screen) before `--log-rate` applies [default: 200].
    #[arg(long, value_name = "LINES", allow_negative_numbers = true,
          value_parser = Whole::new(1, 1_000_000))]
    pub log_burst: Option<u32>,

    /// Log mode: chunk lines per second for all connections together
    /// (with one second of it as a burst). 0: no limit [default: 500].
    #[arg(long, value_name = "LINES_PER_SEC", allow_negative_numbers = true,
          value_parser = Whole::new(0, 1_000_000))]
    pub log_total_rate: Option<u32>,

    /// Log a `stats` line (the summary's counters so far, open
    /// connections and uptime) every SECS seconds, at least 0.1; 0: only
    /// on SIGUSR1.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = zero_or_at_least(Duration::from_millis(100)))]
    pub stats_interval: Duration,

    /// When a stop begins (SIGTERM, SIGINT, SIGHUP), keep accepting and
    /// serving for SECS seconds (fractions allowed) with /healthz on
    /// --metrics-addr (which it needs) answering 503, so a load balancer
    /// stops sending new clients; then stop as usual. A second signal
    /// stops now.
    #[arg(long, default_value = "0", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = parse_secs)]
    pub drain: Duration,

    /// mio and uring models: run N independent loops, one thread each,
    /// every one with its own listening sockets on the same addresses
    /// (SO_REUSEPORT: the kernel spreads new connections among them); 0:
    /// one per available CPU. --max-connections is split among them.
    #[arg(long, default_value_t = 1, value_name = "N",
          allow_negative_numbers = true,
          value_parser = Whole::new(0, 1024))]
    pub workers: u32,

    /// mio and uring models, with --workers other than 1: pin each
    /// worker's thread to one CPU (round robin over the CPUs the process
    /// may use).
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

    /// With --proxy-protocol (which it needs): the only networks that
    /// may send a header, CIDR[,CIDR…] [default: 127.0.0.0/8,::1/128] (a
    /// header lets its sender claim any client address, so only the
    /// balancers may); others are closed at once.
    #[arg(long, value_name = "CIDRS",
          value_parser = crate::proxy::Trust::parse)]
    pub proxy_from: Option<crate::proxy::Trust>,

    /// Least severe log level shown; the `listening on` and `summary`
    /// lines are always shown.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Start each log line with its time (RFC 3339, UTC, milliseconds):
    /// auto does unless stderr is the journal (JOURNAL_STREAM names it),
    /// which stamps lines itself. In the journal each line starts with
    /// its syslog priority (<3> error … <7> debug) whatever this says.
    #[arg(long, value_enum, default_value_t = Timestamps::Auto,
          value_name = "WHEN")]
    pub log_timestamps: Timestamps,
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
