//! What every model stands on: the listening socket and one `mio::Poll`
//! that holds it, a waker and the signals under fixed tokens; the wait
//! that survives interruptions; the stop window; and the one accept state
//! machine ([`accept`]). It imports nothing above it: the models receive
//! a [`Listener`] and never see the public `Server`.

pub(crate) mod accept;
mod per_address;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::error::Error;
use crate::journal::RateLimited;
use crate::net;

pub(crate) use signals::{all as handled_signals, Control};

mod signals;
pub(crate) mod wake;

/// The token of the waker a `Handle` uses to stop the server.
pub(crate) const WAKER: Token = Token(0);
/// The token of the signals (trap 13: signals are events on the Poll).
pub(crate) const SIGNALS: Token = Token(1);
/// The token of the metrics listener (`--metrics-addr`).
pub(crate) const METRICS: Token = Token(2);
/// Scrape connections on the metrics listener: tokens
/// `FIRST_SCRAPE..FIRST_SCRAPE + MAX_SCRAPES`.
pub(crate) const FIRST_SCRAPE: usize = 8;
/// Scrapes served at once; one more is closed at once.
pub(crate) const MAX_SCRAPES: usize = 16;
/// Client listeners (`--addr`, socket activation): tokens
/// `FIRST_LISTENER + index`.
pub(crate) const FIRST_LISTENER: usize = FIRST_SCRAPE + MAX_SCRAPES;
/// Client listeners a server may have.
pub(crate) const MAX_LISTENERS: usize = 64;
/// Trap 14: connection tokens are slab keys plus this offset, above every
/// fixed token, so they can never collide.
pub(crate) const FIRST_CONNECTION: usize = FIRST_LISTENER + MAX_LISTENERS;

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The waker or the signals: see [`Listener::control`].
    Control,
    /// The metrics listener.
    Metrics,
    /// Scrape connection `n` of the metrics listener.
    Scrape(usize),
    /// Client listener `n`.
    Listener(usize),
    /// Connection (or a model's own source) `key`.
    Connection(usize),
}

impl Source {
    /// Decodes `token`.
    pub(crate) fn of(token: Token) -> Source {
        match token.0 {
            t if t == METRICS.0 => Source::Metrics,
            t if t >= FIRST_CONNECTION => {
                Source::Connection(t - FIRST_CONNECTION)
            }
            t if t >= FIRST_LISTENER => Source::Listener(t - FIRST_LISTENER),
            t if t >= FIRST_SCRAPE => Source::Scrape(t - FIRST_SCRAPE),
            // The waker, the signals, and unused tokens below the
            // scrapes (which ask nothing of `control`).
            _ => Source::Control,
        }
    }
}

/// The token of client listener `n`.
pub(crate) fn listener_token(n: usize) -> Token {
    Token(FIRST_LISTENER + n)
}

/// How long every model may spend flushing and lingering once a stop
/// begins.
pub(crate) const STOP_WINDOW: Duration = Duration::from_secs(2);

/// The listening socket with the poll that watches it and the stop
/// sources.
pub(crate) struct Listener {
    socket: TcpListener,
    poll: Poll,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    local_addr: SocketAddr,
    /// A stop was asked for already: the next stop signal means "now".
    stop_asked: bool,
    ignored: RateLimited,
    /// `--metrics-addr`: its listener, registered under [`METRICS`],
    /// until the model takes it.
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("signals", &self.signals.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds `addr` and registers the listener, a waker and (when
    /// `signals` is set) the signals of [`signals`] on a new poll.
    pub(crate) fn bind(
        addr: SocketAddr,
        backlog: u32,
        signals: bool,
    ) -> Result<Listener, Error> {
        let listen_err = |source| Error::Listen { addr, source };
        let std_listener = net::listen(addr, backlog).map_err(listen_err)?;
        let local_addr = std_listener.local_addr().map_err(listen_err)?;
        let mut socket = TcpListener::from_std(std_listener);
        let poll = Poll::new().map_err(Error::setup("create the poll"))?;
        let registry = poll.registry();
        registry
            .register(&mut socket, listener_token(0), Interest::READABLE)
            .map_err(Error::setup("register the listener"))?;
        let waker = Waker::new(registry, WAKER)
            .map_err(Error::setup("create the waker"))?;
        let signals = match signals {
            true => Some(signals::register(registry)?),
            false => None,
        };
        Ok(Listener {
            socket,
            poll,
            signals,
            waker: Arc::new(waker),
            local_addr,
            stop_asked: false,
            ignored: RateLimited::default(),
            metrics: None,
            metrics_addr: None,
        })
    }

    /// Binds the metrics listener on `addr` and registers it under
    /// [`METRICS`]; the model that runs takes it with
    /// [`Listener::take_metrics`]. A failure is the same `cannot listen
    /// on …` as the client address's.
    pub(crate) fn bind_metrics(
        &mut self,
        addr: SocketAddr,
        backlog: u32,
    ) -> Result<(), Error> {
        let listen_err = |source| Error::Listen { addr, source };
        let std_listener = net::listen(addr, backlog).map_err(listen_err)?;
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

    /// Where the metrics listener listens, if there is one.
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The metrics listener, for the model to serve.
    pub(crate) fn take_metrics(&mut self) -> Option<TcpListener> {
        self.metrics.take()
    }

    /// The address it listens on (the real port if 0 was asked).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The waker that stops whoever waits on this poll.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// The listening socket, to accept from.
    pub(crate) fn socket(&self) -> &TcpListener {
        &self.socket
    }

    /// Where a model registers its own sources.
    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The descriptors a forked child must close: the poll (whose
    /// registrations it would share with the parent) and the listener.
    pub(crate) fn inherited_fds(&self) -> [RawFd; 2] {
        [self.poll.as_raw_fd(), self.socket.as_raw_fd()]
    }

    /// What `token` asks of the server, if it is the waker's or the
    /// signals' (draining the signals, so their edge is consumed); `None`
    /// for any other token. A wake-up with no signal pending asks
    /// nothing: spurious wake-ups are harmless.
    pub(crate) fn control(&mut self, token: Token) -> Option<Control> {
        match token {
            WAKER => Some(self.ask_stop(false)),
            SIGNALS => {
                let mut control = Control::default();
                let pending: Vec<i32> = match &mut self.signals {
                    Some(signals) => signals.pending().collect(),
                    None => Vec::new(),
                };
                for signal in pending {
                    control.merge(self.on_signal(signal));
                }
                Some(control)
            }
            _ => None,
        }
    }

    fn on_signal(&mut self, signal: i32) -> Control {
        let name = signals::name(signal);
        match signals::meaning(signal) {
            signals::Meaning::Stop => {
                let control = self.ask_stop(false);
                match control.now {
                    true => log::info!(
                        "received {name} again: stopping now, without \
                         waiting for connections"
                    ),
                    false => log::info!("received {name}, stopping"),
                }
                control
            }
            signals::Meaning::StopNow => {
                log::info!("received {name}: stopping now");
                self.ask_stop(true)
            }
            signals::Meaning::Stats => {
                Control { stats: true, ..Control::default() }
            }
            signals::Meaning::Ignore => {
                match self.ignored.admit(Instant::now()) {
                    Some(0) => log::info!("received {name}: ignored"),
                    Some(folded) => log::info!(
                        "received {name}: ignored ({folded} more ignored \
                         signals since the last line)"
                    ),
                    None => {}
                }
                Control::default()
            }
        }
    }

    /// A stop (the waker, SIGINT, SIGTERM, SIGHUP); a second one while
    /// stopping, or `now`, stops at once.
    fn ask_stop(&mut self, now: bool) -> Control {
        let again = std::mem::replace(&mut self.stop_asked, true);
        Control { stop: true, now: now || again, stats: false }
    }

    /// Stops accepting for good: deregisters the listener and shuts it
    /// down, so new clients are refused at once instead of waiting in a
    /// backlog nobody accepts from (on Linux, shutdown of a listening
    /// socket returns it to the closed state).
    pub(crate) fn stop_listening(&mut self) {
        let _ = self.poll.registry().deregister(&mut self.socket);
        let socket = socket2::SockRef::from(&self.socket);
        if let Err(e) = socket.shutdown(std::net::Shutdown::Read) {
            log::warn!("cannot shut the listener down: {e}");
        }
    }

    /// Waits on the poll until an event or `deadline` (`None`: no
    /// deadline). Trap 9: an interrupted wait is retried; trap 15: with
    /// the time left to the deadline, not the first timeout, so pulses of
    /// SIGSTOP/SIGCONT cannot keep a deadline from ever arriving.
    pub(crate) fn wait(
        &mut self,
        events: &mut Events,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        loop {
            let timeout = deadline
                .map(|t| ceil_ms(t.saturating_duration_since(Instant::now())));
            match self.poll.poll(events, timeout) {
                Ok(()) => return Ok(()),
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => return Err(Error::setup("wait on the poll")(e)),
            }
        }
    }
}

/// epoll counts in whole milliseconds and mio rounds a timeout up to one,
/// but rounding 0.4 ms down to 0 would spin until the deadline; round up.
fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}
