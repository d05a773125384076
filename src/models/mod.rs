//! The comparison models: the classic designs readyloop is measured
//! against. They share the config, the counters, the log lines and the
//! close reasons with the mio model and differ only in how they wait.

pub mod forked;
pub mod iterative;
pub mod threaded;
