//! The PROXY protocol (`--proxy-protocol`): a balancer in front of the
//! server opens each connection with a header that names the real client,
//! and that client becomes the connection's peer everywhere (log lines,
//! the per-address limit, idle bookkeeping).
//!
//! [`header`] parses v1 and v2 headers from the bytes received so far;
//! [`Trust`] is `--proxy-from`, the networks allowed to send one. The
//! models read the header each in their own way (see [`Proxy`]) and share
//! what follows it: which peer the connection has, and the one reason a
//! refused connection closes with.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub mod header;
mod trust;

pub use header::{parse, Header, Invalid, Parse};
pub use trust::{Cidr, Trust};

use crate::stats::Reason;

/// How long a connection may take to send its whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// `--proxy-protocol` with its `--proxy-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// Who may send a header.
    pub trust: Trust,
}

impl Proxy {
    /// Why a connection from `balancer` may not even send a header, if
    /// it may not.
    pub(crate) fn refuses(&self, balancer: SocketAddr) -> Option<Reason> {
        match self.trust.allows(balancer.ip()) {
            true => None,
            false => Some(refused(format_args!(
                "{} is not in --proxy-from",
                balancer.ip()
            ))),
        }
    }
}

/// The reason a refused connection closes with: an `error` whose text
/// begins with `proxy: ` (`closed: error: proxy: …`).
pub(crate) fn refused(why: impl std::fmt::Display) -> Reason {
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
