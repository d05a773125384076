//! `--metrics-addr`: what a scrape says equals what the clients did, in
//! every model; wrong scrapes get their status, stalled and dripped ones
//! are closed and keep neither a real scrape nor a client waiting; a
//! metrics address that clashes or cannot be bound is refused; 10,000
//! open connections still scrape.

use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::Duration;

use readyloop::{Model, Summary};

use crate::support::scrape::{connect_from, exchange_from, still_open};
use crate::support::scrape::{exchange, metrics_addr, scrape, serve_metrics};
use crate::support::scrape::{scrape_until, GET, HALF};
use crate::support::server::binary;
use crate::support::*;

per_model!(
    scrapes_count_what_clients_did,
    wrong_requests_get_their_status,
    stalled_half_requests_leave_room_for_real_scrapes,
    a_dripped_request_head_is_closed_after_a_second,
);

/// Scrapes one client address may have open (the server's
/// `PER_ADDRESS`).
const PER_ADDRESS: usize = 4;

/// `clients` fresh clients one after another, client `i` echoing
/// `size(i)` seeded bytes and closing; returns the bytes sent in all.
fn echo_clients(
    addr: std::net::SocketAddr,
    clients: u64,
    size: impl Fn(usize) -> usize,
) -> u64 {
    let mut sent = 0;
    for i in 0..clients {
        let data = pattern(i, size(i as usize));
        echo_and_close(addr, &data);
        sent += data.len() as u64;
    }
    sent
}

/// After a known workload a scrape's counters are what the clients did
/// (the scrapes themselves not among them), a client held open counts as
/// open, even while the iterative model serves it, and after the stop
/// the summary is the last scrape plus what happened since.
fn scrapes_count_what_clients_did(model: Model) {
    let (server, metrics) = serve_metrics(model, &["--mode", "echo"]);
    let before = scrape(metrics);
    assert_eq!(before.summary(), Summary::default(), "{}", before.text);
    assert_eq!(before.open(), 0);
    let info = format!(
        "readyloop_build_info{{version=\"{}\",model=\"{model}\",\
         mode=\"echo\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(before.get(&info), 1);
    // The process's own figures are the ones /proc shows (the scrape's
    // socket and the directory read open while it counts).
    let fds = before.get("process_open_fds");
    let seen = server.fd_count() as u64;
    assert!(fds.abs_diff(seen) <= 3, "{fds} fds scraped, {seen} seen");
    let rss = before.get("process_resident_memory_bytes") / 1024;
    let seen = proc::rss_kib(server.pid()).expect("VmRSS");
    assert!(rss / 2 <= seen && seen <= rss * 2, "{rss} KiB vs {seen} KiB");

    let clients = 5;
    let sent = echo_clients(server.addr, clients, |i| 1000 + 333 * i);
    // The process model counts a close when it reaps the child.
    let done = scrape_until(metrics, "every close counted", |s| {
        s.summary().closed() == clients
    });
    assert_eq!(done.summary(), echoed(clients, sent), "{}", done.text);
    assert_eq!(done.open(), 0);

    let mut held = connect(server.addr);
    let data = pattern(9, 777);
    assert_eq!(echo_round(&mut held, &data), data);
    let len = data.len() as u64;
    // A blocking model counts the bytes it wrote once write() returns,
    // which may be after the client has them.
    let during =
        scrape_until(metrics, "the held client's echo counted", |s| {
            s.summary().bytes_out == sent + len
        });
    assert_eq!(during.open(), 1, "{}", during.text);
    assert_eq!(during.summary().accepted, clients + 1);
    assert_eq!(during.summary().bytes_in, sent + len);
    close_and_wait(held);
    let last = scrape_until(metrics, "the held client's close", |s| {
        s.summary().closed() == clients + 1
    });
    assert_eq!(last.open(), 0);

    let since = pattern(11, 4321);
    echo_and_close(server.addr, &since);
    let n = since.len() as u64;
    let mut summary = stop(server);
    summary.log_dropped = 0;
    let mut want = last.summary();
    want.accepted += 1;
    want.closed_eof += 1;
    want.bytes_in += n;
    want.bytes_out += n;
    assert_eq!(summary, want);
}

/// Other paths get 404, other methods 405 with `Allow`, garbage 400 and
/// a head over 8 KiB 431; HEAD gets the 200 head without the body, and
/// HTTP/1.0 is answered too. A client talking meanwhile is served, and
/// is the only connection the summary counts.
fn wrong_requests_get_their_status(model: Model) {
    let (server, metrics) = serve_metrics(model, &["--mode", "echo"]);
    let mut client = connect(server.addr);
    let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
    oversized.resize(9000, b'a');
    oversized.extend_from_slice(b"\r\n\r\n");
    let cases: [(&[u8], u16); 8] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", 405),
        (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (&oversized, 431),
        (b"GET /metrics?debug=1 HTTP/1.0\r\n\r\n", 200),
    ];
    for (i, (request, status)) in cases.into_iter().enumerate() {
        let response = exchange(metrics, request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]);
        assert_eq!(response.status, status, "{shown:?}: {response:?}");
        if status == 405 {
            let allow = response.field("allow").unwrap_or("");
            assert!(allow.contains("GET"), "{response:?}");
        }
        let data = pattern(i as u64, 100);
        assert_eq!(echo_round(&mut client, &data), data, "after {shown:?}");
    }
    let head = exchange(metrics, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    let length: usize = head.field("content-length").unwrap().parse().unwrap();
    assert!(length > 0, "{head:?}");
    close_and_wait(client);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_eof), (1, 1), "{summary}");
    assert_eq!(summary.bytes_in, 800);
}

/// Forty connections from 127.0.0.1 that send half a request head and
/// stall cannot keep real scrapes out: five scrapes from 127.0.0.2 are
/// all answered, at most four of the forty are still open once the
/// first is answered (an address has four seats; the rest were closed
/// at once), and an echo client is served all along. None of them
/// counts as a client.
fn stalled_half_requests_leave_room_for_real_scrapes(model: Model) {
    let (server, metrics) = serve_metrics(model, &["--mode", "echo"]);
    let mut client = connect(server.addr);
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 1), metrics);
            // One closed at once may refuse the bytes: that is the point.
            let _ = s.write_all(HALF);
            s
        })
        .collect();
    let scraper = Ipv4Addr::new(127, 0, 0, 2);
    let (mut answered, mut open) = (0, None);
    for round in 0..5u64 {
        let response = exchange_from(scraper, metrics, GET);
        answered += usize::from(response.is_some_and(|r| r.status == 200));
        // Accepted after the forty: by now each was seated or closed.
        open.get_or_insert_with(|| {
            stalled.iter().filter(|s| still_open(s)).count()
        });
        let data = pattern(round, 5000);
        assert_eq!(echo_round(&mut client, &data), data);
    }
    println!(
        "{model}: {answered} of 5 scrapes answered, {open:?} stalled open"
    );
    assert_eq!(answered, 5, "scrapes answered behind 40 stalled requests");
    assert!(open <= Some(PER_ADDRESS), "{open:?} of 40 from one address");
    for (i, s) in stalled.iter_mut().enumerate() {
        assert!(closed_by_server(s), "stalled request {i} got an answer");
    }
    close_and_wait(client);
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.rejected), (1, 0), "{summary}");
}

/// A request head dripped a byte every 200 ms is closed without an
/// answer a second after its connect: the server takes far fewer than
/// the 18 bytes of `GET / HTTP/1.0` (which it would answer with a 404
/// if they all came), counted as the bytes sent before the close shows.
fn a_dripped_request_head_is_closed_after_a_second(model: Model) {
    let (server, metrics) = serve_metrics(model, &[]);
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let mut stream = connect(metrics);
    let pace = Duration::from_millis(200);
    stream.set_read_timeout(Some(pace)).expect("read timeout");
    let mut sent = 0;
    let mut byte = [0u8];
    while sent < request.len() {
        if stream.write_all(&request[sent..sent + 1]).is_err() {
            break;
        }
        sent += 1;
        // Waits for the server's close (or answer) up to the next drip.
        match stream.read(&mut byte) {
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {}
            Err(e) if e.kind() == Interrupted => {}
            _ => break,
        }
    }
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    let (rest, _) = read_to_end(&mut stream);
    let answer = [&byte[..], &rest].concat();
    let answer = String::from_utf8_lossy(&answer);
    println!("{model}: closed after {sent} of {} bytes", request.len());
    assert!(rest.is_empty() && byte == [0], "answered after {sent}: {answer}");
    // At one byte per 200 ms, a second is 5 or 6 bytes; 10 leaves room
    // for a slow turn, and the whole request is 18.
    assert!(sent <= 10, "{sent} bytes taken before the close");
    stop(server);
}

/// A metrics address that takes the clients' connections is a usage
/// error: exit 2 and one line naming both addresses. Port 0 on both
/// never clashes.
#[test]
fn a_metrics_address_over_the_client_address_exits_2() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let client = format!("127.0.0.1:{port}");
    let other = format!("127.0.0.2:{port}");
    // (client addresses, metrics address): the clash may be with any
    // of several listeners.
    let cases = [
        (vec![&client], client.clone()),
        (vec![&client], format!("0.0.0.0:{port}")),
        (vec![&other, &client], client.clone()),
    ];
    for (clients, metrics) in cases {
        let mut cmd = Command::new(binary());
        cmd.arg("serve");
        for addr in &clients {
            cmd.args(["--addr", addr]);
        }
        let out = cmd
            .args(["--metrics-addr", &metrics])
            .output()
            .expect("run readyloop");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{metrics}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: --metrics-addr "), "{err}");
        assert!(err.contains(&client) && err.contains(&metrics), "{err}");
    }
    let (server, metrics) = serve_metrics(Model::Mio, &[]);
    assert_ne!(metrics, server.addr);
    stop(server);
}

/// A metrics address already in use is a bind failure like the client
/// address's: exit 1, `error: cannot listen on ADDR: …`.
#[test]
fn a_metrics_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", &addr])
        .output()
        .expect("run readyloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!("error: cannot listen on {addr}: ");
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
}

/// `--help` documents the flag.
#[test]
fn help_documents_the_metrics_flag() {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run readyloop");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--metrics-addr <ADDR>"), "{help}");
}

/// The mio model in echo mode, warnings only, with its metrics, `args`
/// and RLIMIT_NOFILE `nofile`; returns it with the metrics address.
fn mio_with_nofile(
    args: &[&str],
    nofile: u64,
) -> (ServerProcess, std::net::SocketAddr) {
    let mio = ["--model", "mio", "--mode", "echo", "--log-level", "warn"];
    let metrics = ["--metrics-addr", "127.0.0.1:0"];
    let all = [&mio[..], &metrics, args].concat();
    let mut server = ServerProcess::start_with_nofile(&all, nofile);
    let addr = metrics_addr(&mut server);
    (server, addr)
}

/// Connections the ten-thousand test holds open.
const MANY: usize = 10_000;

/// With 10,000 client connections open, the mio model's scrape answers
/// and counts every one of them, and the process's descriptors with
/// them.
#[test]
fn ten_thousand_open_connections_and_a_scrape() {
    let _heavy = heavy();
    readyloop::rlimit::raise_to_hard().expect("raise RLIMIT_NOFILE");
    let (server, metrics) =
        mio_with_nofile(&["--max-connections", "10100"], 10_300);
    let clients: Vec<TcpStream> =
        (0..MANY).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let all =
        scrape_until(metrics, "10,000 open", |s| s.open() >= MANY as u64);
    assert_eq!(all.open(), MANY as u64, "{}", all.text);
    assert_eq!(all.summary().accepted, MANY as u64);
    let fds = all.get("process_open_fds");
    assert!(fds > MANY as u64 && fds < MANY as u64 + 64, "{fds} fds");
    drop(clients);
    let (code, summary) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(summary.accepted, MANY as u64);
}

/// With descriptors exhausted, a scrape waits in the backlog while the
/// loop pauses its accept instead of spinning on EMFILE (CPU well under
/// a tenth of a core over the span of three pause warnings, at least a
/// second), and is answered once the clients leave.
#[test]
fn a_scrape_out_of_descriptors_waits_without_spinning() {
    let _heavy = heavy();
    let (mut server, metrics) = mio_with_nofile(&[], 24);
    let pid = server.pid();
    let flood: Vec<TcpStream> =
        (0..40).map(|_| connect(server.addr)).collect();
    server.wait_for_line("pausing accept");
    let mut pending = connect(metrics);
    pending.write_all(GET).expect("send");
    let seen = server.count("pausing accept");
    let (began, t0) = (std::time::Instant::now(), proc::cpu_ticks(pid));
    // Each accept warns at most once a second: three lines are at least
    // a second of the server's own time.
    wait_count(&mut server, "pausing accept", seen + 3);
    let used = proc::cpu_ticks(pid).expect("cpu") - t0.expect("cpu");
    let span = began.elapsed().as_secs_f64();
    let budget = span * proc::ticks_per_second() as f64 / 10.0;
    assert!(
        (used as f64) < budget,
        "server used {used} ticks in {span:.1} s while out of descriptors"
    );
    drop(flood);
    let (bytes, _) = read_to_end(&mut pending);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let (code, summary) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(summary.accepted, summary.closed(), "{summary}");
}

/// With `--workers 3` the first worker serves the endpoint, and a scrape
/// adds up every worker's counters: the clients' connections, spread
/// over the workers by the kernel, are all there.
#[test]
fn a_scrape_adds_up_every_worker() {
    let args = ["--mode", "echo", "--workers", "3"];
    let (server, metrics) = serve_metrics(Model::Mio, &args);
    let clients = 30;
    let sent = echo_clients(server.addr, clients, |i| 500 + 7 * i);
    let done = scrape_until(metrics, "every close counted", |s| {
        let s = s.summary();
        s.closed() == clients && s.bytes_out == sent
    });
    assert_eq!(done.summary(), echoed(clients, sent), "{}", done.text);
    // Each worker's share, labelled: the shares add up to the total.
    let per: Vec<u64> = (0..3)
        .map(|n| {
            let series = format!(
                "readyloop_worker_connections_accepted_total{{worker=\"{n}\"}}"
            );
            done.get(&series)
        })
        .collect();
    assert_eq!(per.iter().sum::<u64>(), clients, "{}", done.text);
    for n in 0..3 {
        let open =
            format!("readyloop_worker_connections_open{{worker=\"{n}\"}}");
        assert_eq!(done.get(&open), 0, "{}", done.text);
    }
    let mut summary = stop(server);
    summary.log_dropped = 0;
    assert_eq!(summary, echoed(clients, sent));
}

/// The counters after `clients` echo clients that sent `sent` bytes in
/// all and closed cleanly.
fn echoed(clients: u64, sent: u64) -> Summary {
    Summary {
        accepted: clients,
        closed_eof: clients,
        bytes_in: sent,
        bytes_out: sent,
        ..Summary::default()
    }
}
