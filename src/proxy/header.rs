//! The PROXY protocol header, v1 (text) and v2 (binary), parsed from the
//! bytes received so far: a prefix that may still become a header is
//! [`Parse::Incomplete`], anything else is an [`Invalid`] at once, so a
//! receiver never buffers more than a header's cap.
//!
//! The specification (haproxy's `doc/proxy-protocol.txt`) caps a v1 line
//! at 107 bytes with its CRLF; a v2 header is 16 bytes and the length its
//! last two announce, which this parser caps at 4096 before buffering any
//! of it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 line, `PROXY ` to CRLF.
pub const V1_MAX: usize = 107;
/// The v2 signature, version and command, family and length.
pub const V2_FIXED: usize = 16;
/// The longest v2 address block (and TLVs) this parser buffers.
pub const V2_MAX_BODY: usize = 4096;
/// The longest header this parser accepts, v1 or v2.
pub const MAX: usize = V2_FIXED + V2_MAX_BODY;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the bytes received so far make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of a header: read more.
    Incomplete,
    /// A whole header.
    Done(Header),
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: what follows is the client's stream.
    pub len: usize,
    /// 1 or 2.
    pub version: u8,
    /// The client's address and port; `None` for a `LOCAL` command (a
    /// balancer's health check), v1 `UNKNOWN`, and address families
    /// other than TCP over IPv4 or IPv6: the connection keeps the
    /// balancer's address.
    pub source: Option<SocketAddr>,
}

/// Why bytes are not a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Neither `PROXY ` nor the v2 signature.
    Signature,
    /// A v2 version other than 2.
    Version(u8),
    /// A v2 command other than `LOCAL` (0) and `PROXY` (1).
    Command(u8),
    /// No CRLF within the v1 cap.
    V1TooLong,
    /// A v2 length beyond [`V2_MAX_BODY`].
    V2TooLong(u16),
    /// A v2 length too short for its address family.
    V2TooShort(u16),
    /// A v1 line that breaks the grammar, and where.
    Malformed(&'static str),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Signature => f.write_str("no PROXY header"),
            Invalid::Version(v) => write!(f, "v2 version {v}, not 2"),
            Invalid::Command(c) => write!(f, "v2 command {c}, not 0 or 1"),
            Invalid::V1TooLong => {
                write!(f, "v1 header longer than {V1_MAX} bytes")
            }
            Invalid::V2TooLong(n) => write!(
                f,
                "v2 header announces {n} bytes, more than {V2_MAX_BODY}"
            ),
            Invalid::V2TooShort(n) => {
                write!(f, "v2 header of {n} bytes is short for its family")
            }
            Invalid::Malformed(what) => {
                write!(f, "malformed v1 header: {what}")
            }
        }
    }
}

/// Parses the start of a connection's bytes.
pub fn parse(buf: &[u8]) -> Result<Parse, Invalid> {
    match buf.first() {
        None => Ok(Parse::Incomplete),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(Invalid::Signature),
    }
}

/// How many more bytes a reader may take without reading past a header
/// whose length it can already tell (a v2 header once its fixed part is
/// in); a v1 line's end is only found by reading, so up to its cap.
pub fn room(buf: &[u8]) -> usize {
    let want = match v2_length(buf) {
        Some(len) => V2_FIXED + usize::from(len).min(V2_MAX_BODY),
        None if buf.first() == Some(&b'\r') => V2_FIXED,
        None => V1_MAX,
    };
    want.saturating_sub(buf.len()).max(1)
}

fn v2_length(buf: &[u8]) -> Option<u16> {
    let fixed = buf.get(..V2_FIXED)?;
    Some(u16::from_be_bytes([fixed[14], fixed[15]]))
}

fn v1(buf: &[u8]) -> Result<Parse, Invalid> {
    let head = &buf[..buf.len().min(V1_PREFIX.len())];
    if head != &V1_PREFIX[..head.len()] {
        return Err(Invalid::Signature);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n')
    else {
        return match buf.len() >= V1_MAX {
            true => Err(Invalid::V1TooLong),
            false => Ok(Parse::Incomplete),
        };
    };
    if window[cr] == b'\n' {
        return Err(Invalid::Malformed("LF without CR"));
    }
    match window.get(cr + 1) {
        None if cr + 1 >= V1_MAX => return Err(Invalid::V1TooLong),
        None => return Ok(Parse::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(Invalid::Malformed("CR without LF")),
    }
    let line = &buf[V1_PREFIX.len().min(cr)..cr];
    let source = v1_line(line)?;
    Ok(Parse::Done(Header { len: cr + 2, version: 1, source }))
}

/// `TCP4 SRC DST SPORT DPORT`, `TCP6 …` or `UNKNOWN[ anything]`.
fn v1_line(line: &[u8]) -> Result<Option<SocketAddr>, Invalid> {
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(None);
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| Invalid::Malformed("not ASCII"))?;
    let mut fields = text.split(' ');
    let family = fields.next().unwrap_or("");
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Err(Invalid::Malformed("not five fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (ipv4(src)?.into(), ipv4(dst)?.into()),
        "TCP6" => (ipv6(src)?.into(), ipv6(dst)?.into()),
        _ => return Err(Invalid::Malformed("family not TCP4, TCP6, UNKNOWN")),
    };
    let _ = (dst, port(dport)?);
    Ok(Some(SocketAddr::new(src, port(sport)?)))
}

fn ipv4(text: &str) -> Result<Ipv4Addr, Invalid> {
    text.parse().map_err(|_| Invalid::Malformed("bad IPv4 address"))
}

fn ipv6(text: &str) -> Result<Ipv6Addr, Invalid> {
    text.parse().map_err(|_| Invalid::Malformed("bad IPv6 address"))
}

/// A decimal port, digits only (`str::parse` would take a `+`).
fn port(text: &str) -> Result<u16, Invalid> {
    let digits = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match digits {
        true => text.parse().map_err(|_| Invalid::Malformed("port > 65535")),
        false => Err(Invalid::Malformed("bad port")),
    }
}

fn v2(buf: &[u8]) -> Result<Parse, Invalid> {
    let head = &buf[..buf.len().min(V2_SIGNATURE.len())];
    if head != &V2_SIGNATURE[..head.len()] {
        return Err(Invalid::Signature);
    }
    let Some(len) = v2_length(buf) else { return Ok(Parse::Incomplete) };
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Invalid::Version(version));
    }
    if command > 1 {
        return Err(Invalid::Command(command));
    }
    if usize::from(len) > V2_MAX_BODY {
        return Err(Invalid::V2TooLong(len));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let needs = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if command == 1 && usize::from(len) < needs {
        return Err(Invalid::V2TooShort(len));
    }
    let total = V2_FIXED + usize::from(len);
    let Some(body) = buf.get(V2_FIXED..total) else {
        return Ok(Parse::Incomplete);
    };
    // LOCAL, UNSPEC, UNIX and datagrams keep the balancer's address.
    let source = match (command, family, transport) {
        (1, 1, 1) => {
            let ip: [u8; 4] = body[..4].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([body[8], body[9]]);
            Some(SocketAddr::from((ip, port)))
        }
        (1, 2, 1) => {
            let ip: [u8; 16] = body[..16].try_into().unwrap_or_default();
            let port = u16::from_be_bytes([body[32], body[33]]);
            Some(SocketAddr::from((ip, port)))
        }
        _ => None,
    };
    Ok(Parse::Done(Header { len: total, version: 2, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> Header {
        match parse(buf) {
            Ok(Parse::Done(h)) => h,
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    /// The examples of the specification.
    #[test]
    fn v1_lines_give_the_source() {
        let h = done(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhi");
        assert_eq!(h.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!((h.len, h.version), (45, 1));
        let h = done(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(done(b"PROXY UNKNOWN\r\n").source, None);
        assert_eq!(done(b"PROXY UNKNOWN x y z\r\n").source, None);
    }

    #[test]
    fn v1_refuses_what_breaks_the_grammar() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
            b"PROXX",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long), Err(Invalid::V1TooLong));
        assert_eq!(parse(&long[..100]), Ok(Parse::Incomplete));
    }

    #[test]
    fn v2_checks_its_length_before_its_body() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0x10, 0x01]); // 4097 bytes announced
        assert_eq!(parse(&h), Err(Invalid::V2TooLong(4097)));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x31, 0x11, 0, 12]);
        assert_eq!(parse(&h), Err(Invalid::Version(3)));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0, 4]);
        assert_eq!(parse(&h), Err(Invalid::V2TooShort(4)));
    }

    #[test]
    fn v2_local_keeps_the_balancer_and_proxy_gives_the_client() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(done(&local).source, None);
        let mut proxy = V2_SIGNATURE.to_vec();
        proxy.extend([0x21, 0x11, 0, 12, 10, 0, 0, 7, 127, 0, 0, 1]);
        proxy.extend([0x1f, 0x90, 0, 80]);
        let h = done(&proxy);
        assert_eq!(h.source, Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(h.len, 28);
        assert_eq!(parse(&proxy[..27]), Ok(Parse::Incomplete));
    }
}
