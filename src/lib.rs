//! readyloop is a TCP server whose one thread runs a `mio::Poll` over a
//! listening socket and a [`slab`] of nonblocking client sockets: it reads
//! what clients send (and logs, echoes or discards it), notices EOF and
//! resets, and removes closed connections. It is also a benchmark of that
//! readiness loop against the classic designs (iterative, thread per
//! connection, process per connection), and a reference for handling every
//! edge of edge-triggered IO (the traps are numbered in the README and
//! named in comments where each is handled).
//!
//! # Map
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`Config`], [`Mode`], [`Model`]: plain data |
//! | [`server`] | [`bind`], [`Server`], [`Handle`]: start and stop any model |
//! | [`event_loop`] | the mio model: the loop, accept, close, shutdown |
//! | [`connection`] | one client of the mio model: read, echo, flush |
//! | [`timer`] | idle deadlines in O(1) per event |
//! | [`models`] | the iterative, thread and process models |
//! | [`stats`] | counters, close reasons, the `summary` line |
//! | [`journal`] | the log lines all models share |
//! | [`escape`] | makes client bytes safe to log |
//! | [`net`] | socket set-up and error predicates |
//! | [`rlimit`] | the descriptor limit (RLIMIT_NOFILE) |
//! | [`cli`] | the command line of the `readyloop` binary |
//! | [`load`] | the load generator |
//!
//! Start reading at [`event_loop`], then [`connection`].
//!
//! # One turn of the loop
//!
//! ```text
//!   timeout = 0 if work is left over, else the nearest deadline
//!   poll(events, timeout)                      (EINTR: poll again)
//!   for each event:
//!       listener  -> remember "accept ready"
//!       waker / signal -> begin stopping
//!       connection token -> skip if its slot is vacant, else
//!           flush pending output if writable, then read up to a budget
//!           (log / echo / discard each chunk) until WouldBlock or a
//!           short read; the handler returns Waiting, More or Closed
//!   accept up to a budget until WouldBlock (EMFILE: pause accepting)
//!   drive again the connections whose budget ran out
//!   close connections idle past the timeout (head of an LRU list)
//! ```
//!
//! # Use
//!
//! ```no_run
//! use readyloop::{Config, Mode};
//!
//! let mut config = Config::new("127.0.0.1:0".parse().unwrap());
//! config.mode = Mode::Echo;
//! let running = readyloop::bind(config)?.spawn();
//! println!("echoing on {}", running.addr);
//! let summary = running.stop()?;
//! println!("{summary}");
//! # Ok::<(), readyloop::Error>(())
//! ```

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// Unsafe code only where the OS leaves no choice: `models::forked`
// (fork), `rlimit` (setrlimit) and one socket option in `load::source`.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod connection;
pub mod error;
pub mod escape;
pub mod event_loop;
pub mod journal;
pub mod load;
pub mod models;
pub mod net;
pub mod rlimit;
mod secs;
pub mod server;
pub mod stats;
pub mod timer;

pub use config::{Config, Mode, Model};
pub use error::Error;
pub use server::{bind, Handle, Running, Server};
pub use stats::{Reason, Summary};
