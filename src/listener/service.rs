//! What the loop reports while it runs: the `stats` line (on SIGUSR1 and
//! every `--stats-interval`) and, under a service manager
//! (`Type=notify`: `NOTIFY_SOCKET` set), `READY=1`, `STATUS=`,
//! `STOPPING=1` and `WATCHDOG=1`.
//!
//! Everything here runs on the loop's own thread, once per turn
//! ([`Service::run`]); the wait folds [`Service::next_due`] into its
//! deadline. So the watchdog is fed by the loop itself: a loop that is
//! stuck (or stopped with SIGSTOP) stops feeding it and the manager
//! kills it.
//!
//! The notifications go through one nonblocking datagram socket, made
//! once: a manager that does not read can never block the loop (a
//! message that does not fit is dropped; the next one follows within a
//! second). Without `NOTIFY_SOCKET` nothing is sent and nothing is
//! logged about it.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::journal::{self, RateLimited};
use crate::stats::Summary;

/// How often `STATUS=` may be sent, at most.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Service {
    start: Instant,
    /// SIGUSR1 arrived; the next turn logs the `stats` line.
    stats_asked: bool,
    /// `--stats-interval`, and when the next periodic line is due.
    interval: Option<(Duration, Instant)>,
    notify: Option<Notify>,
    /// `--workers` with the watchdog on, in a worker other than the first:
    /// turn at least this often, so the first worker can tell an idle
    /// worker from a stuck one.
    heartbeat: Option<(Duration, Instant)>,
    /// `STOPPING=1` went (it is sent once).
    stopping: bool,
}

impl Service {
    /// Reports nothing but what SIGUSR1 and `interval` ask for, unless
    /// `systemd` is set and `NOTIFY_SOCKET` names a socket.
    pub(crate) fn new(interval: Option<Duration>, systemd: bool) -> Service {
        let start = Instant::now();
        Service {
            start,
            stats_asked: false,
            interval: interval.map(|every| (every, start + every)),
            notify: if systemd { Notify::from_env(start) } else { None },
            heartbeat: None,
            stopping: false,
        }
    }

    /// Half of `WATCHDOG_USEC`, when the watchdog is on here.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.notify.as_ref()?.watchdog.map(|(every, _)| every)
    }

    /// Makes the loop turn at least every `every` (see `heartbeat`).
    pub(crate) fn set_heartbeat(&mut self, every: Duration) {
        self.heartbeat = Some((every, Instant::now() + every));
    }

    /// Whether the loop's turns are watched: it feeds the watchdog, or
    /// beats for the worker that does.
    pub(crate) fn watched(&self) -> bool {
        self.heartbeat.is_some() || self.watchdog_every().is_some()
    }

    /// SIGUSR1: log the counters in this turn.
    pub(crate) fn ask_stats(&mut self) {
        self.stats_asked = true;
    }

    /// The socket to the service manager, which a forked child closes.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.notify.as_ref().map(|n| n.socket.as_raw_fd())
    }

    /// The earliest instant [`Service::run`] has something to do.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let stats = self.interval.map(|(_, due)| due);
        let notify = self.notify.as_ref().map(Notify::next_due);
        let beat = self.heartbeat.map(|(_, due)| due);
        [stats, notify, beat].into_iter().flatten().min()
    }

    /// `READY=1`: the listeners are registered and the loop runs.
    pub(crate) fn ready(&mut self) {
        if let Some(notify) = &mut self.notify {
            notify.send("READY=1\n");
        }
    }

    /// `STOPPING=1`: the stop began (its drain included); once.
    pub(crate) fn stopping(&mut self) {
        if std::mem::replace(&mut self.stopping, true) {
            return;
        }
        if let Some(notify) = &mut self.notify {
            notify.send("STOPPING=1\nSTATUS=stopping\n");
        }
    }

    /// Does what is due at `now`: the `stats` line, the watchdog, the
    /// status. `counters` (the summary so far and the open connections)
    /// is called at most once, and only when a line or status needs it.
    /// `healthy` says, when the watchdog is due, whether every worker
    /// has turned lately (`Err` names one that has not: no ping then).
    pub(crate) fn run(
        &mut self,
        now: Instant,
        counters: impl FnOnce() -> (Summary, usize),
        by_worker: impl FnOnce() -> Vec<u64>,
        healthy: impl FnOnce() -> Result<(), String>,
    ) {
        if let Some((every, due)) = &mut self.heartbeat {
            if now >= *due {
                *due = now + *every;
            }
        }
        let mut counters = Some(counters);
        let mut snapshot = None;
        let mut get = || {
            *snapshot.get_or_insert_with(|| match counters.take() {
                Some(f) => f(),
                None => (Summary::default(), 0),
            })
        };
        let periodic = match &mut self.interval {
            Some((every, due)) if now >= *due => {
                // After a pause (SIGSTOP) the next line is one interval
                // away, not a burst of the missed ones.
                *due = (*due + *every).max(now);
                true
            }
            _ => false,
        };
        if std::mem::take(&mut self.stats_asked) || periodic {
            let (summary, open) = get();
            let uptime = now.duration_since(self.start);
            journal::stats(&summary, open, uptime, &by_worker());
        }
        if let Some(notify) = &mut self.notify {
            notify.run(now, self.stopping, get, healthy);
        }
    }
}

/// The service manager's socket and what is due on it.
#[derive(Debug)]
struct Notify {
    socket: UnixDatagram,
    /// Where it is, to connect again if the manager made it anew.
    addr: UnixAddr,
    /// Half of `WATCHDOG_USEC`, and when the next ping is due.
    watchdog: Option<(Duration, Instant)>,
    next_status: Instant,
    last_status: String,
    failures: RateLimited,
    stalls: RateLimited,
}

impl Notify {
    /// The manager's socket from `NOTIFY_SOCKET` (a path, or `@name` in
    /// the abstract namespace), and the watchdog from `WATCHDOG_USEC`
    /// when `WATCHDOG_PID` is unset or this process.
    fn from_env(now: Instant) -> Option<Notify> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let addr = match unix_addr(path.as_encoded_bytes()) {
            Ok(addr) => addr,
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: {e}; not notifying the service \
                     manager",
                    path.to_string_lossy()
                );
                return None;
            }
        };
        let socket = match connect(&addr) {
            Ok(socket) => socket,
            Err(e) => {
                log::warn!(
                    "cannot reach the service manager at NOTIFY_SOCKET={}: \
                     {e}; not notifying it",
                    path.to_string_lossy()
                );
                return None;
            }
        };
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|usec| !usec.is_zero())
            .map(|usec| {
                let every = (usec / 2).max(Duration::from_millis(1));
                (every, now)
            });
        Some(Notify {
            socket,
            addr,
            watchdog,
            next_status: now,
            last_status: String::new(),
            failures: RateLimited::default(),
            stalls: RateLimited::default(),
        })
    }

    fn next_due(&self) -> Instant {
        match self.watchdog {
            Some((_, due)) => due.min(self.next_status),
            None => self.next_status,
        }
    }

    fn run(
        &mut self,
        now: Instant,
        stopping: bool,
        counters: impl FnOnce() -> (Summary, usize),
        healthy: impl FnOnce() -> Result<(), String>,
    ) {
        if let Some((every, due)) = &mut self.watchdog {
            if now >= *due {
                *due = now + *every;
                match healthy() {
                    Ok(()) => self.send("WATCHDOG=1\n"),
                    Err(why) => {
                        if let Some(folded) = self.stalls.admit(now) {
                            log::warn!(
                                "not feeding the watchdog: {why} ({folded} \
                                 more since the last line)"
                            );
                        }
                    }
                }
            }
        }
        if now >= self.next_status {
            self.next_status = now + STATUS_EVERY;
            let (s, open) = counters();
            let state = if stopping { "stopping: " } else { "" };
            let status = format!(
                "STATUS={state}open={open} accepted={} closed={} rejected={} \
                 bytes_in={} bytes_out={}\n",
                s.accepted,
                s.closed(),
                s.rejected,
                s.bytes_in,
                s.bytes_out
            );
            if status != self.last_status {
                self.send(&status);
                self.last_status = status;
            }
        }
    }

    /// Sends `message` without blocking; a message the manager's queue
    /// cannot take is dropped. A socket the manager made anew (it
    /// restarted) is connected again once.
    fn send(&mut self, message: &str) {
        let mut result = self.socket.send(message.as_bytes());
        if matches!(&result, Err(e) if e.kind() != io::ErrorKind::WouldBlock) {
            if let Ok(socket) = connect(&self.addr) {
                self.socket = socket;
                result = self.socket.send(message.as_bytes());
            }
        }
        if let Err(e) = result {
            if let Some(folded) = self.failures.admit(Instant::now()) {
                log::warn!(
                    "cannot notify the service manager ({}): {e} \
                     ({folded} more since the last line)",
                    message.trim_end()
                );
            }
        }
    }
}

/// A `NOTIFY_SOCKET` value as an address: `@name` is in the abstract
/// namespace, anything else a path.
fn unix_addr(value: &[u8]) -> io::Result<UnixAddr> {
    match value.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(name)
        }
        None => {
            use std::os::unix::ffi::OsStrExt;
            UnixAddr::from_pathname(std::ffi::OsStr::from_bytes(value))
        }
    }
}

/// A nonblocking datagram socket connected to `addr`.
fn connect(addr: &UnixAddr) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values_parse_as_paths_or_abstract_names() {
        let path = unix_addr(b"/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        {
            use std::os::linux::net::SocketAddrExt;
            let abs = unix_addr(b"@sd-notify").unwrap();
            assert_eq!(abs.as_abstract_name(), Some(&b"sd-notify"[..]));
        }
        assert!(unix_addr(&[b'/', 0xff]).is_ok());
        assert!(unix_addr(b"/a\0b").is_err());
    }
}
