//! `--proxy-protocol` and `--proxy-from`, in every model: hand-made v1
//! and v2 headers over real sockets name the connection's peer in the
//! log and the per-address limit; a missing, slow, malformed or
//! untrusted header closes the connection as `error: proxy: …`; without
//! the flag, a header is just data.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use readyloop::Model;

use crate::support::*;

per_model!(
    v1_and_v2_headers_name_the_peer,
    a_dripped_header_and_a_header_with_payload,
    no_header_is_a_proxy_error,
    malformed_headers_are_refused,
    a_source_outside_proxy_from_is_refused,
    local_and_unknown_keep_the_balancer_address,
    a_header_that_never_ends_times_out,
    without_the_flag_a_header_is_data,
    a_stop_closes_a_header_still_arriving,
);
per_model!(concurrent: the_per_address_limit_counts_the_named_clients);

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 line for `src` (to 127.0.0.1:80 or [::1]:80).
fn v1(src: SocketAddr) -> Vec<u8> {
    let (family, dst) = match src {
        SocketAddr::V4(_) => ("TCP4", "127.0.0.1"),
        SocketAddr::V6(_) => ("TCP6", "::1"),
    };
    format!("PROXY {family} {} {dst} {} 80\r\n", src.ip(), src.port())
        .into_bytes()
}

/// A v2 PROXY header for `src` (over TCP).
fn v2(src: SocketAddr) -> Vec<u8> {
    let mut h = SIG.to_vec();
    match src {
        SocketAddr::V4(a) => {
            h.extend([0x21, 0x11, 0, 12]);
            h.extend(a.ip().octets());
            h.extend([127, 0, 0, 1]);
        }
        SocketAddr::V6(a) => {
            h.extend([0x21, 0x21, 0, 36]);
            h.extend(a.ip().octets());
            h.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    h.extend(src.port().to_be_bytes());
    h.extend(80u16.to_be_bytes());
    h
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Sends `header` then `data`, and reads back the echo of `data`.
fn proxied_echo(server: SocketAddr, header: &[u8], data: &[u8]) {
    let mut c = connect(server);
    c.write_all(header).expect("write header");
    assert_eq!(echo_round(&mut c, data), data);
    close_and_wait(c);
}

/// Sends `bytes` and expects the server to close without a byte back.
fn refused(server: SocketAddr, bytes: &[u8]) {
    let mut c = connect(server);
    let _ = c.write_all(bytes); // the server may close before it all went
    let (back, _) = read_to_end(&mut c);
    assert!(back.is_empty(), "a refused client got {back:?}");
}

/// Each header's source is the peer of the `accepted` and `closed` lines;
/// v1 and v2, IPv4 and IPv6; the echo carries only the client's bytes.
fn v1_and_v2_headers_name_the_peer(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let clients = [
        (v1(addr("192.0.2.1:1111")), "192.0.2.1:1111"),
        (v1(addr("[2001:db8::1]:2222")), "[2001:db8::1]:2222"),
        (v2(addr("198.51.100.7:3333")), "198.51.100.7:3333"),
        (v2(addr("[2001:db8::7]:4444")), "[2001:db8::7]:4444"),
    ];
    for (header, _) in &clients {
        proxied_echo(server.addr, header, b"through the balancer");
    }
    wait_count(&mut server, "closed: eof", clients.len());
    for (_, peer) in &clients {
        assert_eq!(server.count(&format!("] {peer} accepted (")), 1, "{peer}");
        assert_eq!(
            server.count(&format!("] {peer} closed: eof")),
            1,
            "{peer}"
        );
    }
    assert_eq!(server.count("127.0.0.1:"), 1, "only the listening line");
    let summary = stop(server);
    assert_eq!(summary.accepted, clients.len() as u64);
    assert_eq!(summary.bytes_in, 20 * clients.len() as u64);
}

/// A v2 header dripped in six pieces, each sent only once the server
/// has read the one before, so it arrives in as many reads; halfway
/// through, another client is served (the partial header waits beside
/// the loop, not in it). Then a v1 header sent with the client's first
/// bytes in one write. Both work, and only the client's bytes count as
/// bytes_in.
fn a_dripped_header_and_a_header_with_payload(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let mut c = connect(server.addr);
    c.set_nodelay(true).expect("nodelay");
    let header = v2(addr("203.0.113.9:9"));
    // Cuts inside the signature (after its first byte, a v1 reader
    // could not yet tell), between the fixed part's fields, and before
    // the addresses.
    let (first, rest) = header.split_at(12);
    drip(&mut server, &mut c, first, &[1, 6]);
    // One client at a time: the iterative model serves the next only
    // after this one, by design.
    let meanwhile = model != Model::Iterative;
    if meanwhile {
        let mut other = connect(server.addr);
        other.write_all(&v1(addr("203.0.113.11:11"))).expect("header");
        other.write_all(b"meanwhile").expect("write");
        let mut back = [0; 9];
        std::io::Read::read_exact(&mut other, &mut back)
            .expect("no echo for a client while another's header is half in");
        assert_eq!(&back, b"meanwhile");
        close_and_wait(other);
    }
    drip(&mut server, &mut c, rest, &[2, 4]);
    assert_eq!(echo_round(&mut c, b"dripped"), b"dripped");
    close_and_wait(c);
    let mut c = connect(server.addr);
    let header = v1(addr("203.0.113.10:10"));
    let mut both = header.clone();
    both.extend_from_slice(b"with the header");
    c.write_all(&both).expect("write");
    let mut back = vec![0; 15];
    std::io::Read::read_exact(&mut c, &mut back).expect("echo");
    assert_eq!(back, b"with the header");
    close_and_wait(c);
    let served = usize::from(meanwhile);
    wait_count(&mut server, "closed: eof", 2 + served);
    assert_eq!(server.count("] 203.0.113.9:9 accepted"), 1);
    assert_eq!(server.count("] 203.0.113.10:10 accepted"), 1);
    assert_eq!(server.count("] 203.0.113.11:11 accepted"), served);
    let bytes = 7 + 15 + 9 * served as u64;
    let summary = stop(server);
    assert_eq!((summary.bytes_in, summary.bytes_out), (bytes, bytes));
}

/// Writes `bytes` in pieces cut at `cuts`, each once the server has read
/// the one before (its receive queue is empty; over loopback a write has
/// reached that queue when it returns). So the server reads them apart,
/// however loaded the machine, and must keep what it read so far.
fn drip(
    server: &mut ServerProcess,
    c: &mut std::net::TcpStream,
    bytes: &[u8],
    cuts: &[usize],
) {
    let ours = c.local_addr().expect("local address");
    let theirs = c.peer_addr().expect("peer address");
    let ends = cuts.iter().copied().chain([bytes.len()]);
    let mut start = 0;
    for (i, end) in ends.enumerate() {
        c.write_all(&bytes[start..end]).expect("drip");
        start = end;
        eventually(&format!("the server reads dripped piece {i}"), || {
            if ended(c) {
                let log = server.collect_log().join("\n");
                panic!("the server closed at dripped piece {i}:\n{log}");
            }
            unread(theirs, ours) == Some(0)
        });
    }
}

/// The bytes waiting unread in the receive queue of the socket from
/// `local` to `peer`, as `ss` reports them. Not /proc/net/tcp: with the
/// suite's thousands of sockets, reading the whole table a few times
/// can outlast the header's 5 s; `ss` has the kernel find the one socket.
fn unread(local: SocketAddr, peer: SocketAddr) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-Htan", "src", &local.to_string(), "dst", &peer.to_string()])
        .output()
        .expect("run ss (iproute2)");
    // State, Recv-Q, Send-Q, local and peer address.
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the server has closed `c` (EOF or a reset waits for us),
/// without blocking.
fn ended(c: &std::net::TcpStream) -> bool {
    c.set_nonblocking(true).expect("nonblocking");
    let got = c.peek(&mut [0]);
    c.set_nonblocking(false).expect("blocking");
    match got {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A client that connects without a header is closed and counted as an
/// error whose line names the reason.
fn no_header_is_a_proxy_error(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    refused(server.addr, b"hello, no header here\r\n");
    let line = server.wait_for_line("closed: error: proxy:");
    assert!(line.contains("proxy: no PROXY header"), "{line}");
    proxied_echo(server.addr, &v1(addr("192.0.2.3:3")), b"still serving");
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_error), (2, 1));
    assert_eq!(summary.closed_eof, 1);
}

/// Truncated, oversized and malformed headers, v1 and v2, are refused
/// and counted; the server goes on serving (no panic).
fn malformed_headers_are_refused(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let good_v2 = v2(addr("192.0.2.1:1"));
    let mut bad_version = good_v2.clone();
    bad_version[12] = 0x31;
    let mut bad_command = good_v2.clone();
    bad_command[12] = 0x2f;
    let mut too_long = good_v2.clone();
    too_long[14..16].copy_from_slice(&4097u16.to_be_bytes());
    let mut too_short = good_v2.clone();
    too_short[14..16].copy_from_slice(&4u16.to_be_bytes());
    let mut bad_sig = good_v2.clone();
    bad_sig[5] = b'X';
    let long_v1 = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_version, "v2 version 3"),
        (bad_command, "v2 command 15"),
        (too_long, "announces 4097 bytes"),
        (too_short, "short for its family"),
        (bad_sig, "no PROXY header"),
        (long_v1, "longer than 107 bytes"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n".to_vec(), "port"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 80\r\n".to_vec(), "IPv4"),
        (b"PROXY TCP4 1.2.3.4\r\n".to_vec(), "five fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(), "LF without CR"),
        (b"\x00\xff garbage".to_vec(), "no PROXY header"),
    ];
    for (bytes, _) in &cases {
        refused(server.addr, bytes);
    }
    // Truncated: the client closes inside the header, v1 and v2.
    for cut in [&b"PROXY TCP4 1.2.3."[..], &good_v2[..20]] {
        let mut c = connect(server.addr);
        c.write_all(cut).expect("write");
        c.shutdown(Shutdown::Write).expect("shutdown");
        assert!(read_to_end(&mut c).0.is_empty());
    }
    let refusals = cases.len() + 2;
    wait_count(&mut server, "closed: error: proxy:", refusals);
    for (_, why) in &cases {
        assert!(server.count(why) >= 1, "no line says {why:?}");
    }
    assert_eq!(server.count("proxy: the connection ended inside"), 2);
    proxied_echo(server.addr, &good_v2, b"alive");
    let summary = stop(server);
    assert_eq!(summary.closed_error, refusals as u64);
    assert_eq!(summary.accepted, refusals as u64 + 1);
}

/// A header from a source outside `--proxy-from` is refused at once.
fn a_source_outside_proxy_from_is_refused(model: Model) {
    let mut server = serve(
        model,
        &["--mode", "echo", "--proxy-protocol", "--proxy-from", "10.0.0.0/8"],
    );
    refused(server.addr, &v1(addr("192.0.2.1:1")));
    let line = server.wait_for_line("closed: error: proxy:");
    assert!(line.contains("127.0.0.1 is not in --proxy-from"), "{line}");
    assert!(line.contains("] 127.0.0.1:"), "{line}");
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_error), (1, 1));
    assert_eq!(summary.bytes_in, 0);
}

/// A v2 `LOCAL` header (a balancer's health check) and a v1 `UNKNOWN`
/// line keep the balancer's own address as the peer.
fn local_and_unknown_keep_the_balancer_address(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let mut local = SIG.to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    for header in [local, b"PROXY UNKNOWN whatever\r\n".to_vec()] {
        let c = connect(server.addr);
        let me = c.local_addr().expect("local address");
        let mut c = c;
        c.write_all(&header).expect("write");
        assert_eq!(echo_round(&mut c, b"health"), b"health");
        close_and_wait(c);
        wait_count(&mut server, &format!("] {me} closed: eof"), 1);
        assert_eq!(server.count(&format!("] {me} accepted")), 1);
    }
    let summary = stop(server);
    assert_eq!(summary.closed_eof, 2);
}

/// A header that has not ended 5 s after the connection opened closes
/// it (the server, not the client, ends it).
fn a_header_that_never_ends_times_out(model: Model) {
    let mut server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let mut c = connect(server.addr);
    c.write_all(b"PROXY TCP4 192.0.2.1 ").expect("write");
    assert!(closed_by_server(&mut c), "the server did not close it");
    let line = server.wait_for_line("closed: error: proxy:");
    assert!(line.contains("no complete header within 5 s"), "{line}");
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_error), (1, 1));
}

/// Without `--proxy-protocol`, a PROXY line is the client's data: echoed,
/// counted, and the peer is the socket's.
fn without_the_flag_a_header_is_data(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let header = v1(addr("192.0.2.1:1"));
    let mut c = connect(server.addr);
    assert_eq!(echo_round(&mut c, &header), header);
    close_and_wait(c);
    wait_count(&mut server, "closed: eof", 1);
    assert_eq!(server.count("192.0.2.1"), 0);
    let summary = stop(server);
    assert_eq!(summary.bytes_in, header.len() as u64);
}

/// `--max-connections-per-ip` counts the clients the headers name, not
/// the balancer: one client at its limit is rejected while another,
/// through the same balancer address, is served. (The process model's
/// children learn the client after the fork and count it in a table in
/// shared memory.)
fn the_per_address_limit_counts_the_named_clients(model: Model) {
    let args = [
        "--mode",
        "echo",
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
    ];
    let mut server = serve(model, &args);
    let mut held = connect(server.addr);
    held.write_all(&v2(addr("192.0.2.50:1"))).expect("write");
    assert_eq!(echo_round(&mut held, b"first"), b"first");
    // Same client through the balancer: over its limit.
    refused(server.addr, &v1(addr("192.0.2.50:2")));
    wait_count(&mut server, "max-connections-per-ip", 1);
    // Another client through the same balancer address: served.
    proxied_echo(server.addr, &v1(addr("192.0.2.51:3")), b"other");
    close_and_wait(held);
    wait_count(&mut server, "closed: eof", 2);
    // Its slot is free again.
    proxied_echo(server.addr, &v1(addr("192.0.2.50:4")), b"again");
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.rejected), (3, 1));
}

fn binary() -> &'static str {
    crate::support::server::binary()
}

/// `--workers 2`: every worker reads headers, and the per-address table
/// they share counts the named clients: with one client holding its one
/// connection, that client is rejected on whichever worker its next
/// connection lands, and other clients are served.
#[test]
fn workers_share_the_named_clients_limit() {
    let mut server = serve(
        Model::Mio,
        &[
            "--mode",
            "echo",
            "--workers",
            "2",
            "--proxy-protocol",
            "--max-connections-per-ip",
            "1",
        ],
    );
    let mut held = connect(server.addr);
    held.write_all(&v1(addr("192.0.2.60:1"))).expect("write");
    assert_eq!(echo_round(&mut held, b"held"), b"held");
    let tries = 8;
    for i in 0..tries {
        refused(server.addr, &v2(addr(&format!("192.0.2.60:{}", 100 + i))));
        let other = addr(&format!("192.0.2.{}:7", 100 + i));
        proxied_echo(server.addr, &v2(other), b"served");
    }
    wait_count(&mut server, "closed: eof", tries);
    for i in 0..tries {
        assert_eq!(
            server.count(&format!("192.0.2.{}:7 accepted", 100 + i)),
            1
        );
    }
    close_and_wait(held);
    let summary = stop(server);
    assert_eq!(summary.rejected, tries as u64);
    assert_eq!(summary.accepted, tries as u64 + 1);
}

/// A stop while a header is still arriving closes that connection at
/// once, counted as accepted and closed as `shutdown`.
fn a_stop_closes_a_header_still_arriving(model: Model) {
    let server = serve(model, &["--mode", "echo", "--proxy-protocol"]);
    let mut c = connect(server.addr);
    c.write_all(&v2(addr("192.0.2.9:9"))[..10]).expect("write");
    // The header's first bytes are in the server before the stop.
    eventually("the partial header is read", || {
        proc::tcp_socket(server.addr, c.local_addr().expect("local"))
            .is_some_and(|s| s.rx_queue == 0)
    });
    let summary = stop(server);
    assert!(closed_by_server(&mut c));
    assert_eq!((summary.accepted, summary.closed_shutdown), (1, 1));
}

/// A `--proxy-from` that is not a list of networks is a usage error:
/// exit 2 and the reason.
#[test]
fn a_bad_proxy_from_is_exit_2() {
    for bad in ["10.0.0.0/33", "10.0.0.1/8x", "example.com", ""] {
        let out = std::process::Command::new(binary())
            .args(["serve", "--addr", "127.0.0.1:0", "--proxy-protocol"])
            .args(["--proxy-from", bad])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--proxy-from"), "{bad:?}: {err}");
    }
}
