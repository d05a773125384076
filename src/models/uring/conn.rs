//! One client of the uring model: its socket, peer, generation, which
//! operations it has in flight, and output only while some waits.

use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::OUT_CAP;

/// The first output buffer; a client that keeps not reading gets
/// [`OUT_CAP`] next, in one step.
const FIRST_OUT: usize = 2 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Receiving and serving.
    Open,
    /// The client sent EOF: flush, then close as `eof`.
    HalfClosed,
    /// The server is stopping: flush, then look for unread input.
    Stopping,
    /// Input was left unread at the stop: flush, then send our FIN.
    Lingering,
    /// Our FIN is sent: discard input until the client's EOF.
    Draining,
    /// Counted and logged as closed; the slot waits for the last
    /// completion of its operations (trap C1).
    Closing,
}

/// One client connection.
#[derive(Debug)]
pub(super) struct Conn {
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
    /// Cancels in flight.
    pub(super) cancels: u8,
    pub(super) out: Option<Box<OutBuf>>,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, gen: u32) -> Conn {
        Conn {
            stream,
            peer,
            gen,
            phase: Phase::Open,
            recv: false,
            paused: false,
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
        self.out.as_ref().map_or(0, |out| out.data.len() - out.sent)
    }

    /// Memory the output holds, for the output budget.
    pub(super) fn held(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.held())
    }
}

/// Output waiting for the socket; `data[sent..]` is unsent and the
/// first `flight` bytes of it are in a send the kernel holds.
///
/// The kernel reads a send's bytes when it issues it, which may be
/// later than the submission (when the socket is full, it waits for
/// room). So the bytes of a send in flight never move: growing the
/// buffer then copies into a new one and keeps the old (`retired`)
/// until the send completes.
#[derive(Debug, Default)]
pub(super) struct OutBuf {
    data: Vec<u8>,
    sent: usize,
    flight: usize,
    retired: Option<Vec<u8>>,
}

impl OutBuf {
    /// Appends `bytes`.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        let in_data = self.flight > 0 && self.retired.is_none();
        if !in_data && self.sent > 0 {
            self.data.drain(..self.sent);
            self.sent = 0;
        }
        let need = self.data.len() + bytes.len();
        if need > self.data.capacity() {
            let wanted = match need <= FIRST_OUT {
                true => FIRST_OUT,
                false => OUT_CAP.max(need),
            };
            if in_data {
                let mut grown = Vec::with_capacity(wanted);
                grown.extend_from_slice(&self.data);
                self.retired = Some(std::mem::replace(&mut self.data, grown));
            } else {
                self.data.reserve_exact(wanted - self.data.len());
            }
        }
        self.data.extend_from_slice(bytes);
    }

    /// Nothing is in flight or waiting.
    pub(super) fn is_quiet(&self) -> bool {
        self.flight == 0 && self.sent == self.data.len()
    }

    /// The next send, if none is in flight and output waits: a pointer
    /// and a length that stay valid until [`OutBuf::sent`].
    pub(super) fn next_send(&mut self) -> Option<(*const u8, u32)> {
        let pending = self.data.len() - self.sent;
        if self.flight > 0 || pending == 0 {
            return None;
        }
        let len = u32::try_from(pending).unwrap_or(u32::MAX);
        self.flight = len as usize;
        Some((self.data[self.sent..].as_ptr(), len))
    }

    /// The send in flight completed with `n` bytes taken; true when
    /// nothing is left to send.
    pub(super) fn sent(&mut self, n: usize) -> bool {
        self.sent += n.min(self.flight);
        self.flight = 0;
        self.retired = None;
        self.sent == self.data.len()
    }

    fn held(&self) -> usize {
        std::mem::size_of::<OutBuf>()
            + self.data.capacity()
            + self.retired.as_ref().map_or(0, Vec::capacity)
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
}
