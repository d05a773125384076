//! The connections whose PROXY header is still arriving
//! (`--proxy-protocol`): a boxed partial header per such connection, kept
//! beside the slab (as the log buckets are) so that a connection stays
//! the same size and costs nothing more once its header is in. The mio
//! model reads a header from its socket (`models::mio::header`), the
//! uring model feeds it what its receives brought; both through
//! [`Headers::feed`].
//!
//! Every header has the same time to arrive, so deadlines are made in
//! order and a FIFO queue holds them: the head is always the nearest.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;

use crate::proxy::{self, header, Parse, Proxy, HEADER_TIMEOUT};
use crate::stats::Reason;
use std::fmt::Display;
use std::io;

/// What reading a header came to.
#[derive(Debug)]
pub(crate) enum Header {
    /// Incomplete, and the socket is drained (trap 1): wait for more.
    Waiting,
    /// Complete: the connection's peer, and where the client's own bytes
    /// that came with the header lie in the read buffer.
    Done { peer: Option<SocketAddr>, first: Range<usize> },
    /// No valid header: close with this reason.
    Refused(Reason),
}

/// Why a connection from `balancer` may not even send a header, if it
/// may not (`--proxy-from`).
pub(crate) fn untrusted(
    proxy: &Proxy,
    balancer: SocketAddr,
) -> Option<Reason> {
    let ip = balancer.ip();
    (!proxy.trust.allows(ip))
        .then(|| refused(format_args!("{ip} is not in --proxy-from")))
}

/// The reason a refused connection closes with: an `error` whose text
/// begins with `proxy: ` (`closed: error: proxy: …`).
pub(crate) fn refused(why: impl Display) -> Reason {
    Reason::Error(io::Error::other(format!("proxy: {why}")))
}

/// The client closed before its header ended.
pub(crate) fn cut_short() -> Reason {
    refused("the connection ended inside the header")
}

/// The header did not arrive within [`HEADER_TIMEOUT`].
pub(crate) fn too_slow() -> Reason {
    refused(format_args!(
        "no complete header within {} s",
        HEADER_TIMEOUT.as_secs()
    ))
}

/// Adds `data` to `partial` (no more than a header's cap of it) and
/// parses; a completion's `first` is a range of `data`.
fn feed(partial: &mut Partial, data: &[u8]) -> Header {
    let had = partial.bytes.len();
    let take = data.len().min(header::MAX.saturating_sub(had));
    partial.bytes.extend_from_slice(&data[..take]);
    match proxy::parse(&partial.bytes) {
        Ok(Parse::Incomplete) => Header::Waiting,
        Ok(Parse::Done(h)) => {
            Header::Done { peer: h.source, first: h.len - had..data.len() }
        }
        Err(invalid) => Header::Refused(refused(invalid)),
    }
}

/// One connection's header so far.
#[derive(Debug)]
struct Partial {
    bytes: Vec<u8>,
    /// Tells this connection's deadline from a former one of its slot.
    serial: u64,
}

/// The connections waiting for their header; see the module docs.
#[derive(Debug)]
pub(crate) struct Headers {
    proxy: Proxy,
    partial: Vec<Option<Box<Partial>>>,
    /// (slab key, serial, deadline in the loop's ms), oldest first.
    deadlines: VecDeque<(usize, u64, u64)>,
    serial: u64,
}

impl Headers {
    /// The table `proxy` asks for.
    pub(crate) fn new(proxy: Proxy) -> Headers {
        Headers {
            proxy,
            partial: Vec::new(),
            deadlines: VecDeque::new(),
            serial: 0,
        }
    }

    /// Why a connection from `balancer` may not send a header, if not.
    pub(crate) fn refuses(&self, balancer: SocketAddr) -> Option<Reason> {
        untrusted(&self.proxy, balancer)
    }

    /// Connection `key` was accepted at `now_ms`: its header is due.
    pub(crate) fn start(&mut self, key: usize, now_ms: u64) {
        if self.partial.len() <= key {
            self.partial.resize_with(key + 1, || None);
        }
        self.serial += 1;
        self.partial[key] =
            Some(Box::new(Partial { bytes: Vec::new(), serial: self.serial }));
        let timeout = HEADER_TIMEOUT.as_millis() as u64;
        self.deadlines.push_back((key, self.serial, now_ms + timeout));
    }

    /// Whether connection `key` is still waiting for its header.
    pub(crate) fn waits(&self, key: usize) -> bool {
        self.partial.get(key).is_some_and(Option::is_some)
    }

    /// Connection `key`'s header so far, if it is still waiting for it.
    pub(crate) fn partial(&self, key: usize) -> Option<&[u8]> {
        self.partial.get(key)?.as_ref().map(|p| &p.bytes[..])
    }

    /// Forgets connection `key`'s header; true if it was waiting.
    pub(crate) fn forget(&mut self, key: usize) -> bool {
        self.partial.get_mut(key).and_then(Option::take).is_some()
    }

    /// When the nearest header is due, in the loop's ms.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let live = |&&(key, serial, _): &&(usize, u64, u64)| {
            self.partial
                .get(key)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.serial == serial)
        };
        self.deadlines.iter().find(live).map(|&(_, _, at)| at)
    }

    /// A connection whose header is overdue at `now_ms`, if any; the
    /// caller closes it (which forgets it) and asks again.
    pub(crate) fn expired(&mut self, now_ms: u64) -> Option<usize> {
        self.drop_stale();
        let &(key, _, at) = self.deadlines.front()?;
        if at > now_ms {
            return None;
        }
        self.deadlines.pop_front();
        Some(key)
    }

    /// Drops deadlines of headers that arrived or connections that
    /// closed.
    fn drop_stale(&mut self) {
        while let Some(&(key, serial, _)) = self.deadlines.front() {
            let live = self.partial.get(key).and_then(Option::as_ref);
            if live.is_some_and(|p| p.serial == serial) {
                return;
            }
            self.deadlines.pop_front();
        }
    }

    /// Adds `data`, received for connection `key`, to its header; what
    /// follows the header is `data[first]`.
    pub(crate) fn feed(&mut self, key: usize, data: &[u8]) -> Header {
        let Some(Some(partial)) = self.partial.get_mut(key) else {
            return Header::Waiting;
        };
        let got = feed(partial, data);
        // A refused connection stays here until the loop closes it, so
        // that the close knows it was never served.
        if matches!(got, Header::Done { .. }) {
            self.forget(key);
        }
        got
    }
}
