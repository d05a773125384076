//! Admission: which accepted connections are served, counted and logged
//! the same way in every event-driven model.
//!
//! A model asks [`Policy::admits`] for each accepted socket; if it may
//! stay, the model gives it a slot and calls [`Policy::opened`]. With
//! `--proxy-protocol` the connection is served only once its header
//! named the client ([`Policy::header`]); until then it is counted
//! against `--max-connections` but against no address.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use crate::journal;
use crate::log_limit::Bucket;
use crate::net::UNKNOWN_PEER;
use crate::stats::Reason;

use super::{Header, Policy};

/// What a model does with a connection once its header was read.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Incomplete: read more when the client sends more.
    Waiting,
    /// Served from now on; the client's own first bytes came with the
    /// header, at this range of what was read.
    Serve(Range<usize>),
    /// Refused: close it with this reason.
    Close(Reason),
    /// Its client is over `--max-connections-per-ip` (counted as
    /// rejected): end it without counting a close
    /// ([`Policy::unserved`]).
    Drop,
}

impl Policy {
    /// Whether a connection from `peer`, just accepted, may stay: within
    /// `--max-connections`, and within `--max-connections-per-ip` or
    /// (with `--proxy-protocol`) from a balancer `--proxy-from` trusts.
    /// A refusal is counted and logged here; the caller drops the
    /// socket, which closes it.
    pub(crate) fn admits(&mut self, peer: SocketAddr) -> bool {
        if self.stopping.is_some() {
            // A completion model's accept that was already done when the
            // stop began: counted like every connection the kernel hands
            // over, and closed at once.
            self.refuse(peer, Reason::Shutdown);
            return false;
        }
        let (open, stats) = (self.open, &self.stats);
        // A proxied connection's address is the balancer's until its
        // header arrives, and an unknown one is nobody's: the
        // per-address limit waits for the client, or does not apply.
        let admitted = match self.headers.is_some() || peer == UNKNOWN_PEER {
            true => self.accept.admits_one_more(open, peer, stats),
            false => self.accept.admits(open, peer, stats),
        };
        if !admitted {
            return false;
        }
        let untrusted = self.headers.as_ref().and_then(|h| h.refuses(peer));
        if let Some(reason) = untrusted {
            self.refuse(peer, reason);
            return false;
        }
        true
    }

    /// Counts a connection from `peer` as accepted and closed at once.
    fn refuse(&mut self, peer: SocketAddr, reason: Reason) {
        self.stats.accepted();
        self.stats.closed(&reason);
        journal::closed(peer, &reason, self.open);
    }

    /// The model could not take a connection [`Policy::admits`] let in
    /// (registering it failed): counted as accepted and closed.
    pub(crate) fn not_taken(&mut self, peer: SocketAddr, e: io::Error) {
        self.refuse(peer, Reason::Error(e));
        if self.headers.is_none() && peer != UNKNOWN_PEER {
            self.accept.release(peer);
        }
    }

    /// Connection `key` from `peer` was admitted and has its slot: its
    /// PROXY header is due, or it is served from now on.
    pub(crate) fn opened(&mut self, key: usize, peer: SocketAddr) {
        self.open += 1;
        if let Some(log) = &mut self.log {
            *log.bucket(key) = Bucket::default();
        }
        match &mut self.headers {
            // Counted and logged once the header names the client.
            Some(headers) => headers.start(key, self.now_ms),
            None => self.serving(key, peer),
        }
    }

    /// Connection `key` from `peer` is served from now on: counted,
    /// tracked for idleness, logged.
    fn serving(&mut self, key: usize, peer: SocketAddr) {
        self.stats.accepted();
        if let Some(idle) = &mut self.idle {
            idle.insert(key, self.now_ms);
        }
        journal::accepted(peer, self.open);
    }

    /// What connection `key`'s header, read so far as `got`, means; a
    /// complete header makes the client it names `peer`.
    pub(crate) fn header(
        &mut self,
        key: usize,
        got: Header,
        peer: &mut SocketAddr,
    ) -> Verdict {
        let first = match got {
            Header::Waiting => return Verdict::Waiting,
            Header::Refused(reason) => return Verdict::Close(reason),
            Header::Done { peer: named, first } => {
                *peer = named.unwrap_or(*peer);
                first
            }
        };
        if !self.accept.admits_address(*peer, &self.stats) {
            return Verdict::Drop; // counted as rejected, as at accept
        }
        self.serving(key, *peer);
        Verdict::Serve(first)
    }
}
