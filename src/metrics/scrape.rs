//! One scrape connection: its request head read into a buffer of at
//! most [`HEAD_MAX`](super::http::HEAD_MAX) bytes, its response written
//! as the socket takes it, then a lingering close. All of it without
//! blocking; the table in [`Metrics`](super::Metrics) decides when a
//! scrape is admitted, evicted or past its deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::listener::group::Group;
use crate::net::{interrupted, would_block};

use super::http;
use super::room::{Seat, Stage};

/// How long the whole request head may take to arrive, from accept
/// (nginx's `client_header_timeout`): a scraper sends it at once, so a
/// connection still short of it after this is stalled or dripping.
pub(super) const HEAD_DEADLINE: Duration = Duration::from_secs(1);
/// How long a scrape may take, from accept to its last byte.
pub(super) const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// Reads of a client's leftovers after its response, before it is
/// closed anyway (trap 2: a client that keeps sending cannot hold the
/// loop).
const LINGER_READS: usize = 16;

/// One scrape connection.
#[derive(Debug)]
pub(super) struct Scrape {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    accepted: Instant,
    pub(super) state: State,
}

/// How far a scrape has come.
#[derive(Debug)]
pub(super) enum State {
    /// Reading the request head (what came so far).
    Reading(Vec<u8>),
    /// A complete `GET /metrics` waits for the counters.
    Waiting { body: bool },
    /// Sending the response.
    Writing { out: Vec<u8>, sent: usize },
    /// All sent and our side shut: reading until the client closes.
    Lingering,
}

/// What a scrape's IO left it as.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Waiting for the next event (or for the counters).
    Open,
    /// Finished, or failed: close it.
    Done,
}

impl Scrape {
    /// A scrape accepted at `accepted`, its request not read yet.
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        accepted: Instant,
    ) -> Scrape {
        Scrape { stream, peer, accepted, state: State::Reading(Vec::new()) }
    }

    /// When it is closed however far it got: [`HEAD_DEADLINE`] after
    /// accept while its head is incomplete, [`SCRAPE_DEADLINE`] after.
    pub(super) fn deadline(&self) -> Instant {
        match self.state {
            State::Reading(_) => self.accepted + HEAD_DEADLINE,
            _ => self.accepted + SCRAPE_DEADLINE,
        }
    }

    /// What the table needs to know of it to make room.
    pub(super) fn seat(&self) -> Seat {
        let stage = match self.state {
            State::Reading(_) => Stage::Incomplete,
            State::Waiting { .. } | State::Writing { .. } => Stage::Answering,
            State::Lingering => Stage::Answered,
        };
        Seat { ip: self.peer.ip().to_canonical(), at: self.accepted, stage }
    }

    /// Does all the IO its state allows, until it would block, waits
    /// for the counters, or is done; `/healthz` asks `group`.
    pub(super) fn advance(&mut self, group: &Group) -> Step {
        loop {
            let next = match &mut self.state {
                State::Reading(head) => match read_head(&self.stream, head) {
                    Head::Blocked => return Step::Open,
                    Head::Read(http::Request::Metrics { body }) => {
                        State::Waiting { body }
                    }
                    Head::Read(http::Request::Health { body }) => {
                        let out = http::health(group.healthy(), body);
                        State::Writing { out, sent: 0 }
                    }
                    Head::Read(http::Request::Refused(status)) => {
                        State::Writing { out: http::refusal(status), sent: 0 }
                    }
                    Head::Gone | Head::Read(http::Request::Partial) => {
                        return Step::Done
                    }
                },
                State::Waiting { .. } => return Step::Open,
                State::Writing { out, sent } => {
                    match flush(&self.stream, out, sent) {
                        Some(step) => return step,
                        // Trap 17: a close with input unread sends an
                        // RST, which can make the client drop the
                        // response; send our FIN and drain first.
                        None => {
                            let _ = self.stream.shutdown(Shutdown::Write);
                            State::Lingering
                        }
                    }
                }
                State::Lingering => return drain(&self.stream),
            };
            self.state = next;
        }
    }

    /// Closes it (the caller has deregistered it). One that lingers is
    /// drained first (trap 17: unread input would turn the close into
    /// an RST, which can cost the client the response it has not read
    /// yet).
    pub(super) fn close(self) {
        if let State::Lingering = self.state {
            drain(&self.stream);
        }
        // A forked child that still holds a copy (kernels without
        // close_range) must not keep the scraper waiting for our FIN.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Where reading a request head got to.
enum Head {
    /// The socket would block before the head was complete.
    Blocked,
    /// The client closed or failed first: nothing to answer.
    Gone,
    /// What the complete (or refused) head asks for (never `Partial`).
    Read(http::Request),
}

/// Reads into `head` until the request is complete or refused, the
/// socket would block (trap 1: reads until `WouldBlock`), or the client
/// is gone.
fn read_head(mut stream: &TcpStream, head: &mut Vec<u8>) -> Head {
    loop {
        let start = head.len();
        head.resize(http::HEAD_MAX, 0);
        let read = stream.read(&mut head[start..]);
        head.truncate(start + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return Head::Gone,
            Ok(_) => match http::parse(head) {
                http::Request::Partial => {}
                request => return Head::Read(request),
            },
            Err(e) if would_block(&e) => return Head::Blocked,
            Err(e) if interrupted(&e) => {}
            Err(_) => return Head::Gone,
        }
    }
}

/// Writes what is left of `out`: `None` once all of it went, else what
/// the scrape is now. Trap 7: what does not go now waits for WRITABLE.
fn flush(
    mut stream: &TcpStream,
    out: &[u8],
    sent: &mut usize,
) -> Option<Step> {
    while *sent < out.len() {
        match stream.write(&out[*sent..]) {
            Ok(0) => return Some(Step::Done),
            Ok(n) => *sent += n,
            Err(e) if would_block(&e) => return Some(Step::Open),
            Err(e) if interrupted(&e) => {}
            Err(_) => return Some(Step::Done),
        }
    }
    None
}

/// Discards what the client still sends until its EOF (done), or until
/// it would block (open), or [`LINGER_READS`] reads (done).
fn drain(mut stream: &TcpStream) -> Step {
    let mut buf = [0u8; 4096];
    for _ in 0..LINGER_READS {
        match stream.read(&mut buf) {
            Ok(0) => return Step::Done,
            Ok(_) => {}
            Err(e) if would_block(&e) => return Step::Open,
            Err(e) if interrupted(&e) => {}
            Err(_) => return Step::Done,
        }
    }
    Step::Done
}
