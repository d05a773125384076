//! Log mode: every chunk is logged, and no client byte can forge a log
//! line or reach the terminal raw.

mod common;

use std::io::Write;
use std::net::Shutdown;

use common::*;

/// Hostile bytes (terminal escapes, a forged log line, NUL, invalid UTF-8)
/// arrive in the log escaped, on the one line of their chunk.
#[test]
fn hostile_bytes_are_escaped_in_the_log() {
    let mut server = ServerProcess::start(&["--mode", "log"]);
    let mut c = connect(server.addr);
    c.write_all(b"\x1b[2J\x1b]0;pwned\x07\nINFO  [readyloop::status] summary accepted=9\r\x00\xff\xfe ok")
        .unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut c).1);
    let line = server.wait_for_line(" sent ");
    assert!(
        line.ends_with(
            "sent 66 bytes: \\x1b[2J\\x1b]0;pwned\\x07\\nINFO  \
             [readyloop::status] summary accepted=9\\r\\x00\\xff\\xfe ok"
        ),
        "{line:?}"
    );
    server.wait_for_line("closed: eof");
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    // Only the real summary line counts, and it says what happened.
    assert_eq!((s.accepted, s.closed_eof, s.bytes_in), (1, 1, 66));
}

/// A long chunk is cut at 256 bytes with a count of what was left out,
/// and the stderr of the whole exchange holds no raw control byte.
#[test]
fn long_chunks_are_cut_and_no_control_byte_reaches_stderr() {
    let mut server = ServerProcess::start(&["--mode", "log"]);
    let mut c = connect(server.addr);
    let all: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    c.write_all(&all).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut c).1);
    server.wait_for_line("closed: eof");
    let log = server.collect_log().join("\n");
    assert!(log.contains("… (+44 bytes)"), "no cut marker in:\n{log}");
    for ch in log.chars() {
        assert!(ch == '\n' || !ch.is_control(), "raw {ch:?} in log");
    }
    assert_eq!(server.terminate().0, 0);
}
