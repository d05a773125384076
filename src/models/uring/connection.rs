//! One client of the uring model: its socket, peer, generation, which
//! operations it has in flight, and output only while some waits.

use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::policy::OUT_CAP;

/// The first output buffer; a client that keeps not reading gets
/// [`OUT_CAP`] next, in one step.
pub(super) const FIRST_OUT: usize = 2 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Receiving and serving.
    Open,
    /// The client sent EOF: flush, then close as `eof`.
    HalfClosed,
    /// The server is stopping: flush, then look for unread input.
    Stopping,
    /// Input was left unread at the stop: flush, then linger (trap 17).
    LingerAfterFlush,
    /// Lingering: our FIN is sent; read and discard until the client's
    /// EOF or the end of the stop window.
    Lingering,
    /// Counted and logged as closed; the slot waits for the last
    /// completion of its operations (trap C1).
    Closing,
}

/// One client connection.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) gen: u32,
    pub(super) phase: Phase,
    /// A multishot receive is armed: its last completion (without
    /// `F_MORE`) has not arrived.
    pub(super) recv: bool,
    /// Receiving stopped for backpressure: output reached its cap or
    /// the budget. Armed again once the output has drained.
    pub(super) paused: bool,
    /// The last receive left the socket empty (its completion had no
    /// `IORING_CQE_F_SOCK_NONEMPTY`): the next one polls first.
    pub(super) socket_empty: bool,
    /// The last send was short (the socket's send buffer is full): the
    /// next one polls first.
    pub(super) send_full: bool,
    /// Bytes of the last receive completion (at most 65,535): what the
    /// next receive is expected to bring, for one turn's cap.
    pub(super) last_read: u16,
    /// Cancels in flight.
    pub(super) cancels: u8,
    pub(super) out: Option<Box<OutBuf>>,
}

impl Connection {
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        gen: u32,
    ) -> Connection {
        Connection {
            stream,
            peer,
            gen,
            phase: Phase::Open,
            recv: false,
            paused: false,
            socket_empty: false,
            send_full: false,
            last_read: 0,
            cancels: 0,
            out: None,
        }
    }

    /// A send is in flight.
    pub(super) fn sending(&self) -> bool {
        self.out.as_ref().is_some_and(|out| out.flight > 0)
    }

    /// Operations whose last completion has not arrived.
    pub(super) fn in_flight(&self) -> bool {
        self.recv || self.sending() || self.cancels > 0
    }

    /// Bytes of output waiting to go.
    pub(super) fn pending(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.pending())
    }

    /// Memory the output holds, for the output budget.
    pub(super) fn held(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.held())
    }
}

/// Output waiting for the socket: received bytes sent in place from
/// the receive buffers they arrived in (`leases`, echo), or a ring of
/// bytes, `len` of them from `head`; never both at once. The first
/// `flight` bytes are in a send the kernel holds.
///
/// The kernel reads a send's bytes when it issues it, which may be long
/// after the submission (a client that does not read). So the bytes of a
/// send in flight never move: new output wraps around in the ring instead
/// of compacting it, and growing it (from the first small buffer to
/// [`OUT_CAP`]) copies into a new ring and keeps the old one (`retired`)
/// until the send completes. A leased buffer stays out of the receive
/// ring until its bytes are sent (trap C11).
#[derive(Debug, Default)]
pub(super) struct OutBuf {
    ring: Box<[u8]>,
    head: usize,
    len: usize,
    flight: usize,
    retired: Option<Box<[u8]>>,
    /// Received bytes to send from the pool's buffers, in order.
    leases: Vec<Lease>,
    /// Their bytes.
    leased: usize,
    /// The send in flight is of leases (a `sendmsg` over `iov`).
    flight_leased: bool,
    /// The send of leases in flight: its message and vectors, which the
    /// kernel reads when it issues it, so they live here, boxed.
    msg: Option<Box<LeaseMsg>>,
}

/// A piece of a receive buffer to send in place.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    pub(super) bid: u16,
    ptr: *const u8,
    len: usize,
}

/// The `sendmsg` of a connection's leases: at most [`LeaseMsg::IOV`]
/// of them at once.
#[derive(Debug)]
pub(super) struct LeaseMsg {
    msg: libc::msghdr,
    iov: [libc::iovec; LeaseMsg::IOV],
}

impl LeaseMsg {
    const IOV: usize = 8;
}

/// The next send of an output.
pub(super) enum Next {
    /// Bytes of the ring: a pointer and a length.
    Bytes(*const u8, u32),
    /// Leases: a `sendmsg` over their pieces of the receive buffers.
    Leased(*const libc::msghdr),
}

impl OutBuf {
    /// Empties a drained buffer of the first size or of the cap for use
    /// by another connection, or `None` if it is neither (it grew past
    /// the cap) or a send still holds its bytes.
    pub(super) fn recycle(mut self: Box<Self>) -> Option<Box<Self>> {
        let sized = [0, FIRST_OUT, OUT_CAP].contains(&self.ring.len());
        let busy = self.flight > 0 || !self.leases.is_empty();
        if !sized || busy || self.retired.is_some() {
            return None;
        }
        self.head = 0;
        self.len = 0;
        Some(self)
    }

    /// The buffer grew to the cap: it holds [`OUT_CAP`] bytes.
    pub(super) fn is_large(&self) -> bool {
        self.ring.len() >= OUT_CAP
    }

    /// Appends `bytes`.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        let need = self.len + bytes.len();
        if need > self.ring.len() {
            self.grow(need);
        }
        let cap = self.ring.len();
        let at = (self.head + self.len) % cap;
        let first = bytes.len().min(cap - at);
        self.ring[at..at + first].copy_from_slice(&bytes[..first]);
        self.ring[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.len = need;
    }

    fn grow(&mut self, need: usize) {
        let cap = match need <= FIRST_OUT {
            true => FIRST_OUT,
            false => OUT_CAP.max(need),
        };
        let mut grown = vec![0; cap].into_boxed_slice();
        let (a, b) = self.segments();
        grown[..a.len()].copy_from_slice(a);
        grown[a.len()..a.len() + b.len()].copy_from_slice(b);
        let old = std::mem::replace(&mut self.ring, grown);
        if self.flight > 0 && self.retired.is_none() {
            self.retired = Some(old);
        }
        self.head = 0;
    }

    /// The pending bytes, in order, as at most two slices.
    fn segments(&self) -> (&[u8], &[u8]) {
        let cap = self.ring.len();
        let first = self.len.min(cap - self.head);
        let a = &self.ring[self.head..self.head + first];
        (a, &self.ring[..self.len - first])
    }

    /// Nothing is in flight or waiting.
    pub(super) fn is_quiet(&self) -> bool {
        self.flight == 0 && self.len == 0 && self.leases.is_empty()
    }

    /// Bytes waiting, in flight included.
    pub(super) fn pending(&self) -> usize {
        self.len + self.leased
    }

    /// New output may be sent in place: no bytes wait in the ring, so
    /// leases keep the order.
    pub(super) fn leasable(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes` of receive buffer `bid` to be sent in place; the
    /// caller pins the buffer ([`OutBuf::leases_from`]).
    pub(super) fn lease(&mut self, bid: u16, bytes: &[u8]) {
        let ptr = bytes.as_ptr();
        self.leases.push(Lease { bid, ptr, len: bytes.len() });
        self.leased += bytes.len();
    }

    /// The leases from the `from`th on.
    pub(super) fn leases_from(&self, from: usize) -> &[Lease] {
        self.leases.get(from..).unwrap_or_default()
    }

    /// How many leases wait.
    pub(super) fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Every lease, taken (their buffers to unpin): for a connection
    /// freed with output left.
    pub(super) fn take_leases(&mut self) -> Vec<Lease> {
        self.leased = 0;
        std::mem::take(&mut self.leases)
    }

    /// The next send, if none is in flight and output waits: valid
    /// until [`OutBuf::sent`].
    pub(super) fn next_send(&mut self) -> Option<Next> {
        if self.flight > 0 {
            return None;
        }
        if !self.leases.is_empty() {
            let msg = self.msg.get_or_insert_with(|| {
                // SAFETY: an all-zero msghdr and iovec are valid (null
                // pointers, zero lengths).
                Box::new(unsafe { std::mem::zeroed() })
            });
            let mut n = 0;
            for (iov, lease) in msg.iov.iter_mut().zip(&self.leases) {
                iov.iov_base = lease.ptr.cast_mut().cast();
                iov.iov_len = lease.len;
                n += 1;
            }
            msg.msg.msg_iov = msg.iov.as_mut_ptr();
            msg.msg.msg_iovlen = n;
            self.flight = self.leases[..n].iter().map(|l| l.len).sum();
            self.flight_leased = true;
            return Some(Next::Leased(&msg.msg));
        }
        if self.len == 0 {
            return None;
        }
        let (a, _) = self.segments();
        let len = u32::try_from(a.len()).unwrap_or(u32::MAX);
        let ptr = a.as_ptr();
        self.flight = len as usize;
        Some(Next::Bytes(ptr, len))
    }

    /// The send in flight is of leases.
    pub(super) fn sending_leases(&self) -> bool {
        self.flight > 0 && self.flight_leased
    }

    /// The send in flight completed with `n` bytes taken; true when
    /// nothing is left to send. Leases fully sent are handed to `unpin`;
    /// after a short send of leases (a client that reads slowly) the rest
    /// is copied into the ring and unpinned too, so that a slow client
    /// holds no receive buffer (trap C11).
    pub(super) fn sent(
        &mut self,
        n: usize,
        mut unpin: impl FnMut(u16),
    ) -> bool {
        let flight = std::mem::take(&mut self.flight);
        let mut n = n.min(flight);
        if std::mem::take(&mut self.flight_leased) {
            let short = n < flight;
            let mut done = 0;
            for lease in &mut self.leases {
                let k = n.min(lease.len);
                n -= k;
                self.leased -= k;
                // SAFETY: still within the lease's piece of its buffer.
                lease.ptr = unsafe { lease.ptr.add(k) };
                lease.len -= k;
                if lease.len > 0 {
                    break;
                }
                unpin(lease.bid);
                done += 1;
            }
            self.leases.drain(..done);
            if short {
                self.own_leases(&mut unpin);
            }
            return self.len == 0 && self.leases.is_empty();
        }
        self.head = (self.head + n) % self.ring.len().max(1);
        self.len -= n;
        self.retired = None;
        self.len == 0
    }

    /// Copies what the leases hold into the ring, in order, and unpins
    /// them.
    fn own_leases(&mut self, unpin: &mut impl FnMut(u16)) {
        for lease in std::mem::take(&mut self.leases) {
            // SAFETY: a lease's piece of its buffer, pinned until now.
            let bytes =
                unsafe { std::slice::from_raw_parts(lease.ptr, lease.len) };
            self.push(bytes);
            unpin(lease.bid);
        }
        self.leased = 0;
    }

    fn held(&self) -> usize {
        std::mem::size_of::<OutBuf>()
            + self.ring.len()
            + self.retired.as_ref().map_or(0, |r| r.len())
    }
}

/// Drained output buffers kept for the next output: an echo needs its
/// bytes until its send completes, and reusing buffers saves an
/// allocation per message and the heap's fragmentation (RSS that did
/// not come back after a burst of clients). Buffers of the first size
/// serve small messages, at most [`Spare::SMALL`] of them (512 KiB);
/// buffers of the cap serve streams, at most [`Spare::LARGE`] (1 MiB),
/// which would otherwise grow a buffer (allocate and zero 64 KiB, and
/// fault its pages in again after a heap trim) for every read.
#[derive(Debug, Default)]
// Boxed as a connection holds them: reuse moves a pointer.
#[allow(clippy::vec_box)]
pub(super) struct Spare {
    small: Vec<Box<OutBuf>>,
    large: Vec<Box<OutBuf>>,
}

impl Spare {
    const SMALL: usize = 256;
    const LARGE: usize = 16;

    /// A kept buffer, of the cap if `large`, else of the first size.
    pub(super) fn take(&mut self, large: bool) -> Option<Box<OutBuf>> {
        match large {
            true => self.large.pop().or_else(|| self.small.pop()),
            false => self.small.pop(),
        }
    }

    /// Keeps a drained buffer if it is of a kept size and there is room;
    /// false if it was dropped (freed).
    pub(super) fn keep(&mut self, out: Box<OutBuf>) -> bool {
        let Some(out) = out.recycle() else { return false };
        let (list, most) = match out.is_large() {
            true => (&mut self.large, Spare::LARGE),
            false => (&mut self.small, Spare::SMALL),
        };
        let room = list.len() < most;
        if room {
            list.push(out);
        }
        room
    }
}

#[cfg(test)]
mod tests;
