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

/// `--send-buffer`: a size the kernel's `int` option can take.
pub(super) fn parse_send_buffer(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("--send-buffer must be at least 1 byte".into()),
        n if n > 1 << 30 => Err(format!("--send-buffer above 1G: {text}")),
        n => Ok(n),
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
        assert!(parse_send_buffer("0").is_err());
        assert!(parse_send_buffer("2G").is_err());
    }
}
