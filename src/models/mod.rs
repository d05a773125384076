//! The comparison models: the classic designs readyloop is measured
//! against. They share the config, the counters, the log lines and the
//! close reasons with the mio model and differ only in how they wait:
//! `acceptor` is the accept loop all three run, `blocking` the loop
//! that serves one blocking connection, and each model decides only
//! where that loop runs and how a stop reaches it.

mod acceptor;
mod blocking;
pub mod forked;
pub mod iterative;
pub mod mio;
pub mod threaded;
pub mod uring;
