//! Closing a uring connection: counted by the policy at once, its slot
//! freed only once the kernel holds no operation of it (trap C1).

use std::os::fd::AsRawFd;

use io_uring::opcode::AsyncCancel2;
use io_uring::types::{CancelBuilder, Fd};
use slab::Slab;

use crate::stats::Reason;

use super::connection::{Connection, Phase};
use super::ring::{self, Completion, Kind, Op};
use super::{trace, Loop};

impl Loop {
    /// Counts and logs connection `key` as closed, then ends it.
    pub(super) fn close_for(&mut self, key: usize, reason: Reason) {
        let Some(conn) = self.connections.get(key) else { return };
        if conn.phase == Phase::Closing {
            return;
        }
        if trace::on() {
            let ops = conn.in_flight();
            let what = match ops {
                true => "operations in flight cancelled first (trap C1)",
                false => "nothing in flight",
            };
            self.trace_state(key, &format!("close ({reason}): {what}"));
        }
        let conn = &self.connections[key];
        self.policy.closing(key, conn.peer, reason);
        self.end(key);
    }

    /// Ends connection `key`, counted already: frees its slot, or, trap
    /// C1, cancels its operations first: `close()` would not end them,
    /// and the kernel could still write into a receive buffer or read a
    /// send's bytes. The slot is freed on the last completion.
    pub(super) fn end(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else { return };
        conn.phase = Phase::Closing;
        if conn.in_flight() {
            conn.cancels += 1;
            let fd = Fd(conn.stream.as_raw_fd());
            let cancel = AsyncCancel2::new(CancelBuilder::fd(fd).all());
            let op = Op::new(Kind::Cancel, key, conn.gen);
            ring::push(&mut self.ring, cancel.build(), op);
        }
        self.free_if_done(key);
    }

    pub(super) fn on_cancel(&mut self, c: Completion) {
        if let Some(conn) = live(&mut self.connections, c.op) {
            conn.cancels = conn.cancels.saturating_sub(1);
        }
        self.free_if_done(c.op.key as usize);
    }

    /// Frees slot `key` once its connection is closed and its last
    /// operation has completed (trap C1); closes the socket.
    pub(super) fn free_if_done(&mut self, key: usize) {
        let done = self.connections.get(key).is_some_and(|conn| {
            conn.phase == Phase::Closing && !conn.in_flight()
        });
        if done {
            let mut conn = self.connections.remove(key);
            // Output left unsent: its receive buffers go back.
            if let Some(out) = conn.out.as_mut() {
                for lease in out.take_leases() {
                    self.pool.unpin(lease.bid);
                }
            }
            log::trace!(
                "{} last operation completed: slot {key} freed, socket closed",
                conn.peer
            );
            self.policy.output.held -= conn.held();
            self.freed += conn.held();
            drop(conn);
            self.policy.freed();
        }
    }
}

/// Trap C2: the connection an operation belongs to, if its slot still
/// holds the connection that issued it.
pub(super) fn live(
    connections: &mut Slab<Connection>,
    op: Op,
) -> Option<&mut Connection> {
    let conn = connections.get_mut(op.key as usize)?;
    (Op::new(op.kind, 0, conn.gen).gen == op.gen).then_some(conn)
}
