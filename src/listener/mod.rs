//! What every model stands on: the listening sockets and one
//! `mio::Poll` that holds them, a waker and the signals under fixed
//! tokens ([`tokens`]); the wait that survives interruptions; the stop
//! window; and the one accept state machine ([`accept`]). One concern a
//! file: `bind` makes the listeners, `control` turns signals and the
//! waker into a stop, `duties` runs what each turn owes the operator
//! and the service manager (and follows a `--drain`). It imports
//! nothing above it: the models receive a [`Listener`] and never see the
//! public `Server`.

pub(crate) mod accept;
mod activation;
mod bind;
mod control;
mod duties;
pub(crate) mod group;
mod per_address;
mod service;
mod tokens;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Poll, Registry, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::error::Error;
use crate::journal::RateLimited;
use crate::net;

use group::Group;
use service::Service;

pub(crate) use bind::Setup;
pub(crate) use signals::{all as handled_signals, Control};
pub(crate) use tokens::*;

mod signals;
pub(crate) mod wake;

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

impl Listener {
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

/// epoll counts in whole milliseconds and mio rounds a timeout up to one,
/// but rounding 0.4 ms down to 0 would spin until the deadline; round up.
fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}
