//! A chaos client driver: many echo clients on a few threads, each thread
//! one `mio::Poll` over its clients, so a thousand clients do not need a
//! thousand threads. Each client follows a script picked at random from
//! [`Behaviour`] and tallies what it did: its address, bytes written,
//! bytes read back (each compared, in order, with what was written) and
//! the close reasons the server may report for it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::Rng;

/// How long one client may live before it counts as stuck.
const CLIENT_PATIENCE: Duration = Duration::from_secs(20);
/// Bytes generated per write.
const WRITE_CHUNK: usize = 16 * 1024;
/// Bytes one client may read, and write, per turn of its driver, so that
/// a burst cannot starve the slow readers on the same thread (whose
/// server would then see no traffic and close them as idle).
const TURN_BUDGET: usize = 256 * 1024;
/// Receive buffer of a slow reader, so the server's output backs up.
const SLOW_RCVBUF: usize = 16 * 1024;

/// What one client does; each is equally likely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behaviour {
    /// A few messages, each echoed back in full, then close: `eof`.
    Normal,
    /// Messages, then more bytes and an RST (`SO_LINGER 0`): `reset`.
    Reset,
    /// Send everything, shut down the write side, read the echo to EOF.
    HalfClose,
    /// Messages, then half of one and close without reading its echo:
    /// `eof`, or `reset` if the echo arrived before the close (a close
    /// with unread input sends an RST; the kernel decides which).
    MidMessage,
    /// A message or two, then silence until the server closes: `idle`.
    Idle,
    /// A small receive buffer, no reading for a while, then slow reads
    /// while writing: echo backpressure.
    SlowReader,
    /// Megabytes in large writes while reading: `eof`.
    Burst,
    /// Connect and close without sending: `eof`.
    ConnectClose,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 8] = [
        Behaviour::Normal,
        Behaviour::Reset,
        Behaviour::HalfClose,
        Behaviour::MidMessage,
        Behaviour::Idle,
        Behaviour::SlowReader,
        Behaviour::Burst,
        Behaviour::ConnectClose,
    ];

    /// The close reasons the server may log for this client.
    pub fn reasons(self) -> &'static [&'static str] {
        match self {
            Behaviour::Reset => &["reset"],
            Behaviour::MidMessage => &["eof", "reset"],
            Behaviour::Idle => &["idle"],
            _ => &["eof"],
        }
    }

    /// Whether the server's byte counts for this client are exactly what
    /// it wrote. Not so when it leaves with bytes in flight: then the
    /// server read between what was echoed back and what was written.
    pub fn exact_bytes(self) -> bool {
        !matches!(self, Behaviour::Reset | Behaviour::MidMessage)
    }
}

/// How many clients, how fast, how long.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Clients open at once, over all driver threads.
    pub concurrency: usize,
    /// Clients in all.
    pub total: usize,
    /// No client starts after this.
    pub duration: Duration,
    /// Driver threads.
    pub drivers: usize,
    pub seed: u64,
    /// Server closes and resets are not failures (a shutdown test).
    pub tolerant: bool,
    /// Scales message and burst sizes (1 = the CI sizes).
    pub scale: usize,
}

/// How one client ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its script ran to the end.
    Done,
    /// The server closed or reset it early; only a tolerant plan allows it.
    CutOff(String),
    /// A broken promise: wrong or missing bytes, an early close, stuck.
    Failed(String),
}

/// What one client did.
#[derive(Clone, Debug)]
pub struct Tally {
    pub behaviour: Behaviour,
    /// Its address as the server saw it, once connected.
    pub peer: Option<SocketAddr>,
    /// Bytes the kernel took from it.
    pub written: u64,
    /// Bytes read back, each equal to the byte written at its place.
    pub verified: u64,
    pub outcome: Outcome,
}

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
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// One step of a client's script.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Write this many more bytes, reading echoes meanwhile.
    Send(usize),
    /// Read until everything written has come back.
    AwaitEcho,
    /// Read nothing until `pause` has passed, then at most `chunk` bytes
    /// every `every` for `slow`, then at full speed again. The slow spell
    /// is bounded: once the server's output sits in kernel buffers, a
    /// trickle longer than the idle timeout is idle to the server.
    ReadSlowly {
        pause: Duration,
        chunk: usize,
        every: Duration,
        slow: Duration,
    },
    /// Shut down the write side.
    ShutdownWrite,
    /// Read until the server closes; everything must have come back.
    AwaitEof,
    /// Close normally.
    Close,
    /// Close with `SO_LINGER 0`: an RST.
    Reset,
}

fn script(b: Behaviour, rng: &mut Rng, scale: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    match b {
        Behaviour::Normal => {
            let n = rng.between(1, 8);
            messages(rng, &mut steps, n);
            steps.push(Step::Close);
        }
        Behaviour::Reset => {
            let n = rng.between(1, 4);
            messages(rng, &mut steps, n);
            steps.push(Step::Send(rng.between(1, 8 * 1024)));
            steps.push(Step::Reset);
        }
        Behaviour::HalfClose => {
            steps.push(Step::Send(rng.between(1, 256 * 1024 * scale)));
            steps.push(Step::ShutdownWrite);
            steps.push(Step::AwaitEof);
            steps.push(Step::Close);
        }
        Behaviour::MidMessage => {
            let n = rng.between(0, 3);
            messages(rng, &mut steps, n);
            steps.push(Step::Send(rng.between(1, 8 * 1024)));
            steps.push(Step::Close);
        }
        Behaviour::Idle => {
            let n = rng.between(0, 2);
            messages(rng, &mut steps, n);
            steps.push(Step::AwaitEof);
            steps.push(Step::Close);
        }
        Behaviour::SlowReader => {
            steps.push(Step::ReadSlowly {
                pause: Duration::from_millis(rng.between(50, 250) as u64),
                chunk: 16 * 1024,
                every: Duration::from_millis(2),
                slow: Duration::from_millis(250),
            });
            steps
                .push(Step::Send(rng.between(128 * 1024, 512 * 1024) * scale));
            steps.push(Step::AwaitEcho);
            steps.push(Step::Close);
        }
        Behaviour::Burst => {
            let mib = 1024 * 1024;
            steps.push(Step::Send(rng.between(mib / 2, 2 * mib) * scale));
            steps.push(Step::AwaitEcho);
            steps.push(Step::Close);
        }
        Behaviour::ConnectClose => steps.push(Step::Close),
    }
    steps
}

/// `n` messages of up to 16 KiB, each echoed back before the next.
fn messages(rng: &mut Rng, steps: &mut Vec<Step>, n: usize) {
    for _ in 0..n {
        steps.push(Step::Send(rng.between(1, 16 * 1024)));
        steps.push(Step::AwaitEcho);
    }
}

/// Read pacing: none, or a pause and then a trickle.
#[derive(Clone, Copy, Debug)]
struct Pace {
    not_before: Instant,
    chunk: usize,
    every: Duration,
    until: Instant,
}

struct Client {
    stream: Option<TcpStream>,
    connected: bool,
    script: Vec<Step>,
    step: usize,
    /// Bytes the script has asked to write so far.
    target: u64,
    out: Vec<u8>,
    out_sent: usize,
    tx: Bytes,
    rx: Bytes,
    pace: Option<Pace>,
    reset_on_close: bool,
    /// Read or written this turn, against [`TURN_BUDGET`].
    turn_read: usize,
    turn_written: usize,
    deadline: Instant,
    tally: Tally,
}

enum Got {
    /// Read what there was (or the pace allows); wait for more.
    Waiting,
    Eof,
}

impl Client {
    fn new(behaviour: Behaviour, seed: u64, script: Vec<Step>) -> Client {
        Client {
            stream: None,
            connected: false,
            script,
            step: 0,
            target: 0,
            out: Vec::new(),
            out_sent: 0,
            tx: Bytes::new(seed),
            rx: Bytes::new(seed),
            pace: None,
            reset_on_close: false,
            turn_read: 0,
            turn_written: 0,
            deadline: Instant::now() + CLIENT_PATIENCE,
            tally: Tally {
                behaviour,
                peer: None,
                written: 0,
                verified: 0,
                outcome: Outcome::Done,
            },
        }
    }

    fn fail(&mut self, tolerant: bool, why: String) {
        self.tally.outcome = match tolerant {
            true => Outcome::CutOff(why),
            false => Outcome::Failed(why),
        };
    }

    /// Runs the script as far as the socket allows.
    fn advance(&mut self, buf: &mut [u8], tolerant: bool) -> Status {
        let now = Instant::now();
        if now >= self.deadline {
            self.tally.outcome = Outcome::Failed(format!(
                "stuck at step {:?} after {} of {} bytes back",
                self.script.get(self.step),
                self.tally.verified,
                self.tally.written
            ));
            return Status::Done;
        }
        self.turn_read = 0;
        self.turn_written = 0;
        match self.steps(buf, now) {
            Ok(true) => Status::Done,
            Ok(false)
                if self.turn_read >= TURN_BUDGET
                    || self.turn_written >= TURN_BUDGET =>
            {
                Status::More
            }
            // A paced reader is not woken by the socket for what it left
            // unread (edge-triggered), so it sets a timer.
            Ok(false) => Status::Wait(self.pace.map(|p| p.not_before)),
            Err(Broken::Promise(why)) => {
                self.tally.outcome = Outcome::Failed(why);
                Status::Done
            }
            Err(Broken::Server(why)) => {
                self.fail(tolerant, why);
                Status::Done
            }
        }
    }

    /// True when the script is finished.
    fn steps(&mut self, buf: &mut [u8], now: Instant) -> Result<bool, Broken> {
        if !self.connected && !self.connect()? {
            return Ok(false);
        }
        while let Some(&step) = self.script.get(self.step) {
            let done = match step {
                Step::Send(n) => {
                    if self.target == self.tally.written
                        && self.out_sent == self.out.len()
                    {
                        self.target += n as u64;
                    }
                    self.read(buf, now)?;
                    self.write()?
                }
                Step::AwaitEcho => {
                    self.read(buf, now)?;
                    self.tally.verified == self.tally.written
                }
                Step::ReadSlowly { pause, chunk, every, slow } => {
                    let not_before = now + pause;
                    let until = not_before + slow;
                    self.pace = Some(Pace { not_before, chunk, every, until });
                    true
                }
                Step::ShutdownWrite => {
                    let _ = self.stream().shutdown(Shutdown::Write);
                    true
                }
                Step::AwaitEof => match self.read(buf, now)? {
                    Got::Eof => true,
                    Got::Waiting => false,
                },
                Step::Close => return Ok(true),
                Step::Reset => {
                    self.reset_on_close = true;
                    return Ok(true);
                }
            };
            if !done {
                return Ok(false);
            }
            self.step += 1;
        }
        Ok(true)
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("a live client has a stream")
    }

    /// Whether the nonblocking connect has completed.
    fn connect(&mut self) -> Result<bool, Broken> {
        let stream = self.stream();
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            return Err(Broken::Server(format!("connect: {e}")));
        }
        match stream.peer_addr() {
            Ok(_) => {
                self.tally.peer = stream.local_addr().ok();
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(Broken::Server(format!("connect: {e}"))),
        }
    }

    /// Reads what there is (as the pace allows), checking each byte
    /// against the one written at its place.
    fn read(&mut self, buf: &mut [u8], now: Instant) -> Result<Got, Broken> {
        let mut budget = TURN_BUDGET.saturating_sub(self.turn_read);
        if self.pace.is_some_and(|p| now >= p.until) {
            self.pace = None;
        }
        if let Some(pace) = &mut self.pace {
            if now < pace.not_before {
                return Ok(Got::Waiting);
            }
            budget = pace.chunk;
            pace.not_before = now + pace.every;
        }
        while budget > 0 {
            let room = buf.len().min(budget);
            match self.stream().read(&mut buf[..room]) {
                Ok(0) => return self.at_eof(),
                Ok(n) => {
                    budget -= n;
                    if self.pace.is_none() {
                        self.turn_read += n;
                    }
                    self.verify(&buf[..n])?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Server(format!("read: {e}"))),
            }
        }
        Ok(Got::Waiting)
    }

    /// The server closed: only the idle and half-close scripts expect it
    /// (in `AwaitEof`), and only once everything has come back.
    fn at_eof(&mut self) -> Result<Got, Broken> {
        let expected =
            matches!(self.script.get(self.step), Some(Step::AwaitEof));
        let missing = self.tally.written - self.tally.verified;
        match (expected, missing) {
            (true, 0) => Ok(Got::Eof),
            // Not wrong bytes, so not `Promise`: at a shutdown the server
            // may close with input it never read.
            (true, _) => Err(Broken::Server(format!(
                "server closed with {missing} echo bytes missing"
            ))),
            (false, _) => Err(Broken::Server(format!(
                "server closed early at step {:?}",
                self.script.get(self.step)
            ))),
        }
    }

    fn verify(&mut self, got: &[u8]) -> Result<(), Broken> {
        let at = self.tally.verified;
        if at + got.len() as u64 > self.tally.written {
            return Err(Broken::Promise(format!(
                "{} bytes back after {at} of {} written",
                got.len(),
                self.tally.written
            )));
        }
        for (i, &b) in got.iter().enumerate() {
            if b != self.rx.next() {
                return Err(Broken::Promise(format!(
                    "echo differs at byte {}",
                    at + i as u64
                )));
            }
        }
        self.tally.verified += got.len() as u64;
        Ok(())
    }

    /// Writes toward `target`; true once all of it is written.
    fn write(&mut self) -> Result<bool, Broken> {
        loop {
            if self.turn_written >= TURN_BUDGET {
                return Ok(false);
            }
            if self.out_sent == self.out.len() {
                let left = self.target - self.tally.written;
                if left == 0 {
                    return Ok(true);
                }
                let n = (left as usize).min(WRITE_CHUNK);
                self.out.clear();
                self.out.extend((0..n).map(|_| self.tx.next()));
                self.out_sent = 0;
            }
            let (out, sent) = (&self.out, self.out_sent);
            let stream = self.stream.as_mut().expect("live client");
            match stream.write(&out[sent..]) {
                Ok(n) => {
                    self.out_sent += n;
                    self.turn_written += n;
                    self.tally.written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Server(format!("write: {e}"))),
            }
        }
    }
}

/// The bytes a client sends, as a stream both its writer and its checker
/// draw from: eight bytes a word of a seeded [`Rng`].
struct Bytes {
    rng: Rng,
    word: u64,
    left: u32,
}

impl Bytes {
    fn new(seed: u64) -> Bytes {
        Bytes { rng: Rng::new(seed), word: 0, left: 0 }
    }

    fn next(&mut self) -> u8 {
        if self.left == 0 {
            self.word = self.rng.next_u64();
            self.left = 8;
        }
        self.left -= 1;
        let b = self.word as u8;
        self.word >>= 8;
        b
    }
}

/// What the driver does with a client after it advanced.
enum Status {
    /// Wait for a socket event, or until the time given.
    Wait(Option<Instant>),
    /// Its turn budget ran out: advance it again next turn.
    More,
    Done,
}

/// Why a client stopped early.
enum Broken {
    /// The server broke a promise (bytes wrong or missing): always a
    /// failure.
    Promise(String),
    /// The server closed or reset the connection: a failure unless the
    /// plan expects it (a shutdown test).
    Server(String),
}
