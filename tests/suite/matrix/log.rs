//! Log mode: every chunk is logged, escaped, on the one line of its
//! chunk; no client byte can forge a log line or reach the terminal raw.

use std::io::Write;
use std::net::Shutdown;

use readyloop::escape::escape;
use readyloop::Model;

use crate::support::*;

per_model!(
    log_mode_escapes_hostile_bytes,
    a_forged_status_line_stays_quoted,
    long_chunks_are_cut_and_no_control_byte_reaches_stderr,
);

/// Client bytes are logged escaped: no control byte reaches the server's
/// stderr, and a client cannot forge a log line.
fn log_mode_escapes_hostile_bytes(model: Model) {
    let mut server = serve(model, &["--mode", "log"]);
    let hostile: &[u8] = b"hi\x1b[2J\x1b]0;owned\x07\r\nINFO  [readyloop] \
        10.0.0.1:1 accepted (1 open)\x00\xff\xfe\xe2\x80\xae end";
    let mut s = connect(server.addr);
    s.write_all(hostile).expect("write");
    drop(s);
    wait_count(&mut server, "closed: eof", 1);
    let log = server.collect_log().to_vec();
    let shown = format!("sent {} bytes: {}", hostile.len(), escape(hostile));
    assert!(
        log.iter().any(|l| l.ends_with(&shown)),
        "no line ends with {shown:?}:\n{}",
        log.join("\n")
    );
    assert!(shown.contains("\\x1b[2J") && shown.contains("\\r\\n"));
    for line in &log {
        assert!(!line.chars().any(char::is_control), "raw: {line:?}");
    }
    let forged = |l: &&String| l.contains("] 10.0.0.1:1 accepted");
    assert!(!log.iter().any(|l| forged(&l) && !l.contains(" sent ")));
    let summary = stop(server);
    assert_eq!(summary.bytes_in, hostile.len() as u64);
}

/// A chunk holding a forged `summary` line is logged, escaped, on its
/// own chunk line, exactly; only the real summary line counts.
fn a_forged_status_line_stays_quoted(model: Model) {
    let mut server = serve(model, &["--mode", "log"]);
    let mut c = connect(server.addr);
    let forged = format!(
        "\x1b[2J\x1b]0;pwned\x07\nINFO  [{STATUS}] summary \
         accepted=9\r\x00"
    );
    c.write_all(&[forged.as_bytes(), b"\xff\xfe ok"].concat()).expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_to_end(&mut c).1);
    let line = server.wait_for_line(" sent ");
    assert!(
        line.ends_with(&format!(
            "sent 66 bytes: \\x1b[2J\\x1b]0;pwned\\x07\\nINFO  [{STATUS}] \
             summary accepted=9\\r\\x00\\xff\\xfe ok"
        )),
        "{line:?}"
    );
    server.wait_for_line("closed: eof");
    let s = stop(server);
    assert_eq!((s.accepted, s.closed_eof, s.bytes_in), (1, 1, 66));
}

/// A long chunk is cut at 256 bytes with a count of what was left out,
/// and the stderr of the whole exchange holds no raw control byte.
fn long_chunks_are_cut_and_no_control_byte_reaches_stderr(model: Model) {
    let mut server = serve(model, &["--mode", "log"]);
    let mut c = connect(server.addr);
    let all: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    c.write_all(&all).expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_to_end(&mut c).1);
    server.wait_for_line("closed: eof");
    let log = server.collect_log().join("\n");
    assert!(log.contains("… (+44 bytes)"), "no cut marker in:\n{log}");
    for ch in log.chars() {
        assert!(ch == '\n' || !ch.is_control(), "raw {ch:?} in log");
    }
    stop(server);
}
