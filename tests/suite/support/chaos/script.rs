//! What a chaos client does: its [`Behaviour`], drawn at random, and
//! the script of steps that behaviour runs; the bytes it sends.

use std::time::Duration;

use crate::support::Rng;

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

/// One step of a client's script.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// Write this many more bytes, reading echoes meanwhile.
    Send(usize),
    /// Read until everything written has come back.
    AwaitEcho,
    /// Read nothing until `pause` has passed, then at most `chunk` bytes
    /// every `every` for `slow`, then at full speed again. A trickle of
    /// any length keeps the connection from being idle (what the kernel
    /// sends from the server's buffers counts); the bound keeps the run
    /// short.
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

pub(super) fn script(b: Behaviour, rng: &mut Rng, scale: usize) -> Vec<Step> {
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

/// The bytes a client sends, as a stream both its writer and its checker
/// draw from: eight bytes a word of a seeded [`Rng`].
pub(super) struct Bytes {
    rng: Rng,
    word: u64,
    left: u32,
}

impl Bytes {
    pub(super) fn new(seed: u64) -> Bytes {
        Bytes { rng: Rng::new(seed), word: 0, left: 0 }
    }

    pub(super) fn next(&mut self) -> u8 {
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
