//! What every model stands on: the listening socket and one `mio::Poll`
//! that holds it, a waker and the signals under fixed tokens; the wait
//! that survives interruptions; the stop window; and the one accept state
//! machine ([`accept`]). It imports nothing above it: the models receive
//! a [`Listener`] and never see the public `Server`.

pub(crate) mod accept;
mod activation;
pub(crate) mod group;
mod per_address;
mod service;

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
use crate::stats::{Stats, Summary, Traffic};

use group::Group;
use service::Service;

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

/// The listening sockets with the poll that watches them and the stop
/// sources.
pub(crate) struct Listener {
    sockets: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    /// The sockets came from systemd (socket activation): at stop they
    /// are closed, never shut down.
    activated: bool,
    poll: Poll,
    signals: Option<Signals>,
    waker: Arc<Waker>,
    /// The workers of this server (one unless `--workers`): the stop they
    /// share and their counters.
    group: Arc<Group>,
    /// This listener's worker in the group.
    worker: usize,
    ignored: RateLimited,
    /// The counters reported while running: the `stats` line and the
    /// service manager's notifications.
    service: Service,
    /// `--metrics-addr`: its listener, registered under [`METRICS`],
    /// until the model takes it.
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    /// How far this listener has followed the group's stop.
    seen: Seen,
}

/// How far a listener has followed its group's stop (see
/// [`Listener::follow_stop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Serving,
    /// `--drain`: the stop was asked and takes effect later.
    Draining,
    Stopping,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addrs", &self.addrs)
            .field("activated", &self.activated)
            .field("signals", &self.signals.is_some())
            .finish_non_exhaustive()
    }
}

/// Where the client listeners come from, and how the listener layer is
/// set up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup<'a> {
    /// Addresses to bind (when no sockets were passed).
    pub(crate) addrs: &'a [SocketAddr],
    /// The listen backlog.
    pub(crate) backlog: u32,
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
            Some(sockets) => sockets,
            None => bind_all(setup.addrs, setup.backlog, setup.reuse_port)?,
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
            false => bind_all(&first.addrs, setup.backlog, true)?,
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
            net::listen(addr, backlog, false).map_err(listen_err)?;
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

    /// The addresses it listens on (real ports if 0 was asked), in the
    /// order of the listeners' tokens.
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether the listeners came from systemd's socket activation.
    pub(crate) fn activated(&self) -> bool {
        self.activated
    }

    /// The waker that wakes whoever waits on this poll.
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// With the watchdog on in the first worker's listener, makes this
    /// (another worker's) loop turn at least every half ping interval.
    pub(crate) fn follow_watchdog(&mut self, first: &Listener) {
        if let Some(every) = first.service.watchdog_every() {
            self.service.set_heartbeat(every / 2);
        }
    }

    /// Makes this listener worker `worker` of `group`.
    pub(crate) fn join(&mut self, group: &Arc<Group>, worker: usize) {
        self.group = Arc::clone(group);
        self.worker = worker;
    }

    /// The workers this listener belongs to.
    pub(crate) fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// This listener's worker number.
    pub(crate) fn worker(&self) -> usize {
        self.worker
    }

    /// The listening sockets, to accept from (none once stopped).
    pub(crate) fn sockets(&self) -> &[TcpListener] {
        &self.sockets
    }

    /// Where a model registers its own sources.
    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The descriptors a forked child must close: the poll (whose
    /// registrations it would share with the parent), the listeners and
    /// the service manager's socket.
    pub(crate) fn inherited_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.poll.as_raw_fd()];
        fds.extend(self.sockets.iter().map(|s| s.as_raw_fd()));
        fds.extend(self.service.fd());
        fds
    }

    /// The poll's own descriptor (epoll): a completion model watches it
    /// for the waker and the signals.
    pub(crate) fn poll_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// What `token` asks of the server, if it is the waker's or the
    /// signals' (draining the signals, so their edge is consumed); `None`
    /// for any other token. A wake-up with no signal pending asks
    /// nothing: spurious wake-ups are harmless.
    pub(crate) fn control(&mut self, token: Token) -> Option<Control> {
        match token {
            WAKER => Some(self.group.asked()),
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
                match (control.stop, control.now) {
                    (_, true) => log::info!(
                        "received {name} again: stopping now, without \
                         waiting for connections"
                    ),
                    (true, false) => log::info!("received {name}, stopping"),
                    (false, _) => log::info!(
                        "received {name}: draining for {} s (/healthz \
                         answers 503, connections are still accepted), \
                         then stopping",
                        self.group.drain().as_secs_f64()
                    ),
                }
                control
            }
            signals::Meaning::StopNow => {
                log::info!("received {name}: stopping now");
                self.ask_stop(true)
            }
            signals::Meaning::Stats => {
                self.service.ask_stats();
                Control::default()
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

    /// A stop (SIGINT, SIGTERM, SIGHUP), for every worker; a second one
    /// while stopping, or `now`, stops at once.
    fn ask_stop(&mut self, now: bool) -> Control {
        self.group.ask_stop(now)
    }

    /// Stops accepting for good: deregisters and closes every listener,
    /// and tells the service manager the stop began. A socket this
    /// process bound is shut down first, so new clients are refused at
    /// once instead of waiting in a backlog nobody accepts from (on
    /// Linux, shutdown of a listening socket returns it to the closed
    /// state). A socket systemd passed is only closed: systemd keeps its
    /// copy listening, and clients that arrive while the service
    /// restarts wait in its backlog for the next start.
    pub(crate) fn stop_listening(&mut self) {
        self.service.stopping();
        for mut socket in self.sockets.drain(..) {
            let _ = self.poll.registry().deregister(&mut socket);
            if self.activated {
                continue;
            }
            let sock = socket2::SockRef::from(&socket);
            if let Err(e) = sock.shutdown(std::net::Shutdown::Read) {
                log::warn!("cannot shut the listener down: {e}");
            }
        }
    }

    /// Tells the service manager the server is ready: every listener is
    /// registered and the loop is about to run.
    pub(crate) fn ready(&mut self) {
        self.service.ready();
    }

    /// The periodic duties of the loop (call once per turn, with the
    /// counters as they are now, made only when needed): the `stats`
    /// line when SIGUSR1 or `--stats-interval` asks for it, the
    /// watchdog and the status for the service manager.
    pub(crate) fn service(
        &mut self,
        now: Instant,
        counters: impl FnOnce() -> (Summary, usize),
    ) {
        self.follow_stop(now);
        let group = &self.group;
        if self.service.watched() && group.workers() > 1 {
            group.beat(self.worker, now);
        }
        let by_worker = || match group.workers() {
            1 => Vec::new(),
            _ => group.accepted_by_worker(),
        };
        // A worker stuck for a whole watchdog interval (twice the ping
        // interval) stops the pings: systemd then restarts the service.
        let limit = self.service.watchdog_every().unwrap_or_default() * 2;
        let healthy = || match group.workers() {
            1 => Ok(()),
            _ => group.stalled(now, limit),
        };
        self.service.run(now, counters, by_worker, healthy);
    }

    /// The end of a loop model's turn (mio, uring): adds the turn's
    /// bytes to this worker's counters (an atomic add per counter per
    /// turn, not per read or write), then the periodic duties with every
    /// worker's counters.
    pub(crate) fn end_turn(
        &mut self,
        now: Instant,
        stats: &Stats,
        traffic: &mut Traffic,
    ) {
        stats.add(std::mem::take(traffic));
        let group = Arc::clone(&self.group);
        self.service(now, || group.totals());
    }

    /// When the periodic duties of [`Listener::service`] are next due,
    /// for a model that waits elsewhere than [`Listener::wait`].
    pub(crate) fn service_due(&self) -> Option<Instant> {
        // No clock read on the way to every wait unless draining.
        let drain = match self.seen {
            Seen::Draining => self.group.draining_until(Instant::now()),
            Seen::Serving | Seen::Stopping => None,
        };
        [self.service.next_due(), drain].into_iter().flatten().min()
    }

    /// Follows the group's stop, whatever asked it (a signal, a
    /// [`Handle`](crate::Handle), another worker): the service manager
    /// hears `STOPPING=1` when it is asked, drain or not; and when a
    /// drain ends, this listener's waker wakes the model, whose
    /// [`Listener::control`] then says stop. So the drain lives here,
    /// and every model stops after it the way it stops without one.
    fn follow_stop(&mut self, now: Instant) {
        if self.seen == Seen::Serving && !self.group.healthy() {
            self.service.stopping();
            self.seen = Seen::Draining;
        }
        if self.seen == Seen::Draining
            && self.group.draining_until(now).is_none()
        {
            self.seen = Seen::Stopping;
            if let Err(e) = self.waker.wake() {
                log::error!(
                    "cannot wake the loop at the end of the drain: {e}"
                );
            }
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
        let deadline = match (deadline, self.service_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            let timeout = deadline
                .map(|t| ceil_ms(t.saturating_duration_since(Instant::now())));
            match self.poll.poll(events, timeout) {
                Ok(()) => {
                    // A model that serves on this thread between waits
                    // (the iterative one) may call `service` late.
                    let news = match self.seen {
                        Seen::Serving => !self.group.healthy(),
                        Seen::Draining => true,
                        Seen::Stopping => false,
                    };
                    if news {
                        self.follow_stop(Instant::now());
                    }
                    return Ok(());
                }
                Err(e) if net::interrupted(&e) => continue,
                Err(e) => return Err(Error::setup("wait on the poll")(e)),
            }
        }
    }
}

/// Binds every address in `addrs`: all or none (a failure closes the
/// ones bound before it).
fn bind_all(
    addrs: &[SocketAddr],
    backlog: u32,
    reuse_port: bool,
) -> Result<Vec<std::net::TcpListener>, Error> {
    addrs
        .iter()
        .map(|&addr| {
            net::listen(addr, backlog, reuse_port)
                .map_err(|source| Error::Listen { addr, source })
        })
        .collect()
}

/// epoll counts in whole milliseconds and mio rounds a timeout up to one,
/// but rounding 0.4 ms down to 0 would spin until the deadline; round up.
fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}
