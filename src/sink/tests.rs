//! The sink over a real pipe: full, stalled, closed, torn.

use super::*;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

/// A pipe whose write end is nonblocking, wrapped as a sink.
fn pipe_sink() -> (File, Sink) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    let r = unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC)
    };
    assert_eq!(r, 0);
    // SAFETY: both descriptors are new and owned by nobody else.
    let (read, write) = unsafe {
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    (File::from(read), Sink::new(Out::Own(File::from(write))))
}

/// Fills the pipe until the sink holds a line of its own.
fn fill(sink: &mut Sink) {
    while !sink.pending() {
        sink.line(b"fill\n");
    }
}

/// Reads the pipe while the sink flushes, until nothing is pending.
fn flush_all(reader: &mut File, sink: &mut Sink) -> String {
    let mut text = String::new();
    while sink.pending() {
        text.push_str(&read_all(reader));
        sink.flush();
    }
    text.push_str(&read_all(reader));
    text
}

fn read_all(pipe: &mut File) -> String {
    let mut all = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(all).unwrap()
}

#[test]
fn a_full_pipe_buffers_then_drops_whole_lines_and_reports_them() {
    let (mut reader, mut sink) = pipe_sink();
    let line = format!("{}\n", "x".repeat(99));
    let mut written = 0;
    while !sink.pending() {
        sink.line(line.as_bytes());
        written += 1;
    }
    // The pipe is full; the buffer takes CAPACITY more, then drops.
    let fits = CAPACITY / line.len();
    for _ in 0..fits + 10 {
        sink.line(line.as_bytes());
    }
    // The line that found the pipe full was buffered, so the buffer
    // took it and `fits - 1` more: 11 dropped.
    assert_eq!(sink.dropped, 11);
    assert_eq!(sink.unreported, 11);
    let text = flush_all(&mut reader, &mut sink);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), written - 1 + fits + 1);
    assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 99));
    assert_eq!(
        lines[lines.len() - 1],
        "WARN  [readyloop::journal] log sink was full: 11 lines dropped"
    );
    assert_eq!(sink.unreported, 0);
    assert_eq!(sink.dropped, 11);
}

#[test]
fn a_stalled_sink_is_settled_by_its_deadline_and_counted() {
    let (_reader, mut sink) = pipe_sink();
    fill(&mut sink);
    sink.line(b"one more\n");
    let start = Instant::now();
    assert!(!sink.drain(start + Duration::from_millis(50)));
    sink.discard();
    assert!(sink.dropped >= 2, "{}", sink.dropped);
    assert!(!sink.pending() || sink.unreported > 0);
}

#[test]
fn a_closed_reader_drops_and_counts_without_reporting() {
    let (reader, mut sink) = pipe_sink();
    drop(reader);
    sink.line(b"nobody reads this\n");
    sink.line(b"nor this\n");
    assert_eq!((sink.dropped, sink.unreported), (2, 0));
    assert!(!sink.pending());
}

#[test]
fn batches_are_whole_lines_within_pipe_buf() {
    let short = b"ab\ncd\n";
    assert_eq!(batch(short), short);
    let many = "y\n".repeat(PIPE_BUF);
    assert_eq!(batch(many.as_bytes()).len(), PIPE_BUF);
    let long = format!("{}\nz\n", "l".repeat(PIPE_BUF + 10));
    assert_eq!(batch(long.as_bytes()).len(), PIPE_BUF + 11);
    assert_eq!(batch(b"partial"), b"partial");
}

/// At the stop, the lines not begun are dropped and counted, the
/// rest of a line partly written is kept whole, and the last line
/// comes right after it.
#[test]
fn the_last_line_jumps_the_queue_after_a_torn_line() {
    let (mut reader, mut sink) = pipe_sink();
    // Lines longer than PIPE_BUF: the one that finds the pipe
    // nearly full is written in part.
    let long = format!("{}\n", "t".repeat(5000));
    while !sink.pending() {
        sink.line(long.as_bytes());
    }
    assert!(sink.unstarted() > sink.sent, "a line is torn");
    for _ in 0..5 {
        sink.line(b"queued\n");
    }
    assert_eq!(sink.drop_unstarted(), 5);
    sink.line(b"last\n");
    let text = flush_all(&mut reader, &mut sink);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"last"));
    assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 5000));
    assert_eq!(sink.dropped, 5);
}

/// A sink that takes nothing is given up on after the stall time,
/// not waited for until the cap.
#[test]
fn a_sink_that_takes_nothing_is_given_up_on_after_the_stall() {
    let (_reader, mut sink) = pipe_sink();
    fill(&mut sink);
    let far = Instant::now() + Duration::from_secs(3600);
    assert!(!sink.drain_while_moving(Duration::from_millis(20), far));
}
