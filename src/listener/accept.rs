//! The one accept state machine every model runs: a budget per turn,
//! skippable errors, the pause when descriptors run out, `--send-buffer`,
//! and the rejection of a connection over `--max-connections` or
//! `--max-connections-per-ip`.
//!
//! A model asks [`Accept::next`] for connections until it says the turn
//! is over, and [`Accept::admits`] whether each may be served; it calls
//! [`Accept::release`] when an admitted connection closes. Between turns,
//! [`Accept::deadline`] says when the next turn is due.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::journal::{self, RateLimited};
use crate::net::would_block;
use crate::net::{interrupted, out_of_descriptors, skip_on_accept};
use crate::stats::Stats;

use super::group::Group;

/// Trap 2 for the listener: connections accepted per turn, so a connect
/// flood cannot starve the connections already open; the listener stays
/// marked ready and the next turn goes on (trap 5).
const ACCEPTS_PER_TURN: usize = 256;
/// Trap 4: how long accepting pauses when descriptors run out (nginx
/// pauses 500 ms; a close frees one sooner and may resume at once).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long an unexpected accept error pauses accepting.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The accept side's state; see the module docs.
#[derive(Debug)]
pub(crate) struct Accept {
    /// `--max-connections`.
    max: usize,
    /// `--max-connections-per-ip`: open connections per address.
    /// `--max-connections-per-ip`, 0 when off.
    max_per_ip: usize,
    /// The open connections per address, counted with every other
    /// worker's (one lock per accept and per close, none when off).
    group: std::sync::Arc<Group>,
    /// `--send-buffer`: SO_SNDBUF of accepted sockets.
    send_buffer: Option<usize>,
    /// The listeners that may hold pending connections, a bit each: an
    /// event said so, or a turn stopped before `WouldBlock` (trap 3, 5).
    ready: u64,
    /// The listener a turn starts with: the one after the last accept,
    /// so that no listener's backlog waits on another's flood.
    cursor: usize,
    paused_until: Option<Instant>,
    /// Connections taken in the current turn.
    taken: usize,
    rejections: RateLimited,
    per_address_rejections: RateLimited,
    exhaustion: RateLimited,
    send_buffer_failures: RateLimited,
}

impl Accept {
    /// Ready at once: connections may have queued before the first poll.
    /// `group` holds the per-address table the workers share.
    pub(crate) fn new(
        config: &Config,
        group: std::sync::Arc<Group>,
    ) -> Accept {
        Accept {
            max: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            group,
            send_buffer: config.send_buffer,
            ready: ALL,
            cursor: 0,
            paused_until: None,
            taken: 0,
            rejections: RateLimited::default(),
            per_address_rejections: RateLimited::default(),
            exhaustion: RateLimited::default(),
            send_buffer_failures: RateLimited::default(),
        }
    }

    /// The poll reported listener `n` readable.
    pub(crate) fn on_event(&mut self, n: usize) {
        self.ready |= bit(n);
    }

    /// Trap 4: a descriptor was freed; accept again without waiting out
    /// the pause.
    pub(crate) fn freed(&mut self) {
        if self.paused_until.take().is_some() {
            self.ready = ALL;
        }
    }

    /// When the next turn is due: now while a listener is ready, the end
    /// of a pause, or `None` until an event.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        match self.paused_until {
            Some(t) => Some(t),
            None => (self.ready != 0).then_some(now),
        }
    }

    /// The next connection of this turn from any of `sockets` (the
    /// server's listeners, by index), or `None` when the turn is over:
    /// every backlog is drained, the budget is spent (the listeners stay
    /// ready, trap 5), or accepting pauses.
    pub(crate) fn next(
        &mut self,
        sockets: &[TcpListener],
        now: Instant,
    ) -> Option<(TcpStream, SocketAddr)> {
        let got = self.take(sockets, now);
        match &got {
            Some((stream, peer)) => {
                self.taken += 1;
                self.size_send_buffer(stream, *peer, now);
            }
            None => self.taken = 0,
        }
        got
    }

    /// `--send-buffer`: a fixed SO_SNDBUF bounds the kernel memory a
    /// client that does not read can hold (and turns off the kernel's
    /// autotuning for that socket).
    pub(crate) fn size_send_buffer(
        &mut self,
        stream: &TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) {
        let Some(size) = self.send_buffer else { return };
        if let Err(e) =
            socket2::SockRef::from(stream).set_send_buffer_size(size)
        {
            if let Some(folded) = self.send_buffer_failures.admit(now) {
                log::warn!(
                    "{peer}: cannot set the send buffer to {size} bytes: \
                     {e} ({folded} more since the last line)"
                );
            }
        }
    }

    fn take(
        &mut self,
        sockets: &[TcpListener],
        now: Instant,
    ) -> Option<(TcpStream, SocketAddr)> {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            self.ready = ALL;
        }
        if self.paused_until.is_some() || self.taken >= ACCEPTS_PER_TURN {
            return None;
        }
        let count = sockets.len().min(MAX);
        // Ready bits of listeners that are gone (stopped) mean nothing.
        self.ready &= bits(count);
        for step in 0..count {
            let n = (self.cursor + step) % count;
            if self.ready & bit(n) == 0 {
                continue;
            }
            loop {
                match sockets[n].accept() {
                    Ok(pair) => {
                        self.cursor = (n + 1) % count;
                        return Some(pair);
                    }
                    Err(e) => match self.failed(&e, now) {
                        // Trap 3: accept until WouldBlock; only then is
                        // this listener's edge consumed.
                        Failed::Drained => {
                            self.ready &= !bit(n);
                            break;
                        }
                        Failed::Next => {}
                        Failed::Pause(until) => {
                            self.paused_until = Some(until);
                            return None;
                        }
                    },
                }
            }
        }
        None
    }

    /// Whether a connection from `peer` may be served with `open` others
    /// open. One over `--max-connections`, or over
    /// `--max-connections-per-ip` for its address, is counted as rejected
    /// and warned about at most once a second; the caller drops it, which
    /// closes it. An admitted connection counts against its address
    /// until [`Accept::release`].
    pub(crate) fn admits(
        &mut self,
        open: usize,
        peer: SocketAddr,
        stats: &Stats,
    ) -> bool {
        self.admits_one_more(open, peer, stats)
            && self.admits_address(peer, stats)
    }

    /// The `--max-connections` half of [`Accept::admits`]: all a
    /// connection that must first send a PROXY header is checked for at
    /// accept, its address being the balancer's until then.
    pub(crate) fn admits_one_more(
        &mut self,
        open: usize,
        peer: SocketAddr,
        stats: &Stats,
    ) -> bool {
        if open >= self.max {
            stats.rejected();
            journal::rejected(&mut self.rejections, peer, self.max);
            return false;
        }
        true
    }

    /// The `--max-connections-per-ip` half of [`Accept::admits`], for a
    /// proxied connection once its header named the client.
    pub(crate) fn admits_address(
        &mut self,
        peer: SocketAddr,
        stats: &Stats,
    ) -> bool {
        if self.max_per_ip > 0 && !self.with_table(|t| t.admit(peer)) {
            stats.rejected();
            journal::rejected_per_address(
                &mut self.per_address_rejections,
                peer,
                self.max_per_ip,
            );
            return false;
        }
        true
    }

    /// A connection [`Accept::admits`] let in has closed: its address may
    /// open another.
    pub(crate) fn release(&mut self, peer: SocketAddr) {
        if self.max_per_ip > 0 {
            self.with_table(|t| t.release(peer));
        }
    }

    /// A completion model accepts without [`Accept::next`]; its accept
    /// failed with `e`. Logs as `next` would, and pauses accepting when
    /// descriptors run out (trap 4). True when accepting may go on.
    pub(crate) fn on_failure(&mut self, e: &io::Error, now: Instant) -> bool {
        match self.failed(e, now) {
            Failed::Pause(until) => {
                self.paused_until = Some(until);
                false
            }
            Failed::Drained | Failed::Next => true,
        }
    }

    /// Until when accepting pauses, if it does at `now` (a pause that ran
    /// out, or that [`Accept::freed`] ended, is over).
    pub(crate) fn paused_until(&mut self, now: Instant) -> Option<Instant> {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        self.paused_until
    }

    /// Runs `f` on the shared per-address table (a panic elsewhere while
    /// it was held leaves plain counts, still usable).
    fn with_table<T>(
        &self,
        f: impl FnOnce(&mut super::per_address::PerAddress) -> T,
    ) -> T {
        let mut table =
            self.group.per_address().lock().unwrap_or_else(|e| e.into_inner());
        f(&mut table)
    }

    /// Decides what follows a failed `accept`, and logs what an operator
    /// should see (descriptor exhaustion at most once a second).
    fn failed(&mut self, e: &io::Error, now: Instant) -> Failed {
        if would_block(e) {
            Failed::Drained
        } else if interrupted(e) || skip_on_accept(e) {
            // Trap 9 and trap 12: retry, or skip the one connection.
            Failed::Next
        } else if out_of_descriptors(e) {
            // Trap 4: the connection stays in the backlog and the
            // listener stays ready; retrying now would spin.
            if let Some(folded) = self.exhaustion.admit(now) {
                log::warn!(
                    "accept: {e}; pausing accept for {} ms \
                     ({folded} more since the last line; raise the \
                     descriptor limit: ulimit -n, LimitNOFILE)",
                    ACCEPT_PAUSE.as_millis()
                );
            }
            Failed::Pause(now + ACCEPT_PAUSE)
        } else {
            log::error!("accept: {e}; pausing accept for 1 s");
            Failed::Pause(now + ACCEPT_ERROR_PAUSE)
        }
    }
}

/// Listeners an [`Accept`] can follow: one bit each.
const MAX: usize = super::MAX_LISTENERS;
const _: () = assert!(MAX <= 64);
/// Every listener.
const ALL: u64 = u64::MAX;

/// The ready bit of listener `n`.
fn bit(n: usize) -> u64 {
    1u64.checked_shl(n as u32).unwrap_or(0)
}

/// The ready bits of listeners `0..count`.
fn bits(count: usize) -> u64 {
    match count {
        c if c >= 64 => ALL,
        c => (1u64 << c) - 1,
    }
}

/// What the accept loop does after `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// Trap 3: `WouldBlock`, so the listener's edge is consumed; wait for
    /// the next event.
    Drained,
    /// Interrupted (trap 9), or a failure of that one pending connection
    /// (trap 12): accept the next.
    Next,
    /// Out of descriptors (trap 4) or an unexpected error: accept nothing
    /// before this instant.
    Pause(Instant),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--send-buffer` reaches every accepted socket (Linux doubles the
    /// value for its bookkeeping and reports the doubled size).
    #[test]
    fn accepted_sockets_get_the_send_buffer_asked_for() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from_std(std_listener);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let mut config = Config::new(addr);
        config.send_buffer = Some(8192);
        let group = std::sync::Arc::new(Group::new(Vec::new(), 0));
        let mut accept = Accept::new(&config, group);
        let (stream, _) = accept
            .next(std::slice::from_ref(&listener), Instant::now())
            .unwrap();
        let size = socket2::SockRef::from(&stream).send_buffer_size();
        assert_eq!(size.unwrap(), 2 * 8192);
    }
}
