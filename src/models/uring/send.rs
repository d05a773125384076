//! Sending: a connection's output, one send in flight at a time, and
//! what follows once it is drained (close, resume, or lingering at a
//! stop).

use std::net::Shutdown;
use std::os::fd::AsRawFd;

use io_uring::opcode::{Send, SendMsg};
use io_uring::types::Fd;

use crate::stats::Reason;

use super::close::live;
use super::connection::{Next, Phase};
use super::ring::{self, Completion, Kind, Op};
use super::{trace, Loop};

impl Loop {
    /// Queues connection `key`'s next send, if one is due.
    pub(super) fn send(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        let Some(out) = &mut conn.out else { return };
        let Some(next) = out.next_send() else { return };
        let fd = Fd(conn.stream.as_raw_fd());
        // After a short send the socket's buffer is full: poll first.
        let ioprio = match conn.send_full && self.poll_first {
            true => ring::POLL_FIRST,
            false => 0,
        };
        // Trap 10: MSG_NOSIGNAL, so a dead peer is an EPIPE here.
        let send = match next {
            Next::Bytes(ptr, len) => {
                let send = Send::new(fd, ptr, len).flags(libc::MSG_NOSIGNAL);
                send.ioprio(ioprio).build()
            }
            // Trap C11: sent in place from the receive buffers, and never
            // left waiting for a client that does not read (it would hold
            // them out of the ring): MSG_DONTWAIT, a full socket fails
            // the send at once (EAGAIN) and what is left is copied.
            Next::Leased(msg) => {
                let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
                SendMsg::new(fd, msg).flags(flags as u32).build()
            }
        };
        let op = Op::new(Kind::Send, key, conn.gen);
        ring::push(&mut self.ring, send, op);
    }

    pub(super) fn on_send(&mut self, c: Completion) {
        let key = c.op.key as usize;
        let n = usize::try_from(c.result).unwrap_or(0);
        self.policy.traffic.bytes_out += n as u64;
        let Some(conn) = live(&mut self.connections, c.op) else { return };
        // A completed send frees the buffer a grown output retired under
        // it: the budget gets that back too, or it would count memory no
        // longer held (the heap trim waits for none held).
        let before = conn.held();
        // A send in place that found the socket full failed at once
        // (MSG_DONTWAIT): nothing was sent, what it held is copied.
        let leased = conn.out.as_ref().is_some_and(|out| out.sending_leases());
        let full = leased && c.result == -libc::EAGAIN;
        let pool = &mut self.pool;
        let drained = conn
            .out
            .as_mut()
            .is_some_and(|out| out.sent(n, |bid| pool.unpin(bid)));
        // (It grows when leases were copied.)
        self.policy.output.held =
            self.policy.output.held - before + conn.held();
        conn.send_full = !drained;
        if conn.phase == Phase::Closing {
            return self.free_if_done(key);
        }
        if full {
            if self.full_in_place == 0 {
                log::debug!(
                    "io_uring: a send in place found the socket full \
                     (EAGAIN, trap C11): its bytes were copied, its \
                     receive buffers given back"
                );
            }
            self.full_in_place += 1;
        }
        if let Some(e) = c.error().filter(|_| !full) {
            return self.close_for(key, Reason::from_io(e));
        }
        if !drained {
            // A short send: the rest goes next (trap 7's completion
            // form: nothing is lost, nothing is sent twice).
            log::trace!(
                "{} short send: {n} bytes, {} still to send: the rest goes \
                 next (trap 7)",
                conn.peer,
                conn.pending()
            );
            self.to_send.push(key);
            // Output shrank: a paused receive may take what now fits.
            if std::mem::take(&mut conn.paused) {
                self.to_arm.push(key);
            }
        } else {
            // The output buffer is freed once drained: idle connections
            // hold none.
            let held = conn.held();
            self.policy.output.held -= held;
            let kept = conn.out.take().is_some_and(|out| self.spare.keep(out));
            if !kept {
                self.freed += held;
            }
            if std::mem::take(&mut conn.paused) {
                self.to_arm.push(key);
            }
        }
        if n > 0 {
            self.policy.touch(key);
        }
        if drained {
            self.flushed(key);
        }
    }

    /// Connection `key` has no output left: what its phase does next.
    fn flushed(&mut self, key: usize) {
        match self.connections[key].phase {
            Phase::HalfClosed => self.close_for(key, Reason::Eof),
            Phase::Stopping => self.look_for_input(key),
            Phase::LingerAfterFlush => self.linger(key),
            _ => {}
        }
    }

    /// Trap 17 at a stop: with no output left, input the client sent and
    /// we never read would make `close()` send an RST; peek for it.
    pub(super) fn look_for_input(&mut self, key: usize) {
        let mut byte = [0u8; 1];
        match self.connections[key].stream.peek(&mut byte) {
            Ok(n) if n > 0 => self.linger(key),
            Err(e) if crate::net::interrupted(&e) => self.linger(key),
            _ => self.close_for(key, Reason::Shutdown),
        }
    }

    /// Lingering close: our FIN after the last byte, then discard input
    /// until the client's EOF or the end of the stop window.
    fn linger(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        conn.phase = Phase::Lingering;
        let _ = conn.stream.shutdown(Shutdown::Write);
        if trace::on() {
            self.trace_state(key, "shutdown(write): our FIN, lingering");
        }
        self.arm_recv(key);
    }
}
