//! The PROXY header parser over arbitrary input: it never panics, never
//! asks for more than a header's cap, its verdicts are final (more bytes
//! never turn a refusal or a header into something else), and a valid
//! header split anywhere parses to what it parses to whole.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use readyloop::proxy::header::{room, MAX};
use readyloop::proxy::{parse, Parse};

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A valid header for `src` in version `v` (1 or 2), and the source it
/// names.
fn header(v: u8, src: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    if v == 1 {
        let (family, dst) = match src.ip() {
            IpAddr::V4(_) => ("TCP4", "127.0.0.1"),
            IpAddr::V6(_) => ("TCP6", "::1"),
        };
        let line = format!(
            "PROXY {family} {} {dst} {} 443\r\n",
            src.ip(),
            src.port()
        );
        return line.into_bytes();
    }
    let mut h = SIG.to_vec();
    let (fam, ip, dst): (u8, Vec<u8>, Vec<u8>) = match src.ip() {
        IpAddr::V4(a) => (0x11, a.octets().to_vec(), vec![127, 0, 0, 1]),
        IpAddr::V6(a) => (0x21, a.octets().to_vec(), vec![0; 16]),
    };
    let len = (ip.len() * 2 + 4 + tlv.len()) as u16;
    h.extend([0x21, fam]);
    h.extend(len.to_be_bytes());
    h.extend(ip);
    h.extend(dst);
    h.extend(src.port().to_be_bytes());
    h.extend(443u16.to_be_bytes());
    h.extend(tlv);
    h
}

fn source() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Bytes that often start like a header: arbitrary, or a signature's
/// prefix followed by arbitrary bytes.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..300);
    let start = prop_oneof![
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(SIG.to_vec()),
        Just([SIG, &[0x21, 0x11]].concat()),
        Just([SIG, &[0x20, 0x00]].concat()),
    ];
    let led = (start, prop::collection::vec(any::<u8>(), 0..200))
        .prop_map(|(s, rest)| [s, rest].concat());
    prop_oneof![raw, led]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic; a header lies within them and the cap; an
    /// incomplete prefix is below the cap and a reader may always read.
    #[test]
    fn any_bytes_get_a_verdict_within_the_cap(bytes in input()) {
        prop_assert!(room(&bytes) >= 1);
        match parse(&bytes) {
            Ok(Parse::Done(h)) => {
                prop_assert!(h.len <= bytes.len() && h.len <= MAX);
            }
            Ok(Parse::Incomplete) => prop_assert!(bytes.len() < MAX),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Verdicts are final: more bytes never change a refusal or a
    /// complete header, so a reader can stop at the first one.
    #[test]
    fn more_bytes_never_change_a_verdict(
        bytes in input(),
        more in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let longer = [bytes.clone(), more].concat();
        match parse(&bytes) {
            Ok(Parse::Incomplete) => {}
            verdict => prop_assert_eq!(parse(&longer), verdict),
        }
    }

    /// A valid header, followed by the client's bytes and cut anywhere:
    /// every prefix shorter than the header is incomplete, and from the
    /// header's end on it parses to the same header, naming the source.
    #[test]
    fn a_valid_header_split_anywhere_parses_the_same(
        v in 1u8..=2,
        src in source(),
        tlv in prop::collection::vec(any::<u8>(), 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..32),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
    ) {
        let h = header(v, src, &tlv);
        let whole = [h.clone(), payload].concat();
        let Ok(Parse::Done(parsed)) = parse(&whole) else {
            return Err(TestCaseError::fail(format!("{whole:?}")));
        };
        let named = match src.ip() {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(src, |_| src),
            IpAddr::V4(_) => src,
        };
        prop_assert_eq!(parsed.source, Some(named));
        prop_assert_eq!(parsed.len, h.len());
        prop_assert_eq!(parsed.version, v);
        for cut in cuts {
            let at = cut.index(whole.len() + 1);
            let verdict = parse(&whole[..at]);
            if at < h.len() {
                prop_assert_eq!(verdict, Ok(Parse::Incomplete));
                prop_assert!(room(&whole[..at]) <= MAX - at);
            } else {
                prop_assert_eq!(verdict, Ok(Parse::Done(parsed)));
            }
        }
    }
}
