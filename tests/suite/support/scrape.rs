//! The scraper's side of `--metrics-addr`: where the server serves its
//! metrics, one HTTP exchange, and the text format read back.
#![allow(dead_code)] // the external suite uses a subset

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use readyloop::{Model, Summary};
use socket2::{Domain, Socket, Type};

use super::net::{connect, read_to_end};
use super::server::{serve, ServerProcess};
use super::wait::{eventually, PATIENCE};

/// `GET /metrics` as Prometheus sends it.
pub const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: readyloop\r\n\
    Accept: text/plain;version=0.0.4\r\n\r\n";

/// The server serving `model` with `args` and its metrics on a free
/// loopback port; returns it with the metrics address.
pub fn serve_metrics(
    model: Model,
    args: &[&str],
) -> (ServerProcess, SocketAddr) {
    let all = [args, &["--metrics-addr", "127.0.0.1:0"]].concat();
    let mut server = serve(model, &all);
    let addr = metrics_addr(&mut server);
    (server, addr)
}

/// The address of the server's `metrics on http://ADDR/metrics` line.
pub fn metrics_addr(server: &mut ServerProcess) -> SocketAddr {
    let line = server.wait_for_status("metrics on http://");
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// One response, read to the server's close.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and the header fields.
    pub head: String,
    /// What followed the head.
    pub body: String,
}

impl Response {
    /// The value of header field `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Half a request head, as a slowloris sends it before it stalls.
pub const HALF: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: readyloop\r\n";

/// Sends `request` exactly as given and reads the response to the end
/// (every answer closes the connection).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = connect(addr);
    stream.write_all(request).expect("send the request");
    let (bytes, _) = read_to_end(&mut stream);
    parse_response(bytes)
}

/// A client of its own address (all of 127.0.0.0/8 is loopback)
/// connected to `addr`, with the timeouts of [`connect`].
pub fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let local = SocketAddr::from((from, 0));
    socket.bind(&local.into()).expect("bind the client's address");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// [`exchange`] from the client address `from`; `None` when the server
/// closes the connection (or resets it) without a byte of response.
pub fn exchange_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    request: &[u8],
) -> Option<Response> {
    let mut stream = connect_from(from, addr);
    // A connection closed at once may refuse the request: no answer.
    stream.write_all(request).ok()?;
    let (bytes, _) = read_to_end(&mut stream);
    (!bytes.is_empty()).then(|| parse_response(bytes))
}

/// Whether the server has neither closed `stream` nor sent on it: a
/// read that would block.
pub fn still_open(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8];
    let open = matches!(
        stream.read(&mut byte),
        Err(e) if e.kind() == ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).expect("blocking");
    open
}

/// The status, head and body of the bytes of a whole response.
fn parse_response(bytes: Vec<u8>) -> Response {
    let text = String::from_utf8(bytes).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    Response { status, head: head.into(), body: body.into() }
}

/// `GET /metrics`, which must answer 200 in the text format 0.0.4.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let response = exchange(addr, GET);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.field("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let length = response.field("content-length").and_then(|l| l.parse().ok());
    assert_eq!(length, Some(response.body.len()), "{}", response.head);
    Scrape::parse(&response.body)
}

/// The samples of one scrape: `name{labels}` to value, and the text.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// The samples whose value is a whole number.
    pub samples: BTreeMap<String, u64>,
    /// Every sample, as a float (CPU seconds, the start time).
    pub floats: BTreeMap<String, f64>,
    pub text: String,
}

impl Scrape {
    /// Reads the sample lines of `text`: every value is a number, and
    /// those of counts are whole.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut floats = BTreeMap::new();
        for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = l.rsplit_once(' ').expect("a sample");
            let float: f64 =
                value.parse().unwrap_or_else(|_| panic!("not a number: {l}"));
            if let Ok(whole) = value.parse::<u64>() {
                samples.insert(series.to_string(), whole);
            }
            floats.insert(series.to_string(), float);
        }
        Scrape { samples, floats, text: text.into() }
    }

    /// The value of `series`, which must be there, as a float.
    pub fn float(&self, series: &str) -> f64 {
        match self.floats.get(series) {
            Some(&value) => value,
            None => panic!("no {series} in:\n{}", self.text),
        }
    }

    /// The value of `series`, which must be there.
    pub fn get(&self, series: &str) -> u64 {
        match self.samples.get(series) {
            Some(&value) => value,
            None => panic!("no {series} in:\n{}", self.text),
        }
    }

    /// `readyloop_connections_open`.
    pub fn open(&self) -> u64 {
        self.get("readyloop_connections_open")
    }

    /// The counters, as the `summary` line has them.
    pub fn summary(&self) -> Summary {
        let closed = |reason: &str| {
            self.get(&format!(
                "readyloop_connections_closed_total{{reason=\"{reason}\"}}"
            ))
        };
        Summary {
            accepted: self.get("readyloop_connections_accepted_total"),
            closed_eof: closed("eof"),
            closed_reset: closed("reset"),
            closed_error: closed("error"),
            closed_idle: closed("idle"),
            closed_shutdown: closed("shutdown"),
            rejected: self.get("readyloop_connections_rejected_total"),
            bytes_in: self.get("readyloop_bytes_received_total"),
            bytes_out: self.get("readyloop_bytes_sent_total"),
            log_dropped: self.get("readyloop_log_lines_dropped_total"),
            log_suppressed: self.get("readyloop_log_lines_suppressed_total"),
        }
    }
}

/// Scrapes until `done` holds for one, and returns that one.
pub fn scrape_until(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let mut last = None;
    eventually(what, || {
        let now = scrape(addr);
        let ok = done(&now);
        last = Some(now);
        ok
    });
    last.expect("scraped")
}
