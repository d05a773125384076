//! Making the listeners: every `--addr` bound (all or none), or the
//! sockets systemd passed; a worker's copies; the metrics listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use crate::error::Error;
use crate::journal::RateLimited;
use crate::net;

use super::group::Group;
use super::service::Service;
use super::{activation, signals, Listener, Seen};
use super::{listener_token, MAX_LISTENERS, METRICS, WAKER};

/// Where the client listeners come from, and how the listener layer is
/// set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup<'a> {
    /// Addresses to bind (when no sockets were passed).
    pub(crate) addrs: &'a [SocketAddr],
    /// The listen backlog.
    pub(crate) backlog: u32,
    /// `--receive-buffer`: SO_RCVBUF of the client listeners.
    pub(crate) receive_buffer: Option<usize>,
    /// Handle the signals of [`signals`].
    pub(crate) signals: bool,
    /// Take the sockets systemd passed, if any, instead of binding, and
    /// notify it (see [`crate::Config::systemd`]).
    pub(crate) systemd: bool,
    /// `--stats-interval`.
    pub(crate) stats_interval: Option<Duration>,
    /// Bind with SO_REUSEPORT, for workers to bind the same addresses.
    pub(crate) reuse_port: bool,
    /// `--max-connections-per-ip`, which the workers count together.
    pub(crate) max_per_ip: usize,
    /// `--drain`: how long a stop keeps serving before it takes effect.
    pub(crate) drain: Duration,
}

impl Listener {
    /// Binds every address (or takes the sockets systemd passed) and
    /// registers each listener, a waker and (when asked) the signals of
    /// [`signals`] on a new poll.
    pub(crate) fn bind(setup: &Setup<'_>) -> Result<Listener, Error> {
        let passed = match setup.systemd {
            true => activation::take()?,
            false => None,
        };
        let activated = passed.is_some();
        let std_listeners = match passed {
            Some(sockets) => {
                // Listening already: connections accepted from now on
                // inherit the size (the window scale of those queued
                // was set at their handshake).
                if let Some(size) = setup.receive_buffer {
                    for socket in &sockets {
                        socket2::SockRef::from(socket)
                            .set_recv_buffer_size(size)
                            .map_err(Error::setup("size a passed socket"))?;
                    }
                }
                sockets
            }
            None => bind_all(setup.addrs, setup, setup.reuse_port)?,
        };
        Listener::register(std_listeners, activated, setup)
    }

    /// Another worker's listener beside `first` (`--workers`): the same
    /// addresses bound again with SO_REUSEPORT (the kernel spreads new
    /// connections over every socket bound so), or, for sockets systemd
    /// passed (which cannot be bound again), copies of the same sockets.
    /// No signals and no service duties: the first worker has those.
    pub(crate) fn another(
        first: &Listener,
        setup: &Setup<'_>,
    ) -> Result<Listener, Error> {
        let std_listeners = match first.activated {
            true => first
                .sockets
                .iter()
                .map(|s| {
                    socket2::SockRef::from(s)
                        .try_clone()
                        .map(std::net::TcpListener::from)
                        .map_err(Error::setup("copy a passed socket"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            false => bind_all(&first.addrs, setup, true)?,
        };
        let worker_setup = Setup {
            addrs: &first.addrs,
            signals: false,
            systemd: false,
            stats_interval: None,
            ..*setup
        };
        Listener::register(std_listeners, first.activated, &worker_setup)
    }

    fn register(
        std_listeners: Vec<std::net::TcpListener>,
        activated: bool,
        setup: &Setup<'_>,
    ) -> Result<Listener, Error> {
        if std_listeners.is_empty() {
            return Err(Error::NoListener);
        }
        if std_listeners.len() > MAX_LISTENERS {
            return Err(Error::TooManyListeners {
                count: std_listeners.len(),
                max: MAX_LISTENERS,
            });
        }
        let poll = Poll::new().map_err(Error::setup("create the poll"))?;
        let registry = poll.registry();
        let mut sockets = Vec::with_capacity(std_listeners.len());
        let mut addrs = Vec::with_capacity(std_listeners.len());
        for (n, std_listener) in std_listeners.into_iter().enumerate() {
            let addr = std_listener
                .local_addr()
                .map_err(Error::setup("read a listener's address"))?;
            let mut socket = TcpListener::from_std(std_listener);
            registry
                .register(&mut socket, listener_token(n), Interest::READABLE)
                .map_err(Error::setup("register the listener"))?;
            sockets.push(socket);
            addrs.push(addr);
        }
        let waker = Waker::new(registry, WAKER)
            .map_err(Error::setup("create the waker"))?;
        let signals = match setup.signals {
            true => Some(signals::register(registry)?),
            false => None,
        };
        let waker = Arc::new(waker);
        let group = Group::new(vec![Arc::clone(&waker)], setup.max_per_ip)
            .with_drain(setup.drain);
        Ok(Listener {
            sockets,
            addrs,
            activated,
            poll,
            signals,
            waker,
            group: Arc::new(group),
            worker: 0,
            ignored: RateLimited::default(),
            service: Service::new(setup.stats_interval, setup.systemd),
            metrics: None,
            metrics_addr: None,
            seen: Seen::Serving,
        })
    }

    /// Binds the metrics listener on `addr` and registers it under
    /// [`METRICS`]; the model that runs takes it with
    /// [`Listener::take_metrics`]. A failure is the same `cannot listen
    /// on …` as a client address's.
    pub(crate) fn bind_metrics(
        &mut self,
        addr: SocketAddr,
        backlog: u32,
    ) -> Result<(), Error> {
        let listen_err = |source| Error::Listen { addr, source };
        let std_listener =
            net::listen(addr, backlog, None, false).map_err(listen_err)?;
        let local_addr = std_listener.local_addr().map_err(listen_err)?;
        let mut socket = TcpListener::from_std(std_listener);
        self.poll
            .registry()
            .register(&mut socket, METRICS, Interest::READABLE)
            .map_err(Error::setup("register the metrics listener"))?;
        self.metrics = Some(socket);
        self.metrics_addr = Some(local_addr);
        Ok(())
    }
}

/// Binds every address in `addrs`: all or none (a failure closes the
/// ones bound before it).
fn bind_all(
    addrs: &[SocketAddr],
    setup: &Setup<'_>,
    reuse_port: bool,
) -> Result<Vec<std::net::TcpListener>, Error> {
    let (backlog, receive_buffer) = (setup.backlog, setup.receive_buffer);
    addrs
        .iter()
        .map(|&addr| {
            net::listen(addr, backlog, receive_buffer, reuse_port)
                .map_err(|source| Error::Listen { addr, source })
        })
        .collect()
}
