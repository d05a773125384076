//! The mio model: one thread, one `mio::Poll`, a slab of nonblocking
//! connections. This file is the IO method the policy runs
//! ([`Method`]): how readiness becomes reads, writes and closes.
//! [`Connection`] does the IO of one client and returns what should
//! happen next; [`header`] reads a PROXY header from the socket.
//!
//! Cost per connection: a 48-byte slab entry, 24 bytes of idle
//! bookkeeping when `--idle-timeout` is set, 16 bytes of log rate limit
//! in log mode, with `--proxy-protocol` 8 bytes beside the slab and a
//! partial header only while one arrives, and an output buffer only
//! while a write is blocked. Those buffers share one budget
//! (`--max-output-memory`): past it, a connection whose writes block
//! stops being read, so clients that never read cost the budget, not
//! their number times [`OUT_CAP`](crate::OUT_CAP). It breaks down only
//! when one core cannot keep up with the total traffic.

mod connection;
mod header;
mod out;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Token};
use slab::Slab;

use crate::config::Config;
use crate::error::Error;
use crate::listener::{Listener, Source, FIRST_CONNECTION};
use crate::net;
use crate::policy::{self, Method, Policy, Verdict};
use crate::stats::{Reason, Summary};

use connection::{Connection, Io, Progress, Ready};

/// The one read buffer every connection shares.
const READ_BUF: usize = 64 * 1024;
/// Events taken from one `epoll_wait`.
const EVENTS: usize = 1024;

/// Runs the mio model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    // Capacity is reserved, not touched: untouched pages cost no RSS.
    let capacity = config.max_connections.min(1 << 20);
    policy::run(Loop {
        policy: Policy::new(listener, config),
        events: Events::with_capacity(EVENTS),
        connections: Slab::with_capacity(capacity),
        buf: vec![0; READ_BUF].into_boxed_slice(),
        again: Vec::new(),
    })
}

/// The loop's state; see the crate docs for one turn of it.
struct Loop {
    policy: Policy,
    events: Events,
    connections: Slab<Connection>,
    buf: Box<[u8]>,
    /// Connections whose read budget ran out (trap 2): driven again after
    /// this batch, and the next poll does not block while any wait.
    again: Vec<usize>,
}

impl Method for Loop {
    fn policy(&mut self) -> &mut Policy {
        &mut self.policy
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        self.policy.listener.wait(&mut self.events, deadline)?;
        self.policy.tick();
        let events =
            std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            match Source::of(event.token()) {
                Source::Listener(n) => self.policy.accept.on_event(n),
                Source::Connection(key) => {
                    if log::log_enabled!(log::Level::Trace) {
                        self.trace_event(key, event);
                    }
                    self.drive(key, Ready::of(event));
                }
                _ => self.policy.on_token(event.token()),
            }
        }
        self.events = events;
        Ok(())
    }

    /// Accept from the ready listeners, then drive again the connections
    /// whose budget ran out.
    fn between(&mut self, now: Instant) -> Option<Instant> {
        if !self.policy.stopping() {
            while let Some((stream, peer)) =
                self.policy.accept.next(self.policy.listener.sockets(), now)
            {
                self.admit(stream, peer);
            }
        }
        for key in std::mem::take(&mut self.again) {
            self.drive(key, Ready::ANY);
        }
        match (self.again.is_empty(), self.policy.stopping()) {
            (false, _) => Some(now),
            (true, false) => self.policy.accept.deadline(now),
            (true, true) => None,
        }
    }

    fn keys(&self) -> Vec<usize> {
        self.connections.iter().map(|(k, _)| k).collect()
    }

    fn fd(&self, key: usize) -> Option<RawFd> {
        self.connections.get(key).map(|c| c.stream().as_raw_fd())
    }

    fn wind_down(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            conn.stop();
        }
        self.drive(key, Ready::ANY);
    }

    /// Deregisters, removes, counts and logs connection `key`.
    fn close(&mut self, key: usize, reason: Reason) {
        let Some(mut conn) = self.connections.try_remove(key) else { return };
        log::trace!(
            "{} close ({reason}): deregistered; state {} before close()",
            conn.peer(),
            net::tcp_state(conn.stream().as_raw_fd())
        );
        // Trap 6: deregister before the socket closes and its slot is
        // reused, so no event can arrive for a token that moved on.
        let _ = self.policy.listener.registry().deregister(conn.stream_mut());
        self.policy.closing(key, conn.peer(), reason);
        self.policy.output.held -= conn.held();
        drop(conn);
        self.policy.freed();
    }

    fn done(&self, _now: Instant) -> bool {
        self.connections.is_empty()
    }
}

impl Loop {
    /// Trace: a readiness event as mio reported it (trap 6: one for a
    /// connection closed earlier in this batch is skipped).
    fn trace_event(&self, key: usize, event: &mio::event::Event) {
        let Some(conn) = self.connections.get(key) else {
            let token = key + FIRST_CONNECTION;
            log::trace!("event for token {token}: no connection: skipped");
            return;
        };
        let flags = [
            (event.is_readable(), "readable"),
            (event.is_writable(), "writable"),
            (event.is_read_closed(), "read_closed"),
            (event.is_write_closed(), "write_closed"),
            (event.is_error(), "error"),
            (event.is_priority(), "priority"),
        ];
        let named: Vec<&str> =
            flags.iter().filter(|(on, _)| *on).map(|&(_, n)| n).collect();
        log::trace!("{} event: {}", conn.peer(), named.join(" "));
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if !self.policy.admits(peer) {
            return; // dropping the stream closes it at once
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let token = Token(key + FIRST_CONNECTION);
        // Both interests once, for the connection's life: a readiness
        // change then never costs an epoll_ctl on the hot path.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.policy.listener.registry();
        if let Err(e) = registry.register(&mut stream, token, interest) {
            return self.policy.not_taken(peer, e);
        }
        log::trace!(
            "{peer} accepted: token {}; state {}",
            token.0,
            net::tcp_state(stream.as_raw_fd())
        );
        entry.insert(Connection::new(stream, peer));
        self.policy.opened(key, peer);
    }

    /// Reads connection `key`'s PROXY header; once it is complete, the
    /// connection is admitted by the client's address and served.
    fn read_header(&mut self, key: usize) {
        let (Some(conn), Some(headers)) =
            (self.connections.get_mut(key), &mut self.policy.headers)
        else {
            return;
        };
        let got = header::read(headers, key, conn.stream_mut(), &mut self.buf);
        let mut peer = conn.peer();
        let first = match self.policy.header(key, got, &mut peer) {
            Verdict::Waiting => return,
            Verdict::Close(reason) => return self.close(key, reason),
            Verdict::Drop => {
                // Counted as rejected, as at accept: never served.
                if let Some(mut conn) = self.connections.try_remove(key) {
                    let registry = self.policy.listener.registry();
                    let _ = registry.deregister(conn.stream_mut());
                }
                self.policy.unserved(key);
                return self.policy.freed();
            }
            Verdict::Serve(first) => first,
        };
        conn.set_peer(peer);
        if !first.is_empty() {
            let n = first.len();
            self.buf.copy_within(first, 0);
            self.drive_with(key, |conn, io| conn.first_bytes(io, n));
        }
        // Trap 1: the header's reads took this edge; read what follows.
        self.drive(key, Ready::ANY);
    }

    /// Lets connection `key` do the IO `ready` allows, then acts on what
    /// it reports, in this one place.
    fn drive(&mut self, key: usize, ready: Ready) {
        // Trap 6: the token may belong to a connection closed earlier in
        // this batch. Its slot cannot hold a new connection yet (accepts
        // happen after the batch), so a vacant slot is the whole check;
        // a wake-up that finds nothing to do is harmless.
        let headers = self.policy.headers.as_ref();
        if headers.is_some_and(|h| h.waits(key)) {
            return self.read_header(key);
        }
        self.drive_with(key, |conn, io| conn.on_ready(io, ready));
    }

    /// Runs `handler` on connection `key` and acts on its [`Progress`].
    fn drive_with(
        &mut self,
        key: usize,
        handler: impl FnOnce(&mut Connection, &mut Io<'_>) -> Progress,
    ) {
        let Some(conn) = self.connections.get_mut(key) else { return };
        let held = conn.held();
        // Trace only: the phase, to tell a turn that did nothing.
        let phase =
            log::log_enabled!(log::Level::Trace).then(|| conn.phase_tag());
        let policy = &mut self.policy;
        let mut io = Io {
            buf: &mut self.buf,
            scratch: &mut policy.scratch,
            traffic: &mut policy.traffic,
            mode: policy.mode,
            limit: policy.log.as_mut().map(|l| l.limit(key, &policy.stats)),
            moved: false,
            allowance: policy.output.left(),
        };
        let progress = handler(conn, &mut io);
        let moved = io.moved;
        let idle = !moved && phase == Some(conn.phase_tag());
        if idle && matches!(progress, Progress::Waiting) {
            log::trace!(
                "{} nothing to read or write: a wake-up with nothing to do \
                 (spurious, harmless)",
                conn.peer()
            );
        }
        // The budget is kept here, in one place, from what the buffer
        // holds before and after; the allowance only bounds the growth.
        self.policy.output.held = self.policy.output.held - held + conn.held();
        if moved {
            self.policy.touch(key);
        }
        match progress {
            Progress::Waiting => {}
            Progress::More => self.again.push(key),
            Progress::Closed(reason) => self.close(key, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection cost docs/models.md quotes: an idle connection is
    /// one `Connection` of 48 bytes in the slab, no output buffer.
    #[test]
    fn an_idle_connection_is_a_small_slab_entry() {
        crate::policy::assert_slab_entry::<Connection>(48);
    }
}
