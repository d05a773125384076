//! Where log lines go: stderr, without ever blocking the caller (trap 16).
//!
//! A `write(2)` to stderr blocks as soon as whatever reads it stalls (a
//! log shipper that fell behind, `2>&1 | less` not scrolled): 64 KiB of
//! log later the loop stops serving, and the stop signal with it. So
//! lines go to a bounded buffer ([`CAPACITY`]) and leave it with writes
//! that never block; when the buffer is full a new line is dropped whole
//! and counted, and once the sink drains one line says how many went.
//!
//! How a write is kept from blocking depends on what stderr is:
//!
//! - a pipe, FIFO or terminal: reopened through `/proc/self/fd/2`, which
//!   gives this process its own open file description, and O_NONBLOCK is
//!   set on that one. The inherited description is shared with the shell
//!   or the parent; its flags are never touched.
//! - a socket (systemd's journal stream): `send` with `MSG_DONTWAIT`.
//! - a regular file: plain writes, which do not wait on a reader.
//! - anything that cannot be reopened: written only when `poll` says
//!   there is room.
//!
//! A line is never split across writes on a pipe: writes carry whole
//! lines, at most `PIPE_BUF` bytes, which a pipe takes atomically, so the
//! process model's children can share it. There is no thread (the process
//! model forks, and must stay single-threaded): pending lines go out on
//! the next line, or on [`flush`], which the loops call every turn
//! (a relaxed load when nothing is pending).
#![allow(unsafe_code)] // poll(2) in `poll_writable`, ioctl(2) in `unread`

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::net::{interrupted, would_block};

/// Bytes of log held while the sink cannot take them.
pub(crate) const CAPACITY: usize = 64 * 1024;
/// A pipe takes a write of at most this many bytes whole or not at all.
const PIPE_BUF: usize = libc::PIPE_BUF;
/// How soon a loop with lines pending tries the sink again.
const RETRY: Duration = Duration::from_millis(100);
/// How often the last lines look at whether the reader moved.
const LOOK: Duration = Duration::from_millis(50);
/// The target of the line that reports drops, as `journal` logs.
const TARGET: &str = "readyloop::journal";

static SINK: Mutex<Sink> = Mutex::new(Sink::new(Out::Guarded));
/// Lines are waiting in [`SINK`]: the cheap check of [`flush`].
static PENDING: AtomicBool = AtomicBool::new(false);

/// Points the sink at stderr, choosing how to write without blocking.
pub(crate) fn open() {
    let out = match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) if m.file_type().is_socket() => Out::Socket,
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() => {
            reopen().map_or(Out::Guarded, Out::Own)
        }
        Ok(_) => Out::Plain,
        Err(_) => Out::Guarded,
    };
    sink().out = out;
}

/// stderr's pipe or terminal again, as a new open file description of
/// our own whose O_NONBLOCK affects nobody else (O_CLOEXEC is std's
/// default). A FIFO without a reader fails (ENXIO) and stays guarded.
fn reopen() -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open("/proc/self/fd/2")
}

/// Writes `line` (newline included) now, or buffers it, or drops it.
pub(crate) fn line(line: &[u8]) {
    let mut sink = sink();
    sink.line(line);
    PENDING.store(sink.pending(), Relaxed);
}

/// Writes what is pending, if the sink takes it now.
pub(crate) fn flush() {
    if PENDING.load(Relaxed) {
        let mut sink = sink();
        sink.flush();
        PENDING.store(sink.pending(), Relaxed);
    }
}

/// When a loop should call [`flush`] again: soon while lines are
/// pending, otherwise never.
pub(crate) fn retry_at(now: Instant) -> Option<Instant> {
    PENDING.load(Relaxed).then_some(now + RETRY)
}

/// Waits until `deadline` at most for pending lines to be written, then
/// drops what is left; returns every line dropped by this process.
pub(crate) fn settle(deadline: Instant) -> u64 {
    let mut sink = sink();
    if !sink.drain(deadline) {
        sink.discard();
    }
    PENDING.store(false, Relaxed);
    sink.dropped
}

/// Every line this process dropped so far.
pub(crate) fn dropped() -> u64 {
    sink().dropped
}

/// The stop's first half: waits until `deadline` at most for pending
/// lines to be written, then drops those not yet begun, so the lines
/// that end the log come next. Returns the lines dropped now (with
/// earlier drops not yet reported) and every line this process dropped.
pub(crate) fn clear_for_last(deadline: Instant) -> (u64, u64) {
    let mut sink = sink();
    let now = match sink.drain(deadline) {
        true => std::mem::take(&mut sink.unreported),
        false => sink.drop_unstarted(),
    };
    (now, sink.dropped)
}

/// The stop's second half: writes the last lines while stderr keeps
/// taking bytes, giving up after `stall` without progress or at `cap`.
pub(crate) fn write_last(stall: Duration, cap: Instant) {
    let mut sink = sink();
    sink.drain_while_moving(stall, cap);
    PENDING.store(sink.pending(), Relaxed);
}

/// In a forked child: forgets the parent's pending lines and counts (the
/// parent writes and counts those) and starts counting its own.
pub(crate) fn after_fork() {
    let mut sink = sink();
    sink.buf.clear();
    sink.sent = 0;
    sink.unreported = 0;
    sink.dropped = 0;
    sink.torn = false;
    PENDING.store(false, Relaxed);
}

/// The sink's own descriptor, which a forked child must keep open.
pub(crate) fn own_fd() -> Option<RawFd> {
    match &sink().out {
        Out::Own(file) => Some(file.as_raw_fd()),
        _ => None,
    }
}

fn sink() -> MutexGuard<'static, Sink> {
    // A panic while logging leaves the buffer consistent (whole lines).
    SINK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How lines reach stderr without blocking.
#[derive(Debug)]
enum Out {
    /// Our own nonblocking description of stderr's pipe or terminal.
    Own(File),
    /// stderr is a socket: `send(MSG_DONTWAIT)`.
    Socket,
    /// stderr is a file: writes do not wait for a reader.
    Plain,
    /// stderr could not be reopened: write only when poll says it can.
    Guarded,
}

impl Out {
    /// Bytes written that the reader has not taken yet, where the kernel
    /// says: a pipe's FIONREAD, a socket's unsent queue (SIOCOUTQ).
    fn unread(&self) -> Option<usize> {
        let (fd, request) = match self {
            Out::Own(file) => (file.as_raw_fd(), libc::FIONREAD),
            Out::Socket => (2, libc::TIOCOUTQ),
            Out::Plain | Out::Guarded => return None,
        };
        let mut n: libc::c_int = 0;
        // SAFETY: both requests write one int through the pointer, which
        // points at `n`, alive for the call.
        let r = unsafe { libc::ioctl(fd, request, &mut n) };
        (r == 0).then(|| usize::try_from(n).unwrap_or(0))
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Out::Own(file) => (&*file).write(data),
            Out::Socket => socket2::SockRef::from(&io::stderr())
                .send_with_flags(
                    data,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                ),
            Out::Plain => io::stderr().lock().write(data),
            Out::Guarded => match poll_writable(2, Duration::ZERO) {
                true => io::stderr().lock().write(data),
                false => Err(io::ErrorKind::WouldBlock.into()),
            },
        }
    }

    /// Waits until the sink may take a write, or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        match self {
            Out::Own(file) => drop(poll_writable(file.as_raw_fd(), timeout)),
            Out::Socket | Out::Guarded => drop(poll_writable(2, timeout)),
            Out::Plain => {}
        }
    }
}

/// Whether `fd` can take a write within `timeout`. An error or hang-up
/// counts as writable: the write then fails at once and says why.
fn poll_writable(fd: RawFd, timeout: Duration) -> bool {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: `pfd` is one valid, writable pollfd and the count is 1;
    // poll(2) only writes its `revents`.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    ready > 0 && pfd.revents & (libc::POLLOUT | libc::POLLERR) != 0
}

/// The buffer between the loggers and stderr: `buf[sent..]` is pending,
/// always whole lines except for the rest of one partly written.
#[derive(Debug)]
struct Sink {
    out: Out,
    buf: Vec<u8>,
    sent: usize,
    /// Lines dropped because the sink was full, not yet reported.
    unreported: u64,
    /// Every line this process dropped.
    dropped: u64,
    /// `buf` starts with the rest of a line partly written already.
    torn: bool,
    /// Bytes written so far: a stalled reader is one that takes none.
    written: u64,
}

impl Sink {
    const fn new(out: Out) -> Sink {
        Sink {
            out,
            buf: Vec::new(),
            sent: 0,
            unreported: 0,
            dropped: 0,
            torn: false,
            written: 0,
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.buf.len() || self.unreported > 0
    }

    fn line(&mut self, line: &[u8]) {
        if !self.pending() {
            // The common case: straight out, nothing copied.
            match write_once(&self.out, line) {
                Ok(n) if n == line.len() => return self.written += n as u64,
                Ok(n) => {
                    self.written += n as u64;
                    self.torn = n > 0;
                    return self.buf.extend_from_slice(&line[n..]);
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return self.dropped += 1,
            }
        }
        self.push(line);
        self.flush();
    }

    /// Buffers `line`, or drops it whole if it does not fit.
    fn push(&mut self, line: &[u8]) {
        if self.buf.len() - self.sent + line.len() > CAPACITY {
            self.unreported += 1;
            self.dropped += 1;
            return;
        }
        if self.buf.len() + line.len() > CAPACITY {
            self.torn = self.unstarted() > self.sent;
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        if self.buf.capacity() < CAPACITY {
            self.buf.reserve_exact(CAPACITY - self.buf.len());
        }
        self.buf.extend_from_slice(line);
    }

    /// Writes pending lines until none is left or the sink is full; once
    /// it drained, reports what was dropped. True when nothing is left.
    fn flush(&mut self) -> bool {
        loop {
            if self.sent == self.buf.len() {
                self.buf.clear();
                self.sent = 0;
                self.torn = false;
                if self.unreported == 0 {
                    return true;
                }
                let mut report = String::new();
                crate::log_prefix::write(&mut report, log::Level::Warn);
                report.push_str(&format!(
                    "{:<5} [{TARGET}] log sink was full: {} lines dropped\n",
                    "WARN",
                    std::mem::take(&mut self.unreported)
                ));
                self.buf.extend_from_slice(report.as_bytes());
            }
            let batch = batch(&self.buf[self.sent..]);
            match write_once(&self.out, batch) {
                Ok(0) => {
                    self.discard();
                    return true;
                }
                Ok(n) => {
                    self.sent += n;
                    self.written += n as u64;
                }
                Err(e) if would_block(&e) => return false,
                // The sink is gone (EPIPE, EBADF, …): nothing will be
                // written, so nothing is kept; the count says what went.
                Err(_) => {
                    self.discard();
                    return true;
                }
            }
        }
    }

    /// Flushes, waiting for the sink until `deadline` at most; true when
    /// nothing is left.
    fn drain(&mut self, deadline: Instant) -> bool {
        loop {
            if self.flush() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.out.wait(left);
        }
    }

    /// Drops every pending line, counting them.
    fn discard(&mut self) {
        let pending = &self.buf[self.sent..];
        let lines = pending.iter().filter(|&&b| b == b'\n').count();
        self.dropped += lines as u64;
        self.buf.clear();
        self.sent = 0;
        self.torn = false;
    }

    /// Where the first line not yet begun starts: at `sent`, or after
    /// the rest of a line partly written (which must be finished, or the
    /// next line would be glued to its first half).
    fn unstarted(&self) -> usize {
        let at_line_start = match self.sent {
            0 => !self.torn,
            n => self.buf[n - 1] == b'\n',
        };
        if at_line_start {
            return self.sent;
        }
        let rest = &self.buf[self.sent..];
        let end = rest.iter().position(|&b| b == b'\n');
        end.map_or(self.buf.len(), |i| self.sent + i + 1)
    }

    /// Drops the pending lines not yet begun, counting them; returns
    /// how many, with those dropped earlier and not yet reported.
    fn drop_unstarted(&mut self) -> u64 {
        let from = self.unstarted();
        let lines = self.buf[from..].iter().filter(|&&b| b == b'\n').count();
        self.buf.truncate(from);
        self.dropped += lines as u64;
        lines as u64 + std::mem::take(&mut self.unreported)
    }

    /// Flushes while the sink keeps taking bytes: gives up after `stall`
    /// without a byte taken, or at `cap`. True when nothing is left.
    fn drain_while_moving(&mut self, stall: Duration, cap: Instant) -> bool {
        // Progress is ours (bytes written) or the reader's (bytes it took
        // from what we wrote): a one-page pipe takes a write only once
        // its reader emptied the whole page, seconds apart at a slow
        // reader's pace, while the reader moves all along.
        let mut seen = (self.written, self.out.unread());
        let mut moved = Instant::now();
        loop {
            if self.flush() {
                return true;
            }
            let now = Instant::now();
            let unread = self.out.unread();
            let took = matches!((seen.1, unread), (Some(a), Some(b)) if b < a);
            if self.written != seen.0 || took {
                moved = now;
            }
            seen = (self.written, unread);
            let until = cap.min(moved + stall);
            if now >= until {
                return false;
            }
            self.out.wait((until - now).min(LOOK));
        }
    }
}

/// One write, retried if a signal interrupted it (trap 9).
fn write_once(out: &Out, data: &[u8]) -> io::Result<usize> {
    loop {
        match out.write(data) {
            Err(e) if interrupted(&e) => {}
            result => return result,
        }
    }
}

/// The longest run of whole lines at the start of `pending` that a pipe
/// takes in one atomic write, or the first line alone if it is longer.
fn batch(pending: &[u8]) -> &[u8] {
    let first = pending
        .iter()
        .position(|&b| b == b'\n')
        .map_or(pending.len(), |i| i + 1);
    if first >= PIPE_BUF {
        return &pending[..first];
    }
    let window = &pending[..pending.len().min(PIPE_BUF)];
    let end =
        window.iter().rposition(|&b| b == b'\n').map_or(first, |i| i + 1);
    &pending[..end]
}

#[cfg(test)]
mod tests;
