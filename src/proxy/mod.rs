//! The PROXY protocol (`--proxy-protocol`): a balancer in front of the
//! server opens each connection with a header that names the real client,
//! and that client becomes the connection's peer everywhere (log lines,
//! the per-address limit, idle bookkeeping).
//!
//! [`header`] parses v1 and v2 headers from the bytes received so far;
//! [`Trust`] is `--proxy-from`, the networks allowed to send one. The
//! models read the header each in their own way and share what follows
//! it: which peer the connection has, and the one reason a refused
//! connection closes with (`error: proxy: …`).

use std::time::Duration;

pub mod header;
mod trust;

pub use header::{parse, Header, Invalid, Parse};
pub use trust::{Cidr, Trust};

/// How long a connection may take to send its whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// `--proxy-protocol` with its `--proxy-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// Who may send a header.
    pub trust: Trust,
}
