//! Writing to stdout and stderr without panicking.
//!
//! `println!` and `eprintln!` panic when the write fails, and in the
//! `readyloop` binary a panic is an abort (exit 134: its panic hook,
//! `src/main.rs`). Rust ignores SIGPIPE,
//! so a reader that goes away (`readyloop load | head -c0`, a closed log
//! pipe) is an `EPIPE` on the next write, not a signal: every line the
//! generator writes goes through here, and a failed write is an error to
//! act on or ignore, never a crash.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stderr (progress, the first error, why a run
/// failed). A stderr that cannot take it loses the line: there is
/// nowhere left to say so.
pub(super) fn say(line: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Writes the report to stdout and flushes it, so a failure shows here
/// and not at exit.
pub(super) fn print(text: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(text)?;
    out.flush()
}

/// The reader of stdout has gone: not a failure of the run, as for any
/// Unix tool whose reader quit early.
pub(super) fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
