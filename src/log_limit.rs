//! Rate limits on log mode's chunk lines: a token bucket per connection
//! (`--log-rate`, `--log-burst`) and one for the whole server
//! (`--log-total-rate`), so that no client turns the log into a flood
//! (one sending 1-byte writes made 82,000 lines a second).
//!
//! Both are GCRA buckets (the generic cell rate algorithm): one number,
//! the time at which the bucket would be full again, stands for the whole
//! bucket, so a connection's state is 16 bytes and the total is one
//! atomic, shared by every thread and, in shared memory, by every child
//! of the process model. Times are microseconds since [`Limits`] was
//! made, which happens before any fork, so every process counts from the
//! same instant.
//!
//! A connection that ran out stays muted until a second's worth of
//! tokens (the rate, at most the burst) has come back: a flood then
//! shows as one report line and a short run of chunk lines a second,
//! not as a report before every admitted line. Suppressed lines are
//! counted; whoever logs for the connection reports them when its logging
//! resumes and when it closes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::Config;

/// Microseconds in a second.
const SEC_US: u64 = 1_000_000;

/// One bucket's parameters, in microseconds.
#[derive(Clone, Copy, Debug)]
struct Rate {
    /// Time for one token to come back.
    interval: u64,
    /// Time for the whole burst to come back.
    burst: u64,
    /// Time for the tokens a muted connection needs before it resumes.
    resume: u64,
}

impl Rate {
    /// `None` (no limit) for a rate of 0.
    fn new(per_sec: u32, burst: u32) -> Option<Rate> {
        let per_sec = u64::from(per_sec);
        let burst = u64::from(burst.max(1));
        let interval = SEC_US.checked_div(per_sec)?;
        Some(Rate {
            interval,
            burst: interval * burst,
            resume: interval * per_sec.clamp(1, burst),
        })
    }

    /// Whether a bucket full again at `tat` holds `need` (a time worth of
    /// tokens) at `now`.
    fn holds(&self, tat: u64, now: u64, need: u64) -> bool {
        tat.saturating_sub(now) + need <= self.burst
    }
}

/// The limits of one server: `--log-rate`, `--log-burst` and
/// `--log-total-rate` (whose burst is one second of it).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    per_connection: Option<Rate>,
    total: Option<Rate>,
    start: Instant,
}

impl Limits {
    /// Limits counted from now; a rate of 0 means no limit.
    pub fn new(rate: u32, burst: u32, total_rate: u32) -> Limits {
        Limits {
            per_connection: Rate::new(rate, burst),
            total: Rate::new(total_rate, total_rate),
            start: Instant::now(),
        }
    }

    /// The limits `config` asks for, counted from now.
    pub fn of(config: &Config) -> Limits {
        Limits::new(config.log_rate, config.log_burst, config.log_total_rate)
    }

    /// Whether a connection whose bucket is `bucket` may log a chunk line
    /// at `now`, given the server's `total`.
    pub fn admit(
        &self,
        bucket: &mut Bucket,
        total: &Total,
        now: Instant,
    ) -> Verdict {
        let now = u64::try_from(now.duration_since(self.start).as_micros())
            .unwrap_or(u64::MAX);
        if let Some(rate) = &self.per_connection {
            let need = match bucket.suppressed {
                0 => rate.interval,
                _ => rate.resume,
            };
            if !rate.holds(bucket.tat, now, need) {
                return bucket.suppress();
            }
        }
        // The total is charged only for lines the connection may log, so
        // a flooding client cannot use up everyone's share.
        if let Some(rate) = &self.total {
            if !total.take(rate, now) {
                return bucket.suppress();
            }
        }
        if let Some(rate) = &self.per_connection {
            bucket.tat = bucket.tat.max(now) + rate.interval;
        }
        Verdict::Log { resumed: bucket.take_suppressed() }
    }
}

/// What [`Limits::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log the line; first report `resumed` lines suppressed before it.
    Log {
        /// Lines of this connection suppressed since its last report.
        resumed: u32,
    },
    /// Do not log it (counted in the connection's bucket).
    Suppress,
}

/// One connection's bucket: 16 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bucket {
    /// When the bucket is full again, µs since [`Limits`] was made.
    tat: u64,
    /// Lines suppressed and not yet reported.
    suppressed: u32,
}

impl Bucket {
    fn suppress(&mut self) -> Verdict {
        self.suppressed = self.suppressed.saturating_add(1);
        Verdict::Suppress
    }

    /// Lines suppressed since the last report, which the caller reports.
    pub fn take_suppressed(&mut self) -> u32 {
        std::mem::take(&mut self.suppressed)
    }
}

/// The server's shared bucket: when it is full again, in µs.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Total(AtomicU64);

impl Total {
    /// Takes one token if there is one.
    fn take(&self, rate: &Rate, now: u64) -> bool {
        self.0
            .fetch_update(Relaxed, Relaxed, |tat| {
                rate.holds(tat, now, rate.interval)
                    .then(|| tat.max(now) + rate.interval)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(limits: &Limits, ms: u64) -> Instant {
        limits.start + Duration::from_millis(ms)
    }

    fn logged(limits: &Limits, b: &mut Bucket, total: &Total, ms: u64) -> u32 {
        let mut n = 0;
        for _ in 0..10_000 {
            if let Verdict::Log { .. } = limits.admit(b, total, at(limits, ms))
            {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_connection_gets_its_burst_then_resumes_after_a_second() {
        let limits = Limits::new(20, 200, 0);
        let (mut b, total) = (Bucket::default(), Total::default());
        assert_eq!(logged(&limits, &mut b, &total, 0), 200);
        assert_eq!(b.suppressed, 10_000 - 200);
        // Half a second later ten tokens are back: still muted.
        assert_eq!(logged(&limits, &mut b, &total, 500), 0);
        // A second later: the first admitted line reports the rest.
        let v = limits.admit(&mut b, &total, at(&limits, 1000));
        assert_eq!(v, Verdict::Log { resumed: 2 * 10_000 - 200 });
        assert_eq!(logged(&limits, &mut b, &total, 1000), 19);
    }

    #[test]
    fn a_person_typing_is_never_suppressed() {
        let limits = Limits::new(20, 200, 500);
        let (mut b, total) = (Bucket::default(), Total::default());
        // A pasted screenful at once, then ten lines a second.
        for _ in 0..100 {
            assert!(matches!(
                limits.admit(&mut b, &total, at(&limits, 0)),
                Verdict::Log { resumed: 0 }
            ));
        }
        for i in 0..100 {
            let v = limits.admit(&mut b, &total, at(&limits, 100 * i));
            assert_eq!(v, Verdict::Log { resumed: 0 });
        }
    }

    #[test]
    fn the_total_is_shared_and_not_spent_by_the_muted() {
        let limits = Limits::new(1000, 10, 100);
        let total = Total::default();
        let mut flood = Bucket::default();
        let mut quiet = Bucket::default();
        // The flood gets its burst of 10; its muted lines cost nothing.
        assert_eq!(logged(&limits, &mut flood, &total, 0), 10);
        // 200 other connections with a line each share the other 90.
        let others = (0..200)
            .filter(|_| {
                let mut b = Bucket::default();
                limits.admit(&mut b, &total, at(&limits, 0))
                    != Verdict::Suppress
            })
            .count();
        assert_eq!(others, 90);
        assert_eq!(
            limits.admit(&mut quiet, &total, at(&limits, 0)),
            Verdict::Suppress
        );
        assert_eq!(logged(&limits, &mut quiet, &total, 10), 1);
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = Limits::new(0, 1, 0);
        let (mut b, total) = (Bucket::default(), Total::default());
        assert_eq!(logged(&limits, &mut b, &total, 0), 10_000);
    }

    #[test]
    fn a_bucket_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Bucket>(), 16);
    }
}
