//! The accept side the blocking models (iterative, thread, process)
//! share.
//!
//! It waits on the server's `mio::Poll`, as the mio model does, so a stop
//! (a [`Handle`](crate::Handle)'s waker, SIGINT, SIGTERM) is just another
//! event and never a flag checked in a race (trap 13). Each accepted
//! socket is counted, logged, switched to blocking mode and handed to the
//! model's [`Dispatch`]; one over `--max-connections` or
//! `--max-connections-per-ip` is accepted and closed at once. The model
//! reports which connections have closed since it was last asked, so the
//! per-address counts follow without a lock per close.
//!
//! The [`Gate`] also serves the metrics endpoint (`--metrics-addr`): it
//! reads scrapes on every wait, and answers them when the model hands it
//! the counters ([`Gate::service`]). The iterative model, which
//! serves a client on this thread, looks at the gate once a slice, so a
//! scrape is answered within that slice even then.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Token};

use crate::config::Config;
use crate::error::Error;
use crate::journal;
use crate::listener::accept::Accept;
use crate::listener::{Listener, Source};
use crate::metrics::{Counters, Metrics};
use crate::stats::{Reason, Stats};

use super::blocking;

/// Events taken from one poll: the listener, the stop sources and at most
/// one model source.
const EVENTS: usize = 16;

/// What a blocking model does with accepted connections.
pub(crate) trait Dispatch {
    /// The counters the connections add to.
    fn stats(&self) -> &Stats;

    /// Connections being served now, for `--max-connections`; appends
    /// to `departed` the client of every connection that has closed
    /// since the last call, for `--max-connections-per-ip`.
    fn live(&mut self, departed: &mut Vec<SocketAddr>) -> usize;

    /// Serves `stream` (blocking, already counted and logged as
    /// accepted), or hands it to a thread or process that will.
    fn dispatch(
        &mut self,
        gate: &mut Gate,
        stream: TcpStream,
        peer: SocketAddr,
    );

    /// How long the accept loop may wait before [`Dispatch::turn`] must
    /// run anyway.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs after every wait of the accept loop, with the tokens of the
    /// events it returned (sources the model registered itself).
    fn turn(&mut self, _tokens: &[Token]) {}
}

/// The listener layer's poll, and whether a stop has been seen on it.
#[derive(Debug)]
pub(crate) struct Gate {
    listener: Listener,
    events: Events,
    tokens: Vec<Token>,
    stopping: bool,
    /// A second stop, or SIGQUIT: no more flushing or lingering.
    now: bool,
    /// `--metrics-addr`, served until the process exits.
    metrics: Option<Metrics>,
}

impl Gate {
    /// The listener layer this gate waits on.
    pub(crate) fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Waits for events (until `deadline` at the latest, or a scrape's)
    /// and returns the tokens of the model's own and the client
    /// listener's, after taking note of a stop among them and serving
    /// the scrapes.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<&[Token], Error> {
        let metrics = self.metrics.as_ref();
        let scrapes = metrics.and_then(|m| m.deadline(Instant::now()));
        let deadline = [deadline, scrapes].into_iter().flatten().min();
        self.listener.wait(&mut self.events, deadline)?;
        self.tokens.clear();
        for event in self.events.iter() {
            let token = event.token();
            let source = Source::of(token);
            if let Source::Metrics | Source::Scrape(_) = source {
                if let Some(metrics) = &mut self.metrics {
                    metrics.on_event(source, self.listener.registry());
                }
                continue;
            }
            match self.listener.control(token) {
                Some(control) => {
                    self.stopping |= control.stop;
                    self.now |= control.now;
                }
                None => self.tokens.push(token),
            }
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.turn(self.listener.registry(), Instant::now());
        }
        Ok(&self.tokens)
    }

    /// Whether the stop must happen now (a second stop signal, SIGQUIT).
    pub(crate) fn stop_now(&self) -> bool {
        self.now
    }

    /// The listener layer's periodic duties: the `stats` line (SIGUSR1,
    /// `--stats-interval`), the service manager's watchdog and status;
    /// and the scrapes that wait for the counters are answered.
    pub(crate) fn service(&mut self, stats: &Stats) {
        self.listener.service(Instant::now(), || {
            (stats.summary(), blocking::open(stats))
        });
        if let Some(metrics) = &mut self.metrics {
            if metrics.waiting() {
                let counters = Counters {
                    summary: stats.summary(),
                    open: blocking::open(stats),
                    workers: Vec::new(),
                    output_held: None,
                };
                metrics.answer(self.listener.registry(), &counters);
            }
        }
    }

    /// Whether a stop has arrived, without blocking (see also
    /// [`Gate::stop_now`]). For a model that
    /// serves on the accept thread: the listener events this consumes do
    /// no harm, since the accept loop accepts until `WouldBlock` after
    /// every connection anyway (trap 3).
    pub(crate) fn poll_stop(&mut self) -> bool {
        // Once stopping, keep looking: a second stop means "now".
        if !self.now {
            if let Err(e) = self.wait(Some(Instant::now())) {
                log::error!("{e}; stopping");
                self.stopping = true;
            }
        }
        self.stopping
    }
}

/// Accepts connections for `model` until the server is told to stop;
/// then stops listening and returns the gate, on which the model waits
/// for its connections to finish.
pub(crate) fn run<D: Dispatch>(
    mut listener: Listener,
    config: &Config,
    model: &mut D,
) -> Result<Gate, Error> {
    let metrics = Metrics::take(&mut listener, config);
    let mut gate = Gate {
        listener,
        events: Events::with_capacity(EVENTS),
        tokens: Vec::with_capacity(EVENTS),
        stopping: false,
        now: false,
        metrics,
    };
    let mut accept = Accept::new(config, Arc::clone(gate.listener.group()));
    let mut departed = Vec::new();
    while !gate.stopping {
        let now = Instant::now();
        let model_due = model.timeout().map(|t| now + t);
        let log_due = journal::retry_at(now);
        let deadline = [accept.deadline(now), model_due, log_due]
            .into_iter()
            .flatten()
            .min();
        let tokens = gate.wait(deadline)?;
        journal::flush();
        for token in tokens {
            if let Source::Listener(n) = Source::of(*token) {
                accept.on_event(n);
            }
        }
        model.turn(tokens);
        gate.service(model.stats());
        let now = Instant::now();
        while !gate.stopping {
            let Some((stream, peer)) =
                accept.next(gate.listener.sockets(), now)
            else {
                break;
            };
            let live = model.live(&mut departed);
            // A proxied connection's client is admitted and released by
            // whoever reads its header (`blocking::Proxied`).
            for peer in departed.drain(..) {
                if config.proxy.is_none() {
                    accept.release(peer);
                }
            }
            if config.proxy.is_some() {
                if accept.admits_one_more(live, peer, model.stats()) {
                    let _ = proxied(&mut gate, model, stream, peer, config);
                }
            } else if accept.admits(live, peer, model.stats()) {
                if let Err(peer) = admit(&mut gate, model, stream, peer) {
                    accept.release(peer);
                }
            }
        }
    }
    gate.listener.stop_listening();
    log::info!("stopping: {} connections open", model.live(&mut departed));
    Ok(gate)
}

/// Hands a connection that must send a PROXY header to the model, which
/// counts and logs it once the header names its client; one from outside
/// `--proxy-from` is counted and closed at once.
fn proxied<D: Dispatch>(
    gate: &mut Gate,
    model: &mut D,
    stream: mio::net::TcpStream,
    peer: SocketAddr,
    config: &Config,
) -> Result<(), SocketAddr> {
    let stats = model.stats();
    let refused = config
        .proxy
        .as_ref()
        .and_then(|p| crate::policy::header::untrusted(p, peer));
    let stream = TcpStream::from(stream);
    let made_blocking = stream.set_nonblocking(false);
    let reason = match (refused, made_blocking) {
        (None, Ok(())) => {
            model.dispatch(gate, stream, peer);
            return Ok(());
        }
        (Some(reason), _) => reason,
        (None, Err(e)) => Reason::Error(e),
    };
    stats.accepted();
    blocking::finish(peer, &reason, stats);
    Err(peer)
}

/// Counts and logs an accepted connection, makes it blocking and hands it
/// to the model; `Err(peer)` if it closed before the model saw it.
fn admit<D: Dispatch>(
    gate: &mut Gate,
    model: &mut D,
    stream: mio::net::TcpStream,
    peer: SocketAddr,
) -> Result<(), SocketAddr> {
    let stream = TcpStream::from(stream);
    let stats = model.stats();
    stats.accepted();
    journal::accepted(peer, blocking::open(stats));
    match stream.set_nonblocking(false) {
        Ok(()) => {
            model.dispatch(gate, stream, peer);
            Ok(())
        }
        Err(e) => {
            blocking::finish(peer, &Reason::Error(e), stats);
            Err(peer)
        }
    }
}
