//! When a blocked `read` or `write` must return: the socket timeouts a
//! connection sets, and what is due when one fires (the idle timeout,
//! the end of the stop window, a look at the watch).
//!
//! Idle, as in every model (`policy::idle`), means nothing moved either
//! way for `--idle-timeout`: no byte read, none written, none the kernel
//! sent from what was written earlier. Two things keep a blocking
//! connection to it:
//!
//! - A slow reader's echo can sit in the kernel's send buffer (megabytes
//!   on loopback) and trickle out long after our last `write`, while we
//!   wait in `read`. Before closing a connection as idle, we ask the
//!   kernel when it last sent data (`net::since_data_sent`), as the
//!   event-driven models do, and count from then if that is later.
//! - `SO_SNDTIMEO` bounds a whole `write`, progress or not: a write that
//!   copied part of its chunk and then blocked returns that part only
//!   when the timeout fires, and we cannot tell when the last byte went.
//!   With an idle timeout, writes wait at most [`LOOK`], so that moment
//!   is never more than a [`LOOK`] old.
//!
//! A client that sends and never reads stops all of it once our `write`
//! blocks: it is closed as idle a timeout (and at most a [`LOOK`]) later.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::listener::{wake, STOP_WINDOW};
use crate::net;
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
/// The longest a `write` may block, with an idle timeout: how late a
/// write that blocked part-way reports the bytes it moved, and so the
/// most an idle close of a client that never reads comes late by.
const LOOK: Duration = Duration::from_millis(100);

/// The blocking call a socket timeout is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    Read,
    Write,
}

/// The socket timeouts in force, one per direction.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Armed {
    read: Option<Duration>,
    write: Option<Duration>,
}

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
                // The window counts from the stop signal's arrival, not
                // from this look: a SIGSTOP between the two must not
                // add a whole window.
                self.stop_by = match stop {
                    Stop::Now => Some(now),
                    _ => Some(wake::stop_began(now, false) + STOP_WINDOW),
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
        let idle = self.idle?;
        if now.duration_since(self.last) < idle {
            return None;
        }
        // Our calls moved nothing for a timeout; the kernel may have
        // sent what we wrote earlier since.
        let sent = net::since_data_sent(self.stream.as_raw_fd())
            .and_then(|ago| now.checked_sub(ago));
        if let Some(sent) = sent.filter(|&t| t > self.last) {
            self.last = sent;
        }
        (now.duration_since(self.last) >= idle).then_some(Reason::Idle)
    }

    /// Sets the timeout of the next `call` to the time left to the
    /// nearest thing that must interrupt it: the watch's slice, the idle
    /// deadline, the end of the stop window, and for a write with an
    /// idle timeout [`LOOK`]. Trap 15: a call interrupted by
    /// SIGSTOP/SIGCONT returns EINTR and is retried with what is left,
    /// not the full timeout again, so pulses of job control cannot keep
    /// a deadline from arriving. Only a timeout that moved by more than
    /// [`REARM_SLACK`] costs a syscall.
    pub(super) fn arm(&mut self, call: Call) -> io::Result<()> {
        let now = Instant::now();
        let left = |t: Instant| t.saturating_duration_since(now);
        let idle = self.idle.map(|idle| left(self.last + idle));
        let window = self.stop_by.map(left);
        let look = self.idle.filter(|_| call == Call::Write).map(|_| LOOK);
        let wanted = [self.watch.slice(), idle, window, look]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(MIN_TIMEOUT));
        let armed = match call {
            Call::Read => &mut self.armed.read,
            Call::Write => &mut self.armed.write,
        };
        let close_enough = match (wanted, *armed) {
            (Some(w), Some(a)) => {
                w.max(a).saturating_sub(w.min(a)) <= REARM_SLACK
            }
            (w, a) => w == a,
        };
        if !close_enough {
            match call {
                Call::Read => self.stream.set_read_timeout(wanted)?,
                Call::Write => self.stream.set_write_timeout(wanted)?,
            }
            *armed = wanted;
        }
        Ok(())
    }
}
