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

/// Output waiting for the socket: a ring of bytes, `len` of them from
/// `head`, the first `flight` of which are in a send the kernel holds.
///
/// The kernel reads a send's bytes when it issues it, which may be long
/// after the submission (a client that does not read). So the bytes of a
/// send in flight never move: new output wraps around in the ring instead
/// of compacting it, and growing it (from the first small buffer to
/// [`OUT_CAP`]) copies into a new ring and keeps the old one (`retired`)
/// until the send completes.
#[derive(Debug, Default)]
pub(super) struct OutBuf {
    ring: Box<[u8]>,
    head: usize,
    len: usize,
    flight: usize,
    retired: Option<Box<[u8]>>,
}

impl OutBuf {
    /// Empties a drained buffer of the first size or of the cap for use
    /// by another connection, or `None` if it is neither (it grew past
    /// the cap) or a send still holds its bytes.
    pub(super) fn recycle(mut self: Box<Self>) -> Option<Box<Self>> {
        let sized = self.ring.len() == FIRST_OUT || self.ring.len() == OUT_CAP;
        if !sized || self.flight > 0 || self.retired.is_some() {
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
        self.flight == 0 && self.len == 0
    }

    /// Bytes waiting, in flight included.
    pub(super) fn pending(&self) -> usize {
        self.len
    }

    /// The next send, if none is in flight and output waits: a pointer
    /// and a length that stay valid until [`OutBuf::sent`].
    pub(super) fn next_send(&mut self) -> Option<(*const u8, u32)> {
        if self.flight > 0 || self.len == 0 {
            return None;
        }
        let (a, _) = self.segments();
        let len = u32::try_from(a.len()).unwrap_or(u32::MAX);
        let ptr = a.as_ptr();
        self.flight = len as usize;
        Some((ptr, len))
    }

    /// The send in flight completed with `n` bytes taken; true when
    /// nothing is left to send.
    pub(super) fn sent(&mut self, n: usize) -> bool {
        let n = n.min(self.flight);
        self.head = (self.head + n) % self.ring.len().max(1);
        self.len -= n;
        self.flight = 0;
        self.retired = None;
        self.len == 0
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
mod tests {
    use super::*;

    /// Trap C1's cousin for sends: growing the buffer while a send is in
    /// flight keeps the bytes the kernel may still read where they were.
    #[test]
    fn bytes_in_flight_never_move() {
        let mut out = OutBuf::default();
        out.push(b"hello");
        let (ptr, len) = out.next_send().unwrap();
        assert_eq!(len, 5);
        out.push(&[7; 8 * 1024]); // grows past FIRST_OUT
                                  // SAFETY: the retired buffer still holds the five bytes.
        let flying = unsafe { std::slice::from_raw_parts(ptr, 5) };
        assert_eq!(flying, b"hello");
        assert!(out.next_send().is_none(), "one send at a time");
        assert!(!out.sent(3));
        let (_, rest) = out.next_send().unwrap();
        assert_eq!(rest as usize, 2 + 8 * 1024);
        assert!(out.sent(rest as usize));
    }

    /// Output wraps around the ring: bytes come out in the order they
    /// went in, across the end, in at most two sends.
    #[test]
    fn output_wraps_in_order() {
        let mut out = OutBuf::default();
        let first: Vec<u8> = (0..FIRST_OUT).map(|i| i as u8).collect();
        out.push(&first[..FIRST_OUT - 10]);
        let (_, n) = out.next_send().unwrap();
        out.sent(n as usize - 5); // 5 left, near the end
        out.push(&first[..20]); // wraps
        let mut got = Vec::new();
        while let Some((ptr, n)) = out.next_send() {
            // SAFETY: valid until `sent`.
            got.extend_from_slice(unsafe {
                std::slice::from_raw_parts(ptr, n as usize)
            });
            out.sent(n as usize);
        }
        let mut want = first[FIRST_OUT - 15..FIRST_OUT - 10].to_vec();
        want.extend_from_slice(&first[..20]);
        assert_eq!(got, want);
        assert_eq!(out.ring.len(), FIRST_OUT, "no growth was needed");
    }
}
