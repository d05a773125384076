//! readyloop is a TCP server whose one thread runs a `mio::Poll` over its
//! listening sockets and a [`slab`] of nonblocking client sockets: it reads
//! what clients send (and logs, echoes or discards it), notices EOF and
//! resets, and removes closed connections. It is also a benchmark of that
//! readiness loop against the classic designs (iterative, thread per
//! connection, process per connection), and a reference for handling every
//! edge of edge-triggered IO (the traps are numbered in the README and
//! named in comments where each is handled).
//!
//! # Map
//!
//! Dependencies point one way: the public layer calls the models, the
//! models call the listener layer, and nothing below imports anything
//! above it (the suite's `structure` test checks it, and `.ci/run` runs
//! that check first).
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | binary | [`cli`] | the command line of `readyloop`: `serve`, `load`, `client` |
//! | public | `server` | [`bind`], [`Server`], [`Handle`], [`Running`]: start and stop any model |
//! | | `workers` | `--workers N`: the mio (or uring) loop once per thread, summed |
//! | | `affinity` | `--pin`: the CPUs the process may use, and pinning a thread |
//! | models | `event_loop` | the mio model: the loop, close, shutdown |
//! | | `connection` | one client of the mio model: read, echo, flush |
//! | | `idle` | the idle list: deadlines in O(1) per event |
//! | | `pending` | connections whose PROXY header is still arriving |
//! | | `models` | the iterative, thread and process models |
//! | | `models::uring` | the io_uring model: completions instead of readiness |
//! | | `metrics` | the Prometheus endpoint (`--metrics-addr`) every model serves from its loop, and `/healthz` for load balancers |
//! | listener | `listener` | the listening sockets, the poll, fixed tokens, waker, the wait that keeps its deadline, the stop window |
//! | | `listener::accept` | the one accept state machine every model runs; `per_address` its per-address table |
//! | | `listener::group` | what the workers share: the stop and its `--drain`, the counters |
//! | | `listener::signals` | which signals stop, stop now, report or are ignored |
//! | | `listener::wake` | interrupting a blocked thread without touching its socket |
//! | | `listener::activation` | systemd socket activation: the passed sockets, checked |
//! | | `listener::service` | what a turn reports: the `stats` line, systemd's READY/STATUS/STOPPING/WATCHDOG |
//! | leaves | `config` | [`Config`], [`Mode`], [`Model`]: plain data |
//! | | `stats` | counters, [`Reason`], the [`Summary`] line |
//! | | `journal` | the log lines all models share |
//! | | `sink` | stderr without blocking: a bounded buffer, drops counted |
//! | | `log_limit` | log mode's rate limits: per connection and in total |
//! | | [`escape`] | makes client bytes safe to log |
//! | | `net` | socket set-up and error predicates |
//! | | [`proxy`] | the PROXY protocol: the header parser, `--proxy-from`'s trust |
//! | | [`rlimit`] | the descriptor limit (RLIMIT_NOFILE) |
//! | | `error` | [`Error`]: why a server could not start or run |
//! | | `holder` | who holds a port in use: `/proc/net/tcp{,6}` and `/proc/PID/fd`, bounded to 100 ms |
//! | | `secs` | seconds on the command line |
//! | generator | [`load`] | the load generator |
//! | client | [`client`] | `readyloop client`: stdin to a socket and back, the close narrated |
//!
//! Start reading at `src/event_loop.rs`, then `src/connection.rs` and
//! `src/listener/`.
//!
//! # One turn of the loop
//!
//! ```text
//!   deadline = now if work is left over, else the nearest deadline
//!   poll(events, until deadline)    (EINTR: poll again, same deadline)
//!   for each event:
//!       listener n -> remember "listener n may accept"
//!       waker / signal -> stop, stop now, or log the counters
//!       connection token -> skip if its slot is vacant, else
//!           flush pending output if writable, then read up to a budget
//!           (log / echo / discard each chunk) until WouldBlock or a
//!           short read; the handler returns Waiting, More or Closed
//!   accept up to a budget from the ready listeners, round robin, each
//!       until WouldBlock (EMFILE: pause accepting)
//!   drive again the connections whose budget ran out
//!   close connections idle past the timeout (head of an LRU list)
//!   periodic duties: the stats line (SIGUSR1, --stats-interval),
//!       systemd's watchdog and status when due
//! ```
//!
//! # Use
//!
//! ```no_run
//! use readyloop::{Config, Mode};
//!
//! let mut config = Config::new("127.0.0.1:0".parse().unwrap());
//! config.mode = Mode::Echo;
//! let running = readyloop::bind(config)?.spawn()?;
//! println!("echoing on {}", running.addr);
//! let summary = running.stop()?;
//! println!("{summary}");
//! # Ok::<(), readyloop::Error>(())
//! ```

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// Unsafe code only where the OS leaves no choice: `models::process`
// (fork), `models::uring` (memory shared with the kernel), `rlimit`
// (setrlimit), `sink` (poll), `listener::wake` (sigaction,
// pthread_kill) and one socket option in `load::source`.
#![deny(unsafe_code)]

mod affinity;
pub mod cli;
pub mod client;
mod config;
mod connection;
mod error;
pub mod escape;
mod event_loop;
mod holder;
mod idle;
mod journal;
mod listener;
pub mod load;
mod log_limit;
mod metrics;
mod models;
mod net;
mod pending;
pub mod proxy;
pub mod rlimit;
mod secs;
mod server;
mod sink;
mod stats;
mod workers;

pub use config::{Config, Mode, Model};
pub use connection::OUT_CAP;
pub use error::Error;
pub use server::{bind, Handle, Running, Server};
pub use stats::{Reason, Summary};
