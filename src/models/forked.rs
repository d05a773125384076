//! The process model: `fork()` per connection, as the teaching notes'
//! multi-process server does. The child serves its one connection with
//! the shared blocking loop and exits; the parent only accepts, closes its
//! copy of each client socket and reaps children as SIGCHLD reports them.
//!
//! Cost per connection: a process, that is a fork (page tables copied,
//! pages shared copy-on-write until written), a kernel task, and a 64 KiB
//! read buffer the child touches. It breaks down earliest of all: fork
//! sits on the accept path, and memory and scheduler work grow with every
//! idle client. What it buys is isolation: a crash ends one connection.
//!
//! The counters live in a shared anonymous mapping created before the
//! first fork, so the children add to the numbers the parent prints. A
//! child that dies without counting its close (killed, crashed) is
//! counted by the parent when it reaps it, so the summary stays exact.
//! On a stop the parent forwards SIGTERM to every child; a child's
//! handler shuts its socket's read side down, which wakes a blocked read
//! (a blocked write returns with EINTR), and the child winds down as the
//! other models do. Children still alive after the stop window are
//! killed.
//!
//! All the unsafe code of the crate is here: fork, signals, mmap.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};
use mio::{Interest, Token};
use signal_hook::consts::SIGCHLD;
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::error::Error;
use crate::server::{Server, FIRST_CONNECTION};
use crate::stats::{Reason, Stats, Summary};

use super::acceptor::{self, Dispatch, Gate};
use super::blocking::{self, Context, Watch, STOP_WINDOW};

/// The token of SIGCHLD on the server's poll. This model has no
/// connection tokens, so the first of them is free (trap 14).
const CHILDREN: Token = Token(FIRST_CONNECTION);
/// Reap at least this often, should a SIGCHLD ever go unseen.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// How long past the stop window children get before they are killed.
const GRACE: Duration = Duration::from_secs(1);
/// Each child's read buffer.
const READ_BUF: usize = 64 * 1024;
/// Exit status of a child that counted and logged its close.
const SERVED: c_int = 0;
/// Exit status of a child whose serving panicked.
const PANICKED: c_int = 70;

/// Runs the process model until it is stopped.
pub fn run(server: Server) -> Result<Summary, Error> {
    single_threaded()?;
    let stats =
        SharedStats::new().map_err(Error::setup("map the counters"))?;
    let mut chld =
        Signals::new([SIGCHLD]).map_err(Error::setup("watch SIGCHLD"))?;
    server
        .poll
        .registry()
        .register(&mut chld, CHILDREN, Interest::READABLE)
        .map_err(Error::setup("register SIGCHLD"))?;
    let mut model =
        Processes { stats, chld, children: HashMap::new(), stopping: false };
    let mut gate = acceptor::run(server, &mut model)?;
    model.stop(&mut gate)?;
    Ok(model.stats.summary())
}

/// fork() copies only the calling thread: with another thread running, a
/// lock it held (the allocator's, stderr's) stays locked in the child for
/// ever. Refuse rather than risk it; the binary runs the model on its
/// only thread.
fn single_threaded() -> Result<(), Error> {
    let what = "run the process model";
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(Error::setup(what))?
        .count();
    match threads {
        1 => Ok(()),
        n => Err(Error::setup(what)(io::Error::other(format!(
            "fork needs a single-threaded process, this one has {n} threads"
        )))),
    }
}

struct Processes {
    stats: SharedStats,
    chld: Signals,
    /// Live children and the client each serves.
    children: HashMap<pid_t, SocketAddr>,
    stopping: bool,
}

impl Processes {
    /// Reaps every child that has exited, without blocking.
    fn reap(&mut self) {
        while !self.children.is_empty() {
            match wait_child(libc::WNOHANG) {
                Ok(Some((pid, status))) => self.reaped(pid, status),
                Ok(None) => return,
                Err(e) => {
                    log::error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    /// A child is gone. If it did not count its own close, count it here,
    /// so that every accepted connection ends in exactly one count.
    fn reaped(&mut self, pid: pid_t, status: c_int) {
        let Some(peer) = self.children.remove(&pid) else { return };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == SERVED {
            return;
        }
        let reason = match self.stopping {
            true => Reason::Shutdown,
            false => Reason::Error(io::Error::other(describe(pid, status))),
        };
        blocking::finish(peer, &reason, &self.stats);
    }

    /// Forwards the stop to every child, waits for them through the stop
    /// window, then kills and reaps the rest.
    fn stop(&mut self, gate: &mut Gate) -> Result<(), Error> {
        self.stopping = true;
        self.signal_all(libc::SIGTERM);
        let deadline = Instant::now() + STOP_WINDOW + GRACE;
        self.reap();
        while !self.children.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            gate.wait(Some(left.min(REAP_EVERY)))?;
            self.turn(&[]);
        }
        if !self.children.is_empty() {
            log::warn!(
                "{} children still running after the stop window; \
                 killing them",
                self.children.len()
            );
            self.signal_all(libc::SIGKILL);
        }
        while !self.children.is_empty() {
            match wait_child(0) {
                Ok(Some((pid, status))) => self.reaped(pid, status),
                Ok(None) => {}
                Err(e) => {
                    log::error!("waitpid: {e}");
                    break;
                }
            }
        }
        Ok(())
    }

    fn signal_all(&self, signal: c_int) {
        for &pid in self.children.keys() {
            // SAFETY: kill(2) has no memory effects; `pid` is a child we
            // have not reaped yet, so the pid cannot have been reused.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

impl Dispatch for Processes {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn live(&mut self) -> usize {
        // A child that just exited must not count against the limit.
        self.reap();
        self.children.len()
    }

    fn timeout(&self) -> Option<Duration> {
        Some(REAP_EVERY)
    }

    fn turn(&mut self, _tokens: &[Token]) {
        // Consume the SIGCHLD edge (one read of the self-pipe covers any
        // number of signals), then reap whatever has exited.
        for _ in self.chld.pending() {}
        self.reap();
    }

    fn dispatch(
        &mut self,
        gate: &mut Gate,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        // A stop signal arriving between fork and the child's own handler
        // would run the parent's handler in the child; keep them pending
        // until each side is ready.
        let stop_signals = SignalMask::stop_signals();
        stop_signals.apply(libc::SIG_BLOCK);
        // SAFETY: the process is single-threaded (checked in `run`), so
        // the child inherits no lock held by another thread; the child
        // runs only `child`, which never returns.
        match unsafe { libc::fork() } {
            -1 => {
                stop_signals.apply(libc::SIG_UNBLOCK);
                let e = io::Error::last_os_error();
                blocking::finish(peer, &Reason::Error(e), &self.stats);
            }
            0 => {
                child(gate.server(), &stream, peer, &self.stats, stop_signals)
            }
            pid => {
                stop_signals.apply(libc::SIG_UNBLOCK);
                self.children.insert(pid, peer);
                // The parent closes its copy of the client socket: the
                // child's copy is the connection now.
                drop(stream);
            }
        }
    }
}

/// `waitpid(-1, flags)`: `None` if no child has exited (with WNOHANG) or
/// none is left.
fn wait_child(flags: c_int) -> io::Result<Option<(pid_t, c_int)>> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable c_int.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        match pid {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return Ok(None),
                    _ => return Err(e),
                }
            }
            pid => return Ok(Some((pid, status))),
        }
    }
}

fn describe(pid: pid_t, status: c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("child {pid} killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("child {pid} exited with {}", libc::WEXITSTATUS(status))
    }
}

// ---- the child ----------------------------------------------------------

/// Set by the child's SIGTERM/SIGINT handler.
static STOP: AtomicBool = AtomicBool::new(false);
/// The child's connection, for the handler to shut down.
static CONN_FD: AtomicI32 = AtomicI32::new(-1);

/// Serves the connection in the child and exits; never returns, so no
/// destructor of the parent's state (the server, its poll) runs here.
fn child(
    server: &Server,
    stream: &TcpStream,
    peer: SocketAddr,
    stats: &Stats,
    stop_signals: SignalMask,
) -> ! {
    let fd = stream.as_raw_fd();
    close_inherited(server, fd);
    CONN_FD.store(fd, SeqCst);
    let on_stop = on_stop as extern "C" fn(c_int);
    set_handler(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    set_handler(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    set_handler(SIGCHLD, libc::SIG_DFL);
    stop_signals.apply(libc::SIG_UNBLOCK);
    let config: &Config = server.config();
    let served =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut buf = vec![0; READ_BUF];
            let mut scratch = String::new();
            let mut cx = Context {
                buf: &mut buf,
                scratch: &mut scratch,
                stats,
                mode: config.mode,
                idle: config.idle_timeout,
            };
            blocking::serve(stream, peer, &mut cx, &mut SignalWatch);
        }));
    let status = if served.is_ok() { SERVED } else { PANICKED };
    // SAFETY: _exit(2) ends the process at once without running atexit
    // handlers or destructors, which belong to the parent.
    unsafe { libc::_exit(status) }
}

/// Closes every descriptor the child inherited except stdio and its
/// connection: the listener, the waker, the signal pipes and above all
/// the epoll descriptor, whose registrations it shares with the parent.
/// Closing is safe for the parent (its descriptors stay open); using or
/// changing them from the child would not be.
fn close_inherited(server: &Server, keep: c_int) {
    let ranges = [(3, keep - 1), (keep + 1, c_int::MAX)];
    let mut ok = true;
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: close_range(2) only closes descriptors; the ones closed
        // belong to objects this child never uses again (it `_exit`s).
        let r = unsafe {
            libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0)
        };
        ok &= r == 0;
    }
    if !ok {
        // Kernels before 5.9: close what we know of.
        for fd in [server.poll.as_raw_fd(), server.listener.as_raw_fd()] {
            // SAFETY: as above; the fds are the parent's poll and
            // listener, which this child never uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// The child's SIGTERM/SIGINT handler: note the stop and wake a blocked
/// read. Only async-signal-safe calls: atomics and shutdown(2).
extern "C" fn on_stop(_: c_int) {
    STOP.store(true, SeqCst);
    // SAFETY: shutdown(2) is async-signal-safe and the descriptor stays
    // open until the child exits; errno is saved and restored so the
    // interrupted code sees its own.
    unsafe {
        let errno = *libc::__errno_location();
        libc::shutdown(CONN_FD.load(SeqCst), libc::SHUT_RD);
        *libc::__errno_location() = errno;
    }
}

fn set_handler(signal: c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); without
    // SA_RESTART a blocked read or write returns EINTR, which the serve
    // loop treats as "look at the stop flag". The handler is
    // async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, ptr::null_mut());
    }
}

/// The child's watch: the handler woke it, or will.
struct SignalWatch;

impl Watch for SignalWatch {
    fn stopping(&mut self) -> bool {
        STOP.load(SeqCst)
    }
}

/// SIGINT and SIGTERM, to block around fork.
#[derive(Clone, Copy)]
struct SignalMask(libc::sigset_t);

impl SignalMask {
    fn stop_signals() -> SignalMask {
        // SAFETY: sigemptyset initialises the zeroed set, sigaddset adds
        // valid signal numbers to it.
        unsafe {
            let mut set: libc::sigset_t = mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            SignalMask(set)
        }
    }

    fn apply(&self, how: c_int) {
        // SAFETY: `self.0` is an initialised set; the old mask is not
        // wanted. The process is single-threaded, so this is its mask.
        unsafe { libc::sigprocmask(how, &self.0, ptr::null_mut()) };
    }
}

// ---- the shared counters ------------------------------------------------

/// A [`Stats`] in a shared anonymous mapping: created before the first
/// fork, so every child adds to the same counters the parent reads.
struct SharedStats(NonNull<Stats>);

impl SharedStats {
    fn new() -> io::Result<SharedStats> {
        // SAFETY: an anonymous mapping with no address hint touches no
        // existing memory; failure is checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mem::size_of::<Stats>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let p = NonNull::new(p.cast::<Stats>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: the mapping is page aligned (more than AtomicU64 needs),
        // large enough, writable and not yet shared with anyone.
        unsafe { p.as_ptr().write(Stats::default()) };
        Ok(SharedStats(p))
    }
}

impl std::ops::Deref for SharedStats {
    type Target = Stats;

    fn deref(&self) -> &Stats {
        // SAFETY: the mapping lives until `drop` and holds an initialised
        // Stats; it is only ever accessed through shared references to
        // atomics, which is sound across processes too.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for SharedStats {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.0.as_ptr().cast(), mem::size_of::<Stats>())
        };
    }
}
