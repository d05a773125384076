//! What the workers of one server share (`--workers N`): the stop, and
//! each worker's counters. Nothing on the path of a message is shared:
//! a worker touches the group when a stop is asked, when it publishes
//! its byte counts once a turn, and when the `stats` line, the service
//! manager's status or a scrape adds the workers' counters up.
//!
//! A stop begins at once, or, with `--drain SECS`, drains first: for
//! that long the workers go on accepting and serving while
//! [`Group::healthy`] says no (`/healthz` answers 503), so a load
//! balancer has time to notice and send new clients elsewhere; then
//! [`Group::asked`] says stop. A second stop during the drain stops now.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::stats::{Stats, Summary};

use super::per_address::PerAddress;
use super::signals::Control;

/// Serving.
const SERVING: u8 = 0;
/// A stop was asked: draining until the drain's end, then stopping.
const STOPPING: u8 = 1;
/// Stopping now.
const NOW: u8 = 2;

/// The workers' shared state; see the module docs.
#[derive(Debug)]
pub(crate) struct Group {
    stop: AtomicU8,
    /// `--drain`: how long a stop keeps serving before it takes effect.
    drain: Duration,
    /// When the drain of the stop asked first ends (set once).
    drain_end: OnceLock<Instant>,
    wakers: Vec<Arc<Waker>>,
    stats: Vec<Arc<Stats>>,
    /// `--max-connections-per-ip` counts a client's connections on every
    /// worker together (a client's connections hash to any of them).
    per_address: Mutex<PerAddress>,
    /// When each worker last turned, in ms since `epoch`, stored only
    /// while the watchdog is on: the first worker feeds it only while
    /// every worker turns.
    beats: Vec<Beat>,
    epoch: Instant,
}

/// A worker's last turn, alone on its cache line: workers store theirs
/// every turn and must not slow each other.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Beat(AtomicU64);

impl Group {
    /// The group of the workers woken by `wakers`, worker `n` by the
    /// `n`th, each with counters of its own.
    pub(crate) fn new(wakers: Vec<Arc<Waker>>, max_per_ip: usize) -> Group {
        let stats = wakers.iter().map(|_| Arc::default()).collect();
        let beats = wakers.iter().map(|_| Beat::default()).collect();
        Group {
            stop: AtomicU8::new(SERVING),
            drain: Duration::ZERO,
            drain_end: OnceLock::new(),
            wakers,
            stats,
            per_address: Mutex::new(PerAddress::new(max_per_ip)),
            beats,
            epoch: Instant::now(),
        }
    }

    /// Worker `n` turned at `now`.
    pub(crate) fn beat(&self, n: usize, now: Instant) {
        if let Some(beat) = self.beats.get(n) {
            beat.0.store(self.ms(now), Ordering::Relaxed);
        }
    }

    /// A worker that has not turned for longer than `limit`, and for how
    /// long, as words for a log line.
    pub(crate) fn stalled(
        &self,
        now: Instant,
        limit: Duration,
    ) -> Result<(), String> {
        let now_ms = self.ms(now);
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        for (n, beat) in self.beats.iter().enumerate() {
            let quiet = now_ms.saturating_sub(beat.0.load(Ordering::Relaxed));
            if quiet > limit_ms {
                return Err(format!(
                    "worker {n} has not turned for {quiet} ms"
                ));
            }
        }
        Ok(())
    }

    fn ms(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.epoch);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    /// The group with a drain of `drain` before each stop takes effect.
    pub(crate) fn with_drain(mut self, drain: Duration) -> Group {
        self.drain = drain;
        self
    }

    /// Workers in the group.
    pub(crate) fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// Asks every worker to stop: the first time to stop (after the
    /// drain), again (or with `now`) to stop now. Returns what the
    /// workers will see.
    pub(crate) fn ask_stop(&self, now: bool) -> Control {
        // The drain's end is set before the level moves, so a worker
        // that sees the level sees the end too.
        let _ = self.drain_end.get_or_init(|| Instant::now() + self.drain);
        let step =
            |level: u8| Some(if now { NOW } else { (level + 1).min(NOW) });
        let _ =
            self.stop.fetch_update(Ordering::SeqCst, Ordering::SeqCst, step);
        self.wake_all();
        self.asked()
    }

    /// Wakes every worker, to look at what was asked.
    fn wake_all(&self) {
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("cannot wake a worker to stop it: {e}");
            }
        }
    }

    /// What has been asked so far, as of now: a stop whose drain has
    /// not ended asks nothing yet.
    pub(crate) fn asked(&self) -> Control {
        self.asked_at(Instant::now())
    }

    fn asked_at(&self, now: Instant) -> Control {
        let level = self.stop.load(Ordering::SeqCst);
        match self.draining_until(now) {
            Some(_) if level < NOW => Control::default(),
            _ => control(level),
        }
    }

    /// Whether the server is serving with no stop asked: what `/healthz`
    /// reports. False from the moment a stop is asked, drain included.
    pub(crate) fn healthy(&self) -> bool {
        self.stop.load(Ordering::SeqCst) == SERVING
    }

    /// The end of the drain, while a stop is asked and `now` is before
    /// it.
    pub(crate) fn draining_until(&self, now: Instant) -> Option<Instant> {
        if self.stop.load(Ordering::SeqCst) == SERVING {
            return None;
        }
        self.drain_end.get().copied().filter(|&end| now < end)
    }

    /// `--drain`.
    pub(crate) fn drain(&self) -> Duration {
        self.drain
    }

    /// The counters of worker `n`.
    pub(crate) fn stats(&self, n: usize) -> &Arc<Stats> {
        &self.stats[n]
    }

    /// The open connections per address, shared by every worker.
    pub(crate) fn per_address(&self) -> &Mutex<PerAddress> {
        &self.per_address
    }

    /// Every worker's counters added up, and the connections open (each
    /// worker counts an accept and a close the moment it happens; bytes
    /// as of each worker's last turn).
    pub(crate) fn totals(&self) -> (Summary, usize) {
        let mut total = Summary::default();
        for stats in &self.stats {
            total.add(&stats.summary());
        }
        (total, open(&total))
    }

    /// Output memory every worker holds, as of each one's last turn.
    pub(crate) fn output_held(&self) -> u64 {
        self.stats.iter().map(|s| s.output_held()).sum()
    }

    /// Connections accepted by each worker so far.
    pub(crate) fn accepted_by_worker(&self) -> Vec<u64> {
        self.stats.iter().map(|s| s.summary().accepted).collect()
    }

    /// Each worker's accepted and open connections, when there is more
    /// than one worker (empty otherwise).
    pub(crate) fn per_worker(&self) -> Vec<(u64, usize)> {
        if self.stats.len() < 2 {
            return Vec::new();
        }
        let each = self.stats.iter().map(|s| s.summary());
        each.map(|s| (s.accepted, open(&s))).collect()
    }
}

/// Connections accepted and not yet closed.
pub(crate) fn open(s: &Summary) -> usize {
    usize::try_from(s.accepted.saturating_sub(s.closed())).unwrap_or(0)
}

fn control(level: u8) -> Control {
    Control { stop: level >= STOPPING, now: level >= NOW }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_stop_or_now_means_now() {
        let poll = mio::Poll::new().unwrap();
        let waker =
            Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let group = Group::new(vec![waker], 0);
        assert_eq!(group.asked(), Control::default());
        assert_eq!(group.ask_stop(false), Control { stop: true, now: false });
        assert_eq!(group.asked(), Control { stop: true, now: false });
        assert_eq!(group.ask_stop(false), Control { stop: true, now: true });
        assert_eq!(group.ask_stop(false), Control { stop: true, now: true });
        let fresh = Group::new(Vec::new(), 0);
        assert_eq!(fresh.ask_stop(true), Control { stop: true, now: true });
    }

    #[test]
    fn a_worker_that_does_not_turn_is_named() {
        let poll = mio::Poll::new().unwrap();
        let waker =
            || Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let group = Group::new(vec![waker(), waker()], 0);
        let t0 = group.epoch;
        let limit = Duration::from_millis(100);
        assert_eq!(
            group.stalled(t0 + Duration::from_millis(50), limit),
            Ok(())
        );
        group.beat(0, t0 + Duration::from_millis(150));
        let later = t0 + Duration::from_millis(160);
        let why = group.stalled(later, limit).unwrap_err();
        assert!(
            why.starts_with("worker 1 has not turned for 160 ms"),
            "{why}"
        );
        group.beat(1, t0 + Duration::from_millis(155));
        assert_eq!(group.stalled(later, limit), Ok(()));
    }

    #[test]
    fn a_drain_delays_the_stop_but_not_the_health_or_a_second_stop() {
        let group =
            Group::new(Vec::new(), 0).with_drain(Duration::from_secs(60));
        assert!(group.healthy());
        assert_eq!(group.ask_stop(false), Control::default());
        assert!(!group.healthy());
        assert_eq!(group.asked(), Control::default());
        let end = group.draining_until(Instant::now()).unwrap();
        assert!(end > Instant::now() + Duration::from_secs(59));
        assert_eq!(group.ask_stop(false), Control { stop: true, now: true });
        assert_eq!(group.draining_until(end), None);
    }

    #[test]
    fn a_drain_ends_in_a_stop() {
        let group =
            Group::new(Vec::new(), 0).with_drain(Duration::from_secs(60));
        assert_eq!(group.ask_stop(false), Control::default());
        let end = group.draining_until(Instant::now()).unwrap();
        let stop = Control { stop: true, now: false };
        assert_eq!(group.asked_at(end), stop);
        let undrained = Group::new(Vec::new(), 0);
        assert_eq!(undrained.ask_stop(false), stop);
        assert!(!undrained.healthy());
    }
}
