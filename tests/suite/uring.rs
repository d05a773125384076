//! What only the uring model promises: where io_uring is blocked (here by
//! a seccomp filter, as a container's profile does), `serve --model
//! uring` says so in one line and exits 1; it never falls back silently.
//! And its receive path (issue 22): incremental buffers carry large and
//! small messages byte-exact, echo's multishot receive holds a client
//! that never reads to its output cap and at most one buffer more, and
//! a pool that runs dry (`ENOBUFS`, trap C3) never stalls a client, and
//! receives over a turn's cap wait one turn and lose nothing.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;

use crate::support::load_json::LoadReport;
use crate::support::server::binary;
use crate::support::stall::queues;
use crate::support::*;

/// A provided buffer: the most one receive completion may bring.
const BUFFER: u64 = 64 * 1024;

/// The receive path's configurations: the default (incremental buffers,
/// echo's bounded multishot receive as a bundle, sends in place, where
/// the kernel has them) and each turned off, as on an older kernel; with
/// bundles off, reads under 2 KiB are copied and larger ones sent in
/// place (so both meet in one output).
const CONFIGS: [&[(&str, &str)]; 5] = [
    &[],
    &[("READYLOOP_URING_BUNDLE", "0"), ("READYLOOP_URING_IN_PLACE", "2048")],
    &[("READYLOOP_URING_IN_PLACE", "0")],
    &[("READYLOOP_URING_INC", "0")],
    &[("READYLOOP_URING_ECHO_MULTISHOT", "0")],
];

/// The uring server in echo mode on a free port, with `env` and `args`.
fn uring(env: &[(&str, &str)], args: &[&str]) -> ServerProcess {
    let mut all = vec!["--model", "uring", "--mode", "echo"];
    all.extend_from_slice(args);
    let mut cmd = ServerProcess::command_at("127.0.0.1:0", &all);
    cmd.envs(env.iter().copied());
    ServerProcess::start_command(cmd)
}

/// Messages of 1 B, 64 B, 16 KiB and 100 KiB, interleaved, from eight
/// clients at once (so one incremental buffer holds pieces of several
/// clients' messages), echo byte-exact in every configuration.
#[test]
fn large_and_small_messages_echo_byte_exact() {
    crate::support::uring::run(Model::Uring, |_| {
        for env in CONFIGS {
            let server = uring(env, &[]);
            let clients: Vec<_> = (0..8u64)
                .map(|i| {
                    let addr = server.addr;
                    thread::spawn(move || mixed_exchange(addr, i))
                })
                .collect();
            let mut total = 0;
            for c in clients {
                total += c.join().expect("a client failed");
            }
            let s = stop(server);
            assert_eq!(s.bytes_in, total, "{env:?}");
            assert_eq!(s.bytes_out, total, "{env:?}");
        }
    });
}

/// One client's interleaved messages, written by one thread while this
/// one reads (100 KiB is more than the server's output cap, so a client
/// that wrote it all before reading would wait on itself). Returns the
/// bytes exchanged.
fn mixed_exchange(addr: std::net::SocketAddr, seed: u64) -> u64 {
    let sizes = [1, 64, 16 * 1024, 100 * 1024, 64, 1, 16 * 1024, 1];
    let mut sent = Vec::new();
    for round in 0..6u64 {
        for (j, &n) in sizes.iter().enumerate() {
            sent.extend(pattern(seed * 1000 + round * 10 + j as u64, n));
        }
    }
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().expect("clone");
    let out = sent.clone();
    let write = thread::spawn(move || {
        let mut at = 0;
        for round in 0..6 {
            for &n in &sizes {
                writer.write_all(&out[at..at + n]).expect("write");
                at += n;
                // A pause now and then: the small messages arrive alone.
                if n == 1 && round % 2 == 0 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
        }
    });
    let mut back = vec![0; sent.len()];
    stream.read_exact(&mut back).expect("read the echo");
    write.join().expect("writer");
    let first = back.iter().zip(&sent).position(|(a, b)| a != b);
    assert!(first.is_none(), "echo differs from byte {first:?}");
    sent.len() as u64
}

/// A client that writes and never reads: echo's multishot receive stops
/// once the output holds the cap, so the server holds nearly `OUT_CAP`
/// (it reads until then; the kernel's count of a byte whose ACK is
/// delayed only makes it look smaller) and never more; then everything
/// echoes, in order, once the client reads.
#[test]
fn a_non_reading_client_costs_at_most_the_cap() {
    crate::support::uring::run(Model::Uring, |_| {
        for env in CONFIGS {
            let server = uring(env, &[]);
            let mut hog = connect(server.addr);
            let chunk = pattern(7, 48 * 1024 + 5);
            let (sent, held) = write_until_still(&mut hog, &chunk);
            let cap = readyloop::OUT_CAP as u64;
            assert!(
                held <= cap && held + BUFFER > cap,
                "{env:?}: the server holds {held} bytes of output (cap \
                 {cap})"
            );
            let mut back = vec![0; sent.len()];
            hog.read_exact(&mut back).expect("read the echo");
            assert!(back == sent, "{env:?}: echo differs after the stall");
            assert_eq!(echo_round(&mut hog, b"resumed"), b"resumed");
            drop(hog);
            let s = stop(server);
            assert_eq!(s.bytes_in, sent.len() as u64 + 7, "{env:?}");
        }
    });
}

/// Writes `chunk` over and over without reading until nothing moves: our
/// write would block, input waits unread at the server, and what the
/// server holds stays the same for 300 ms. Returns what was written and
/// what the server holds.
fn write_until_still(stream: &mut TcpStream, chunk: &[u8]) -> (Vec<u8>, u64) {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut sent = Vec::new();
    let start = Instant::now();
    let mut last = None;
    let mut since = Instant::now();
    loop {
        match stream.write(chunk) {
            Ok(n) => {
                sent.extend_from_slice(&chunk[..n]);
                last = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let q = queues(stream, sent.len() as u64);
                let now =
                    q.as_ref().filter(|q| q.unread > 0).map(|q| q.pending);
                if now.is_some() && now == last {
                    if since.elapsed() >= Duration::from_millis(300) {
                        break;
                    }
                } else {
                    (last, since) = (now, Instant::now());
                }
                assert!(start.elapsed() < PATIENCE, "never still: {q:?}");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    (sent, last.unwrap_or(0))
}

/// Trap C11: echo sends received bytes in place from the receive
/// buffers, which stay out of the ring until the send is done, so such
/// a send must not wait for a client that does not read: it is sent
/// with MSG_DONTWAIT and a full socket (EAGAIN) copies its bytes. Through
/// a pool of four buffers (256 KiB) and bounded send buffers
/// (`--send-buffer 64K`: with 4K the echo read back afterwards crawled,
/// 5 s of the test's 14), eight clients read slowly for a second, then
/// stop reading and write until nothing moves. Sends in place meet a
/// full socket (the server's debug line says so; without MSG_DONTWAIT
/// none does, and the check fails), and that is no error (treated as
/// one, the connections close and the clients' writes fail). A new
/// client still echoes, and each slow client gets every byte back, in
/// order, once it reads. Then the same without sends in place.
#[test]
fn clients_that_stop_reading_hold_no_receive_buffer() {
    crate::support::uring::run(Model::Uring, |_| {
        let _heavy = heavy();
        let without: &[_] = &[("READYLOOP_URING_IN_PLACE", "0")];
        for env in [&[][..], without] {
            let mut env = env.to_vec();
            env.push(("READYLOOP_URING_BUFFERS", "4"));
            let args = ["--send-buffer", "64K", "--log-level", "debug"];
            let mut server = uring(&env, &args);
            let addr = server.addr;
            let slow: Vec<_> = (0..8u64)
                .map(|i| thread::spawn(move || slow(addr, i)))
                .collect();
            let slow: Vec<_> =
                slow.into_iter().map(|t| t.join().expect("client")).collect();
            let mut fresh = connect(server.addr);
            assert_eq!(echo_round(&mut fresh, b"still read"), b"still read");
            drop(fresh);
            for (mut stream, sent, got) in slow {
                let mut back = got;
                let mut rest = vec![0; sent.len() - back.len()];
                stream.read_exact(&mut rest).expect("read the echo");
                back.extend(rest);
                assert!(back == sent, "{env:?}: echo differs");
            }
            let (code, s) = server.finish();
            assert_eq!(code, 0, "{env:?}");
            assert_eq!(s.closed(), s.accepted, "{env:?}: {s}");
            let copied =
                server.log.iter().any(|l| l.contains("found the socket full"));
            let in_place = !env.contains(&("READYLOOP_URING_IN_PLACE", "0"));
            assert_eq!(
                copied, in_place,
                "{env:?}: no send in place met a full socket (or one did \
                 without sends in place): the test tests nothing"
            );
        }
    });
}

/// One slow client: for a second it writes 16 KiB and reads at most
/// 4 KiB every 2 ms, then stops reading and writes until nothing moves.
/// Returns its stream, what it sent and what it read.
fn slow(
    addr: std::net::SocketAddr,
    seed: u64,
) -> (TcpStream, Vec<u8>, Vec<u8>) {
    let mut stream = connect(addr);
    stream.set_nonblocking(true).expect("nonblocking");
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(1) {
        let chunk = pattern(seed * 10_000 + round, 16 * 1024);
        round += 1;
        match stream.write(&chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
        let mut buf = [0; 4096];
        match stream.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        thread::sleep(Duration::from_millis(2));
    }
    // Not reading any more: write until nothing has moved for 500 ms.
    let chunk = pattern(seed * 10_000 + round, 48 * 1024 + 3);
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(500) {
        match stream.write(&chunk) {
            Ok(n) => {
                sent.extend_from_slice(&chunk[..n]);
                still = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(start.elapsed() < PATIENCE, "never still");
    }
    stream.set_nonblocking(false).expect("blocking");
    (stream, sent, got)
}

/// 2,000 clients echoing 16 KiB round trips through a pool of four
/// buffers: the ring runs dry (`ENOBUFS` ends receives, trap C3, as the
/// server's debug line says), each receive is armed again once buffers
/// come back, and no client stalls or sees a wrong byte, in every
/// configuration.
#[test]
fn a_pool_that_runs_dry_stalls_no_client() {
    crate::support::uring::run(Model::Uring, |_| {
        let _heavy = heavy();
        for env in CONFIGS {
            let mut env = env.to_vec();
            env.push(("READYLOOP_URING_BUFFERS", "4"));
            let mut server = uring(&env, &["--log-level", "debug"]);
            let load = ["--connections", "2000", "--size", "16384"];
            let more = ["--messages", "20000", "--stall-timeout", "20"];
            let report = load_clean(&mut server, &env, &[&load, &more]);
            assert!(report.messages >= 20_000, "{env:?}: {report:?}");
            assert!(
                server.log.iter().any(|l| l.contains("ran dry")),
                "{env:?}: the pool never ran dry: the test tests nothing"
            );
        }
    });
}

/// Sixty-four clients streaming at once bring more than one turn may
/// receive (512 KiB): the receives over the cap wait for the next turn,
/// and that turn must come at once. A receive left behind and never
/// armed would stall its client (two seconds without progress count as a
/// stall, an error), one armed twice would reorder or lose bytes (the
/// load generator checks each byte).
/// Then the same with the cap lifted, the ring holding every buffer,
/// echo receives with little room waiting for the send in flight, and
/// no bundles.
#[test]
fn receives_over_a_turns_cap_wait_one_turn_and_lose_nothing() {
    crate::support::uring::run(Model::Uring, |_| {
        let _heavy = heavy();
        let all_off = [
            ("READYLOOP_URING_TURN_CAP", "0"),
            ("READYLOOP_URING_FITTED_RING", "0"),
            ("READYLOOP_URING_DEFER_RECV", "1"),
            ("READYLOOP_URING_BUNDLE", "0"),
        ];
        for env in [&[][..], &all_off[..]] {
            let mut server = uring(env, &["--log-level", "debug"]);
            let load = ["--pattern", "stream", "--connections", "64"];
            let more = ["--size", "16384", "--duration", "3"];
            let stall = ["--stall-timeout", "2"];
            let report = load_clean(&mut server, env, &[&load, &more, &stall]);
            assert!(report.messages > 0, "{env:?}: {report:?}");
            let capped = server
                .log
                .iter()
                .any(|l| l.contains("wait for the next turn"));
            assert_eq!(
                capped,
                env.is_empty(),
                "{env:?}: the cap bit (or, lifted, did not): {:?}",
                server.log
            );
        }
    });
}

/// Runs `readyloop load` with `args` against `server` (started with
/// `env`), then stops the server: the load must end cleanly (exit 0, no
/// error, stall or mismatch) and the server close every connection it
/// accepted. Returns the load's report.
fn load_clean(
    server: &mut ServerProcess,
    env: &[(&str, &str)],
    args: &[&[&str]],
) -> LoadReport {
    let mut cmd = Command::new(binary());
    cmd.args(["load", "--addr", &server.addr.to_string(), "--json", "-q"]);
    for a in args {
        cmd.args(*a);
    }
    let out = cmd.output().expect("run readyloop load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{env:?}: {stdout}");
    let report = LoadReport::parse(&stdout).expect("load report");
    assert_eq!(report.errors, 0, "{env:?}: {stdout}");
    let (code, s) = server.finish();
    assert_eq!(code, 0, "{env:?}");
    assert_eq!(s.closed(), s.accepted, "{env:?}: {s}");
    report
}

/// `io_uring_setup` on x86_64.
const SYS_IO_URING_SETUP: u32 = 425;
/// `AUDIT_ARCH_X86_64`.
const ARCH_X86_64: u32 = 0xc000_003e;

/// A seccomp filter that fails `io_uring_setup` with EPERM, as Docker's
/// default profile does, and allows everything else.
fn block_io_uring() -> std::io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, 4), // seccomp_data.arch
        jump(ARCH_X86_64, 0, 3),
        stmt(load, 0), // seccomp_data.nr
        jump(SYS_IO_URING_SETUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: two prctl calls on this (child) process only, between fork
    // and exec; `program` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// With io_uring blocked, the uring model exits 1 with one line naming
/// io_uring and the reason, and the mio model still runs under the same
/// filter (the filter blocks io_uring and nothing else).
#[test]
fn blocked_io_uring_exits_1_with_the_reason() {
    // The filter's syscall number is x86_64's (the machine this project
    // runs on); another architecture fails here rather than skipping.
    assert_eq!(std::env::consts::ARCH, "x86_64", "the filter's syscall");
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--model", "uring", "--addr", "127.0.0.1:0"]);
    // SAFETY: `block_io_uring` makes only async-signal-safe calls.
    unsafe { cmd.pre_exec(block_io_uring) };
    let out = cmd.output().expect("run readyloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: io_uring unavailable: io_uring_setup: ")
            && last.contains("Operation not permitted"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let mut mio = Command::new(binary());
    mio.args(["serve", "--model", "mio", "--addr", "127.0.0.1:0"]);
    mio.args(["--log-level", "warn"]);
    // SAFETY: as above.
    unsafe { mio.pre_exec(block_io_uring) };
    let mut child = mio.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
}
