//! The library API: `bind`, `spawn` and a `Handle` start and stop the
//! in-process models.

use std::net::SocketAddr;

use readyloop::{Config, Mode, Model, Running};

use crate::support::*;

per_model!(in_process: a_handle_stops_the_model);

/// A config for `model` in `mode` on a free loopback port.
pub fn config(model: Model, mode: Mode) -> Config {
    let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.model = model;
    config.mode = mode;
    config
}

/// Starts an in-process server (not for the process model: forking a
/// multi-threaded test process is unsound).
fn start_server(config: Config) -> Running {
    readyloop::bind(config).expect("bind").spawn().expect("spawn")
}

/// The library starts an in-process model, and a `Handle` (the waker)
/// stops it: open connections close as shutdown, with a clean EOF.
fn a_handle_stops_the_model(model: Model) {
    let server = start_server(config(model, Mode::Echo));
    let mut s = connect(server.addr);
    assert_eq!(echo_round(&mut s, b"hi"), b"hi");
    let summary = server.stop().expect("summary");
    assert_eq!((summary.accepted, summary.closed_shutdown), (1, 1));
    let (data, clean) = read_to_end(&mut s);
    assert!(data.is_empty() && clean, "{model}: not a clean close");
}
