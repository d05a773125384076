//! The public entry point: bind a [`Server`] from a [`Config`], then run
//! it; a [`Handle`] stops it from another thread.
//!
//! Every model starts the same way: [`bind`] creates the listening socket
//! and a `mio::Poll` holding the listener, a waker and (in the binary) the
//! signals, each under a fixed token. [`Server::run`] hands them to the
//! model the config names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::{Config, Model};
use crate::error::Error;
use crate::stats::Summary;
use crate::{event_loop, journal, models, net};

/// Trap 14: the fixed tokens sit below every connection token (slab key +
/// [`FIRST_CONNECTION`]), so they can never collide.
pub const LISTENER: Token = Token(0);
/// The token of the waker a [`Handle`] uses to stop the server.
pub const WAKER: Token = Token(1);
/// The token of SIGINT/SIGTERM (trap 13: signals are events on the Poll).
pub const SIGNALS: Token = Token(2);
/// Connection tokens are slab keys plus this offset.
pub const FIRST_CONNECTION: usize = 3;

/// A bound server, not yet running.
pub struct Server {
    pub(crate) config: Config,
    pub(crate) listener: TcpListener,
    pub(crate) poll: Poll,
    pub(crate) signals: Option<Signals>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("local_addr", &self.local_addr)
            .field("signals", &self.signals.is_some())
            .finish_non_exhaustive()
    }
}

/// Binds the listening socket and sets up the poll, so that the address
/// is known (port 0 resolved) before the server runs.
pub fn bind(config: Config) -> Result<Server, Error> {
    let addr = config.addr;
    let listen_err = |source| Error::Listen { addr, source };
    let std_listener =
        net::listen(addr, config.backlog).map_err(listen_err)?;
    let local_addr = std_listener.local_addr().map_err(listen_err)?;
    let mut listener = TcpListener::from_std(std_listener);
    let poll = Poll::new().map_err(Error::setup("create the poll"))?;
    let registry = poll.registry();
    registry
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(Error::setup("register the listener"))?;
    let waker = Waker::new(registry, WAKER)
        .map_err(Error::setup("create the waker"))?;
    let signals = match config.handle_signals {
        true => Some(signals(registry)?),
        false => None,
    };
    Ok(Server {
        config,
        listener,
        poll,
        signals,
        local_addr,
        waker: Arc::new(waker),
    })
}

fn signals(registry: &Registry) -> Result<Signals, Error> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(Error::setup("install the signal handlers"))?;
    registry
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(Error::setup("register the signals"))?;
    Ok(signals)
}

impl Server {
    /// The address the server listens on (the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration the server was bound with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that stops this server from any thread.
    pub fn handle(&self) -> Handle {
        Handle { waker: Arc::clone(&self.waker) }
    }

    /// Runs the server until it is stopped, prints the `listening on`
    /// line first and the `summary` line last, and returns the summary.
    pub fn run(self) -> Result<Summary, Error> {
        journal::listening(
            self.local_addr,
            self.config.model,
            self.config.mode,
        );
        let summary = match self.config.model {
            Model::Mio => event_loop::run(self)?,
            Model::Iterative => models::iterative::run(self)?,
            Model::Thread => models::threaded::run(self)?,
            Model::Process => models::forked::run(self)?,
        };
        journal::summary(&summary);
        Ok(summary)
    }

    /// Runs the server on a new thread; tests start servers this way.
    pub fn spawn(self) -> Running {
        let addr = self.local_addr;
        let handle = self.handle();
        let thread = thread::Builder::new()
            .name("readyloop-server".into())
            .spawn(move || self.run());
        Running { addr, handle, thread: Some(thread) }
    }

    /// Whether `token` asks the server to stop (the waker or a signal);
    /// drains the signals so their edge is consumed.
    pub(crate) fn is_stop(&mut self, token: Token) -> bool {
        match token {
            WAKER => true,
            SIGNALS => {
                let mut any = false;
                if let Some(signals) = &mut self.signals {
                    for signal in signals.pending() {
                        log::info!("received signal {signal}, stopping");
                        any = true;
                    }
                }
                any
            }
            _ => false,
        }
    }

    /// Stops accepting for good: deregisters the listener and shuts it
    /// down, so new clients are refused at once instead of waiting in a
    /// backlog nobody accepts from (on Linux, shutdown of a listening
    /// socket returns it to the closed state).
    pub(crate) fn stop_listening(&mut self) {
        let _ = self.poll.registry().deregister(&mut self.listener);
        let socket = socket2::SockRef::from(&self.listener);
        if let Err(e) = socket.shutdown(std::net::Shutdown::Read) {
            log::warn!("cannot shut the listener down: {e}");
        }
    }

    /// Waits on the poll, retrying on EINTR (trap 9).
    pub(crate) fn wait(
        &mut self,
        events: &mut Events,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        loop {
            match self.poll.poll(events, timeout) {
                Ok(()) => return Ok(()),
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => return Err(Error::setup("wait on the poll")(e)),
            }
        }
    }
}

/// Stops a running server: it stops accepting, flushes, closes every
/// connection and returns its summary. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    waker: Arc<Waker>,
}

impl Handle {
    /// Asks the server to stop; returns at once.
    pub fn stop(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the server to stop it: {e}");
        }
    }
}

/// A server running on its own thread, from [`Server::spawn`].
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it.
    pub handle: Handle,
    thread:
        Option<std::io::Result<thread::JoinHandle<Result<Summary, Error>>>>,
}

impl Running {
    /// Stops the server and waits for its summary.
    pub fn stop(mut self) -> Result<Summary, Error> {
        self.handle.stop();
        self.join()
    }

    fn join(&mut self) -> Result<Summary, Error> {
        let thread = self.thread.take().ok_or_else(|| {
            Error::setup("join the server thread")(
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        let thread =
            thread.map_err(Error::setup("spawn the server thread"))?;
        thread.join().unwrap_or_else(|_| {
            Err(Error::setup("join the server thread")(std::io::Error::other(
                "the server thread panicked",
            )))
        })
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
