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
//! first fork, so the children add the bytes they move (and the log
//! lines they drop) to the numbers the parent prints. Closes are counted
//! by the parent alone: a child logs its close and reports its reason in
//! its exit status, and the parent, which reaps each child exactly once,
//! counts it then; a child that is killed or crashes is counted as
//! `shutdown` or `error`. However a child ends (killed after it logged,
//! say, while stderr stalled), its connection is counted once.
//! On a stop the parent forwards SIGTERM to every child; a child's
//! handler shuts its socket's read side down, which wakes a blocked read
//! (a blocked write returns with EINTR), and the child winds down as the
//! other models do. Children still alive after the stop window are
//! killed.
//!
//! The unsafe code of this model is all in this module: fork and waitpid
//! here, signals in `child`, mmap in `shared` (the crate's other unsafe
//! code is `rlimit`, `poll` in `sink` and one socket option of the load
//! generator).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};
use mio::{Interest, Token};
use signal_hook::consts::SIGCHLD;
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::error::Error;
use crate::journal::RateLimited;
use crate::listener::{wake, Listener, FIRST_CONNECTION, STOP_WINDOW};
use crate::log_limit::Limits;
use crate::stats::{Reason, Stats, Summary};

use super::acceptor::{self, Dispatch, Gate};
use super::blocking;
use child::{child, reported, SignalMask};
use shared::SharedStats;
use slots::{Claim, SharedSlots};

mod child;
mod shared;
mod slots;

/// The token of SIGCHLD on the server's poll. This model has no
/// connection tokens, so the first of them is free (trap 14).
const CHILDREN: Token = Token(FIRST_CONNECTION);
/// Reap at least this often, should a SIGCHLD ever go unseen.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// How often a stop is signalled again to the children still running.
const RESIGNAL: Duration = Duration::from_millis(100);
/// How long past the stop window children get before they are killed.
const GRACE: Duration = Duration::from_secs(1);

/// Runs the process model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    single_threaded()?;
    child::note_parent();
    let stats =
        SharedStats::new().map_err(Error::setup("map the counters"))?;
    let mut chld =
        Signals::new([SIGCHLD]).map_err(Error::setup("watch SIGCHLD"))?;
    listener
        .registry()
        .register(&mut chld, CHILDREN, Interest::READABLE)
        .map_err(Error::setup("register SIGCHLD"))?;
    // With --proxy-protocol, the per-address limit counts the clients
    // the headers name, which only the children learn: a slot each, in
    // shared memory.
    let slots = match (&config.proxy, config.max_connections_per_ip) {
        (Some(_), max) if max > 0 => {
            let len = config.max_connections.min(1 << 20);
            let slots = SharedSlots::new(len)
                .map_err(Error::setup("map the slots"))?;
            Some(std::sync::Arc::new(slots))
        }
        _ => None,
    };
    let free_slots = match &slots {
        Some(s) => (0..s.len()).rev().collect(),
        None => Vec::new(),
    };
    let mut model = Processes {
        stats,
        chld,
        slots,
        free_slots,
        children: HashMap::new(),
        departed: Vec::new(),
        stopping: false,
        config: config.clone(),
        limits: Limits::of(config),
        fork_failed: RateLimited::default(),
    };
    let mut gate = acceptor::run(listener, config, &mut model)?;
    model.stop(&mut gate)?;
    Ok(model.stats.summary())
}

/// fork() copies only the calling thread: with another thread running, a
/// lock it held (the allocator's, stderr's) stays locked in the child for
/// ever. Refuse rather than risk it; the binary runs the model on its
/// only thread.
fn single_threaded() -> Result<(), Error> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(Error::setup("count this process's threads"))?
        .count();
    match threads {
        1 => Ok(()),
        threads => Err(Error::NotSingleThreaded { threads }),
    }
}

struct Processes {
    stats: SharedStats,
    chld: Signals,
    /// `--max-connections-per-ip` by the client a PROXY header names.
    slots: Option<std::sync::Arc<SharedSlots>>,
    /// Slots no child holds.
    free_slots: Vec<usize>,
    /// Live children, the client each serves and its slot.
    children: HashMap<pid_t, (SocketAddr, Option<usize>)>,
    /// Clients whose children were reaped (or never forked) since the
    /// accept loop last asked.
    departed: Vec<SocketAddr>,
    stopping: bool,
    config: Config,
    /// Log mode's limits, made before the first fork: every child counts
    /// from the same instant.
    limits: Limits,
    fork_failed: RateLimited,
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

    /// A child is gone: count its connection's close, which it reported
    /// (and logged) in its exit status, or, if it was killed or crashed,
    /// count and log it here. Every accepted connection ends in exactly
    /// one count.
    fn reaped(&mut self, pid: pid_t, status: c_int) {
        let Some((peer, slot)) = self.children.remove(&pid) else { return };
        if let (Some(slots), Some(n)) = (&self.slots, slot) {
            // Freed here, however the child ended (SIGKILL included).
            slots.clear(n);
            self.free_slots.push(n);
        }
        self.departed.push(peer);
        let rejected = libc::WIFEXITED(status)
            && libc::WEXITSTATUS(status) == child::REJECTED;
        if rejected {
            return; // counted by the child, never served
        }
        if let Some(reason) = reported(status) {
            self.stats.closed(&reason);
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
        // The window counts as the gate's does (the children still
        // running at its end are killed).
        let now = Instant::now();
        let began = wake::stop_began(now, !self.config.drain.is_zero());
        // Children get GRACE past the window to end their own; a window
        // already over when the parent looks (it was stopped) ends now.
        let deadline = match now >= began + STOP_WINDOW {
            true => now,
            false => began + STOP_WINDOW + GRACE,
        };
        self.reap();
        while !self.children.is_empty() && !gate.stop_now() {
            // Again and again: a child that looked at its flag just
            // before it blocked misses one signal, never all of them.
            self.signal_all(libc::SIGTERM);
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            gate.wait(Some(deadline.min(now + RESIGNAL)))?;
            gate.service(&self.stats);
            self.turn(&[]);
        }
        if gate.stop_now() {
            self.signal_all(libc::SIGKILL);
        } else if !self.children.is_empty() {
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

    fn live(&mut self, departed: &mut Vec<SocketAddr>) -> usize {
        // A child that just exited must not count against the limit.
        self.reap();
        departed.append(&mut self.departed);
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
        // Live children are fewer than --max-connections, so a slot is
        // free whenever one is needed.
        let slot = self.slots.as_ref().and(self.free_slots.pop());
        let claim =
            self.slots.as_ref().zip(slot).map(|(slots, index)| Claim {
                slots: std::sync::Arc::clone(slots),
                index,
                max: self.config.max_connections_per_ip,
            });
        stop_signals.apply(libc::SIG_BLOCK);
        // SAFETY: the process is single-threaded (checked in `run`), so
        // the child inherits no lock held by another thread; the child
        // runs only `child`, which never returns.
        match unsafe { libc::fork() } {
            -1 => {
                stop_signals.apply(libc::SIG_UNBLOCK);
                let e = io::Error::last_os_error();
                if let Some(folded) = self.fork_failed.admit(Instant::now()) {
                    log::warn!(
                        "{peer}: cannot fork a child for it: {e} ({folded} \
                         more since the last line; see ulimit -u, memory)"
                    );
                }
                blocking::finish(peer, &Reason::Error(e), &self.stats);
                self.departed.push(peer);
                self.free_slots.extend(slot);
            }
            0 => child(
                gate.listener(),
                &self.config,
                child::Client { stream: &stream, peer, claim },
                &self.stats,
                self.limits,
                stop_signals,
            ),
            pid => {
                stop_signals.apply(libc::SIG_UNBLOCK);
                self.children.insert(pid, (peer, slot));
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
