//! The thread model: a `std::thread` per connection, each running the
//! shared blocking loop; the accept thread only accepts.
//!
//! Cost per connection: a thread, that is a stack (`--thread-stack-kib`,
//! 64 KiB by default, reserved and touched only as it is used), a kernel
//! task, and a 16 KiB read buffer on the heap. It breaks down at a few
//! thousand connections: memory and scheduler work grow with every idle
//! client, and thread creation sits on the accept path.
//!
//! A stop shuts every live socket's read side down, which wakes the
//! threads blocked in `read`; after the stop window the rest are shut
//! down completely (which wakes blocked writers too) and every thread is
//! joined before the summary.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::listener::{Listener, STOP_WINDOW};
use crate::log_limit::Limits;
use crate::stats::{Reason, Stats, Summary};

use super::acceptor::{self, Dispatch, Gate};
use super::blocking::{self, Context, Watch};

/// Each thread's read buffer, on the heap: the stack is small.
const READ_BUF: usize = 16 * 1024;
/// Thread handles kept before finished ones are dropped.
const PRUNE_MIN: usize = 64;
/// How often finished threads are joined while the server is quiet: an
/// exited thread that nobody joins keeps its stack mapped (a thousand
/// closed connections held 16 MiB until the next burst of accepts).
const JOIN_EVERY: Duration = Duration::from_secs(1);
/// How long after a full shutdown the threads get to return.
const LAST_CALL: Duration = Duration::from_secs(1);

/// Runs the thread model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    let mut model = Threads {
        shared: Arc::new(Shared::default()),
        threads: Vec::new(),
        prune_at: PRUNE_MIN,
        pruned: Instant::now(),
        mode: config.mode,
        idle: config.idle_timeout,
        limits: Limits::of(config),
        stack: config.thread_stack_kib.saturating_mul(1024),
    };
    let _gate = acceptor::run(listener, config, &mut model)?;
    model.stop();
    Ok(model.shared.stats.summary())
}

/// What the accept thread and the connection threads share.
#[derive(Default)]
struct Shared {
    stats: Stats,
    stopping: AtomicBool,
    /// The connections being served, and those that left.
    live: Mutex<Live>,
    /// Signalled whenever a connection leaves `live`.
    left: Condvar,
}

/// What the connection threads and the accept thread share under one
/// lock, taken once when a connection leaves and once per accept.
#[derive(Default)]
struct Live {
    /// The sockets being served, so a stop can wake their threads.
    streams: Slab<(Arc<TcpStream>, SocketAddr)>,
    /// Clients whose connections closed since the accept thread last
    /// looked (it releases their per-address counts).
    departed: Vec<SocketAddr>,
}

impl Shared {
    /// The live sockets; a poisoned lock only means a connection thread
    /// panicked, and the slab is still consistent.
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leave(&self, key: usize) {
        let mut live = self.live();
        if let Some((_, peer)) = live.streams.try_remove(key) {
            live.departed.push(peer);
        }
        drop(live);
        self.left.notify_all();
    }

    /// Shuts down every live socket in `how`.
    fn shut_all(&self, how: Shutdown) {
        for (_, (stream, _)) in self.live().streams.iter() {
            let _ = stream.shutdown(how);
        }
    }

    /// Waits until no connection is live or `deadline` passes.
    fn wait_empty(&self, deadline: Instant) {
        let mut live = self.live();
        while !live.streams.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            live = match self.left.wait_timeout(live, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

struct Threads {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Drop finished handles when `threads` reaches this length.
    prune_at: usize,
    /// When finished handles were last dropped.
    pruned: Instant,
    mode: Mode,
    idle: Option<Duration>,
    limits: Limits,
    stack: usize,
}

impl Threads {
    /// Joins the threads that finished, which frees their stacks, and
    /// keeps the handles of the rest.
    fn prune(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            self.threads.drain(..).partition(JoinHandle::is_finished);
        for thread in done {
            if thread.join().is_err() {
                log::error!("a connection thread panicked");
            }
        }
        self.threads = running;
        self.prune_at = (self.threads.len() * 2).max(PRUNE_MIN);
        self.pruned = Instant::now();
    }

    /// Wakes every connection, gives them the stop window to finish, then
    /// cuts off the rest and joins every thread.
    fn stop(&mut self) {
        let shared = &self.shared;
        // The flag first: a thread that checks it just before blocking in
        // `read` still finds its read side shut down and returns at once.
        shared.stopping.store(true, SeqCst);
        shared.shut_all(Shutdown::Read);
        shared.wait_empty(Instant::now() + STOP_WINDOW);
        // Writers blocked on a client that does not read wake only now.
        shared.shut_all(Shutdown::Both);
        shared.wait_empty(Instant::now() + LAST_CALL);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a connection thread panicked");
            }
        }
    }
}

impl Dispatch for Threads {
    fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    fn live(&mut self, departed: &mut Vec<SocketAddr>) -> usize {
        // Forget the handles of finished threads once they double, so they
        // do not pile up, at O(1) amortised per connection.
        if self.threads.len() >= self.prune_at {
            self.prune();
        }
        let mut live = self.shared.live();
        departed.append(&mut live.departed);
        live.streams.len()
    }

    fn timeout(&self) -> Option<Duration> {
        (!self.threads.is_empty()).then_some(JOIN_EVERY)
    }

    /// Once a second, join what finished, so a quiet server gives back
    /// the stacks of the connections that are gone.
    fn turn(&mut self, _tokens: &[Token]) {
        if self.pruned.elapsed() >= JOIN_EVERY {
            self.prune();
        }
    }

    fn dispatch(&mut self, _: &mut Gate, stream: TcpStream, peer: SocketAddr) {
        let stream = Arc::new(stream);
        let key =
            self.shared.live().streams.insert((Arc::clone(&stream), peer));
        let shared = Arc::clone(&self.shared);
        let (mode, idle, limits) = (self.mode, self.idle, self.limits);
        let spawned =
            thread::Builder::new().stack_size(self.stack).spawn(move || {
                let mut buf = vec![0; READ_BUF];
                let mut scratch = String::new();
                let mut cx = Context {
                    buf: &mut buf,
                    scratch: &mut scratch,
                    stats: &shared.stats,
                    mode,
                    idle,
                    limits,
                };
                let mut watch = Flag(&shared.stopping);
                blocking::serve(&stream, peer, &mut cx, &mut watch);
                shared.leave(key);
            });
        match spawned {
            Ok(thread) => self.threads.push(thread),
            Err(e) => {
                self.shared.leave(key);
                blocking::finish(peer, &Reason::Error(e), &self.shared.stats);
            }
        }
    }
}

/// The stop flag; [`Threads::stop`] wakes blocked threads itself.
struct Flag<'a>(&'a AtomicBool);

impl Watch for Flag<'_> {
    fn stopping(&mut self) -> bool {
        self.0.load(SeqCst)
    }
}
