//! The accept side the three blocking models share.
//!
//! It waits on the server's `mio::Poll`, as the mio model does, so a stop
//! (a [`Handle`](crate::Handle)'s waker, SIGINT, SIGTERM) is just another
//! event and never a flag checked in a race (trap 13). Each accepted
//! socket is counted, logged, switched to blocking mode and handed to the
//! model's [`Dispatch`]; one over `--max-connections` is accepted and
//! closed at once.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Token};

use crate::error::Error;
use crate::journal::{self, RateLimited};
use crate::net::{accept_failed, AcceptFailed, ACCEPTS_PER_TURN};
use crate::server::{Server, LISTENER};
use crate::stats::{Reason, Stats};

use super::blocking;

/// Events taken from one poll: the listener, the stop sources and at most
/// one model source.
const EVENTS: usize = 16;

/// What a blocking model does with accepted connections.
pub(crate) trait Dispatch {
    /// The counters the connections add to.
    fn stats(&self) -> &Stats;

    /// Connections being served now, for `--max-connections`.
    fn live(&mut self) -> usize;

    /// Serves `stream` (blocking, already counted and logged as
    /// accepted), or hands it to a thread or process that will.
    fn dispatch(
        &mut self,
        gate: &mut Gate,
        stream: TcpStream,
        peer: SocketAddr,
    );

    /// How long the accept loop may wait before [`Dispatch::turn`] must
    /// run anyway.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs after every wait of the accept loop, with the tokens of the
    /// events it returned (sources the model registered itself).
    fn turn(&mut self, _tokens: &[Token]) {}
}

/// The server's poll, and whether a stop has been seen on it.
#[derive(Debug)]
pub(crate) struct Gate {
    server: Server,
    events: Events,
    tokens: Vec<Token>,
    stopping: bool,
}

impl Gate {
    /// The server this gate waits on.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Waits for events (at most `timeout`) and returns their tokens,
    /// after taking note of a stop among them.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<&[Token], Error> {
        self.server.wait(&mut self.events, timeout)?;
        self.tokens.clear();
        for event in self.events.iter() {
            let token = event.token();
            if self.server.is_stop(token) {
                self.stopping = true;
            } else {
                self.tokens.push(token);
            }
        }
        Ok(&self.tokens)
    }

    /// Whether a stop has arrived, without blocking. For a model that
    /// serves on the accept thread: the listener events this consumes do
    /// no harm, since the accept loop accepts until `WouldBlock` after
    /// every connection anyway (trap 3).
    pub(crate) fn poll_stop(&mut self) -> bool {
        if !self.stopping {
            if let Err(e) = self.wait(Some(Duration::ZERO)) {
                log::error!("{e}; stopping");
                self.stopping = true;
            }
        }
        self.stopping
    }
}

/// Accepts connections for `model` until the server is told to stop;
/// then stops listening and returns the gate, on which the model waits
/// for its connections to finish.
pub(crate) fn run<D: Dispatch>(
    server: Server,
    model: &mut D,
) -> Result<Gate, Error> {
    let mut gate = Gate {
        server,
        events: Events::with_capacity(EVENTS),
        tokens: Vec::with_capacity(EVENTS),
        stopping: false,
    };
    let mut accept = Accept {
        // Connections may have queued before the first poll.
        ready: true,
        paused_until: None,
        rejections: RateLimited::default(),
        exhaustion: RateLimited::default(),
    };
    while !gate.stopping {
        let timeout = accept.timeout(model.timeout(), Instant::now());
        let tokens = gate.wait(timeout)?;
        accept.ready |= tokens.contains(&LISTENER);
        model.turn(tokens);
        accept.batch(&mut gate, model);
    }
    gate.server.stop_listening();
    log::info!("stopping: {} connections open", model.live());
    Ok(gate)
}

/// The accept loop's own state.
struct Accept {
    /// The listener may hold pending connections (trap 3, 5).
    ready: bool,
    paused_until: Option<Instant>,
    rejections: RateLimited,
    exhaustion: RateLimited,
}

impl Accept {
    fn timeout(
        &self,
        model: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let pause =
            self.paused_until.map(|t| t.saturating_duration_since(now));
        if self.ready && pause.is_none() {
            return Some(Duration::ZERO);
        }
        [model, pause].into_iter().flatten().min()
    }

    fn batch<D: Dispatch>(&mut self, gate: &mut Gate, model: &mut D) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            self.ready = true;
        }
        if !self.ready || self.paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if gate.stopping {
                return;
            }
            match gate.server.listener.accept() {
                Ok((stream, peer)) => self.admit(gate, model, stream, peer),
                Err(e) => match accept_failed(&e, now, &mut self.exhaustion) {
                    // Trap 3: accept until WouldBlock; only then is the
                    // listener's edge consumed.
                    AcceptFailed::Drained => {
                        self.ready = false;
                        return;
                    }
                    AcceptFailed::Next => {}
                    AcceptFailed::Pause(until) => {
                        self.paused_until = Some(until);
                        return;
                    }
                },
            }
        }
        // Budget spent with the listener still ready: `ready` stays set
        // and the next poll does not block (trap 5).
    }

    fn admit<D: Dispatch>(
        &mut self,
        gate: &mut Gate,
        model: &mut D,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
    ) {
        let max = gate.server.config.max_connections;
        if model.live() >= max {
            model.stats().rejected();
            journal::rejected(&mut self.rejections, peer, max);
            return; // dropping the stream closes it at once
        }
        let stream = TcpStream::from(stream);
        let stats = model.stats();
        stats.accepted();
        journal::accepted(peer, blocking::open(stats));
        match stream.set_nonblocking(false) {
            Ok(()) => model.dispatch(gate, stream, peer),
            Err(e) => blocking::finish(peer, &Reason::Error(e), stats),
        }
    }
}
