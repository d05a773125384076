//! The stop sequence, the same in every event-driven model: a stop
//! (a signal, a [`Handle`](crate::Handle), another worker, the end of a
//! `--drain`) closes the listeners and winds every connection down
//! (flush, then close or linger) for at most the stop window; a second
//! stop, or the window's end, closes what is left as `shutdown`.

use std::time::Instant;

use crate::listener::{wake, STOP_WINDOW};
use crate::stats::Reason;

use super::{Method, Policy};

impl Policy {
    /// Begins the stop at `now`, once: true if it began now. Accepting
    /// ends, idle timeouts no longer apply.
    fn begin_stop(&mut self, now: Instant) -> bool {
        if self.stopping.is_some() {
            return false;
        }
        let drained = !self.listener.group().drain().is_zero();
        self.stopping = Some(wake::stop_began(now, drained) + STOP_WINDOW);
        self.listener.stop_listening();
        self.idle = None;
        log::info!("stopping: {} connections open", self.open);
        true
    }

    /// When the stop window ends, if a stop began.
    pub(crate) fn window_end(&self) -> Option<Instant> {
        self.stopping
    }
}

/// Acts on what the waker and the signals asked during the turn.
pub(super) fn act<M: Method>(method: &mut M, now: Instant) {
    let asked = std::mem::take(&mut method.policy().asked);
    if asked.stop && method.policy().begin_stop(now) {
        for key in method.keys() {
            let policy = method.policy();
            // A header still arriving: nothing was served to flush.
            match policy.headers.as_ref().is_some_and(|h| h.waits(key)) {
                true => method.close(key, Reason::Shutdown),
                false => method.wind_down(key),
            }
        }
    }
    if asked.now {
        // The stop window ends now: `finished` closes the rest.
        method.policy().stopping = Some(now);
    }
}

/// True once the stop is complete: every connection closed, or the stop
/// window is over and the rest are closed now.
pub(super) fn finished<M: Method>(method: &mut M, now: Instant) -> bool {
    let Some(end) = method.policy().stopping else { return false };
    if now >= end {
        for key in method.keys() {
            method.close(key, Reason::Shutdown);
        }
    }
    method.done(now)
}
