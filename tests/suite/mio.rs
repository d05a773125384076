//! What only the mio model promises: accept pauses instead of spinning
//! when descriptors run out (trap 4), EINTR is retried (trap 9), echo
//! backpressure at its output cap, lingering over unread input at a stop,
//! the listen backlog, and what a connection costs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use crate::support::server::Signal;
use crate::support::stall::write_until_stalled;
use crate::support::*;

/// Far more than every buffer on the path together (kernel socket
/// buffers on both ends, at most a few MiB each on loopback, plus the
/// server's output cap).
const STALL_LIMIT: usize = 64 << 20;

/// The mio server on a free port with `args`.
fn mio(args: &[&str]) -> ServerProcess {
    serve(readyloop::Model::Mio, args)
}

/// With descriptors exhausted, a flood neither crashes the server nor
/// spins its CPU: it pauses accepting (one attempt per pause, as its
/// rate-limited warning counts them) and serves again once clients
/// leave.
#[test]
fn descriptor_exhaustion_pauses_accept_without_spinning() {
    let _heavy = heavy();
    let mut server = ServerProcess::start_with_nofile(
        &["--model", "mio", "--mode", "echo", "--log-level", "warn"],
        24,
    );
    let (addr, pid) = (server.addr, server.pid());
    // Far more clients than descriptors; the kernel completes their
    // handshakes into the backlog whether or not the server can accept.
    let flood: Vec<_> = (0..100).map(|_| connect(addr)).collect();
    // The warning comes at most once a second and counts the pauses in
    // between: the span from one line to the next is the server's own.
    server.wait_for_line("pausing accept");
    let (began, t0) = (Instant::now(), proc::cpu_ticks(pid).expect("cpu"));
    wait_count(&mut server, "pausing accept", 2);
    let used = proc::cpu_ticks(pid).expect("cpu") - t0;
    let span = began.elapsed().as_secs_f64();
    let line = server.log.iter().rfind(|l| l.contains("pausing accept"));
    let folded: u64 = line
        .and_then(|l| l.split_once("ms ("))
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pause count in {line:?}"));
    // One pause per 100 ms is about ten a second; a spinning accept
    // would retry thousands of times.
    assert!(folded < 50, "{folded} accept attempts in one warning's span");
    let budget = span * proc::ticks_per_second() as f64 / 10.0;
    assert!(
        (used as f64) < budget,
        "server used {used} ticks in {span:.1} s while out of descriptors"
    );
    assert!(server.alive(), "server exited");
    drop(flood);
    // Once the flood leaves, a new client is served.
    eventually("service after the flood", || {
        let Ok(mut c) = TcpStream::connect(addr) else { return false };
        c.set_read_timeout(Some(PATIENCE)).is_ok()
            && echo_round(&mut c, b"ping") == b"ping"
    });
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(s.accepted, s.closed(), "{s}");
}

/// `--backlog` reaches listen(2): the kernel reports it as the Send-Q of
/// the listening socket.
#[test]
fn the_backlog_flag_sets_the_listen_backlog() {
    let server = mio(&["--backlog", "37"]);
    let port = server.addr.port().to_string();
    let out = Command::new("ss")
        .args(["-ltnH", "sport", "=", &format!(":{port}")])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Columns: State Recv-Q Send-Q Local Peer; Send-Q is the backlog.
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("37"), "ss said: {text:?}");
}

/// A signal with a handler that lands while the loop waits makes
/// epoll_wait fail with EINTR (it is never restarted after a handler);
/// the server retries the wait (trap 9). Twenty SIGUSR1s (the stats
/// request, so each one delivered shows as a `stats` line), each sent
/// while the loop is blocked in epoll_wait and in the middle of a
/// message: every one is answered, no byte is lost, the server goes on.
#[test]
fn interrupted_poll_is_retried() {
    const ROUNDS: usize = 20;
    let mut server = mio(&["--mode", "echo"]);
    let pid = server.pid();
    let mut c = connect(server.addr);
    for i in 0..ROUNDS {
        let data = pattern(i as u64, 10);
        c.write_all(&data[..5]).expect("write");
        eventually("the loop waits in epoll_wait", || {
            proc::blocked_in(pid).is_some_and(|n| EPOLL_WAITS.contains(&n))
        });
        server.signal(Signal::USR1);
        let asked = format!("[{STATUS}] stats ");
        eventually(&format!("stats line {}", i + 1), || {
            assert!(server.alive(), "the server exited at signal {}", i + 1);
            server.count(&asked) > i
        });
        c.write_all(&data[5..]).expect("write");
        let mut back = [0; 10];
        c.read_exact(&mut back).expect("read echo");
        assert_eq!(back[..], data[..], "round {i}");
    }
    drop(c);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.bytes_out), (1, 10 * ROUNDS as u64), "{s}");
}

/// epoll_wait, epoll_pwait and epoll_pwait2 on x86_64 (the machine this
/// project runs on; `uring.rs` assumes it too).
const EPOLL_WAITS: [u64; 3] = [232, 281, 441];

/// A client that writes without reading stalls once the server holds a
/// full output buffer (the server stops reading it, so it cannot buffer
/// without bound); other clients are still served; once the client
/// reads, every byte comes back in order and the stream resumes.
#[test]
fn a_client_that_never_reads_is_throttled_not_buffered() {
    let server = mio(&["--mode", "echo"]);
    let mut hog = connect(server.addr);
    let sent =
        write_until_stalled(&mut hog, &pattern(1, 64 << 10), STALL_LIMIT);
    assert!(
        sent.len() < STALL_LIMIT,
        "the server kept reading a client that never reads ({} bytes)",
        sent.len()
    );
    let mut other = connect(server.addr);
    assert_eq!(echo_round(&mut other, b"still here"), b"still here");
    let mut back = vec![0; sent.len()];
    hog.read_exact(&mut back).expect("read the echo");
    assert!(back == sent, "echo differs after the stall");
    assert_eq!(echo_round(&mut hog, b"resumed"), b"resumed");
    drop((hog, other));
    let s = stop(server);
    assert_eq!(s.bytes_in, s.bytes_out);
    assert_eq!(s.bytes_in, sent.len() as u64 + 7 + 10);
}

/// Closed connections release their descriptors: after 200 clients come
/// and go, the server holds as many descriptors as before.
#[test]
fn closed_connections_release_their_descriptors() {
    let server = mio(&["--mode", "echo", "--log-level", "warn"]);
    let mut probe = connect(server.addr);
    assert_eq!(echo_round(&mut probe, b"baseline"), b"baseline");
    let baseline = server.fd_count();
    let clients: Vec<_> = (0..200).map(|_| connect(server.addr)).collect();
    eventually("200 more descriptors", || server.fd_count() >= baseline + 200);
    drop(clients);
    eventually("descriptors back to the baseline", || {
        server.fd_count() == baseline
    });
    drop(probe);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.closed()), (201, 201), "{s}");
}

/// 5,000 idle connections grow the server's RSS by far less than a
/// kilobyte each (docs/models.md promises 48 bytes; page granularity
/// and the allocator make the bound here generous: 256 bytes).
#[test]
fn idle_connections_cost_bytes_not_kilobytes() {
    const N: usize = 5_000;
    let _heavy = heavy();
    let server = mio(&["--mode", "echo", "--log-level", "warn"]);
    let mut probe = connect(server.addr);
    assert_eq!(echo_round(&mut probe, b"warm"), b"warm");
    let rss = || proc::rss_kib(server.pid()).expect("rss") * 1024;
    let before = rss();
    let mut clients: Vec<_> = (0..N).map(|_| connect(server.addr)).collect();
    // One round trip on each: every connection is accepted and has been
    // served (its output buffer, if any, freed again).
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo_round(c, &[i as u8]), [i as u8]);
    }
    let per = rss().saturating_sub(before) / N as u64;
    eprintln!("rss before {before}: {per} B/conn");
    assert!(per <= 256, "{per} bytes of RSS per idle connection");
    drop(clients);
    assert_eq!(server.terminate().0, 0);
}
