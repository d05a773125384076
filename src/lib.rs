//! readyloop is a TCP server whose one thread runs a `mio::Poll` over its
//! listening sockets and a [`slab`] of nonblocking client sockets: it reads
//! what clients send (and logs, echoes or discards it), notices EOF and
//! resets, and removes closed connections. It is also a benchmark of that
//! readiness loop against a completion loop on io_uring and the classic
//! designs (iterative, thread per connection, process per connection),
//! all five under one contract, and a reference for handling every edge
//! of edge-triggered IO and of completion IO (the traps are numbered in
//! docs/traps.md and named in comments where each is handled).
//!
//! # Map
//!
//! Dependencies point one way: the public layer calls the models, the
//! models call the policy and the listener layer, and nothing below
//! imports anything above it (the suite's `structure` test checks it,
//! and `.ci/run` runs that check first).
//!
//! ```text
//! src/main.rs, cli/       the command line: serve, load, client, generate
//! src/server.rs           bind, Server, Handle, Running: start and stop any model
//! src/workers.rs          --workers N: the mio (or uring) loop once per thread
//! src/models/
//!   mio/                  readiness: the loop, one connection, its output, the PROXY header's read
//!   uring/                completions: the loop, receive, send, close, the ring, the buffer pool, trace, the measurement switches
//!   iterative.rs, thread.rs, process/   the blocking models, one client per
//!                         loop, thread or process
//!   acceptor.rs, blocking/  what the blocking models share: accepting, serving one connection
//! src/policy/             what the mio and uring loops decide alike: admission,
//!                         the idle contract, PROXY header deadlines, closing, the stop
//! src/listener/           the listening sockets, the poll and its tokens, signals,
//!                         the accept state machine, systemd and the stats line
//! src/metrics/            /metrics and /healthz, served from each model's loop
//! leaves                  config, stats, journal (the log lines), log_prefix (how
//!                         a line begins: priority, timestamp), sink (stderr that
//!                         never blocks), log_limit, escape, net, proxy, rlimit,
//!                         holder (who holds a port), secs, affinity, error
//! src/load/, client/      the load generator and the learner's client
//! ```
//!
//! Start reading at `src/policy/mod.rs` (the loop both event-driven
//! models run), then `src/models/mio/` and `src/models/uring/`.
//!
//! # One turn of the loop
//!
//! ```text
//!   deadline = now if work is left over, else the nearest deadline
//!   wait (poll, or submit and wait on the ring) until the deadline
//!       (EINTR: wait again, same deadline)
//!   for each event (mio) or completion (uring):
//!       listener     -> mio: remember "listener n may accept";
//!                       uring: admit the socket the accept brought
//!       waker/signal -> noted: stop, stop now, or log the counters
//!       connection   -> skip if its slot is vacant or reused, else
//!                       mio: flush if writable, read up to a budget
//!                       until WouldBlock or a short read;
//!                       uring: log / echo / discard what the receive
//!                       brought, advance the output a send took
//!   a stop noted -> stop accepting, wind every connection down
//!   mio: accept up to a budget from the ready listeners, drive again
//!       the connections whose budget ran out; uring: re-arm, queue sends
//!   close connections idle past the timeout, or whose header is late
//!   end of turn: bytes published, stats line, systemd, scrapes, log flush
//! ```
//!
//! # Glossary
//!
//! - **closing**: we decided to end a connection; its `Reason` is fixed.
//! - **lingering**: after our FIN, reading and discarding until the
//!   peer's FIN or the end of the stop window (trap 17).
//! - **draining**: `--drain`: `/healthz` answers 503 while clients are
//!   still served, before a stop.
//! - **idle**: nothing moved in either direction for `--idle-timeout`.
//! - **stop window**: the bounded time between a stop and the exit.
//! - **loop**, **connection**: one model's event loop and one client in
//!   it, named `Loop` and `Connection` in both event-driven models.
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
// (fork, memory shared between processes), `models::uring` (memory
// shared with the kernel), `rlimit` (setrlimit), `sink` (poll),
// `listener::wake` (sigaction, pthread_kill, the stop signal's clock), `listener::activation`
// (the descriptors systemd passed), `affinity` (sched_setaffinity),
// `net` (TCP_INFO) and one socket option in `load::source`.
#![deny(unsafe_code)]

mod affinity;
pub mod cli;
pub mod client;
mod config;
mod error;
pub mod escape;
mod holder;
mod journal;
mod listener;
pub mod load;
mod log_limit;
pub mod log_prefix;
mod metrics;
mod models;
pub mod net;
mod policy;
pub mod proxy;
pub mod rlimit;
mod secs;
mod server;
mod sink;
mod stats;
mod workers;

pub use config::{Config, Mode, Model};
pub use error::Error;
pub use policy::OUT_CAP;
pub use server::{bind, Handle, Running, Server};
pub use stats::{Reason, Summary};
