//! The thread model: a `std::thread` per connection, each running the
//! shared blocking loop; the accept thread only accepts.
//!
//! Cost per connection: a thread, that is a stack (`--thread-stack-kib`,
//! 64 KiB by default, reserved and touched only as it is used), a kernel
//! task, and a 16 KiB read buffer on the heap. It breaks down at a few
//! thousand connections: memory and scheduler work grow with every idle
//! client, and thread creation sits on the accept path.
//!
//! A stop sets a flag and interrupts every connection thread's blocking
//! call with a signal (`listener::wake`), so each flushes and lingers as
//! the event-driven models do; after the stop window the rest are shut
//! down completely (which wakes writers blocked on a client that does not
//! read) and every thread is joined before the summary.

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

use crate::config::{Config, Mode};
use crate::error::Error;
use crate::journal::RateLimited;
use crate::listener::{wake, Listener, STOP_WINDOW};
use crate::log_limit::Limits;
use crate::stats::{Reason, Stats, Summary};

use super::acceptor::{self, Dispatch, Gate};
use super::blocking::{self, Context, Proxied, Stop, Watch};

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
/// How often a stop interrupts the threads again, for any that checked
/// the flag just before they blocked.
const REWAKE: Duration = Duration::from_millis(50);

/// Runs the thread model until it is stopped.
pub(crate) fn run(
    listener: Listener,
    config: &Config,
) -> Result<Summary, Error> {
    wake::install().map_err(Error::setup("install the wake-up signal"))?;
    let mut model = Threads {
        shared: Arc::new(Shared::default()),
        threads: Vec::new(),
        prune_at: PRUNE_MIN,
        pruned: Instant::now(),
        mode: config.mode,
        idle: config.idle_timeout,
        limits: Limits::of(config),
        stack: config.thread_stack_kib.saturating_mul(1024),
        spawn_failed: RateLimited::default(),
        proxy: config.proxy.as_ref().map(|_| {
            Arc::new(Proxied {
                table: Some(Arc::clone(listener.group()) as _),
                max_per_ip: config.max_connections_per_ip,
                rejections: Default::default(),
            })
        }),
    };
    let mut gate = acceptor::run(listener, config, &mut model)?;
    model.stop(&mut gate)?;
    Ok(model.shared.stats.summary())
}

/// What the accept thread and the connection threads share.
#[derive(Default)]
struct Shared {
    stats: Stats,
    /// How far the stop has come: a [`Stop`] as its discriminant.
    stopping: AtomicU8,
    /// The connections being served, and those that left.
    live: Mutex<Live>,
}

/// What the connection threads and the accept thread share under one
/// lock, taken once when a connection leaves and once per accept.
#[derive(Default)]
struct Live {
    /// The sockets being served, their clients and (once spawned) their
    /// threads, so a stop can wake them.
    streams: Slab<Served>,
    /// Clients whose connections closed since the accept thread last
    /// looked (it releases their per-address counts).
    departed: Vec<SocketAddr>,
}

/// One connection being served.
struct Served {
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    /// Its thread, not joined while it is in [`Live::streams`] (it
    /// removes itself before it returns).
    thread: Option<libc::pthread_t>,
}

impl Shared {
    /// The live sockets; a poisoned lock only means a connection thread
    /// panicked, and the slab is still consistent.
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leave(&self, key: usize) {
        let mut live = self.live();
        if let Some(served) = live.streams.try_remove(key) {
            live.departed.push(served.peer);
        }
    }

    /// Tells every connection thread how far the stop has come, and
    /// interrupts the blocking call each may be in, so it looks. Not by
    /// shutting the read side down, after which reads return 0 and a
    /// connection can no longer drain and linger (trap 17). A thread
    /// that checked the flag just before it blocked misses this signal;
    /// the caller repeats it until the thread is gone.
    fn wake_all(&self, stop: Stop) {
        self.stopping.store(stop as u8, SeqCst);
        for (_, served) in self.live().streams.iter() {
            if let Some(thread) = served.thread {
                wake::interrupt(thread);
            }
        }
    }

    /// Shuts every live socket down: wakes writers blocked on a client
    /// that does not read, once the window is over.
    fn shut_all(&self) {
        for (_, served) in self.live().streams.iter() {
            let _ = served.stream.shutdown(Shutdown::Both);
        }
    }

    fn is_empty(&self) -> bool {
        self.live().streams.is_empty()
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
    spawn_failed: RateLimited,
    proxy: Option<Arc<Proxied>>,
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

    /// Wakes every connection and gives them the stop window to finish
    /// (less if a second stop says now), then cuts off the rest and joins
    /// every thread.
    fn stop(&mut self, gate: &mut Gate) -> Result<(), Error> {
        let shared = &self.shared;
        let mut stop = Stop::Window;
        let deadline = Instant::now() + STOP_WINDOW;
        loop {
            if gate.stop_now() {
                stop = Stop::Now;
            }
            shared.wake_all(stop);
            let now = Instant::now();
            if shared.is_empty() || stop == Stop::Now || now >= deadline {
                break;
            }
            gate.wait(Some(deadline.min(now + REWAKE)))?;
            gate.service(&shared.stats);
        }
        // Writers blocked on a client that does not read wake only now.
        shared.shut_all();
        let last_call = Instant::now() + LAST_CALL;
        while !shared.is_empty() && Instant::now() < last_call {
            shared.wake_all(Stop::Now);
            gate.wait(Some(Instant::now() + REWAKE))?;
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a connection thread panicked");
            }
        }
        Ok(())
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
        let served =
            Served { stream: Arc::clone(&stream), peer, thread: None };
        let key = self.shared.live().streams.insert(served);
        let shared = Arc::clone(&self.shared);
        let (mode, idle, limits) = (self.mode, self.idle, self.limits);
        let proxy = self.proxy.clone();
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
                    proxy: proxy.as_deref(),
                };
                let mut watch = Flag(&shared.stopping);
                // Interrupted calls (the wake-up signal) return EINTR.
                blocking::serve(&stream, peer, &mut cx, &mut watch);
                shared.leave(key);
            });
        match spawned {
            Ok(thread) => {
                // Only this thread inserts, so if `key` is still there it
                // is this connection's.
                if let Some(served) = self.shared.live().streams.get_mut(key) {
                    served.thread = Some(thread.as_pthread_t());
                }
                self.threads.push(thread);
            }
            Err(e) => {
                self.shared.leave(key);
                if let Some(folded) = self.spawn_failed.admit(Instant::now()) {
                    log::warn!(
                        "{peer}: cannot start a connection thread: {e} \
                         ({folded} more since the last line; see \
                         --thread-stack-kib, ulimit -u)"
                    );
                }
                blocking::finish(peer, &Reason::Error(e), &self.shared.stats);
            }
        }
    }
}

/// The stop flag; [`Threads::stop`] wakes blocked threads itself.
struct Flag<'a>(&'a AtomicU8);

impl Watch for Flag<'_> {
    fn stopping(&mut self) -> Stop {
        match self.0.load(SeqCst) {
            0 => Stop::No,
            1 => Stop::Window,
            _ => Stop::Now,
        }
    }
}
