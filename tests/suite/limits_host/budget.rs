//! Memory for clients that do not read, and the descriptor limit: what a
//! small host's server must bound whatever its clients do.

use super::*;

/// Clients that send and never read.
const NON_READERS: usize = 2_000;
/// The output budget of the non-reader test, in MiB.
const BUDGET_MIB: u64 = 4;
/// What each client may send at most.
const SEND_CAP: usize = 1 << 20;
/// Client socket buffers: small, so 2,000 stalled clients hold little
/// kernel memory on a shared test host.
const CLIENT_BUF: i32 = 16 * 1024;

/// 2,000 clients that send and never read grow the mio server by less
/// than `--max-output-memory` plus a small margin (without the budget
/// each would hold up to 64 KiB), and once they read, each receives
/// exactly the bytes it sent.
#[test]
fn non_readers_cost_the_budget_not_their_number() {
    readyloop::rlimit::raise_to_hard().expect("raise RLIMIT_NOFILE");
    let budget = format!("{BUDGET_MIB}M");
    let server = echo_server(&[
        "--model",
        "mio",
        "--max-output-memory",
        &budget,
        "--send-buffer",
        "16K",
    ]);
    let pid = server.pid();
    let mut warm = connect_from(ONE, server.addr, None);
    assert_echoes(&mut warm, &[7; 100_000]);
    close_and_wait(warm);
    let base = proc::rss_kib(pid).expect("VmRSS");

    let mut clients: Vec<TcpStream> = (0..NON_READERS)
        .map(|_| {
            let s = connect_from(ONE, server.addr, Some(CLIENT_BUF));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let sent = fill(&mut clients);
    let total: usize = sent.iter().sum();
    let peak = proc::peak_rss_kib(pid).expect("VmHWM");
    let growth = peak.saturating_sub(base);
    // The budget, plus what each connection may add past it (a small
    // read's leftover and its box) and the loop's own per-connection
    // bookkeeping, plus 2 MiB for the allocator.
    let margin = NON_READERS as u64 + 2 * 1024;
    let cap = BUDGET_MIB * 1024 + margin;
    eprintln!(
        "{NON_READERS} non-readers sent {} MiB; server rss {base} KiB -> \
         peak {peak} KiB (+{growth} KiB, cap +{cap} KiB)",
        total >> 20
    );
    assert!(growth <= cap, "grew {growth} KiB > {cap} KiB");

    // Now every client reads: each gets exactly what it sent.
    let mut expected = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        client.set_nonblocking(false).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        expected.resize(sent[i], 0);
        pattern(i, 0, &mut expected);
        let mut got = Vec::with_capacity(sent[i]);
        let mut client = client;
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client.read_to_end(&mut got).expect("read the echo");
        assert!(
            got == expected,
            "client {i}: got {} of {} bytes, or wrong ones",
            got.len(),
            sent[i]
        );
    }
    let (counts, _) = stop(server);
    assert_eq!(counts.closed_eof, NON_READERS as u64 + 1, "{counts:?}");
}

/// Writes each client's pattern until the server stops taking input:
/// passes over every client until none of them could write for a while
/// (or each sent [`SEND_CAP`]). Returns the bytes each sent.
fn fill(clients: &mut [TcpStream]) -> Vec<usize> {
    let mut sent = vec![0; clients.len()];
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + PATIENCE * 3;
    let mut quiet_passes = 0;
    while quiet_passes < 50 {
        assert!(Instant::now() < deadline, "the clients never stalled");
        let mut moved = 0;
        for (i, client) in clients.iter_mut().enumerate() {
            while sent[i] < SEND_CAP {
                let n = chunk.len().min(SEND_CAP - sent[i]);
                pattern(i, sent[i], &mut chunk[..n]);
                match client.write(&chunk[..n]) {
                    Ok(n) => {
                        sent[i] += n;
                        moved += n;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("client {i}: {e}"),
                }
            }
        }
        // Stalled: a pass that moved nothing, many times over, with a
        // pause for the server to catch up before each retry.
        quiet_passes = if moved == 0 { quiet_passes + 1 } else { 0 };
        thread::sleep(Duration::from_millis(10));
    }
    sent
}

// ------------------------------------------------- descriptor limit

/// `--max-connections` above what RLIMIT_NOFILE allows is named in one
/// warning line at start; one the limit allows is not.
#[test]
fn max_connections_beyond_the_descriptor_limit_is_warned() {
    for (max, warned) in [("1000", true), ("100", false)] {
        let args = [&ECHO[..], &["--max-connections", max]].concat();
        let server = ServerProcess::start_with_nofile(&args, 256);
        let (_, log) = stop(server);
        let warnings: Vec<&String> =
            log.iter().filter(|l| l.contains("RLIMIT_NOFILE")).collect();
        match warned {
            true => {
                assert_eq!(warnings.len(), 1, "{log:?}");
                assert!(warnings[0].contains("--max-connections"), "{log:?}");
            }
            false => assert!(warnings.is_empty(), "{log:?}"),
        }
    }
}
