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
//! without blocking, its request head is read as soon as it is
//! accepted, and it is closed however far it got when its whole head
//! has not come within [`HEAD_DEADLINE`] of accept, or its last byte
//! within [`SCRAPE_DEADLINE`](scrape::SCRAPE_DEADLINE). Who gets a
//! slot, and who gives one up when the table is full, is [`room`]'s
//! rule: connections that stall their request cannot keep a real
//! scrape or a health check out. Clients never share this table.

mod http;
mod process;
mod render;
mod room;
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
use room::{Room, PER_ADDRESS};
use scrape::{Scrape, State, Step, HEAD_DEADLINE};

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
    /// Its log lines, each kind at most once a second under a flood.
    logged: Logged,
}

/// The rate limits of the endpoint's log lines.
#[derive(Debug, Default)]
struct Logged {
    turned_away: RateLimited,
    over_address: RateLimited,
    evicted: RateLimited,
    expired: RateLimited,
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
            logged: Logged::default(),
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
                if let Some(folded) = self.logged.expired.admit(now) {
                    log::debug!(
                        "metrics: {}: no whole request in {} s; closed \
                         ({folded} more since the last line)",
                        scrape.peer,
                        HEAD_DEADLINE.as_secs()
                    );
                }
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
            let output_held = Some(group.output_held());
            let counters = Counters { summary, open, workers, output_held };
            self.answer(registry, &counters);
        }
    }

    /// Answers every waiting request with `counters` (rendered once)
    /// and starts sending.
    pub(crate) fn answer(&mut self, registry: &Registry, counters: &Counters) {
        // The lines this process dropped so far, which its summary adds
        // when it ends (a forked child's are in the counters once it
        // exits): the scrape says what the summary would say now.
        let mut counters = counters.clone();
        counters.summary.log_dropped += crate::sink::dropped();
        self.text.clear();
        let process = process::Process::now();
        render::render(&mut self.text, &counters, self.build, &process);
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
        let seats =
            self.slots.each_ref().map(|s| s.as_ref().map(Scrape::seat));
        let slot = match room::room(&seats, peer.ip()) {
            Room::Free(slot) => slot,
            Room::Evict(slot) => {
                if let Some(old) = &self.slots[slot] {
                    if let Some(folded) = self.logged.evicted.admit(now) {
                        log::debug!(
                            "metrics: {} closed to make room for {peer} \
                             ({folded} more since the last line)",
                            old.peer
                        );
                    }
                }
                self.close(slot, registry);
                slot
            }
            Room::AddressFull => {
                if let Some(folded) = self.logged.over_address.admit(now) {
                    log::debug!(
                        "metrics: {peer} closed at once: its address has \
                         {PER_ADDRESS} scrapes open ({folded} more since \
                         the last line)"
                    );
                }
                return; // dropping the stream closes it
            }
            Room::Full => {
                if let Some(folded) = self.logged.turned_away.admit(now) {
                    log::warn!(
                        "metrics: {peer} closed at once: {MAX_SCRAPES} \
                         scrapes being answered ({folded} more since the \
                         last line)"
                    );
                }
                return;
            }
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
        // Read at once what came with the connection: a complete
        // request is no longer one the next newcomer may evict.
        self.advance(slot, registry);
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
