//! What the integration tests (`tests/suite`) and the benchmark
//! (`benches/compare`) both read about a server from outside it, in one
//! place so neither reaches into the other's files:
//!
//! - [`proc`]: a process and its children as /proc shows them (memory,
//!   CPU ticks, descriptors, threads, a TCP socket's queues);
//! - [`load_json`]: the one JSON line `readyloop load --json` prints.

#![deny(missing_docs, rust_2018_idioms)]

pub mod load_json;
pub mod proc;
