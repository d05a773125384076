//! The duties of every turn: the `stats` line, systemd's READY, STATUS
//! and WATCHDOG, the workers' heartbeats, and following the group's
//! stop (and its `--drain`).

use std::sync::Arc;
use std::time::Instant;

use crate::stats::{Stats, Summary, Traffic};

use super::{Listener, Seen};

impl Listener {
    /// Tells the service manager the server is ready: every listener is
    /// registered and the loop is about to run.
    pub(crate) fn ready(&mut self) {
        self.service.ready();
    }

    /// The periodic duties of the loop (call once per turn, with the
    /// counters as they are now, made only when needed): the `stats`
    /// line when SIGUSR1 or `--stats-interval` asks for it, the
    /// watchdog and the status for the service manager.
    pub(crate) fn service(
        &mut self,
        now: Instant,
        counters: impl FnOnce() -> (Summary, usize),
    ) {
        self.follow_stop(now);
        let group = &self.group;
        if self.service.watched() && group.workers() > 1 {
            group.beat(self.worker, now);
        }
        let by_worker = || match group.workers() {
            1 => Vec::new(),
            _ => group.accepted_by_worker(),
        };
        // A worker stuck for a whole watchdog interval (twice the ping
        // interval) stops the pings: systemd then restarts the service.
        let limit = self.service.watchdog_every().unwrap_or_default() * 2;
        let healthy = || match group.workers() {
            1 => Ok(()),
            _ => group.stalled(now, limit),
        };
        self.service.run(now, counters, by_worker, healthy);
    }

    /// The end of a loop model's turn (mio, uring): adds the turn's
    /// bytes to this worker's counters (an atomic add per counter per
    /// turn, not per read or write), then the periodic duties with every
    /// worker's counters.
    pub(crate) fn end_turn(
        &mut self,
        now: Instant,
        stats: &Stats,
        traffic: &mut Traffic,
    ) {
        stats.add(std::mem::take(traffic));
        let group = Arc::clone(&self.group);
        self.service(now, || group.totals());
    }

    /// When the periodic duties of [`Listener::service`] are next due,
    /// for a model that waits elsewhere than [`Listener::wait`].
    pub(crate) fn service_due(&self) -> Option<Instant> {
        // No clock read on the way to every wait unless draining.
        let drain = match self.seen {
            Seen::Draining => self.group.draining_until(Instant::now()),
            Seen::Serving | Seen::Stopping => None,
        };
        [self.service.next_due(), drain].into_iter().flatten().min()
    }

    /// Follows the group's stop, whatever asked it (a signal, a
    /// [`Handle`](crate::Handle), another worker): the service manager
    /// hears `STOPPING=1` when it is asked, drain or not; and when a
    /// drain ends, this listener's waker wakes the model, whose
    /// [`Listener::control`] then says stop. So the drain lives here,
    /// and every model stops after it the way it stops without one.
    pub(super) fn follow_stop(&mut self, now: Instant) {
        if self.seen == Seen::Serving && !self.group.healthy() {
            self.service.stopping();
            self.seen = Seen::Draining;
        }
        if self.seen == Seen::Draining
            && self.group.draining_until(now).is_none()
        {
            self.seen = Seen::Stopping;
            if let Err(e) = self.waker.wake() {
                log::error!(
                    "cannot wake the loop at the end of the drain: {e}"
                );
            }
        }
    }
}
