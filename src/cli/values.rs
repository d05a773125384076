//! The values of `serve`'s flags that clap cannot parse alone: an
//! address that may be a host name, and sizes in bytes.

use std::net::SocketAddr;

/// One `--addr`: an IP address, or a host name resolved when the server
/// starts.
#[derive(Clone, Debug)]
pub enum AddrArg {
    /// `127.0.0.1:8989`, `[::1]:8989`.
    Ip(SocketAddr),
    /// `localhost:8989`: every address the name resolves to.
    Name(String, u16),
}

const ADDR_FORM: &str =
    "not HOST:PORT (like 127.0.0.1:8989, [::1]:8989 or localhost:8989)";

/// Parses `--addr` (the form only; a name is resolved by
/// [`ServeArgs::addrs`](super::ServeArgs::addrs)).
pub(super) fn addr_arg(text: &str) -> Result<AddrArg, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(AddrArg::Ip(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(ADDR_FORM.into());
    };
    let port: u16 =
        port.parse().map_err(|_| format!("not a port number: {port:?}"))?;
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
    if host.is_empty() || !host.chars().all(name_char) {
        return Err(ADDR_FORM.into());
    }
    Ok(AddrArg::Name(host.to_string(), port))
}

/// Every address `host` has, with `port`.
pub(super) fn resolve(
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
    match addrs.is_empty() {
        true => Err(format!("cannot resolve {host}: no address")),
        false => Ok(addrs),
    }
}

/// Parses a size in bytes: a whole number with an optional K, M or G
/// suffix (binary: 1K = 1024), as `32M` or `65536`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, 'k' | 'K')) => (&trimmed[..i], 10),
        Some((i, 'm' | 'M')) => (&trimmed[..i], 20),
        Some((i, 'g' | 'G')) => (&trimmed[..i], 30),
        _ => (trimmed, 0),
    };
    if trimmed.starts_with('-') {
        return Err(format!("a size cannot be negative: {text}"));
    }
    let bad =
        || format!("not a size in bytes (like 65536, 512K, 32M): {text}");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `--send-buffer`, `--receive-buffer`: a size the kernel's `int`
/// option can take.
pub(super) fn parse_buffer(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("a socket buffer must be at least 1 byte".into()),
        n if n > 1 << 30 => Err(format!("a socket buffer above 1G: {text}")),
        n => Ok(n),
    }
}

/// A whole number in `lo..=hi`, for the counting flags: an error says
/// the range, whatever the text was (`1e9`, `-3`, `2.5`, `lots`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Whole {
    lo: u32,
    hi: u32,
}

impl Whole {
    pub(super) const fn new(lo: u32, hi: u32) -> Whole {
        Whole { lo, hi }
    }

    fn check(self, text: &str) -> Result<u32, String> {
        let n: Option<u32> = text.trim().parse().ok();
        n.filter(|n| (self.lo..=self.hi).contains(n)).ok_or_else(|| {
            format!("not a whole number from {} to {}", self.lo, self.hi)
        })
    }
}

impl clap::builder::TypedValueParser for Whole {
    type Value = u32;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<u32, clap::Error> {
        let text = value.to_string_lossy();
        self.check(&text).map_err(|why| {
            let flag = arg.map_or(String::new(), |a| a.to_string());
            let message =
                format!("invalid value '{text}' for '{flag}': {why}\n");
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message)
                .with_cmd(cmd)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_reject_nonsense() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_bytes("32M"), Ok(32 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "M", "-1", "1.5M", "32MB", "lots", "99999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_buffer("0").is_err());
        assert!(parse_buffer("2G").is_err());
    }

    #[test]
    fn whole_numbers_say_their_range() {
        let w = Whole::new(0, 1_000_000);
        assert_eq!(w.check("20"), Ok(20));
        assert_eq!(w.check("1000000"), Ok(1_000_000));
        for bad in ["1e9", "-1", "2.5", "", "lots", "1000001"] {
            let e = w.check(bad).unwrap_err();
            assert_eq!(e, "not a whole number from 0 to 1000000", "{bad:?}");
        }
    }
}
