//! When a blocked `read` or `write` must return: the socket timeouts a
//! connection sets, and what is due when one fires (the idle timeout,
//! the end of the stop window, a look at the watch).

use std::io;
use std::time::{Duration, Instant};

use crate::listener::STOP_WINDOW;
use crate::stats::Reason;

use super::connection::Connection;
use super::Stop;

/// The shortest socket timeout std accepts is above zero.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// How far the socket timeout in force may be from the time left to the
/// nearest deadline before it is set again (a syscall): close enough that
/// a deadline is never missed by more, far enough that the steady state
/// sets nothing.
const REARM_SLACK: Duration = Duration::from_millis(5);

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
        match self.idle {
            Some(idle) if now.duration_since(self.last) >= idle => {
                Some(Reason::Idle)
            }
            _ => None,
        }
    }

    /// Sets the socket's read and write timeouts to the time left to the
    /// nearest thing that must interrupt a blocking call: the watch's
    /// slice, the idle deadline, the end of the stop window. Trap 15: a
    /// call interrupted by SIGSTOP/SIGCONT returns EINTR and is retried
    /// with what is left, not the full timeout again, so pulses of job
    /// control cannot keep a deadline from arriving. Only a timeout that
    /// moved by more than [`REARM_SLACK`] costs a syscall.
    pub(super) fn arm(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let left = |t: Instant| t.saturating_duration_since(now);
        let idle = self.idle.map(|idle| left(self.last + idle));
        let window = self.stop_by.map(left);
        let wanted = [self.watch.slice(), idle, window]
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
}
