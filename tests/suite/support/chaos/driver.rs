//! The driver threads: each runs one `mio::Poll` over its share of the
//! clients, starts new ones as old ones finish and wakes paced readers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::client::{Client, Status};
use super::script::{script, Behaviour};
use super::{Plan, Tally};
use crate::support::Rng;

/// A nonblocking connect under way.
const INPROGRESS: i32 = rustix::io::Errno::INPROGRESS.raw_os_error();

/// Receive buffer of a slow reader, so the server's output backs up.
const SLOW_RCVBUF: usize = 16 * 1024;

/// Runs `plan` against the echo server at `addr`; returns every client's
/// tally. `stop` ends the starting of new clients early.
pub fn run(
    addr: SocketAddr,
    plan: &Plan,
    stop: &Arc<AtomicBool>,
) -> Vec<Tally> {
    let drivers = plan.drivers.clamp(1, plan.concurrency.max(1));
    let handles: Vec<_> = (0..drivers)
        .map(|d| {
            let share = |n: usize| n / drivers + usize::from(d < n % drivers);
            let mut part = plan.clone();
            part.concurrency = share(plan.concurrency);
            part.total = share(plan.total);
            part.seed = plan.seed.wrapping_mul(31).wrapping_add(d as u64);
            let stop = Arc::clone(stop);
            thread::spawn(move || Driver::new(addr, part, stop).run())
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("driver thread"))
        .collect()
}

struct Driver {
    addr: SocketAddr,
    plan: Plan,
    stop: Arc<AtomicBool>,
    poll: Poll,
    clients: Slab<Client>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Clients whose turn budget ran out: advanced again next turn
    /// (edge-triggered: no new event would come for what is left).
    again: Vec<usize>,
    rng: Rng,
    buf: Vec<u8>,
    tallies: Vec<Tally>,
}

impl Driver {
    fn new(addr: SocketAddr, plan: Plan, stop: Arc<AtomicBool>) -> Driver {
        Driver {
            addr,
            rng: Rng::new(plan.seed),
            plan,
            stop,
            poll: Poll::new().expect("poll"),
            clients: Slab::new(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            buf: vec![0; 64 * 1024],
            tallies: Vec::new(),
        }
    }

    fn run(mut self) -> Vec<Tally> {
        let start = Instant::now();
        let mut started = 0;
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = start;
        loop {
            while self.may_start(started, start)
                && self.clients.len() < self.plan.concurrency
            {
                self.start_client();
                started += 1;
            }
            if self.clients.is_empty() && !self.may_start(started, start) {
                return self.tallies;
            }
            let now = Instant::now();
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            let wait = next
                .map_or(Duration::from_millis(50), |t| {
                    t.saturating_duration_since(now)
                })
                .min(Duration::from_millis(50));
            let wait =
                if self.again.is_empty() { wait } else { Duration::ZERO };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("client poll: {e}"),
            }
            let keys: Vec<usize> =
                events.iter().map(|e| e.token().0).collect();
            for key in keys.into_iter().chain(std::mem::take(&mut self.again))
            {
                self.advance(key);
            }
            let now = Instant::now();
            while let Some(&Reverse((t, key))) = self.timers.peek() {
                if t > now {
                    break;
                }
                self.timers.pop();
                self.advance(key);
            }
            if now >= next_sweep {
                // Clients past their deadline fail as stuck.
                let late: Vec<usize> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| now >= c.deadline)
                    .map(|(k, _)| k)
                    .collect();
                for key in late {
                    self.advance(key);
                }
                next_sweep = now + Duration::from_millis(500);
            }
        }
    }

    /// Whether another client may start: checked before each one, as a
    /// refused connect fails at once and must not loop past a stop.
    fn may_start(&self, started: usize, start: Instant) -> bool {
        started < self.plan.total
            && start.elapsed() < self.plan.duration
            && !self.stop.load(Ordering::Relaxed)
    }

    fn start_client(&mut self) {
        let behaviour = Behaviour::ALL[self.rng.below(8) as usize];
        let seed = self.rng.next_u64();
        let script = script(behaviour, &mut self.rng, self.plan.scale);
        let rcvbuf =
            (behaviour == Behaviour::SlowReader).then_some(SLOW_RCVBUF);
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let mut client = Client::new(behaviour, seed, script);
        match open(self.addr, rcvbuf) {
            Ok(mut stream) => {
                self.poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .expect("register client");
                client.stream = Some(stream);
                entry.insert(client);
                self.advance(key);
            }
            Err(e) => {
                client.fail(self.plan.tolerant, format!("connect: {e}"));
                self.tallies.push(client.tally);
            }
        }
    }

    fn advance(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else { return };
        let tolerant = self.plan.tolerant;
        match client.advance(&mut self.buf, tolerant) {
            Status::Wait(None) => {}
            Status::Wait(Some(wake)) => self.timers.push(Reverse((wake, key))),
            Status::More => self.again.push(key),
            Status::Done => {
                let mut client = self.clients.remove(key);
                if let Some(mut stream) = client.stream.take() {
                    let _ = self.poll.registry().deregister(&mut stream);
                    if client.reset_on_close {
                        let _ = SockRef::from(&stream)
                            .set_linger(Some(Duration::ZERO));
                    }
                }
                self.tallies.push(client.tally);
            }
        }
    }
}

/// A nonblocking connect, with a small receive buffer when asked (set
/// before connecting, so the window is small from the start).
fn open(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(INPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}
