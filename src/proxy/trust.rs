//! `--proxy-from`: the networks whose connections may carry a PROXY
//! header. A header is a claim about who the client is; anyone allowed to
//! send one can make its connections seem to come from any address, so
//! only the balancers in front of the server may.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One network, `ADDR/BITS` (or a bare address: all its bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address (a
    /// dual-stack listener's view of an IPv4 peer) counts as its IPv4
    /// address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix(
                u32::from(net).into(),
                u32::from(ip).into(),
                self.bits,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix(u128::from(net), u128::from(ip), self.bits, 128)
            }
            _ => false,
        }
    }
}

/// Whether the top `bits` of `width`-bit numbers `a` and `b` agree.
fn prefix(a: u128, b: u128, bits: u8, width: u32) -> bool {
    let shift = width - u32::from(bits);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not ADDR or ADDR/BITS"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            // `u8::from_str` would take a leading `+`.
            Some(b) => Some(b)
                .filter(|b| b.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|b| b.parse::<u8>().ok())
                .filter(|&b| b <= width)
                .ok_or_else(|| format!("{text:?}: prefix not 0 to {width}"))?,
        };
        Ok(Cidr { addr, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// The networks that may send a PROXY header (`--proxy-from`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    nets: Vec<Cidr>,
}

impl Trust {
    /// Loopback only, 127.0.0.0/8 and ::1/128: a balancer on the same
    /// host. Anything wider must be asked for.
    pub fn loopback() -> Trust {
        Trust {
            nets: vec![
                Cidr { addr: Ipv4Addr::new(127, 0, 0, 0).into(), bits: 8 },
                Cidr { addr: Ipv6Addr::LOCALHOST.into(), bits: 128 },
            ],
        }
    }

    /// The networks of a comma-separated list, `CIDR[,CIDR…]`.
    pub fn parse(list: &str) -> Result<Trust, String> {
        let nets = list
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<Vec<Cidr>, String>>()?;
        Ok(Trust { nets })
    }

    /// Whether a connection from `ip` may send a header.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> =
            self.nets.iter().map(|n| n.to_string()).collect();
        f.write_str(&nets.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_is_the_default_and_mapped_addresses_count_as_ipv4() {
        let t = Trust::loopback();
        assert!(t.allows(ip("127.0.0.1")) && t.allows(ip("127.9.9.9")));
        assert!(t.allows(ip("::1")) && t.allows(ip("::ffff:127.0.0.2")));
        assert!(!t.allows(ip("10.0.0.1")) && !t.allows(ip("::2")));
        assert!(!t.allows(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn lists_parse_and_bad_ones_say_why() {
        let t = Trust::parse("10.0.0.0/8, 2001:db8::/32,192.0.2.7").unwrap();
        assert!(t.allows(ip("10.200.0.1")) && t.allows(ip("2001:db8:1::9")));
        assert!(t.allows(ip("192.0.2.7")) && !t.allows(ip("192.0.2.8")));
        assert!(!t.allows(ip("127.0.0.1")));
        assert!(Trust::parse("0.0.0.0/0").unwrap().allows(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "10/8", "1.2.3.4/+8", "x"] {
            assert!(Trust::parse(bad).is_err(), "{bad:?}");
        }
    }
}
