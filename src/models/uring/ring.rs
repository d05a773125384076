//! The ring: its set-up (and why it may be unavailable), what a
//! completion's `user_data` says, queueing a submission, and the one
//! wait of a turn.

use std::io;
use std::time::Instant;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, squeue, IoUring};

use crate::error::Error;

/// Submission queue entries: a turn's sends and re-arms; a full queue is
/// submitted early, never lost.
const SQ_ENTRIES: u32 = 4096;
/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19): a receive or send on a
/// socket known to be empty (or full) arms the socket's poll at once
/// instead of trying the IO first and failing with EAGAIN.
pub(super) const POLL_FIRST: u16 = 1;
/// `IORING_RECVSEND_BUNDLE` (Linux 6.10): one receive completion may
/// fill more than one provided buffer; with a total limit (6.17) the
/// kernel never reads past what is left of it (trap C10).
pub(super) const BUNDLE: u16 = 1 << 4;

/// What an operation was, in the top byte of its `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The multishot accept of client listener `key`.
    Accept,
    /// The multishot poll on the listener layer's epoll (waker, signals).
    Control,
    /// A connection's multishot receive.
    Recv,
    /// A connection's send.
    Send,
    /// The cancel of every operation of a connection that is closing.
    Cancel,
    /// A connection's bundled multishot receive (echo; trap C10): a
    /// refusal of it (`EINVAL`) turns bundles off, not receiving.
    Bundle,
}

/// An operation's identity, carried in `user_data`: its kind, the slab
/// key it belongs to and that connection's generation.
///
/// Trap C2: a slab key (and a descriptor number) is reused once its
/// connection is gone; the generation tells an old operation's completion
/// from one of the connection that now holds the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Op {
    pub(super) kind: Kind,
    pub(super) key: u32,
    /// 24 bits are kept: a stale completion would have to outlive 16
    /// million connections on the same key to be mistaken.
    pub(super) gen: u32,
}

const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

impl Op {
    pub(super) fn new(kind: Kind, key: usize, gen: u32) -> Op {
        Op { kind, key: key as u32, gen: gen & GEN_MASK }
    }

    pub(super) fn encode(self) -> u64 {
        let kind = self.kind as u64;
        kind << 56 | u64::from(self.gen) << 32 | u64::from(self.key)
    }

    pub(super) fn decode(data: u64) -> Option<Op> {
        let kind = match data >> 56 {
            0 => Kind::Accept,
            1 => Kind::Control,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Cancel,
            5 => Kind::Bundle,
            _ => return None,
        };
        let gen = (data >> 32) as u32 & GEN_MASK;
        Some(Op { kind, key: data as u32, gen })
    }
}

/// The one completion of an operation: its result and flags.
#[derive(Clone, Copy, Debug)]
pub(super) struct Completion {
    pub(super) op: Op,
    pub(super) result: i32,
    pub(super) flags: u32,
}

impl Completion {
    /// A multishot operation stays armed (`IORING_CQE_F_MORE`); without
    /// it, this was its last completion and it must be armed again.
    pub(super) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// A receive left data in the socket (`IORING_CQE_F_SOCK_NONEMPTY`).
    pub(super) fn sock_nonempty(&self) -> bool {
        cqueue::sock_nonempty(self.flags)
    }

    /// The provided buffer a receive filled, if any.
    pub(super) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// Incremental buffers: the kernel keeps filling this completion's
    /// buffer (`IORING_CQE_F_BUF_MORE`), so it is not given back yet
    /// (trap C7).
    pub(super) fn buffer_more(&self) -> bool {
        cqueue::buffer_more(self.flags)
    }

    /// The error, for a negative result.
    pub(super) fn error(&self) -> Option<io::Error> {
        (self.result < 0).then(|| io::Error::from_raw_os_error(-self.result))
    }
}

/// Creates the ring: one issuer, task work deferred to our own waits, a
/// completion queue of `cq_entries`.
///
/// `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1): completion work runs only
/// when this thread enters the ring (trap C6), in batches, instead of
/// interrupting it; the price is that nothing completes between waits.
/// SQPOLL is left out (a kernel thread polling the queue burns a core to
/// save the one `io_uring_enter` a turn already amortises).
pub(super) fn create(cq_entries: u32) -> Result<IoUring, Error> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq_entries)
        .setup_clamp()
        .build(SQ_ENTRIES)
        .map_err(|e| unavailable("io_uring_setup", &e))
}

/// The error a missing kernel feature gives: `error: io_uring
/// unavailable: WHAT: REASON`, exit 1.
pub(super) fn unavailable(what: &str, e: &io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            " (no io_uring in this kernel, or a seccomp \
                               profile blocks it)"
        }
        Some(libc::EPERM) => {
            " (kernel.io_uring_disabled, or a seccomp \
                              profile)"
        }
        Some(libc::EINVAL) => " (a kernel before 6.1)",
        _ => "",
    };
    Error::UringUnavailable { reason: format!("{what}: {e}{hint}") }
}

/// Queues `entry` with `op` as its `user_data`; a full submission queue
/// is submitted first.
pub(super) fn push(ring: &mut IoUring, entry: squeue::Entry, op: Op) {
    let entry = entry.user_data(op.encode());
    loop {
        // SAFETY: every buffer an entry points at outlives its operation:
        // connection output stays allocated and unmoved until the send's
        // completion (`conn::OutBuf`), the provided buffers until the
        // ring is dropped, and the other operations carry no pointer.
        let pushed = unsafe { ring.submission().push(&entry) };
        match pushed {
            Ok(()) => return,
            Err(_) => {
                if let Err(e) = ring.submit() {
                    log::warn!("io_uring submit: {e}");
                    if !crate::net::interrupted(&e) && !busy(&e) {
                        return;
                    }
                }
            }
        }
    }
}

/// The completion queue is full (trap C5): reap, then submit.
fn busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBUSY)
}

/// Submits what is queued and waits for at least one completion or the
/// `deadline`. Trap 9: an interrupted wait (a signal) returns, and the
/// caller recomputes its deadline (trap 15) on the next turn.
pub(super) fn submit_and_wait(
    ring: &mut IoUring,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let result = match deadline {
        None => ring.submit_and_wait(1),
        Some(t) => {
            let left = t.saturating_duration_since(Instant::now());
            let ts = Timespec::from(left);
            let args = SubmitArgs::new().timespec(&ts);
            ring.submitter().submit_with_args(1, &args)
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) if crate::net::interrupted(&e) || busy(&e) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
        Err(e) => Err(Error::setup("wait on the ring")(e)),
    }
}

/// Every completion waiting in the queue, in order.
pub(super) fn reap(ring: &mut IoUring, into: &mut Vec<Completion>) {
    into.clear();
    for cqe in ring.completion() {
        if let Some(op) = Op::decode(cqe.user_data()) {
            let (result, flags) = (cqe.result(), cqe.flags());
            into.push(Completion { op, result, flags });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_wraps_the_generation() {
        let op = Op::new(Kind::Send, 123_456, (1 << 24) + 7);
        assert_eq!(op.gen, 7);
        assert_eq!(Op::decode(op.encode()), Some(op));
        let accept = Op::new(Kind::Accept, 3, 0);
        assert_eq!(Op::decode(accept.encode()), Some(accept));
        assert_eq!(Op::decode(u64::MAX), None);
    }
}
