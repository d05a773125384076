//! The child side of the process model: from fork to `_exit`.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};
use std::time::Instant;

use libc::c_int;
use signal_hook::consts::SIGCHLD;

use crate::config::Config;
use crate::journal;
use crate::listener::{handled_signals, Listener};
use crate::log_limit::Limits;
use crate::stats::{Reason, Stats};

use crate::models::blocking::{self, Context, Proxied, Served, Stop, Watch};

/// Each child's read buffer.
const READ_BUF: usize = 64 * 1024;
/// Exit status of a child whose serving panicked.
const PANICKED: c_int = 70;
/// The exit status of a child whose client was rejected: not a close.
pub(super) const REJECTED: c_int = 71;

/// How a child tells its parent why its connection closed: its exit
/// status. Only the parent counts closes, once per child it reaps, so a
/// child killed after it logged its close is still counted once.
const CLOSED_BY: [(c_int, fn() -> Reason); 5] = [
    (0, || Reason::Eof),
    (1, || Reason::Reset),
    (2, || Reason::Error(io::Error::other("reported by the child"))),
    (3, || Reason::Idle),
    (4, || Reason::Shutdown),
];

/// The exit status that reports `reason`.
fn exit_status(reason: &Reason) -> c_int {
    match reason {
        Reason::Eof => 0,
        Reason::Reset => 1,
        Reason::Error(_) => 2,
        Reason::Idle => 3,
        Reason::Shutdown => 4,
    }
}

/// The close a child reported in its wait status, if it exited normally
/// (it logged it already); `None` if it was killed or crashed.
pub(super) fn reported(status: c_int) -> Option<Reason> {
    if !libc::WIFEXITED(status) {
        return None;
    }
    let code = libc::WEXITSTATUS(status);
    CLOSED_BY.iter().find(|(c, _)| *c == code).map(|(_, reason)| reason())
}

/// Set by the child's SIGTERM/SIGINT handler.
static STOP: AtomicBool = AtomicBool::new(false);
/// The parent's pid, noted before the first fork, to tell whether it
/// died before the child asked to die with it.
static PARENT: AtomicI32 = AtomicI32::new(0);

/// Notes this process as the parent of the children it forks.
pub(super) fn note_parent() {
    PARENT.store(std::process::id() as i32, SeqCst);
}

/// The connection a child serves: its socket, its peer (the balancer's
/// with `--proxy-protocol`), and its slot in the per-address table.
pub(super) struct Client<'a> {
    pub(super) stream: &'a TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) claim: Option<super::slots::Claim>,
}

/// Serves the connection in the child and exits; never returns, so no
/// destructor of the parent's state (the server, its poll) runs here.
pub(super) fn child(
    listener: &Listener,
    config: &Config,
    client: Client<'_>,
    stats: &Stats,
    limits: Limits,
    stop_signals: SignalMask,
) -> ! {
    let Client { stream, peer, claim } = client;
    // The parent writes and counts its own pending log lines.
    journal::after_fork();
    // The client a PROXY header names is counted in the child's slot of
    // the shared table (see `slots`); without a header, the parent
    // admitted it by address at accept.
    let proxy = config.proxy.as_ref().map(|_| Proxied {
        table: claim.map(|c| std::sync::Arc::new(c) as _),
        max_per_ip: config.max_connections_per_ip,
        rejections: Default::default(),
    });
    let fd = stream.as_raw_fd();
    close_inherited(listener, fd);
    let on_stop = on_stop as extern "C" fn(c_int);
    // The parent answers every other signal the server handles (a
    // SIGHUP or SIGQUIT sent to the whole process group, say) and tells
    // its children what to do.
    for signal in handled_signals() {
        set_handler(signal, libc::SIG_IGN);
    }
    set_handler(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    set_handler(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    set_handler(SIGCHLD, libc::SIG_DFL);
    die_with_parent();
    stop_signals.apply(libc::SIG_UNBLOCK);
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
                limits,
                proxy: proxy.as_ref(),
            };
            blocking::serve_to_close(stream, peer, &mut cx, &mut SignalWatch)
        }));
    let status = match served {
        // Never with no table to count in; and if it were, nothing to
        // count: status 0 would count an eof.
        Ok(Served::Rejected) => REJECTED,
        Ok(Served::Closed(peer, reason)) => {
            // Not counted yet: the parent counts it when it reaps us.
            let open = blocking::open(stats).saturating_sub(1);
            journal::closed(peer, &reason, open);
            exit_status(&reason)
        }
        Err(_) => PANICKED,
    };
    // Lines this child could not write die with it; the shared count
    // keeps the number. A child never waits for stderr.
    stats.log_dropped(journal::settle(Instant::now()));
    // SAFETY: _exit(2) ends the process at once without running atexit
    // handlers or destructors, which belong to the parent.
    unsafe { libc::_exit(status) }
}

/// Closes every descriptor the child inherited except stdio, its
/// connection and the log sink's own stderr: the listener, the waker,
/// the signal pipes and above all the epoll descriptor, whose
/// registrations it shares with the parent. Closing is safe for the
/// parent (its descriptors stay open); using or changing them from the
/// child would not be.
fn close_inherited(listener: &Listener, conn: c_int) {
    let mut keep = [conn, journal::own_fd().unwrap_or(conn)];
    keep.sort_unstable();
    let ranges = [
        (3, keep[0] - 1),
        (keep[0] + 1, keep[1] - 1),
        (keep[1] + 1, c_int::MAX),
    ];
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
        for fd in listener.inherited_fds() {
            // SAFETY: as above; the fds are the parent's poll and
            // listener, which this child never uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// The child's SIGTERM/SIGINT handler: note the stop. Installed without
/// SA_RESTART, so a blocked read or write returns EINTR and the serve
/// loop looks at the flag; the socket stays whole, so the child can
/// still drain and linger (trap 17). Only an atomic store: async-signal
/// safe.
extern "C" fn on_stop(_: c_int) {
    STOP.store(true, SeqCst);
}

/// Asks the kernel for SIGTERM when the parent dies (killed, out of
/// memory), so no child goes on serving as an orphan; if the parent died
/// before the request, stops at once.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches
    // no memory; getppid cannot fail.
    let parent = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::getppid()
    };
    if parent != PARENT.load(SeqCst) {
        STOP.store(true, SeqCst);
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
    fn stopping(&mut self) -> Stop {
        match STOP.load(SeqCst) {
            false => Stop::No,
            true => Stop::Window,
        }
    }
}

/// SIGINT and SIGTERM, to block around fork.
#[derive(Clone, Copy)]
pub(super) struct SignalMask(libc::sigset_t);

impl SignalMask {
    pub(super) fn stop_signals() -> SignalMask {
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

    pub(super) fn apply(&self, how: c_int) {
        // SAFETY: `self.0` is an initialised set; the old mask is not
        // wanted. The process is single-threaded, so this is its mask.
        unsafe { libc::sigprocmask(how, &self.0, ptr::null_mut()) };
    }
}
