//! One chaos client: runs its script as far as its socket allows and
//! checks every byte that comes back.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::script::{Behaviour, Bytes, Step};
use super::{Outcome, Tally, IDLE_TIMEOUT};

/// How long one client may go without moving a byte, either way, before
/// it counts as stuck. Counted from its last progress, not from its
/// start: a client with megabytes to move on two cores shared with other
/// work is slow, not stuck (a 10-minute soak under a load average of 18
/// had 3 of 653,825 thread-model clients pass 20 s from their start with
/// most of their bytes back, e.g. 90 of 92 MB); a server that stopped
/// serving one moves nothing for it.
const CLIENT_PATIENCE: Duration = Duration::from_secs(20);
/// Bytes generated per write.
const WRITE_CHUNK: usize = 16 * 1024;
/// Bytes one client may read, and write, per turn of its driver, so that
/// a burst cannot starve the slow readers on the same thread (whose
/// server would then see no traffic and close them as idle).
const TURN_BUDGET: usize = 256 * 1024;
/// What the kernels' clocks (ticks of a few ms) may take off a silence
/// the server measured as its whole idle timeout.
const SLACK: Duration = Duration::from_millis(50);

/// Read pacing: none, or a pause and then a trickle.
#[derive(Clone, Copy, Debug)]
struct Pace {
    not_before: Instant,
    chunk: usize,
    every: Duration,
    until: Instant,
}

pub(super) struct Client {
    pub(super) stream: Option<TcpStream>,
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
    pub(super) reset_on_close: bool,
    /// Read or written this turn, against [`TURN_BUDGET`].
    turn_read: usize,
    turn_written: usize,
    /// When it counts as stuck: [`CLIENT_PATIENCE`] after its last byte
    /// moved.
    pub(super) deadline: Instant,
    /// When its driver last finished a turn on it: a client not looked
    /// at for the server's idle timeout was idle, whatever it meant to do
    /// (a starved driver on two busy cores).
    looked_at: Instant,
    /// When its driver last came back to it after leaving it alone for
    /// the idle timeout or more: what it reads in the turns right after
    /// (echo queued before the server's close, then the reset) still
    /// belongs to that gap.
    starved_at: Option<Instant>,
    pub(super) tally: Tally,
}

enum Got {
    /// Read what there was (or the pace allows); wait for more.
    Waiting,
    Eof,
}

impl Client {
    pub(super) fn new(
        behaviour: Behaviour,
        seed: u64,
        script: Vec<Step>,
    ) -> Client {
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
            looked_at: Instant::now(),
            starved_at: None,
            tally: Tally {
                behaviour,
                peer: None,
                written: 0,
                verified: 0,
                outcome: Outcome::Done,
            },
        }
    }

    pub(super) fn fail(&mut self, tolerant: bool, why: String) {
        self.tally.outcome = match tolerant {
            true => Outcome::CutOff(why),
            false => Outcome::Failed(why),
        };
    }

    /// Runs the script as far as the socket allows.
    pub(super) fn advance(
        &mut self,
        buf: &mut [u8],
        tolerant: bool,
    ) -> Status {
        let now = Instant::now();
        self.turn_read = 0;
        self.turn_written = 0;
        let unseen = now - std::mem::replace(&mut self.looked_at, now);
        if unseen >= IDLE_TIMEOUT {
            self.starved_at = Some(now);
        }
        let starved = self.starved_at.is_some_and(|t| now - t < IDLE_TIMEOUT);
        // Stuck is judged after this turn's try, so that a client its
        // driver left alone (two busy cores) first takes what waited.
        let result = self.steps(buf, now);
        if self.turn_read > 0 || self.turn_written > 0 {
            self.deadline = now + CLIENT_PATIENCE;
        } else if now >= self.deadline && matches!(result, Ok(false)) {
            self.tally.outcome = Outcome::Failed(format!(
                "stuck: no byte moved for {} s at step {:?}, after {} of {} \
                 bytes back",
                CLIENT_PATIENCE.as_secs(),
                self.script.get(self.step),
                self.tally.verified,
                self.tally.written
            ));
            return Status::Done;
        }
        match result {
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
            // The server may close a client that moved nothing for its
            // idle timeout: here, one whose driver did not get to it.
            // (Reading echo that waited in its own kernel buffer moves
            // nothing on the connection.)
            Err(Broken::Lagged(why)) => {
                self.tally.outcome = Outcome::Starved(why);
                Status::Done
            }
            Err(Broken::Server(why)) if starved => {
                let why = format!("{why}, after its driver left it alone");
                self.tally.outcome = Outcome::Starved(why);
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
            // Everything came back, then the server's FIN after the idle
            // timeout with nothing on the wire either way: the contract's
            // idle close. The server had written all its echo into the
            // kernels; this client's driver took longer than the timeout
            // to read it out of its own receive buffer (on two busy
            // cores, a megabyte burst at 256 KiB a turn), which moves
            // nothing on the connection.
            (false, 0) if self.silent_before_fin() >= IDLE_TIMEOUT - SLACK => {
                let silent = self.silent_before_fin();
                Err(Broken::Lagged(format!(
                    "server closed it idle at step {:?} after echoing all \
                     {} bytes: the wire was silent for {silent:?} before \
                     its FIN while the client read its own buffer",
                    self.script.get(self.step),
                    self.tally.written,
                )))
            }
            (false, _) => Err(Broken::Server(format!(
                "server closed early at step {:?}",
                self.script.get(self.step)
            ))),
        }
    }

    /// How long no data moved either way before the server's FIN, as
    /// this socket's kernel saw it (`TCP_INFO`): the FIN is the last
    /// segment that came (its ACK set the last ACK received), so the
    /// silence is from the later of the last data sent and received to
    /// it. Zero if the kernel will not say.
    fn silent_before_fin(&mut self) -> Duration {
        let fd = self.stream().as_raw_fd();
        let Some(info) = readyloop::net::tcp_info(fd) else {
            return Duration::ZERO;
        };
        let last_data = info.tcpi_last_data_recv.min(info.tcpi_last_data_sent);
        let ms = last_data.saturating_sub(info.tcpi_last_ack_recv);
        Duration::from_millis(ms.into())
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

/// What the driver does with a client after it advanced.
pub(super) enum Status {
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
    /// The server closed a connection idle by the contract because this
    /// client lagged behind its own receive buffer: not the server's
    /// fault, counted as starved.
    Lagged(String),
}
