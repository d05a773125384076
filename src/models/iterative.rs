//! The iterative model: the accept thread serves one connection at a
//! time, start to finish, with blocking IO; the others wait in the
//! listen backlog. It is the simplest correct server, the one the
//! teaching notes start from.
//!
//! Cost per connection: nothing beyond the socket; one read buffer
//! serves them all. It breaks down as soon as two clients overlap: the
//! second waits until the first is done, however long that takes, so one
//! slow or idle client stalls everyone (`--idle-timeout` bounds it).
//! `--max-connections` and `--max-connections-per-ip` never refuse a
//! client: at most one connection is open, and the next waits for it.
//!
//! A stop arrives as an event on the server's poll, which nobody waits on
//! while a connection is served, so the connection's blocking calls wait
//! at most `SLICE` and then look at the poll without blocking.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::listener::Listener;
use crate::log_limit::Limits;
use crate::stats::{Stats, Summary};

use super::acceptor::{self, Dispatch, Gate};
use super::blocking::{self, Context, Proxied, Stop, Watch};

/// How long a blocked read or write waits before it checks for a stop.
const SLICE: Duration = Duration::from_millis(100);
/// The one read buffer.
const READ_BUF: usize = 64 * 1024;

/// Runs the iterative model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    let mut model = Iterative {
        stats: Stats::default(),
        buf: vec![0; READ_BUF].into_boxed_slice(),
        scratch: String::new(),
        mode: config.mode,
        idle: config.idle_timeout,
        served: None,
        limits: Limits::of(config),
        proxy: config.proxy.as_ref().map(|_| Proxied {
            table: Some(std::sync::Arc::clone(listener.group()) as _),
            max_per_ip: config.max_connections_per_ip,
            rejections: Default::default(),
        }),
    };
    // Connections are served inside the accept loop, so when it returns
    // every one of them has closed.
    acceptor::run(listener, config, &mut model)?;
    Ok(model.stats.summary())
}

struct Iterative {
    stats: Stats,
    buf: Box<[u8]>,
    scratch: String,
    mode: Mode,
    idle: Option<Duration>,
    /// The client served last, until the accept loop hears it is gone.
    served: Option<SocketAddr>,
    limits: Limits,
    proxy: Option<Proxied>,
}

impl Dispatch for Iterative {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn live(&mut self, departed: &mut Vec<SocketAddr>) -> usize {
        departed.extend(self.served.take());
        0 // the previous connection is done before the next is accepted
    }

    fn dispatch(
        &mut self,
        gate: &mut Gate,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let mut cx = Context {
            buf: &mut self.buf,
            scratch: &mut self.scratch,
            stats: &self.stats,
            mode: self.mode,
            idle: self.idle,
            limits: self.limits,
            proxy: self.proxy.as_ref(),
        };
        let mut watch = PollWatch(gate, &self.stats);
        blocking::serve(&stream, peer, &mut cx, &mut watch);
        self.served = Some(peer);
    }
}

/// Looks for a stop (and SIGUSR1) on the server's poll, once a `SLICE`.
struct PollWatch<'a>(&'a mut Gate, &'a Stats);

impl Watch for PollWatch<'_> {
    fn slice(&self) -> Option<Duration> {
        Some(SLICE)
    }

    fn stopping(&mut self) -> Stop {
        let stopping = self.0.poll_stop();
        // The accept loop is not looking while a connection is served.
        self.0.service(self.1);
        match (stopping, self.0.stop_now()) {
            (false, _) => Stop::No,
            (true, false) => Stop::Window,
            (true, true) => Stop::Now,
        }
    }
}
