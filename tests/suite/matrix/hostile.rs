//! Hostile input in log mode, against the real binary of every model: no
//! byte a client sends reaches the server's stderr raw, every logged chunk
//! decodes back to what was sent, a forged log line stays inside the line
//! that quotes it, and the server serves on afterwards.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use readyloop::escape::{unescape, LOG_LIMIT};
use readyloop::Model;

use crate::support::*;

per_model!(hostile_input_never_reaches_the_log_raw);

/// What the hostile clients send, one connection each.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng::new(6);
    let mut huge = rng.bytes(1 << 20);
    for b in &mut huge {
        if *b == b'\n' {
            *b = b'\r'; // 1 MiB without a newline (but with CRs)
        }
    }
    let mut random: Vec<u8> = Vec::new();
    for _ in 0..32 {
        let len = rng.between(0, 300);
        random.extend(rng.bytes(len));
        random.push(b'\n');
    }
    vec![
        ("1 MiB without a newline", huge),
        ("every byte value", (0..=255).collect()),
        (
            "invalid UTF-8",
            // Lone continuation, truncated, overlong, surrogate, > U+10FFFF.
            b"\x80\xbf\xc3\x28\xe2\x82\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xff"
                .to_vec(),
        ),
        (
            "terminal escapes",
            [
                "\x1b[2J\x1b[H",                // clear screen, home
                "\x1b]0;owned\x07",             // set window title
                "\x1b]52;c;ZWNobyBwd25lZA==\x07", // write the clipboard
                "\x1bP+q544e\x1b\\",            // DCS request
                "\u{9b}31m",                    // C1 CSI
                "\u{202e}txt.exe",              // right-to-left override
                "line\u{2028}separator\rcarriage",
            ]
            .concat()
            .into_bytes(),
        ),
        (
            "a forged summary line",
            format!(
                "\nINFO  [{}] summary accepted=999 closed_eof=999 \
                 closed_reset=0 closed_error=0 closed_idle=0 \
                 closed_shutdown=0 rejected=0 bytes_in=1 bytes_out=1\r\n",
                STATUS
            )
            .into_bytes(),
        ),
        ("random lines", random),
    ]
}

/// No byte in any stderr line is a control byte (the line's own `\n` is
/// already split off), and no character a terminal acts on appears.
fn assert_inert(server: &ServerProcess) {
    for raw in &server.raw_log {
        let shown = String::from_utf8_lossy(raw);
        assert!(
            !raw.iter().any(|&b| b < 0x20 || b == 0x7f),
            "raw control byte in {shown:?}"
        );
        let line = std::str::from_utf8(raw)
            .unwrap_or_else(|_| panic!("invalid UTF-8 in {shown:?}"));
        let bad = line.chars().find(|&c| {
            c.is_control()
                || matches!(c, '\u{2028}'..='\u{2029}' | '\u{200e}'..='\u{200f}')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        });
        assert_eq!(bad, None, "raw {bad:?} in {line:?}");
    }
}

/// The chunks the server logged for `peer`, in order: (bytes read, the
/// escaped text shown).
fn logged_chunks(
    server: &ServerProcess,
    peer: SocketAddr,
) -> Vec<(usize, &str)> {
    let key = format!("{peer} sent ");
    server
        .log
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find(&key)? + key.len()..];
            let (n, text) = rest.split_once(" bytes: ")?;
            Some((n.parse().ok()?, text))
        })
        .collect()
}

/// Every logged chunk of `peer` shows, exactly, the bytes it read at its
/// place in the stream (its first `LOG_LIMIT` of them), and the chunks add
/// up to everything that was sent.
fn assert_logged_exactly(
    server: &ServerProcess,
    peer: SocketAddr,
    sent: &[u8],
) {
    let mut at = 0;
    for (n, text) in logged_chunks(server, peer) {
        let shown = n.min(LOG_LIMIT);
        let text = match n - shown {
            0 => text,
            cut => text
                .strip_suffix(&format!("… (+{cut} bytes)"))
                .unwrap_or_else(|| panic!("no cut count: {text:?}")),
        };
        assert!(at + n <= sent.len(), "{peer}: more logged than sent");
        let decoded = unescape(text).unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(decoded, sent[at..at + shown], "{peer}: chunk at {at}");
        at += n;
    }
    assert_eq!(at, sent.len(), "{peer}: logged bytes");
}

/// Sends `data` on one connection, closes the write side and waits for
/// the server to close (in log mode nothing comes back).
fn send_and_close(server: &mut ServerProcess, data: &[u8]) -> SocketAddr {
    let mut stream = connect(server.addr);
    let peer = stream.local_addr().unwrap();
    stream.write_all(data).expect("write");
    stream.shutdown(Shutdown::Write).expect("shutdown");
    let (back, clean) = read_to_end(&mut stream);
    assert!(back.is_empty() && clean, "{peer}: {} bytes back", back.len());
    server.wait_for_line(&format!("{peer} closed: eof"));
    peer
}

/// Hostile bytes (1 MiB without a newline, every byte value, invalid
/// UTF-8, terminal escapes, a forged summary line, random lines) never
/// reach stderr raw, are logged exactly, and leave every model serving.
fn hostile_input_never_reaches_the_log_raw(model: Model) {
    let mut server = serve(model, &["--mode", "log"]);
    let mut sent = Vec::new();
    for (what, data) in payloads() {
        let peer = send_and_close(&mut server, &data);
        sent.push((what, peer, data));
    }
    // Still alive and still right: a plain line is logged as it is.
    let peer = send_and_close(&mut server, b"hello\n");
    server.wait_for_line(&format!("{peer} sent 6 bytes: hello\\n"));
    sent.push(("a plain line", peer, b"hello\n".to_vec()));

    let (code, summary) = server.finish();
    assert_eq!(code, 0, "{model}: exit code");
    assert_inert(&server);
    for (what, peer, data) in &sent {
        eprintln!("{model}: {what}: {} bytes logged exactly", data.len());
        assert_logged_exactly(&server, *peer, data);
    }
    // The forged line is quoted inside a chunk line, never a line itself.
    let status = format!("INFO  [{}] summary", STATUS);
    let summaries =
        server.log.iter().filter(|l| l.starts_with(&status)).count();
    assert_eq!(summaries, 1, "{model}: summary lines");
    let total: usize = sent.iter().map(|(_, _, d)| d.len()).sum();
    assert_eq!(summary.accepted, sent.len() as u64, "{model}");
    assert_eq!(summary.closed_eof, sent.len() as u64, "{model}");
    assert_eq!(summary.closed(), summary.accepted, "{model}");
    assert_eq!(summary.bytes_in, total as u64, "{model}");
    assert_eq!(summary.bytes_out, 0, "{model}");
}
