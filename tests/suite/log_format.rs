//! How each log line begins, as the bytes show it: an RFC 3339 UTC
//! timestamp by default; the syslog priority and no timestamp when
//! stderr is the journal (`JOURNAL_STREAM` names stderr's device and
//! inode); neither with `--log-timestamps never`; and a
//! `JOURNAL_STREAM` that names another file changes nothing. Every
//! model, whose threads and children write their own lines.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use readyloop::Model;

use crate::support::log_line::parts;
use crate::support::server::binary;
use crate::support::*;

per_model!(
    every_line_starts_with_a_utc_timestamp,
    journal_lines_start_with_their_priority,
);

/// The syslog priority the journal should file a record of `level` at.
fn priority_of(record: &str) -> Option<u8> {
    let level = record.split_whitespace().next()?;
    match level {
        "ERROR" => Some(3),
        "WARN" => Some(4),
        "INFO" => Some(6),
        "DEBUG" | "TRACE" => Some(7),
        _ => None,
    }
}

/// `DEVICE:INODE` of `fd`, as systemd writes `JOURNAL_STREAM`.
fn device_and_inode(fd: impl AsFd) -> String {
    let copy = fd.as_fd().try_clone_to_owned().expect("dup");
    let meta = std::fs::File::from(copy).metadata().expect("fstat");
    format!("{}:{}", meta.dev(), meta.ino())
}

/// The server serving `model` with `args`, its stderr one end of a
/// stream socket (the journal's kind of stream), and `JOURNAL_STREAM`
/// set by `journal`: `Some(true)` to name that socket, `Some(false)` to
/// name another one, `None` to leave it unset.
fn start(model: Model, args: &[&str], journal: Option<bool>) -> ServerProcess {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let (_other, elsewhere) = UnixStream::pair().expect("socketpair");
    let mut cmd = ServerProcess::command_at("127.0.0.1:0", args);
    cmd.args(["--model", model.name()]);
    cmd.env_remove("JOURNAL_STREAM");
    match journal {
        Some(true) => cmd.env("JOURNAL_STREAM", device_and_inode(&theirs)),
        Some(false) => cmd.env("JOURNAL_STREAM", device_and_inode(&elsewhere)),
        None => &mut cmd,
    };
    cmd.stderr(Stdio::from(OwnedFd::from(theirs)));
    ServerProcess::start_command_reading(cmd, ours)
}

/// One client served, then the stop: lines from accept to summary, the
/// process model's children among their writers.
fn exchange_and_stop(mut server: ServerProcess) -> ServerProcess {
    echo_and_close(server.addr, b"hello\n");
    server.wait_for_line("closed: eof");
    let (code, _) = server.finish();
    assert_eq!(code, 0, "exit code");
    server
}

/// By default every line starts with the UTC time it was written,
/// `2026-12-06T22:30:01.123Z `, between the test's clock readings
/// around the run, then the record; no priority. A warning (a flag that
/// does nothing in echo mode) is stamped the same way. A
/// `JOURNAL_STREAM` naming another socket than stderr is ignored.
fn every_line_starts_with_a_utc_timestamp(model: Model) {
    for journal in [None, Some(false)] {
        let before = SystemTime::now() - Duration::from_millis(1);
        let args = ["--mode", "echo", "--log-rate", "5"];
        let server = exchange_and_stop(start(model, &args, journal));
        let after = SystemTime::now() + Duration::from_millis(1);
        let mut levels = Vec::new();
        for raw in &server.raw_log {
            let line = String::from_utf8_lossy(raw);
            let p = parts(&line);
            assert_eq!(p.priority, None, "{model} {journal:?}: {line}");
            let time = p.time.unwrap_or_else(|| {
                panic!("{model} {journal:?}: no timestamp: {line}")
            });
            assert!(before <= time && time <= after, "{model}: {line}");
            levels.extend(priority_of(p.record));
        }
        assert!(levels.contains(&4), "{model}: no warning: {:?}", server.log);
        assert!(levels.contains(&6), "{model}: no info: {:?}", server.log);
        let summary = server.raw_log.last().expect("a line");
        assert!(String::from_utf8_lossy(summary).contains(" summary "));
    }
}

/// With stderr the journal's stream, every line starts with `<N>`, the
/// priority of its level (`<4>` the warning, `<6>` info, `<7>` trace),
/// right before the record: no timestamp, the journal adds its own.
/// `--log-timestamps always` adds one after the priority.
fn journal_lines_start_with_their_priority(model: Model) {
    let args = ["--mode", "echo", "--log-rate", "5", "--log-level", "trace"];
    let server = exchange_and_stop(start(model, &args, Some(true)));
    let mut seen = Vec::new();
    for raw in &server.raw_log {
        let line = String::from_utf8_lossy(raw);
        let p = parts(&line);
        assert_eq!(p.time, None, "{model}: timestamp in {line}");
        let want = priority_of(p.record);
        assert!(want.is_some(), "{model}: no record after the prefix: {line}");
        assert_eq!(p.priority, want, "{model}: {line}");
        seen.extend(want);
    }
    for n in [4, 6] {
        assert!(seen.contains(&n), "{model}: no <{n}> in {:?}", server.log);
    }
    // The uring model does not narrate at trace level.
    if model != Model::Uring {
        assert!(seen.contains(&7), "{model}: no <7> in {:?}", server.log);
    }

    let always = [&args[..2], &["--log-timestamps", "always"]].concat();
    let server = exchange_and_stop(start(model, &always, Some(true)));
    for raw in &server.raw_log {
        let line = String::from_utf8_lossy(raw);
        let p = parts(&line);
        assert!(p.priority.is_some() && p.time.is_some(), "{model}: {line}");
    }
}

/// `--log-timestamps never`: the record alone, no timestamp, no
/// priority; the mio model with two workers, whose threads write their
/// own lines.
#[test]
fn never_starts_lines_with_the_record() {
    let args = ["--mode", "echo", "--log-timestamps", "never"];
    let with_workers = [&args[..], &["--workers", "2"]].concat();
    for args in [&args[..], &with_workers] {
        let server = exchange_and_stop(start(Model::Mio, args, None));
        for raw in &server.raw_log {
            let line = String::from_utf8_lossy(raw);
            assert!(priority_of(&line).is_some(), "{line}");
            let p = parts(&line);
            assert_eq!((p.priority, p.time), (None, None), "{line}");
        }
    }
}

/// A refused flag's `error: …` line, the command's answer rather than a
/// record, carries `<3>` when stderr is the journal, so `journalctl -p
/// err` shows why the service failed; elsewhere it is the plain
/// `error: …` line of every usage error.
#[test]
fn a_refusal_is_an_error_in_the_journal() {
    for journal in [true, false] {
        let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--drain", "5"]);
        cmd.env_remove("JOURNAL_STREAM");
        if journal {
            cmd.env("JOURNAL_STREAM", device_and_inode(&theirs));
        }
        cmd.stderr(Stdio::from(OwnedFd::from(theirs)));
        let status = cmd.status().expect("run readyloop");
        drop(cmd);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut ours, &mut err).expect("read");
        assert_eq!(status.code(), Some(2), "{err}");
        let want =
            if journal { "<3>error: --drain " } else { "error: --drain " };
        assert!(err.starts_with(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
