//! The Prometheus endpoint (`--metrics-addr`): a listener of its own on
//! the server's poll (token [`METRICS`](crate::listener::METRICS)) and
//! a fixed table of at most [`MAX_SCRAPES`] scrape connections (tokens
//! `FIRST_SCRAPE + slot`). The model that waits on the poll feeds it
//! the events of those tokens, calls [`Metrics::turn`] after each wait
//! and folds [`Metrics::deadline`] into the next one, and gives it the
//! counters through [`Metrics::answer`] when [`Metrics::waiting`] says a
//! request is complete: the figures are exact at that moment, and a
//! scrape never counts as a client.
//!
//! A scrape never blocks the loop ([`scrape`]): it is read and written
//! without blocking, and it is closed however far it got when its last
//! byte has not gone within [`SCRAPE_DEADLINE`] of accept. One scrape
//! over the table's size is closed at once.

mod http;
mod render;
mod scrape;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::journal::RateLimited;
use crate::listener::accept::Accept;
use crate::listener::group::Group;
use crate::listener::{Listener, Source, FIRST_SCRAPE, MAX_SCRAPES};

use render::Build;
pub(crate) use render::Counters;
use scrape::{Scrape, State, Step, SCRAPE_DEADLINE};

/// The endpoint: its listener, its scrapes and what they share.
#[derive(Debug)]
pub(crate) struct Metrics {
    socket: TcpListener,
    /// The accept state machine every listener runs (budget, skipped
    /// errors, the pause when descriptors run out: trap 4).
    accept: Accept,
    slots: [Option<Scrape>; MAX_SCRAPES],
    /// Scrapes in the table.
    open: usize,
    build: Build,
    /// The last rendering, its capacity kept for the next one.
    text: String,
    /// Whose stop `/healthz` reports.
    group: Arc<Group>,
    turned_away: RateLimited,
}

impl Metrics {
    /// The endpoint, if `listener` has a metrics listener (registered
    /// under the metrics token): takes it over.
    pub(crate) fn take(
        listener: &mut Listener,
        config: &Config,
    ) -> Option<Metrics> {
        let socket = listener.take_metrics()?;
        Some(Metrics {
            socket,
            accept: Accept::new(config, Arc::clone(listener.group())),
            slots: std::array::from_fn(|_| None),
            open: 0,
            build: Build { model: config.model, mode: config.mode },
            text: String::new(),
            group: Arc::clone(listener.group()),
            turned_away: RateLimited::default(),
        })
    }

    /// An event for the metrics listener or one of its scrapes.
    pub(crate) fn on_event(&mut self, source: Source, registry: &Registry) {
        match source {
            // The metrics listener is the only one its `Accept` knows.
            Source::Metrics => self.accept.on_event(0),
            Source::Scrape(slot) => self.advance(slot, registry),
            _ => {}
        }
    }

    /// The work that follows each wait: accept the scrapes that came,
    /// and close those past their deadline.
    pub(crate) fn turn(&mut self, registry: &Registry, now: Instant) {
        while let Some((stream, peer)) =
            self.accept.next(std::slice::from_ref(&self.socket), now)
        {
            self.admit(stream, peer, registry, now);
        }
        if self.open == 0 {
            return;
        }
        for slot in 0..MAX_SCRAPES {
            let Some(scrape) = &self.slots[slot] else { continue };
            if now < scrape.deadline() {
                continue;
            }
            if let State::Reading(_) = scrape.state {
                log::debug!(
                    "metrics: {}: no whole request in {} s; closed",
                    scrape.peer,
                    SCRAPE_DEADLINE.as_secs()
                );
            }
            self.close(slot, registry);
        }
    }

    /// When the poll must wake for the endpoint: a scrape's deadline,
    /// or the end of an accept pause.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let accept = self.accept.deadline(now);
        if self.open == 0 {
            return accept; // the loop's every turn asks: keep it short
        }
        let scrapes = self.slots.iter().flatten().map(Scrape::deadline).min();
        [accept, scrapes].into_iter().flatten().min()
    }

    /// Whether a complete request waits for [`Metrics::answer`].
    pub(crate) fn waiting(&self) -> bool {
        self.open > 0
            && self
                .slots
                .iter()
                .flatten()
                .any(|s| matches!(s.state, State::Waiting { .. }))
    }

    /// The end of a loop model's turn (mio, uring): accepts and expires
    /// scrapes, and answers the complete ones with every worker's
    /// counters as the group holds them (each worker has published its
    /// bytes in [`Listener::end_turn`]).
    pub(crate) fn serve_group(&mut self, listener: &Listener, now: Instant) {
        let registry = listener.registry();
        self.turn(registry, now);
        if self.waiting() {
            let group = listener.group();
            let (summary, open) = group.totals();
            let workers = group.per_worker();
            self.answer(registry, &Counters { summary, open, workers });
        }
    }

    /// Answers every waiting request with `counters` (rendered once)
    /// and starts sending.
    pub(crate) fn answer(&mut self, registry: &Registry, counters: &Counters) {
        self.text.clear();
        render::render(&mut self.text, counters, self.build);
        for slot in 0..MAX_SCRAPES {
            let Some(scrape) = &mut self.slots[slot] else { continue };
            let State::Waiting { body } = scrape.state else { continue };
            let out = http::metrics(&self.text, body);
            scrape.state = State::Writing { out, sent: 0 };
            if scrape.advance(&self.group) == Step::Done {
                self.close(slot, registry);
            }
        }
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            if let Some(folded) = self.turned_away.admit(now) {
                log::warn!(
                    "metrics: {peer} closed at once: {MAX_SCRAPES} scrapes \
                     in progress ({folded} more since the last line)"
                );
            }
            return; // dropping the stream closes it
        };
        // Both interests once: a scrape reads, then writes. The
        // registration reports what is ready already, so a request that
        // came with the connection is an event like any other.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = Token(FIRST_SCRAPE + slot);
        if let Err(e) = registry.register(&mut stream, token, interest) {
            log::warn!("metrics: {peer}: cannot register: {e}");
            return;
        }
        self.slots[slot] = Some(Scrape::new(stream, peer, now));
        self.open += 1;
    }

    fn advance(&mut self, slot: usize, registry: &Registry) {
        // Trap 6: the scrape of this token may have closed earlier in
        // the batch; a vacant slot means nothing to do.
        let Some(Some(scrape)) = self.slots.get_mut(slot) else { return };
        if scrape.advance(&self.group) == Step::Done {
            self.close(slot, registry);
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        let Some(mut scrape) = self.slots[slot].take() else { return };
        // Trap 6: deregister before the socket closes.
        let _ = registry.deregister(&mut scrape.stream);
        scrape.close();
        self.open -= 1;
        self.accept.freed();
    }
}
