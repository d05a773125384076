//! The five ways readyloop can serve (`--model`). All of them share the
//! config, the listener layer, the counters, the log lines and the close
//! reasons; they differ in how a connection waits for IO.
//!
//! - `mio` (`models/mio/`): the readiness loop, one thread and one
//!   `mio::Poll` over a slab of nonblocking sockets. The design readyloop
//!   exists to show.
//! - `uring` (`models/uring/`): the completion loop, one thread and one
//!   io_uring; the kernel tells it what finished instead of what is ready.
//! - `iterative`, `thread`, `process`: the classic blocking designs they
//!   are measured against, one connection at a time, a thread per
//!   connection, a forked process per connection.
//!
//! The blocking models share two pieces and differ only in where a
//! connection is served and how a stop reaches it: `acceptor`, the
//! accept loop they all run on the server's poll, and `blocking`, the
//! loop that serves one blocking connection.

mod acceptor;
mod blocking;
pub mod iterative;
pub mod mio;
pub mod process;
pub mod thread;
pub mod uring;
