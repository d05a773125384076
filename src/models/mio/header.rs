//! Reading a PROXY header from a readiness socket (`--proxy-protocol`),
//! never a byte past it the parser did not ask for.

use std::io::Read;

use mio::net::TcpStream;

use crate::net::{interrupted, would_block};
use crate::policy::header::cut_short;
use crate::policy::{Header, Headers};
use crate::proxy::header::room;
use crate::stats::Reason;

/// Reads connection `key`'s header from `stream` through `buf`, never
/// more than a header's cap, until it is complete, refused, or the
/// socket is drained. Bytes past the header are left in `buf`.
pub(super) fn read(
    headers: &mut Headers,
    key: usize,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> Header {
    loop {
        let Some(partial) = headers.partial(key) else {
            return Header::Waiting;
        };
        let room = room(partial).min(buf.len());
        let n = match stream.read(&mut buf[..room]) {
            Ok(0) => return Header::Refused(cut_short()),
            Ok(n) => n,
            // Trap 1: drained; the next bytes come with a new edge.
            Err(e) if would_block(&e) => return Header::Waiting,
            Err(e) if interrupted(&e) => continue, // trap 9
            Err(e) => return Header::Refused(Reason::from_io(e)),
        };
        match headers.feed(key, &buf[..n]) {
            Header::Waiting => {}
            done_or_refused => return done_or_refused,
        }
    }
}
