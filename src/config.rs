//! `Config`, `Mode` and `Model`: plain data, validated once by the command
//! line (or by the caller of the library) and then only read.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// What the server does with the bytes a client sends (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Log every chunk read, escaped (what the teaching server printed).
    Log,
    /// Write every byte back, in order.
    Echo,
    /// Count the bytes and drop them.
    Discard,
}

impl Mode {
    /// The name used on the command line and in the `listening on` line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Log => "log",
            Mode::Echo => "echo",
            Mode::Discard => "discard",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the server waits for IO (`--model`): the readiness loop or one of
/// the classic designs it is compared against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// One thread, one mio::Poll over a slab of nonblocking sockets.
    Mio,
    /// One blocking connection at a time; others wait in the backlog.
    Iterative,
    /// A thread per connection with a small stack, blocking IO.
    Thread,
    /// A fork()ed child process per connection, blocking IO.
    Process,
    /// One thread, one io_uring: completions instead of readiness.
    Uring,
}

impl Model {
    /// Every model, in the order tests and the benchmark run them.
    pub const ALL: [Model; 5] = [
        Model::Mio,
        Model::Iterative,
        Model::Thread,
        Model::Process,
        Model::Uring,
    ];

    /// The name used on the command line and in the `listening on` line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Mio => "mio",
            Model::Iterative => "iterative",
            Model::Thread => "thread",
            Model::Process => "process",
            Model::Uring => "uring",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a server needs to start. Build it with [`Config::new`] and
/// adjust the public fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to listen on, one listener each (at most 64); port 0
    /// picks a free port.
    pub addrs: Vec<SocketAddr>,
    /// What to do with received bytes.
    pub mode: Mode,
    /// How to wait for IO.
    pub model: Model,
    /// Open connections beyond this are accepted and closed at once.
    pub max_connections: usize,
    /// Open connections allowed per client address (IPv6: per /64); one
    /// more from that address is accepted and closed at once. 0: no
    /// limit.
    pub max_connections_per_ip: usize,
    /// The mio and uring models' budget, in bytes, for output held for
    /// clients whose writes block; past it those clients stop being read.
    /// The blocking models hold no output (a blocked write holds the
    /// thread or process instead).
    pub max_output_memory: usize,
    /// SO_SNDBUF of accepted sockets, in bytes; `None` leaves the
    /// kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF of the listening sockets, which accepted sockets
    /// inherit, in bytes; `None` leaves the kernel's autotuning.
    pub receive_buffer: Option<usize>,
    /// Close a connection once nothing moved either way for this long: no
    /// byte read, none written, none delivered from the kernel's send
    /// buffer. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// Stack size of each connection thread in the thread model, in KiB.
    pub thread_stack_kib: usize,
    /// Log mode: chunk lines per second per connection; 0: no limit.
    pub log_rate: u32,
    /// Log mode: chunk lines a connection may log at once.
    pub log_burst: u32,
    /// Log mode: chunk lines per second for the whole server; 0: no
    /// limit.
    pub log_total_rate: u32,
    /// The mio and uring models' workers: independent loops, each with
    /// its own poll (or ring), slab and listening sockets bound with
    /// SO_REUSEPORT (1: the one loop). `max_connections` and
    /// `max_output_memory` are split among them.
    pub workers: usize,
    /// Pin worker `n` to the `n`th CPU the process may run on (round
    /// robin).
    pub pin: bool,
    /// Log a `stats` line this often; `None`: only on SIGUSR1.
    pub stats_interval: Option<Duration>,
    /// Run under a service manager: take the listening sockets systemd
    /// passes (`LISTEN_PID`, `LISTEN_FDS`) instead of binding `addrs`
    /// when there are any, and notify it (`NOTIFY_SOCKET`: `READY=1`,
    /// `STATUS=`, `STOPPING=1`, `WATCHDOG=1`). Taking the sockets unsets
    /// the `LISTEN_*` variables, which is only sound while the process
    /// has one thread: the binary sets it and binds before anything
    /// else starts.
    pub systemd: bool,
    /// Handle SIGINT and SIGTERM as a request to stop. The binary sets it;
    /// in-process servers in tests leave it off and stop through a
    /// [`Handle`](crate::Handle).
    pub handle_signals: bool,
    /// Where to serve the Prometheus metrics (`GET /metrics`); `None`:
    /// nowhere. It must not overlap the client address (the command
    /// line refuses it).
    pub metrics_addr: Option<SocketAddr>,
    /// How long a stop keeps accepting and serving, with `/healthz`
    /// answering 503, before it takes effect (`--drain`): time for a
    /// load balancer's health check to notice. Zero: none.
    pub drain: Duration,
    /// `--proxy-protocol`: every client connection must begin with a
    /// PROXY header, from a source its [`Trust`](crate::proxy::Trust)
    /// allows; `None`: no header is expected (bytes that look like one
    /// are data).
    pub proxy: Option<crate::proxy::Proxy>,
}

impl Config {
    /// The defaults of `readyloop serve`, listening on `addr`.
    pub fn new(addr: SocketAddr) -> Config {
        Config {
            addrs: vec![addr],
            mode: Mode::Log,
            model: Model::Mio,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            max_output_memory: 32 << 20,
            send_buffer: None,
            receive_buffer: None,
            idle_timeout: None,
            backlog: 1024,
            thread_stack_kib: 64,
            log_rate: 20,
            log_burst: 200,
            log_total_rate: 500,
            workers: 1,
            pin: false,
            stats_interval: None,
            systemd: false,
            handle_signals: false,
            metrics_addr: None,
            drain: Duration::ZERO,
            proxy: None,
        }
    }
}
