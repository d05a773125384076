//! Opening client sockets, spread over source addresses.
//!
//! One (source IP, destination) pair has only as many client ports as
//! `net.ipv4.ip_local_port_range` holds (about 28,000 by default), so
//! beyond that the connections must come from several source addresses:
//! on loopback any of 127.0.0.0/8 works without set-up. Each socket is
//! bound to its source IP before `connect`, with `IP_BIND_ADDRESS_NO_PORT`
//! so that the kernel picks the port at `connect` time from the whole
//! 4-tuple space (a plain `bind` to port 0 would reserve a port per
//! socket across all destinations and refuse to reuse TIME_WAIT ones).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Where connections come from: the kernel's choice, or a list of source
/// addresses used in turn.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    addrs: Vec<IpAddr>,
}

impl Sources {
    /// Spreads over `addrs`; empty means the kernel chooses.
    pub fn new(addrs: Vec<IpAddr>) -> Sources {
        Sources { addrs }
    }

    /// How many source addresses take turns (1 when the kernel picks).
    pub fn count(&self) -> usize {
        self.addrs.len().max(1)
    }

    /// Checks that every source address can reach `dest` (same family)
    /// and that there are enough client ports for `connections`.
    pub fn check(
        &self,
        dest: SocketAddr,
        connections: u64,
    ) -> Result<(), SourceError> {
        if let Some(&source) =
            self.addrs.iter().find(|a| a.is_ipv4() != dest.is_ipv4())
        {
            return Err(SourceError::Family { source, dest });
        }
        let ports = local_ports().unwrap_or(28_232);
        let capacity = ports.saturating_mul(self.count() as u64);
        if connections > capacity {
            let want = connections.div_ceil(ports.max(1));
            return Err(SourceError::Ports { connections, ports, want });
        }
        Ok(())
    }

    /// Starts a nonblocking connect to `dest` for connection number `n`.
    pub fn connect(&self, n: u64, dest: SocketAddr) -> io::Result<TcpStream> {
        let stream = match self.addrs.len() {
            0 => TcpStream::connect(dest)?,
            len => {
                let source = self.addrs[(n % len as u64) as usize];
                connect_from(source, dest)?
            }
        };
        // Round trips of small messages must not wait for Nagle.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Why the sources cannot carry the connections asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceError {
    /// A source address is IPv4 and the server IPv6, or the reverse.
    Family {
        /// The source address.
        source: IpAddr,
        /// The server.
        dest: SocketAddr,
    },
    /// One source address has too few client ports.
    Ports {
        /// Connections asked for.
        connections: u64,
        /// Client ports per source address.
        ports: u64,
        /// Source addresses that would be enough.
        want: u64,
    },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Family { source, dest } => write!(
                f,
                "source address {source} and --addr {dest} are of \
                 different IP families"
            ),
            SourceError::Ports { connections, ports, want } => write!(
                f,
                "{connections} connections need more client ports than \
                 the {ports} of net.ipv4.ip_local_port_range per source \
                 address; pass --source with at least {want} addresses \
                 (e.g. 127.0.0.1,127.0.0.2,...)"
            ),
        }
    }
}

impl std::error::Error for SourceError {}

fn connect_from(source: IpAddr, dest: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(dest),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    if source.is_ipv4() {
        bind_address_no_port(&socket)?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// `IP_BIND_ADDRESS_NO_PORT`: defer the port choice of a bound socket to
/// `connect` (Linux 4.2+), which socket2 does not wrap.
#[allow(unsafe_code)]
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local for the given
    // length, on a descriptor the socket owns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Client ports per (source, destination) pair, from the sysctl.
fn local_ports() -> Option<u64> {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()?;
    let mut range = text.split_whitespace().map(|n| n.parse::<u64>());
    let (low, high) = (range.next()?.ok()?, range.next()?.ok()?);
    Some(high.checked_sub(low)? + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_connections_for_one_source_ask_for_more_sources() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let one = Sources::default();
        let err = one.check(dest, 10_000_000).unwrap_err().to_string();
        assert!(err.contains("--source"), "{err}");
        assert!(one.check(dest, 1000).is_ok());
    }

    #[test]
    fn mixed_families_are_refused() {
        let dest: SocketAddr = "[::1]:9".parse().unwrap();
        let v4 = Sources::new(vec!["127.0.0.1".parse().unwrap()]);
        assert!(v4.check(dest, 1).is_err());
    }

    #[test]
    fn connections_take_turns_over_the_sources() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dest = listener.local_addr().unwrap();
        let sources = Sources::new(vec![
            "127.0.0.2".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
        ]);
        let _a = sources.connect(0, dest).unwrap();
        let _b = sources.connect(1, dest).unwrap();
        let (_, peer_a) = listener.accept().unwrap();
        let (_, peer_b) = listener.accept().unwrap();
        let mut ips = [peer_a.ip(), peer_b.ip()];
        ips.sort();
        assert_eq!(ips, sources.addrs[..]);
    }
}
