//! The client side of a socket: connect, echo, close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::wait::PATIENCE;

/// Connects to `addr` with read and write timeouts so a broken server
/// fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// Sends `data` and reads back exactly as many bytes.
pub fn echo_round(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read echo");
    back
}

/// A fresh client: `data` echoes back exactly, then the client closes its
/// side and waits for the server to close, so the server has counted the
/// connection (every model counts a close before the socket goes).
/// Returns the client's address, as the server logs it.
pub fn echo_and_close(addr: SocketAddr, data: &[u8]) -> SocketAddr {
    let mut stream = connect(addr);
    let local = stream.local_addr().expect("local address");
    assert_eq!(echo_round(&mut stream, data), data, "fresh echo");
    close_and_wait(stream);
    local
}

/// Closes the client's side and waits for the server to close, which it
/// does only after counting the connection as `eof`.
pub fn close_and_wait(mut stream: TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let (rest, clean) = read_to_end(&mut stream);
    assert!(rest.is_empty() && clean, "no clean close from the server");
}

/// Reads until EOF; returns the bytes and whether the end was a clean EOF
/// (false on a reset or another error).
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // A read with a timeout is not restarted after a signal.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (all, false),
        }
    }
}

/// Whether the server closed `stream` without a byte: what a rejected
/// client sees (EOF, or a reset).
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

/// Closes `stream` with an RST instead of a FIN (SO_LINGER 0).
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}
