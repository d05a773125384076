//! What the kernel has delivered of a connection's output. A blocking
//! `write` returns once the kernel has taken the bytes; the kernel then
//! sends them at the pace the client reads, long after the server's last
//! call (a loopback socket's send buffer holds megabytes). Those bytes
//! moving keep a connection from being idle, so while output is in
//! flight a connection asks the kernel, not its own last call.
#![allow(unsafe_code)]

use std::mem::{self, offset_of, size_of};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// The kernel's account of a connection's output (`TCP_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    /// Bytes of output the client has acknowledged, ever.
    pub acked: u64,
    /// Whether output is still on its way: sent and not acknowledged, or
    /// not sent yet (the client's window is full).
    pub in_flight: bool,
}

/// The kernel's account of `stream`'s output; `None` if it gives none
/// (kernels before 4.6 lack `tcpi_notsent_bytes`).
pub(super) fn delivery(stream: &TcpStream) -> Option<Delivery> {
    // SAFETY: tcp_info is integers only, for which all zeros is valid.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, and the kernel writes
    // at most `len` bytes and stores how many in `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = offset_of!(libc::tcp_info, tcpi_notsent_bytes) + 4;
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    Some(Delivery {
        acked: info.tcpi_bytes_acked,
        in_flight: info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn output_counts_as_delivered_once_the_client_has_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client =
            TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = delivery(&server).expect("TCP_INFO");
        assert!(!before.in_flight);
        server.write_all(&[7; 1000]).unwrap();
        let mut got = [0; 1000];
        client.read_exact(&mut got).unwrap();
        // The client's ACK may still be on its way back: a bounded wait.
        let mut after = delivery(&server).unwrap();
        for _ in 0..1000 {
            if !after.in_flight {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            after = delivery(&server).unwrap();
        }
        assert_eq!(after.acked - before.acked, 1000);
        assert!(!after.in_flight);
    }
}
