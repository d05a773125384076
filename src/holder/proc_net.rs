//! The kernel's table of TCP sockets, `/proc/net/tcp` and `tcp6`: one
//! line per socket of this network namespace.
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue … uid  timeout inode
//!    0: 0100007F:2329 00000000:0000 0A 00000000:… 0    0       13176 …
//! ```
//!
//! An address is the kernel's network-order word printed as a native
//! `u32` in hex: on a little-endian machine 127.0.0.1 reads `0100007F`.
//! Reading the hex back as a `u32` and taking its native bytes undoes
//! that on any machine. An IPv6 address is four such words, `::1` being
//! `00000000000000000000000001000000`. The port is printed in host
//! order (`2329` is 9001). State `0A` is LISTEN; `06` is TIME_WAIT, a
//! connection closed on this side first that the kernel keeps for 2 MSL
//! (60 s on Linux) with no descriptor, so its inode is 0:
//!
//! ```text
//!    7: 0100007F:A2C7 0100007F:E439 06 00000000:00000000 03:00001553 …
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The `st` column of a listening socket.
const LISTEN: u8 = 0x0A;
/// The `st` column of a connection in TIME_WAIT.
const TIME_WAIT: u8 = 0x06;

/// One line of the table: the fields a holder lookup needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The socket's local address and port.
    pub(super) local: SocketAddr,
    /// The peer's address and port (all zeros for a listener).
    pub(super) remote: SocketAddr,
    /// The `st` column (TCP state, `0A` = LISTEN).
    pub(super) state: u8,
    /// The socket's inode: `/proc/PID/fd/N` of its holders links to
    /// `socket:[INODE]`.
    pub(super) inode: u64,
}

impl Entry {
    /// Whether this socket is a listener.
    pub(super) fn listening(&self) -> bool {
        self.state == LISTEN
    }

    /// Whether this socket is a closed connection in TIME_WAIT.
    pub(super) fn time_wait(&self) -> bool {
        self.state == TIME_WAIT
    }
}

/// Parses one line of the table; `None` for the header or anything that
/// is not a well-formed socket line.
pub(super) fn parse_line(line: &str) -> Option<Entry> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    slot.strip_suffix(':')?.parse::<u64>().ok()?;
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let state = hex_u8(fields.next()?)?;
    // tx:rx queues, timer, retransmits, uid, timeout: then the inode.
    let inode = fields.nth(5)?.parse().ok()?;
    Some(Entry { local, remote, state, inode })
}

/// `0100007F:2329` or a 32-digit IPv6 address with its port.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(hex_digits(port)?, 16).ok()?;
    let ip = match hex_digits(ip)?.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One address word: eight hex digits printed from a native `u32`.
fn word(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

fn hex_u8(text: &str) -> Option<u8> {
    u8::from_str_radix(hex_digits(text)?, 16).ok()
}

/// `text` if it is only hex digits (`from_str_radix` would also take a
/// leading `+`); being ASCII, it can then be sliced at any index.
fn hex_digits(text: &str) -> Option<&str> {
    text.bytes().all(|b| b.is_ascii_hexdigit()).then_some(text)
}

/// How well a listener on `held` explains a failed bind on `asked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Fit {
    /// The same address and port.
    Exact,
    /// The same port, and one side is a wildcard that covers the other.
    Wildcard,
}

/// Whether a listener on `held` keeps a socket from binding `asked`.
///
/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is its IPv4 address.
/// `0.0.0.0` covers every IPv4 address; `::` covers every address of
/// both families, since a socket is dual-stack unless it sets
/// IPV6_V6ONLY, which the table does not show.
pub(super) fn fit(asked: SocketAddr, held: SocketAddr) -> Option<Fit> {
    if asked.port() == 0 || asked.port() != held.port() {
        return None;
    }
    let (a, h) = (asked.ip().to_canonical(), held.ip().to_canonical());
    if a == h {
        return Some(Fit::Exact);
    }
    let covers = |wide: IpAddr, other: IpAddr| match wide {
        IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(ip) => ip.is_unspecified(),
    };
    (covers(h, a) || covers(a, h)).then_some(Fit::Wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line as the kernel prints it (`tcp4_seq_show`, `tcp6_seq_show`).
    fn kernel_line(
        local: SocketAddr,
        remote: SocketAddr,
        state: u8,
        inode: u64,
    ) -> String {
        let hex = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => {
                format!("{:08X}", u32::from_ne_bytes(v4.octets()))
            }
            IpAddr::V6(v6) => v6
                .octets()
                .chunks_exact(4)
                .map(|w| {
                    format!(
                        "{:08X}",
                        u32::from_ne_bytes(w.try_into().unwrap())
                    )
                })
                .collect(),
        };
        format!(
            "   4: {}:{:04X} {}:{:04X} {state:02X} 00000000:00000000 \
             00:00000000 00000000     0        0 {inode} 1 \
             000000003087ddbf 100 0 0 10 0",
            hex(local.ip()),
            local.port(),
            hex(remote.ip()),
            remote.port()
        )
    }

    #[test]
    fn lines_from_this_kernel_parse() {
        let v4 = "   0: 0100007F:A36F 00000000:0000 0A 00000000:00000000 \
                  00:00000000 00000000     0        0 13176 1 \
                  000000003087ddbf 100 0 0 10 0";
        let entry = parse_line(v4).unwrap();
        assert_eq!(entry.local, "127.0.0.1:41839".parse().unwrap());
        assert!(entry.listening());
        assert_eq!(entry.inode, 13176);
        let v6 = "   1: 00000000000000000000000001000000:E6E5 \
                  00000000000000000000000000000000:0000 0A \
                  00000000:00000000 00:00000000 00000000     0        0 \
                  13175 1 00000000fba8e4b3 100 0 0 10 0";
        let entry = parse_line(v6).unwrap();
        assert_eq!(entry.local, "[::1]:59109".parse().unwrap());
        assert_eq!(entry.remote, "[::]:0".parse().unwrap());
        assert_eq!(entry.inode, 13175);
        let header = "  sl  local_address rem_address   st tx_queue \
                      rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_line(header), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("   0: +100007F:A36F 0 0A 0 0 0 0 0 1"), None);
    }

    /// A connection in TIME_WAIT, as this kernel prints it (Linux 6.18,
    /// `get_timewait4_sock`, `get_timewait6_sock`): state 06, both
    /// ends, timer 3 with the jiffies left, no inode.
    #[test]
    fn time_wait_lines_from_this_kernel_parse() {
        let v4 = "   7: 0100007F:A2C7 0100007F:E439 06 00000000:00000000 \
                  03:00001553 00000000     0        0 0 3 \
                  00000000a5b1c2d3";
        let entry = parse_line(v4).unwrap();
        assert!(entry.time_wait() && !entry.listening());
        assert_eq!(entry.local, "127.0.0.1:41671".parse().unwrap());
        assert_eq!(entry.remote, "127.0.0.1:58425".parse().unwrap());
        assert_eq!(entry.inode, 0);
        let v6 = "   2: 00000000000000000000000001000000:A2C7 \
                  00000000000000000000000001000000:1F90 06 \
                  00000000:00000000 03:000016A8 00000000     0        0 \
                  0 3 00000000e5f6a7b8";
        let entry = parse_line(v6).unwrap();
        assert!(entry.time_wait());
        assert_eq!(entry.local, "[::1]:41671".parse().unwrap());
        assert_eq!(entry.remote, "[::1]:8080".parse().unwrap());
        let established = v4.replacen(" 06 ", " 01 ", 1);
        assert!(!parse_line(&established).unwrap().time_wait());
    }

    #[test]
    fn wildcards_and_mapped_addresses_fit() {
        let fit =
            |a: &str, h: &str| fit(a.parse().unwrap(), h.parse().unwrap());
        assert_eq!(fit("127.0.0.1:80", "127.0.0.1:80"), Some(Fit::Exact));
        assert_eq!(
            fit("127.0.0.1:80", "[::ffff:127.0.0.1]:80"),
            Some(Fit::Exact)
        );
        assert_eq!(fit("127.0.0.1:80", "0.0.0.0:80"), Some(Fit::Wildcard));
        assert_eq!(fit("0.0.0.0:80", "127.0.0.1:80"), Some(Fit::Wildcard));
        assert_eq!(fit("127.0.0.1:80", "[::]:80"), Some(Fit::Wildcard));
        assert_eq!(fit("[::]:80", "127.0.0.1:80"), Some(Fit::Wildcard));
        assert_eq!(fit("[::1]:80", "0.0.0.0:80"), None);
        assert_eq!(fit("127.0.0.1:80", "127.0.0.2:80"), None);
        assert_eq!(fit("127.0.0.1:80", "127.0.0.1:81"), None);
        assert_eq!(fit("127.0.0.1:0", "127.0.0.1:0"), None);
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            any::<([u8; 4], u16)>().prop_map(SocketAddr::from),
            any::<([u8; 16], u16)>().prop_map(SocketAddr::from),
        ]
    }

    proptest! {
        /// Whatever the table holds, parsing never panics.
        #[test]
        fn any_text_parses_or_is_refused(line in any::<String>()) {
            let _ = parse_line(&line);
        }

        /// Lines made of plausible fields in any order and shape (hex
        /// of any length, colons anywhere, multi-byte characters) never
        /// panic the parser either.
        #[test]
        fn near_miss_lines_never_panic(
            fields in proptest::collection::vec(
                "[0-9A-Fa-f:+ é]{0,40}", 0..14),
        ) {
            let _ = parse_line(&fields.join(" "));
        }

        /// Every line the kernel can print reads back as what it says
        /// (both ends of the same family, as the kernel prints them).
        #[test]
        fn kernel_lines_round_trip(
            (local, remote) in prop_oneof![
                any::<(([u8; 4], u16), ([u8; 4], u16))>().prop_map(
                    |(l, r)| (SocketAddr::from(l), SocketAddr::from(r))),
                any::<(([u8; 16], u16), ([u8; 16], u16))>().prop_map(
                    |(l, r)| (SocketAddr::from(l), SocketAddr::from(r))),
            ],
            state in any::<u8>(),
            inode in any::<u64>(),
        ) {
            let line = kernel_line(local, remote, state, inode);
            let entry = parse_line(&line);
            let want = Entry { local, remote, state, inode };
            prop_assert_eq!(entry, Some(want));
        }

        /// An address always fits itself, mapped or not, unless its port
        /// is 0 (which no listener holds).
        #[test]
        fn an_address_fits_itself(addr in any_addr()) {
            let expected = (addr.port() != 0).then_some(Fit::Exact);
            prop_assert_eq!(fit(addr, addr), expected);
            if let IpAddr::V4(v4) = addr.ip() {
                let mapped = SocketAddr::new(
                    IpAddr::V6(v4.to_ipv6_mapped()), addr.port());
                prop_assert_eq!(fit(addr, mapped), expected);
            }
        }
    }
}
