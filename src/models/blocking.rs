//! The per-connection loop the three blocking models share: read, then
//! log, echo or discard, until EOF, an error, the idle timeout or a stop.
//!
//! A blocking socket needs no output buffer: `write` returns only once the
//! kernel has taken the bytes, so a client that does not read stalls its
//! own thread or process and nothing else (that is the price: a whole
//! thread or process waits on it). What the models differ in is how a
//! blocked call learns that the server is stopping; [`Watch`] is that.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Mode;
use crate::journal::{self, ChunkLimit, RateLimited};
use crate::listener::group::Group;
use crate::listener::STOP_WINDOW;
use crate::log_limit::{Bucket, Limits};
use crate::net::{interrupted, would_block};
use crate::policy::header as pending;
use crate::proxy::{self, header, Parse, HEADER_TIMEOUT};
use crate::stats::{Reason, Stats};

/// The shortest socket timeout std accepts is above zero.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// How far the socket timeout in force may be from the time left to the
/// nearest deadline before it is set again (a syscall): close enough that
/// a deadline is never missed by more, far enough that the steady state
/// sets nothing.
const REARM_SLACK: Duration = Duration::from_millis(5);

/// How far a server's stop has come, as a connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Serving.
    No,
    /// Stopping: flush, then linger until the end of the stop window.
    Window,
    /// Stopping now: close at once.
    Now,
}

/// How a connection blocked in `read` or `write` learns the server is
/// stopping.
pub(crate) trait Watch {
    /// The longest one blocking call may wait before [`Watch::stopping`]
    /// is asked again; `None` when the model wakes blocked calls itself
    /// (it shuts the socket down, or a signal interrupts the call).
    fn slice(&self) -> Option<Duration> {
        None
    }

    /// Whether the server has been told to stop, and how.
    fn stopping(&mut self) -> Stop;
}

/// What serving a connection may use, sized by the model.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// The read buffer.
    pub buf: &'a mut [u8],
    /// Reused for escaping logged chunks.
    pub scratch: &'a mut String,
    /// The server's counters.
    pub stats: &'a Stats,
    /// What to do with input.
    pub mode: Mode,
    /// `--idle-timeout`.
    pub idle: Option<Duration>,
    /// Log mode's rate limits, made once per server (before any fork).
    pub limits: Limits,
    /// `--proxy-protocol`: read a header before serving.
    pub proxy: Option<&'a Proxied>,
}

/// `--proxy-protocol` in a blocking model: who may send a header, and
/// the per-address table the client is admitted to once its header named
/// it (the accept loop saw only the balancer).
#[derive(Debug)]
pub(crate) struct Proxied {
    /// The per-address table every connection of the server counts in;
    /// `None` admits every client.
    pub table: Option<Arc<dyn AddressTable>>,
    /// `--max-connections-per-ip`, for the rejection line.
    pub max_per_ip: usize,
    /// Rejection lines, at most one a second for all connections.
    pub rejections: Mutex<RateLimited>,
}

/// Where a connection's client is counted for `--max-connections-per-ip`
/// once its PROXY header named it: the workers' shared table (threads),
/// or a slot in shared memory (the process model's children).
pub(crate) trait AddressTable: Send + Sync + std::fmt::Debug {
    /// Counts `peer` if its address is under the limit.
    fn admit(&self, peer: SocketAddr) -> bool;
    /// A connection `admit` counted has closed.
    fn release(&self, peer: SocketAddr);
}

impl AddressTable for Group {
    fn admit(&self, peer: SocketAddr) -> bool {
        let table = self.per_address();
        table.lock().unwrap_or_else(|e| e.into_inner()).admit(peer)
    }

    fn release(&self, peer: SocketAddr) {
        let table = self.per_address();
        table.lock().unwrap_or_else(|e| e.into_inner()).release(peer);
    }
}

impl Proxied {
    /// Counts `peer` in the per-address table if it is under the limit;
    /// else counts and logs a rejection.
    fn admit(&self, peer: SocketAddr, stats: &Stats) -> bool {
        let Some(table) = &self.table else { return true };
        let admitted = table.admit(peer);
        if !admitted {
            stats.rejected();
            let mut limiter =
                self.rejections.lock().unwrap_or_else(|e| e.into_inner());
            journal::rejected_per_address(&mut limiter, peer, self.max_per_ip);
        }
        admitted
    }

    /// A connection [`Proxied::admit`] counted has closed.
    fn release(&self, peer: SocketAddr) {
        if let Some(table) = &self.table {
            table.release(peer);
        }
    }
}

/// How serving a connection ended.
#[derive(Debug)]
pub(crate) enum Served {
    /// It closed for this reason; the peer is the client a PROXY header
    /// named, or the socket's peer.
    Closed(SocketAddr, Reason),
    /// Its header named a client over `--max-connections-per-ip`: counted
    /// as rejected, never served.
    Rejected,
}

/// Serves one accepted blocking socket until it ends, then counts and
/// logs its close: the only place a blocking model closes a connection.
pub(crate) fn serve(
    stream: &TcpStream,
    peer: SocketAddr,
    cx: &mut Context<'_>,
    watch: &mut dyn Watch,
) {
    if let Served::Closed(peer, reason) =
        serve_to_close(stream, peer, cx, watch)
    {
        finish(peer, &reason, cx.stats);
    }
}

/// Serves one accepted blocking socket until it ends and says why,
/// without counting or logging the close (the process model's parent
/// counts its children's).
pub(crate) fn serve_to_close(
    stream: &TcpStream,
    peer: SocketAddr,
    cx: &mut Context<'_>,
    watch: &mut dyn Watch,
) -> Served {
    let mut conn = Conn::new(stream, cx.idle, watch);
    let (peer, first) = match cx.proxy {
        None => (peer, 0),
        Some(proxied) => match conn.read_header(cx) {
            // Counted as accepted only now, so that it can close; a
            // stop that cut the header short is a `shutdown`.
            Err(reason) => {
                cx.stats.accepted();
                let reason = match conn.noticed_stop(true) {
                    true => Reason::Shutdown,
                    false => reason,
                };
                return Served::Closed(peer, reason);
            }
            Ok((source, first)) => {
                let client = source.unwrap_or(peer);
                if !proxied.admit(client, cx.stats) {
                    return Served::Rejected;
                }
                cx.stats.accepted();
                journal::accepted(client, open(cx.stats));
                (client, first)
            }
        },
    };
    let reason = conn.run(peer, first, cx);
    journal::suppressed(peer, &mut conn.bucket);
    if let Some(proxied) = cx.proxy {
        proxied.release(peer);
    }
    // As in the mio model, whatever was open when the stop began closes
    // as `shutdown`.
    if conn.noticed_stop(true) {
        Served::Closed(peer, Reason::Shutdown)
    } else {
        Served::Closed(peer, reason)
    }
}

/// Counts and logs a connection that ended with `reason`.
pub(crate) fn finish(peer: SocketAddr, reason: &Reason, stats: &Stats) {
    stats.closed(reason);
    journal::closed(peer, reason, open(stats));
}

/// Connections accepted and not yet closed, from the counters every
/// thread or process shares.
pub(crate) fn open(stats: &Stats) -> usize {
    let s = stats.summary();
    usize::try_from(s.accepted.saturating_sub(s.closed())).unwrap_or(0)
}

/// One connection's progress: when bytes last moved, the socket timeout
/// in force, and the stop deadline once a stop was seen.
struct Conn<'s> {
    stream: &'s TcpStream,
    watch: &'s mut dyn Watch,
    idle: Option<Duration>,
    /// Last time a byte moved either way (idle bookkeeping).
    last: Instant,
    /// When to ask the watch again, for watches with a slice.
    next_ask: Instant,
    /// The end of the stop window, once a stop was noticed (now, for a
    /// stop at once).
    stop_by: Option<Instant>,
    /// The stop seen so far.
    stop: Stop,
    /// The read and write timeout set on the socket now.
    armed: Option<Duration>,
    /// Log mode's rate limit of this connection's chunk lines.
    bucket: Bucket,
}

impl<'s> Conn<'s> {
    fn new(
        stream: &'s TcpStream,
        idle: Option<Duration>,
        watch: &'s mut dyn Watch,
    ) -> Conn<'s> {
        let now = Instant::now();
        Conn {
            stream,
            watch,
            idle,
            last: now,
            next_ask: now,
            stop_by: None,
            stop: Stop::No,
            armed: None,
            bucket: Bucket::default(),
        }
    }

    /// Reads a PROXY header within [`HEADER_TIMEOUT`]: its source (if it
    /// names one), and how many of the client's own bytes that came with
    /// it are now at the start of `cx.buf`.
    fn read_header(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Result<(Option<SocketAddr>, usize), Reason> {
        let got = self.header_within(cx, Instant::now() + HEADER_TIMEOUT);
        // `arm` knows of no timeout on the socket: leave none.
        let _ = self.stream.set_read_timeout(None);
        got
    }

    fn header_within(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Instant,
    ) -> Result<(Option<SocketAddr>, usize), Reason> {
        let mut bytes = Vec::new();
        loop {
            if self.noticed_stop(false) {
                return Err(Reason::Shutdown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(pending::too_slow());
            }
            let wait = self.watch.slice().map_or(left, |s| s.min(left));
            self.stream
                .set_read_timeout(Some(wait.max(MIN_TIMEOUT)))
                .map_err(Reason::from_io)?;
            // Past what the header can be: its excess is served below.
            let room = header::room(&bytes).min(cx.buf.len());
            let n = match self.stream.read(&mut cx.buf[..room]) {
                Ok(0) => return Err(pending::cut_short()),
                Ok(n) => n,
                Err(e) if would_block(&e) || interrupted(&e) => continue,
                Err(e) => return Err(Reason::from_io(e)),
            };
            let had = bytes.len();
            bytes.extend_from_slice(&cx.buf[..n]);
            match proxy::parse(&bytes) {
                Ok(Parse::Incomplete) => {}
                Ok(Parse::Done(h)) => {
                    let first = h.len - had..n;
                    let len = first.len();
                    cx.buf.copy_within(first, 0);
                    return Ok((h.source, len));
                }
                Err(invalid) => return Err(pending::refused(invalid)),
            }
        }
    }

    fn run(
        &mut self,
        peer: SocketAddr,
        first: usize,
        cx: &mut Context<'_>,
    ) -> Reason {
        if first > 0 {
            if let Err(reason) = self.take(peer, first, cx) {
                return reason;
            }
        }
        loop {
            if self.noticed_stop(false) {
                return self.wind_down(cx);
            }
            if let Err(e) = self.arm() {
                return Reason::from_io(e);
            }
            let n = match self.stream.read(cx.buf) {
                Ok(0) => return Reason::Eof,
                Ok(n) => n,
                Err(e) if would_block(&e) => match self.expired() {
                    Some(reason) => return reason,
                    None => continue,
                },
                Err(e) if interrupted(&e) => continue, // trap 9
                Err(e) => return Reason::from_io(e),
            };
            if let Err(reason) = self.take(peer, n, cx) {
                return reason;
            }
        }
    }

    /// Logs, echoes or discards `cx.buf[..n]`, just read.
    fn take(
        &mut self,
        peer: SocketAddr,
        n: usize,
        cx: &mut Context<'_>,
    ) -> Result<(), Reason> {
        cx.stats.read(n);
        self.last = Instant::now();
        let chunk = &cx.buf[..n];
        match cx.mode {
            Mode::Log => {
                let mut limit = ChunkLimit {
                    limits: &cx.limits,
                    bucket: &mut self.bucket,
                    stats: cx.stats,
                };
                journal::chunk(peer, chunk, cx.scratch, &mut limit);
                Ok(())
            }
            Mode::Discard => Ok(()),
            Mode::Echo => self.send(chunk, cx.stats),
        }
    }

    /// Writes all of `data`. Unlike `write_all`, it keeps count across
    /// timeouts and interruptions, so a timeout (idle, stop window) never
    /// loses track of what was sent.
    fn send(&mut self, data: &[u8], stats: &Stats) -> Result<(), Reason> {
        let mut sent = 0;
        while sent < data.len() {
            self.noticed_stop(false);
            self.arm().map_err(Reason::from_io)?;
            match self.stream.write(&data[sent..]) {
                Ok(0) => {
                    return Err(Reason::from_io(
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => {
                    stats.wrote(n);
                    sent += n;
                    self.last = Instant::now();
                }
                Err(e) if would_block(&e) => {
                    if let Some(reason) = self.expired() {
                        return Err(reason);
                    }
                }
                Err(e) if interrupted(&e) => {} // trap 9
                // Trap 10: SIGPIPE is ignored, so a dead peer is an EPIPE
                // or ECONNRESET here that ends this connection only.
                Err(e) => return Err(Reason::from_io(e)),
            }
        }
        Ok(())
    }

    /// Whether a stop was seen; asks the watch at most once a slice
    /// unless `force`d. Starts the stop window when a stop first is seen,
    /// and ends it when the watch says to stop now.
    fn noticed_stop(&mut self, force: bool) -> bool {
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
    fn expired(&mut self) -> Option<Reason> {
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
    fn arm(&mut self) -> io::Result<()> {
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

    /// The server is stopping and no output is pending (`send` returns
    /// only when all went). If the client left input unread, a close()
    /// would send an RST that makes its kernel drop the output already
    /// sent, so, as the mio model does, send our FIN first and discard
    /// input until the client's EOF or the end of the window (trap 17).
    fn wind_down(&mut self, cx: &mut Context<'_>) -> Reason {
        let unread = self.drain_queued(cx);
        if !unread {
            return Reason::Shutdown;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        loop {
            if self.arm().is_err() {
                return Reason::Shutdown;
            }
            match self.stream.read(cx.buf) {
                Ok(0) => return Reason::Shutdown,
                Ok(n) => cx.stats.read(n),
                Err(e) if would_block(&e) => {
                    if self.expired().is_some() {
                        return Reason::Shutdown;
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(_) => return Reason::Shutdown,
            }
        }
    }

    /// Reads, without blocking, what the client has queued; true if there
    /// was any (and the client has not closed).
    fn drain_queued(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut unread = false;
        loop {
            match self.stream.read(cx.buf) {
                Ok(0) => {
                    unread = false;
                    break;
                }
                Ok(n) => {
                    cx.stats.read(n);
                    unread = true;
                    // A client that never stops sending cannot hold the
                    // stop past its window.
                    if self.expired().is_some() {
                        break;
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(_) => break,
            }
        }
        unread && self.stream.set_nonblocking(false).is_ok()
    }
}
