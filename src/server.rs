//! The public entry point: bind a [`Server`] from a [`Config`], then run
//! it; a [`Handle`] stops it from another thread.
//!
//! Every model starts the same way: [`bind`] creates the listener layer
//! (the listening socket and a `mio::Poll` holding it, a waker and, in
//! the binary, the signals). [`Server::run`] hands it to the model the
//! config names; no model knows this module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use crate::config::{Config, Model};
use crate::error::Error;
use crate::listener::group::Group;
use crate::listener::{Listener, Setup};
use crate::stats::Summary;
use crate::{journal, models, workers};

/// A bound server, not yet running.
#[derive(Debug)]
pub struct Server {
    config: Config,
    /// One per worker (`--workers`); the first has the signals and the
    /// service duties.
    listeners: Vec<Listener>,
}

/// Binds the listening sockets and sets up the poll, so that the
/// addresses are known (port 0 resolved) before the server runs. With
/// `workers` above 1, every worker's sockets are bound here, before any
/// worker starts: a bind failure stops the server before anything runs.
pub fn bind(config: Config) -> Result<Server, Error> {
    let workers = config.workers.max(1);
    if workers > 1 && !matches!(config.model, Model::Mio | Model::Uring) {
        return Err(Error::Workers(format!(
            "--workers needs --model mio or uring; the {} model has no \
             loop to repeat",
            config.model
        )));
    }
    let setup = Setup {
        addrs: &config.addrs,
        backlog: config.backlog,
        receive_buffer: config.receive_buffer,
        signals: config.handle_signals,
        systemd: config.systemd,
        stats_interval: config.stats_interval,
        reuse_port: workers > 1,
        max_per_ip: config.max_connections_per_ip,
        drain: config.drain,
    };
    let mut listeners = vec![Listener::bind(&setup)?];
    for _ in 1..workers {
        listeners.push(Listener::another(&listeners[0], &setup)?);
    }
    if workers > 1 {
        let wakers = listeners.iter().map(Listener::waker).collect();
        let group = Group::new(wakers, config.max_connections_per_ip)
            .with_drain(config.drain);
        let group = Arc::new(group);
        let (first, others) = listeners.split_at_mut(1);
        for listener in others.iter_mut() {
            listener.follow_watchdog(&first[0]);
        }
        for (n, listener) in listeners.iter_mut().enumerate() {
            listener.join(&group, n);
        }
    }
    // The metrics listener is the first worker's: one endpoint reports
    // every worker's counters.
    if let Some(addr) = config.metrics_addr {
        listeners[0].bind_metrics(addr, config.backlog)?;
    }
    Ok(Server { config, listeners })
}

impl Server {
    /// The (first) address the server listens on: the real port if 0
    /// was asked.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every address the server listens on, in order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.listeners[0].local_addrs()
    }

    /// Where the metrics are served (the real port if 0 was asked), if
    /// `metrics_addr` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners[0].metrics_addr()
    }

    /// The configuration the server was bound with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the listening sockets are the ones systemd passed (socket
    /// activation) rather than bound from the configured addresses.
    pub fn activated(&self) -> bool {
        self.listeners[0].activated()
    }

    /// A handle that stops this server from any thread.
    pub fn handle(&self) -> Handle {
        Handle { group: Arc::clone(self.listeners[0].group()) }
    }

    /// Runs the server until it is stopped, prints the `listening on`
    /// line first and the `summary` line last, and returns the summary.
    pub fn run(self) -> Result<Summary, Error> {
        let Server { config, mut listeners } = self;
        let first = &listeners[0];
        journal::listening(
            first.local_addrs(),
            first.activated(),
            config.model,
            config.mode,
            listeners.len(),
        );
        if let Some(addr) = first.metrics_addr() {
            journal::metrics(addr);
        }
        listeners[0].ready();
        if listeners.len() > 1 {
            let mut summary = workers::run(listeners, &config)?;
            journal::finish(&mut summary);
            return Ok(summary);
        }
        let listener = listeners.remove(0);
        let mut summary = match config.model {
            Model::Mio => models::mio::run(listener, &config)?,
            Model::Iterative => models::iterative::run(listener, &config)?,
            Model::Thread => models::thread::run(listener, &config)?,
            Model::Process => models::process::run(listener, &config)?,
            Model::Uring => models::uring::run(listener, &config)?,
        };
        journal::finish(&mut summary);
        Ok(summary)
    }

    /// Runs the server on a new thread; tests start servers this way.
    pub fn spawn(self) -> Result<Running, Error> {
        let addrs = self.local_addrs().to_vec();
        let addr = self.local_addr();
        let handle = self.handle();
        let thread = thread::Builder::new()
            .name("readyloop-server".into())
            .spawn(move || self.run())
            .map_err(Error::setup("spawn the server thread"))?;
        Ok(Running { addr, addrs, handle, thread: Some(thread) })
    }
}

/// Stops a running server: it stops accepting, flushes, closes every
/// connection and returns its summary. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    group: Arc<Group>,
}

impl Handle {
    /// Asks the server (every worker) to stop; returns at once. A second
    /// call stops at once, as a second SIGTERM does.
    pub fn stop(&self) {
        self.group.ask_stop(false);
    }
}

/// A server running on its own thread, from [`Server::spawn`].
#[derive(Debug)]
pub struct Running {
    /// Where it listens (the first listener).
    pub addr: SocketAddr,
    /// Every address it listens on.
    pub addrs: Vec<SocketAddr>,
    /// Stops it.
    pub handle: Handle,
    thread: Option<thread::JoinHandle<Result<Summary, Error>>>,
}

impl Running {
    /// Stops the server and waits for its summary.
    pub fn stop(mut self) -> Result<Summary, Error> {
        self.handle.stop();
        self.join()
    }

    fn join(&mut self) -> Result<Summary, Error> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(Error::Panicked)),
            // Only `stop` (which consumes `self`) and `drop` take it.
            None => Err(Error::Panicked),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
            let _ = self.join();
        }
    }
}
