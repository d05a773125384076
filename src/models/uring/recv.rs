//! Receiving: arming a connection's receive, and what its completions
//! bring (a PROXY header first, if one is due; then log, echo or
//! discard; EOF; an error).

use std::ops::Range;
use std::os::fd::AsRawFd;

use io_uring::opcode::{Recv, RecvMulti};
use io_uring::squeue::{self, Flags};
use io_uring::types::Fd;

use crate::config::Mode;
use crate::journal;
use crate::policy::header::cut_short;
use crate::policy::{Verdict, OUT_CAP, OVER_BUDGET_STEP};
use crate::stats::Reason;

use super::bufs;
use super::connection::{Connection, Phase, FIRST_OUT};
use super::ring::{self, Completion, Kind, Op};
use super::{close::live, trace, Loop};

impl Loop {
    /// Arms connection `key`'s receive, if it wants one: what it is
    /// expected to bring in one turn (twice its last read, as a stream's
    /// receive reads twice before its total ends it; at least 1 KiB, at
    /// most its room; 0 if none was armed).
    pub(super) fn arm_recv(&mut self, key: usize) -> usize {
        let Some(conn) = self.connections.get_mut(key) else { return 0 };
        let wants = matches!(
            conn.phase,
            Phase::Open
                | Phase::Stopping
                | Phase::LingerAfterFlush
                | Phase::Lingering
        );
        if conn.recv || conn.paused || !wants {
            return 0;
        }
        let fd = Fd(conn.stream.as_raw_fd());
        // The last receive left the socket empty: arm its poll first.
        let ioprio = match conn.socket_empty && self.poll_first {
            true => ring::POLL_FIRST,
            false => 0,
        };
        let mut most = (2 * usize::from(conn.last_read)).max(1024);
        let mut kind = Kind::Recv;
        let recv = match (self.policy.mode, conn.phase) {
            (Mode::Echo, Phase::Open) => {
                // Echo backpressure: what one arming may receive is at
                // most what the output may still hold.
                let room = echo_room(conn, self.policy.output.left());
                // A send in flight will free most of a full output: wait
                // for its completion rather than arm a receive of the
                // little room left now (a stream would read a few KiB a
                // turn and re-arm every turn). Sends are queued before
                // receives are armed, so the send of what this turn
                // brought counts.
                let sending = conn.sending() && room < OUT_CAP / 2;
                if room == 0 || (sending && self.defer_recv) {
                    conn.paused = true;
                    log::trace!(
                        "{} output full: receive not armed until it drains",
                        conn.peer
                    );
                    return 0;
                }
                let len = room.min(self.pool.size()) as u32;
                most = most.min(room);
                // A PROXY header still due is read without bundles: its
                // bytes stay in one buffer.
                let header = self.policy.headers.as_ref();
                let bundle =
                    self.bundle && !header.is_some_and(|h| h.waits(key));
                if self.echo_multishot && bundle {
                    // Trap C10: a bundled multishot receive bounded in
                    // total. A bundle's reads are cut to what is left of
                    // the total before they are made, so each may take
                    // the whole room (a stream reads 64 KiB at once, as
                    // the mio model does) and every byte still fits.
                    log::trace!(
                        "{} arm recv: multishot bundle, ended after {room} \
                         bytes (its output's room)",
                        conn.peer
                    );
                    kind = Kind::Bundle;
                    let recv = RecvMulti::new(fd, bufs::GROUP).len(len);
                    let recv =
                        with_ioprio(recv.build(), ioprio | ring::BUNDLE);
                    limited(recv, room as u32)
                } else if self.echo_multishot {
                    // A multishot receive bounded in total: the kernel
                    // ends it (a completion without F_MORE, trap C8)
                    // once `total` bytes came in. It checks the total
                    // after each read, so the last read may pass it by
                    // up to one read: reads of at most `per_read`, and
                    // `total - 1 + per_read == room`, keep every byte
                    // it may bring within the output's room. No
                    // receive is armed per message.
                    let per_read = room.div_ceil(2).min(self.pool.size());
                    let total = room - per_read + 1;
                    log::trace!(
                        "{} arm recv: multishot, ended after {total} \
                         bytes, reads of at most {per_read} (its output's \
                         room: {room})",
                        conn.peer
                    );
                    let recv = RecvMulti::new(fd, bufs::GROUP);
                    let recv = recv.len(per_read as u32).build();
                    let recv = with_ioprio(recv, ioprio);
                    limited(recv, total as u32)
                } else {
                    // Without the kernel's total limit (before 6.17) a
                    // multishot receive cannot be bounded so (one
                    // wake-up may post a completion for everything the
                    // socket holds, megabytes, before a cancel lands),
                    // so echo receives one completion at a time.
                    log::trace!(
                        "{} arm recv: one completion, at most {len} bytes \
                         (its output's room)",
                        conn.peer
                    );
                    Recv::new(fd, std::ptr::null_mut(), len)
                        .buf_group(bufs::GROUP)
                        .ioprio(ioprio)
                        .build()
                        .flags(Flags::BUFFER_SELECT)
                }
            }
            _ => {
                log::trace!("{} arm recv: multishot", conn.peer);
                with_ioprio(RecvMulti::new(fd, bufs::GROUP).build(), ioprio)
            }
        };
        conn.recv = true;
        let op = Op::new(kind, key, conn.gen);
        ring::push(&mut self.ring, recv, op);
        most
    }

    pub(super) fn on_recv(&mut self, c: Completion) {
        let key = c.op.key as usize;
        let bid = c.buffer();
        if live(&mut self.connections, c.op).is_some() {
            self.received(key, c, bid);
        }
        // Every buffer goes back, whoever it was for, once the kernel is
        // done with it (trap C7: not while it says F_BUF_MORE).
        if let Some(bid) = bid {
            let n = usize::try_from(c.result).unwrap_or(0);
            self.pool.done(bid, n, c.buffer_more());
        }
        self.free_if_done(key);
    }

    fn received(&mut self, key: usize, c: Completion, bid: Option<u16>) {
        let conn = &mut self.connections[key];
        // Trap C8: a receive completion without F_MORE was its last
        // (echo's total reached, ENOBUFS, a CQ overflow, EOF, an error):
        // it is armed again below unless the connection is ending.
        if !c.more() {
            conn.recv = false;
        }
        if conn.phase == Phase::Closing {
            return;
        }
        match c.result {
            n if n > 0 => {
                let n = n as usize;
                // Without SOCK_NONEMPTY the read took all there was: the
                // next receive armed polls first. With it, more waits, and
                // the next receive reads at once, without a poll.
                conn.socket_empty = !c.sock_nonempty();
                conn.last_read = u16::try_from(n).unwrap_or(u16::MAX);
                // The first receives feed a PROXY header, if one is due.
                let Some(skip) = self.header(key, bid, n) else { return };
                if skip < n {
                    self.take(key, bid, skip..n);
                }
            }
            0 => {
                if trace::on() {
                    self.trace_state(key, "EOF, the peer's FIN");
                }
                let conn = &mut self.connections[key];
                conn.phase = Phase::HalfClosed;
                let headers = self.policy.headers.as_ref();
                if headers.is_some_and(|h| h.waits(key)) {
                    return self.close_for(key, cut_short());
                }
                if conn.pending() == 0 {
                    self.close_for(key, Reason::Eof);
                }
                return;
            }
            _ => {
                let e = c
                    .error()
                    .unwrap_or_else(|| std::io::ErrorKind::Other.into());
                match e.raw_os_error() {
                    // Trap C3: the pool ran dry and ended this receive;
                    // arm it again once buffers are back (this turn's
                    // are published before the next submit).
                    Some(libc::ENOBUFS) => {
                        log::trace!(
                            "{} buffer ring empty (ENOBUFS, trap C3): \
                             receive armed again once buffers are back",
                            conn.peer
                        );
                        if self.dry == 0 {
                            log::debug!(
                                "io_uring: the receive buffer ring ran dry \
                                 (ENOBUFS, trap C3): receives are armed \
                                 again once buffers are back"
                            );
                        }
                        self.dry += 1;
                        self.pool.ran_dry();
                        // Data waits in the socket: read it at once.
                        self.connections[key].socket_empty = false;
                    }
                    // A kernel before 6.10 refuses a bundle (and one
                    // before 6.17 its limit): nothing was read; echo
                    // goes on without bundles (and, if that is refused
                    // too, below, one completion at a time).
                    Some(libc::EINVAL) if c.op.kind == Kind::Bundle => {
                        if std::mem::take(&mut self.bundle) {
                            log::debug!(
                                "io_uring: no bundled receive with a limit \
                                 (Linux 6.10 and 6.17): echo reads at most \
                                 half its room at once"
                            );
                        }
                    }
                    // A kernel before 6.17 refuses a multishot receive's
                    // limit (`optlen`) or per-read length: nothing was
                    // read; echo falls back to one completion at a time.
                    Some(libc::EINVAL)
                        if self.echo_multishot
                            && self.policy.mode == Mode::Echo =>
                    {
                        log::debug!(
                            "io_uring: no bounded multishot receive (Linux \
                             6.17): echo receives one completion at a time"
                        );
                        self.echo_multishot = false;
                    }
                    _ => {
                        if trace::on() {
                            self.trace_state(key, &format!("recv: {e}"));
                        }
                        return self.close_for(key, Reason::from_io(e));
                    }
                }
            }
        }
        if !self.connections[key].recv {
            self.to_arm.push(key);
        }
    }

    /// Feeds `n` received bytes of buffer `bid` to connection `key`'s
    /// PROXY header if one is due: how many of them were header (the
    /// rest is the client's stream), or `None` if the connection ended.
    fn header(
        &mut self,
        key: usize,
        bid: Option<u16>,
        n: usize,
    ) -> Option<usize> {
        let headers = self.policy.headers.as_mut().filter(|h| h.waits(key));
        let Some(headers) = headers else { return Some(0) };
        // Not bundled while a header is due: its bytes are one slice.
        let data = bid.and_then(|b| self.pool.data(b, n).next());
        let got = headers.feed(key, data.unwrap_or_default());
        let conn = &mut self.connections[key];
        match self.policy.header(key, got, &mut conn.peer) {
            Verdict::Waiting => Some(n),
            Verdict::Serve(first) => Some(first.start),
            Verdict::Close(reason) => {
                self.close_for(key, reason);
                None
            }
            Verdict::Drop => {
                self.policy.unserved(key);
                self.end(key);
                None
            }
        }
    }

    /// Logs, echoes or discards `range` of buffer `bid`, received for
    /// connection `key`.
    fn take(&mut self, key: usize, bid: Option<u16>, range: Range<usize>) {
        let conn = &mut self.connections[key];
        let n = range.end;
        self.policy.traffic.bytes_in += range.len() as u64;
        self.policy.touch(key);
        // The received bytes past `range.start` (a header's), in one
        // slice or, from a bundle, two (trap C10).
        let mut skip = range.start;
        let pieces = bid.into_iter().flat_map(|b| self.pool.pieces(b, n));
        let pieces = pieces.filter_map(move |(bid, piece)| {
            let cut = skip.min(piece.len());
            skip -= cut;
            piece.get(cut..).filter(|rest| !rest.is_empty()).map(|p| (bid, p))
        });
        let policy = &mut self.policy;
        match (conn.phase, policy.mode) {
            (Phase::Open, Mode::Log) => {
                let stats = &policy.stats;
                let log = policy.log.as_mut();
                if let Some(mut limit) = log.map(|l| l.limit(key, stats)) {
                    let scratch = &mut policy.scratch;
                    for (_, data) in pieces {
                        journal::chunk(conn.peer, data, scratch, &mut limit);
                    }
                }
            }
            (Phase::Open, Mode::Echo) => {
                let before = conn.held();
                let spare = &mut self.spare;
                // Trap C11: a read is sent in place from the receive
                // buffers while no copied bytes wait before it; the
                // buffers are pinned (out of the ring) until the send
                // completes.
                let in_place = range.len() >= self.in_place;
                // A first output of more than the small buffer takes a
                // drained buffer of the cap: a stream reuses its buffers
                // instead of growing (allocating and zeroing) each time.
                let out = conn.out.get_or_insert_with(|| {
                    let large = range.len() > FIRST_OUT && !in_place;
                    spare.take(large).unwrap_or_default()
                });
                // The first output of a turn queues one send; the
                // rest of the turn's joins it.
                if out.is_quiet() {
                    self.to_send.push(key);
                }
                let lease = in_place && out.leasable();
                let from = out.lease_count();
                for (bid, data) in pieces {
                    match lease {
                        true => out.lease(bid, data),
                        false => out.push(data),
                    }
                }
                for l in out.leases_from(from) {
                    self.pool.pin(l.bid);
                }
                policy.output.held = policy.output.held - before + conn.held();
            }
            // Trap 17: input left at the stop means lingering.
            (Phase::Stopping, _) => conn.phase = Phase::LingerAfterFlush,
            _ => {}
        }
    }
}

/// `entry` (a multishot receive) ended by the kernel once `total` bytes
/// came in: the SQE's `optlen` (Linux 6.17; before it, the receive
/// fails with `EINVAL`). io-uring 0.7's `RecvMulti` has no setter for
/// it.
fn limited(entry: squeue::Entry, total: u32) -> squeue::Entry {
    /// `optlen`'s offset in `struct io_uring_sqe`: a plain u32.
    const OPTLEN: usize = 44;
    patched(entry, |sqe| {
        sqe[OPTLEN..OPTLEN + 4].copy_from_slice(&total.to_ne_bytes());
    })
}

/// `entry` (a multishot receive) with `bits` added to its `ioprio`,
/// where the kernel reads `IORING_RECVSEND_POLL_FIRST` beside the
/// `IORING_RECV_MULTISHOT` that `RecvMulti` sets (it has no setter for
/// the rest).
fn with_ioprio(entry: squeue::Entry, bits: u16) -> squeue::Entry {
    /// `ioprio`'s offset in `struct io_uring_sqe`: a u16.
    const IOPRIO: usize = 2;
    patched(entry, |sqe| {
        let field = &mut sqe[IOPRIO..IOPRIO + 2];
        let old = u16::from_ne_bytes([field[0], field[1]]);
        field.copy_from_slice(&(old | bits).to_ne_bytes());
    })
}

/// `entry` with its bytes changed by `patch`.
fn patched(
    entry: squeue::Entry,
    patch: impl FnOnce(&mut [u8; 64]),
) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is `repr(C)` over the kernel's 64-byte
    // `io_uring_sqe` (the transmute checks the size), and `patch`
    // writes only plain integer fields.
    let mut sqe =
        unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(entry) };
    patch(&mut sqe);
    // SAFETY: the same bytes back; every bit pattern is a valid SQE.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(sqe) }
}

/// How much an echo receive of `conn` may take: what its output may
/// still hold within [`OUT_CAP`] and what is left of the budget (at
/// least a small step while nothing waits, as in the mio model).
fn echo_room(conn: &Connection, budget_left: usize) -> usize {
    let pending = conn.pending();
    let room = (OUT_CAP - pending.min(OUT_CAP)).min(budget_left);
    match pending {
        0 => room.max(OVER_BUDGET_STEP),
        _ => room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mio::net::TcpStream;

    use super::super::connection::OutBuf;

    /// Echo never receives more than the output can still hold.
    #[test]
    fn echo_room_stops_at_the_cap_and_the_budget() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client =
            std::net::TcpStream::connect(listener.local_addr().unwrap());
        let (s, peer) = listener.accept().unwrap();
        let mut conn = Connection::new(TcpStream::from_std(s), peer, 1);
        assert_eq!(echo_room(&conn, usize::MAX), OUT_CAP);
        assert_eq!(echo_room(&conn, 0), OVER_BUDGET_STEP);
        let mut out = Box::<OutBuf>::default();
        out.push(&vec![1; OUT_CAP]);
        conn.out = Some(out);
        assert_eq!(echo_room(&conn, usize::MAX), 0);
    }

    /// The patched fields land where the kernel reads them, and nothing
    /// else changes: `ioprio` keeps `RecvMulti`'s multishot bit beside
    /// POLL_FIRST, `optlen` holds the total.
    #[test]
    fn patches_write_only_their_fields() {
        let bytes = |e: squeue::Entry| {
            // SAFETY: as in `patched`.
            unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(e) }
        };
        let plain = || RecvMulti::new(Fd(7), bufs::GROUP).build();
        let before = bytes(plain());
        let after = bytes(limited(with_ioprio(plain(), ring::POLL_FIRST), 9));
        let multishot = 2; // IORING_RECV_MULTISHOT
        let ioprio = u16::from_ne_bytes([after[2], after[3]]);
        assert_eq!(ioprio, multishot | ring::POLL_FIRST);
        assert_eq!(after[44..48], 9u32.to_ne_bytes());
        let changed: Vec<usize> =
            (0..64).filter(|&i| before[i] != after[i]).collect();
        assert!(changed.iter().all(|i| [2, 3, 44, 45, 46, 47].contains(i)));
    }
}
