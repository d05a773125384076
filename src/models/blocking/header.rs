//! `--proxy-protocol`: the PROXY header a blocking connection reads
//! before it serves the client's own bytes.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Instant;

use crate::net::{interrupted, would_block};
use crate::policy::header::{cut_short, refused, too_slow};
use crate::proxy::{self, header, Parse, HEADER_TIMEOUT};
use crate::stats::Reason;

use super::connection::Connection;
use super::deadline::MIN_TIMEOUT;
use super::Context;

impl Connection<'_> {
    /// Reads a PROXY header within [`HEADER_TIMEOUT`]: its source (if it
    /// names one), and how many of the client's own bytes that came with
    /// it are now at the start of `cx.buf`.
    pub(super) fn read_header(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Result<(Option<SocketAddr>, usize), Reason> {
        let got = self.header_within(cx, Instant::now() + HEADER_TIMEOUT);
        // `arm` knows of no timeout on the socket: leave none.
        let _ = self.stream.set_read_timeout(None);
        got
    }

    fn header_within(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Instant,
    ) -> Result<(Option<SocketAddr>, usize), Reason> {
        let mut bytes = Vec::new();
        loop {
            if self.noticed_stop(false) {
                return Err(Reason::Shutdown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(too_slow());
            }
            let wait = self.watch.slice().map_or(left, |s| s.min(left));
            self.stream
                .set_read_timeout(Some(wait.max(MIN_TIMEOUT)))
                .map_err(Reason::from_io)?;
            // Past what the header can be: its excess is served below.
            let room = header::room(&bytes).min(cx.buf.len());
            let n = match self.stream.read(&mut cx.buf[..room]) {
                Ok(0) => return Err(cut_short()),
                Ok(n) => n,
                Err(e) if would_block(&e) || interrupted(&e) => continue,
                Err(e) => return Err(Reason::from_io(e)),
            };
            let had = bytes.len();
            bytes.extend_from_slice(&cx.buf[..n]);
            match proxy::parse(&bytes) {
                Ok(Parse::Incomplete) => {}
                Ok(Parse::Done(h)) => {
                    let first = h.len - had..n;
                    let len = first.len();
                    cx.buf.copy_within(first, 0);
                    return Ok((h.source, len));
                }
                Err(invalid) => return Err(refused(invalid)),
            }
        }
    }
}
