//! When a blocked `read` or `write` must return: the socket timeouts a
//! connection sets, and what is due when one fires (the idle timeout,
//! the end of the stop window, a look at the watch).
//!
//! Idle means nothing moved either way for `--idle-timeout`: no byte
//! read, none written, none delivered by the kernel from the send
//! buffer. `SO_RCVTIMEO` and `SO_SNDTIMEO` bound a whole call, progress
//! or not: a `write` whose timeout fires after some bytes went returns
//! those, and the next call is armed from then. A slow reader whose echo
//! waits in the kernel moves no byte through our calls at all, so while
//! output is in flight the timeout is at most [`LOOK`], and each time it
//! fires the kernel's count of delivered bytes says whether the client
//! took any. A client that sends and never reads stops all three once
//! the server's `write` blocks, and is closed as idle.

use std::io;
use std::time::{Duration, Instant};

use crate::listener::STOP_WINDOW;
use crate::stats::Reason;

use super::connection::Connection;
use super::delivery::delivery;
use super::Stop;

/// The shortest socket timeout std accepts is above zero.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// How far the socket timeout in force may be from the time left to the
/// nearest deadline before it is set again (a syscall): close enough that
/// a deadline is never missed by more, far enough that the steady state
/// sets nothing.
const REARM_SLACK: Duration = Duration::from_millis(5);
/// How often a connection whose output is in flight asks the kernel
/// what it delivered: the most an idle close can come late by.
const LOOK: Duration = Duration::from_millis(100);

impl Connection<'_> {
    /// Whether a stop was seen; asks the watch at most once a slice
    /// unless `force`d. Starts the stop window when a stop first is seen,
    /// and ends it when the watch says to stop now.
    pub(super) fn noticed_stop(&mut self, force: bool) -> bool {
        if self.stop == Stop::Now {
            return true;
        }
        let now = Instant::now();
        let ask = match self.watch.slice() {
            Some(slice) if force || now >= self.next_ask => {
                self.next_ask = now + slice;
                true
            }
            Some(_) => false,
            None => true,
        };
        if ask {
            let stop = self.watch.stopping();
            if stop > self.stop {
                self.stop_by = match stop {
                    Stop::Now => Some(now),
                    _ => Some(now + STOP_WINDOW),
                };
                self.stop = stop;
            }
        }
        self.stop_by.is_some()
    }

    /// After a timed-out call: the reason to close, if any is due.
    pub(super) fn expired(&mut self) -> Option<Reason> {
        let now = Instant::now();
        if self.noticed_stop(true) && self.stop_by.is_some_and(|t| now >= t) {
            return Some(Reason::Shutdown);
        }
        self.look(now);
        match self.idle {
            Some(idle) if now.duration_since(self.last) >= idle => {
                Some(Reason::Idle)
            }
            _ => None,
        }
    }

    /// Sets the socket's read and write timeouts to the time left to the
    /// nearest thing that must interrupt a blocking call: the watch's
    /// slice, the idle deadline, the end of the stop window, the next
    /// look at output in flight. Trap 15: a call interrupted by
    /// SIGSTOP/SIGCONT returns EINTR and is retried with what is left,
    /// not the full timeout again, so pulses of job control cannot keep
    /// a deadline from arriving. Only a timeout that moved by more than
    /// [`REARM_SLACK`] costs a syscall.
    pub(super) fn arm(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let left = |t: Instant| t.saturating_duration_since(now);
        let idle = self.idle.map(|idle| left(self.last + idle));
        let window = self.stop_by.map(left);
        let look = (self.idle.is_some() && self.in_flight).then_some(LOOK);
        let wanted = [self.watch.slice(), idle, window, look]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(MIN_TIMEOUT));
        let close_enough = match (wanted, self.armed) {
            (Some(w), Some(a)) => {
                w.max(a).saturating_sub(w.min(a)) <= REARM_SLACK
            }
            (w, a) => w == a,
        };
        if !close_enough {
            self.stream.set_read_timeout(wanted)?;
            self.stream.set_write_timeout(wanted)?;
            self.armed = wanted;
        }
        Ok(())
    }

    /// With output in flight and an idle timeout, asks the kernel what
    /// the client has taken since the last look: bytes it took moved,
    /// now (at most a [`LOOK`] late), whatever our own calls did.
    fn look(&mut self, now: Instant) {
        if !self.in_flight || self.idle.is_none() {
            return;
        }
        match delivery(self.stream) {
            Some(d) => {
                if self.acked != Some(d.acked) {
                    self.last = now;
                }
                self.acked = Some(d.acked);
                self.in_flight = d.in_flight;
            }
            // The kernel does not say: only our own calls count.
            None => self.in_flight = false,
        }
    }
}
