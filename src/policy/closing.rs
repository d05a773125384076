//! Closing: every connection counted once, with one journal line and a
//! [`Reason`], and the deadlines that close connections (an overdue
//! PROXY header, the idle timeout).

use std::net::SocketAddr;
use std::time::Duration;

use crate::journal;
use crate::net::{self, UNKNOWN_PEER};
use crate::stats::Reason;

use super::{header, Method, Policy};

impl Policy {
    /// Counts and logs connection `key` from `peer` as closed for
    /// `reason` (everything still open once a stop began closes as
    /// `shutdown`), and forgets its deadlines and its address. The model
    /// frees its slot, then calls [`Policy::freed`].
    pub(crate) fn closing(
        &mut self,
        key: usize,
        peer: SocketAddr,
        reason: Reason,
    ) {
        // A connection refused at its header was counted at none of
        // accept, the per-address table or the idle list.
        let unserved = self.headers.as_mut().is_some_and(|h| h.forget(key));
        if unserved {
            self.stats.accepted();
        }
        let reason = match self.stopping {
            Some(_) => Reason::Shutdown,
            None => reason,
        };
        self.stats.closed(&reason);
        if let Some(log) = &mut self.log {
            journal::suppressed(peer, log.bucket(key));
        }
        self.open -= 1;
        journal::closed(peer, &reason, self.open);
        if !unserved && peer != UNKNOWN_PEER {
            self.accept.release(peer);
        }
        if let Some(idle) = &mut self.idle {
            idle.remove(key);
        }
    }

    /// Connection `key` ends without a close counted: its header named a
    /// client over the per-address limit, counted as rejected.
    pub(crate) fn unserved(&mut self, key: usize) {
        if let Some(headers) = &mut self.headers {
            headers.forget(key);
        }
        self.open -= 1;
    }

    /// A closed connection's slot and socket are gone: trap 4, a
    /// descriptor is free, accepting may resume.
    pub(crate) fn freed(&mut self) {
        self.accept.freed();
    }

    /// A connection whose PROXY header is overdue.
    fn header_overdue(&mut self) -> Option<usize> {
        self.headers.as_mut()?.expired(self.now_ms)
    }

    /// A connection that moved no byte through the loop for the idle
    /// timeout.
    fn idle_overdue(&self) -> Option<usize> {
        self.idle.as_ref()?.expired(self.now_ms)
    }

    /// Whether idle-looking connection `key` still moves bytes, from
    /// what its socket says (`sent`: `None` if it has none, else how
    /// long ago its kernel last sent data). Bytes the kernel delivers
    /// from what the connection wrote earlier are movement too: the
    /// connection then counts as active since that send.
    fn still_moving(
        &mut self,
        key: usize,
        sent: Option<Option<Duration>>,
    ) -> bool {
        let Some(idle) = &mut self.idle else { return false };
        let Some(sent) = sent else {
            // Never expected; unlink so the loop cannot spin on it.
            idle.remove(key);
            return true;
        };
        match sent {
            Some(ago) if ago < idle.timeout() => {
                let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
                idle.moved_at(key, self.now_ms.saturating_sub(ago));
                true
            }
            _ => false,
        }
    }
}

/// Closes the connections whose PROXY header or idle deadline passed.
pub(super) fn expire<M: Method>(method: &mut M) {
    while let Some(key) = method.policy().header_overdue() {
        method.close(key, header::too_slow());
    }
    while let Some(key) = method.policy().idle_overdue() {
        let sent = method.fd(key).map(net::since_data_sent);
        if !method.policy().still_moving(key, sent) {
            method.close(key, Reason::Idle);
        }
    }
}
