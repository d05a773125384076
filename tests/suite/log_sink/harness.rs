//! The log-sink tests' own harness: a server whose stderr the test holds
//! (never read, read slowly, or drained at the end), clients, and readers
//! of the log it wrote.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::CLIENT_TIMEOUT;
use crate::support::{eventually, PATIENCE};

// ---- the server ----------------------------------------------------

/// The real binary running `serve` on a free loopback port, its stderr a
/// pipe this test reads only when it chooses to.
pub(super) struct Server {
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    pub(super) stderr: Option<ChildStderr>,
}

impl Server {
    /// Starts `readyloop serve --model MODEL ARGS…` and reads its first
    /// line (`listening on ADDR …`) and nothing more. Its lines start
    /// with the record (`--log-timestamps never`): these tests read what
    /// the sink carries, and `log_format` pins how lines begin.
    pub(super) fn start(model: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_readyloop"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model", model])
            .args(["--log-timestamps", "never"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn readyloop");
        let mut stderr = child.stderr.take().expect("stderr");
        let mut line = Vec::new();
        let mut byte = [0u8];
        while byte != *b"\n" {
            match stderr.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => panic!("no first line: {line:?}"),
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, addr, stderr: Some(stderr) }
    }

    pub(super) fn take_stderr(&mut self) -> ChildStderr {
        self.stderr.take().expect("stderr already taken")
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the status
    /// and how long the exit took.
    pub(super) fn terminate(&mut self) -> (ExitStatus, Duration) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not
        // reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, start.elapsed());
            }
            assert!(start.elapsed() < PATIENCE, "server did not exit");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything left in the stderr pipe, after the exit.
    pub(super) fn read_all_stderr(&mut self) -> String {
        let mut all = Vec::new();
        self.take_stderr().read_to_end(&mut all).expect("read stderr");
        String::from_utf8_lossy(&all).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`Reader`] reads stderr.
#[derive(Clone, Copy)]
pub(super) enum Pace {
    /// As fast as lines come.
    Fast,
    /// A log shipper that keeps falling behind: 1 KiB, then a pause
    /// (about 20 KB/s).
    Slow,
    /// A bad link: the pipe shrunk to one page, 128 bytes read every
    /// 50 ms (about 2.5 KB/s).
    Trickle,
}

/// A thread reading the server's stderr until EOF, keeping every line.
pub(super) struct Reader {
    pub(super) text: Arc<Mutex<String>>,
    pub(super) thread: thread::JoinHandle<()>,
}

impl Reader {
    pub(super) fn spawn(mut stderr: ChildStderr, pace: Pace) -> Reader {
        let text = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&text);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let want = match pace {
                Pace::Fast => buf.len(),
                Pace::Slow => 1024,
                Pace::Trickle => 128,
            };
            if let Pace::Trickle = pace {
                // SAFETY: fcntl on the pipe this thread owns the read end
                // of; the size applies to the whole pipe.
                let r = unsafe {
                    libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096)
                };
                assert!(r >= 4096, "F_SETPIPE_SZ: {r}");
            }
            while let Ok(n @ 1..) = stderr.read(&mut buf[..want]) {
                let chunk = String::from_utf8_lossy(&buf[..n]);
                shared.lock().unwrap().push_str(&chunk);
                if let Pace::Slow | Pace::Trickle = pace {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Reader { text, thread }
    }

    /// Waits (bounded) for a whole line matching `found`.
    pub(super) fn wait_for(&self, found: impl Fn(&str) -> bool) -> String {
        let mut line = None;
        eventually("a log line", || {
            let text = self.text.lock().unwrap();
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            line = whole.lines().find(|l| found(l)).map(str::to_owned);
            line.is_some()
        });
        line.unwrap_or_default()
    }

    /// Everything read, once the pipe is closed (the server exited).
    pub(super) fn join(self) -> String {
        self.thread.join().expect("reader thread");
        Arc::try_unwrap(self.text).unwrap().into_inner().unwrap()
    }
}

// ---- clients -------------------------------------------------------

pub(super) fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    c
}

pub(super) fn echo(c: &mut TcpStream, data: &[u8]) {
    c.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back).expect("echo (is the server stalled?)");
    assert_eq!(back, data);
}

/// A fresh connection: 8 bytes echoed, then a clean close both ways.
pub(super) fn echo_and_close(addr: SocketAddr, i: usize) {
    try_echo_and_close(addr, i)
        .unwrap_or_else(|e| panic!("connection {i}: {e} (server stalled?)"));
}

pub(super) fn try_echo_and_close(
    addr: SocketAddr,
    i: usize,
) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let data = (i as u64).to_le_bytes();
    c.write_all(&data)?;
    let mut back = [0; 8];
    c.read_exact(&mut back)?;
    if back != data {
        return Err(io::Error::other("wrong echo"));
    }
    c.shutdown(Shutdown::Write)?;
    match c.read(&mut back)? {
        0 => Ok(()),
        _ => Err(io::Error::other("bytes after the echo")),
    }
}

/// A fresh connection: sends `data`, closes its side and waits for the
/// server's close.
pub(super) fn send_and_close(addr: SocketAddr, data: &[u8]) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    c.write_all(data)?;
    c.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)?;
    Ok(())
}

/// Closes the write side and waits for the server's close.
pub(super) fn close_and_wait(mut c: TcpStream) {
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("clean close");
}

/// Sends 1-byte writes for `length`, then closes and waits for the
/// server's close. Returns the client's address, the bytes sent and the
/// time from connect to the server's close (every line the server logged
/// for it falls inside that time).
pub(super) fn flood(
    addr: SocketAddr,
    length: Duration,
) -> (SocketAddr, usize, Duration) {
    let start = Instant::now();
    let mut c = client(addr);
    c.set_nodelay(true).unwrap();
    let me = c.local_addr().unwrap();
    let mut sent = 0;
    while start.elapsed() < length {
        c.write_all(b"x").expect("flood write");
        sent += 1;
    }
    close_and_wait(c);
    (me, sent, start.elapsed())
}

// ---- reading the log -----------------------------------------------

pub(super) fn is_log_line(line: &str) -> bool {
    ["ERROR [", "WARN  [", "INFO  [", "DEBUG [", "TRACE ["]
        .iter()
        .any(|level| line.starts_with(level))
}

/// The fields of the last `summary` line in `log`.
pub(super) fn summary(log: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .rfind(|l| l.starts_with("INFO  [readyloop::status] summary "))
        .unwrap_or_else(|| panic!("no summary in:\n{}", tail(log)));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a number")))
        .collect()
}

pub(super) fn closed(s: &HashMap<String, u64>) -> u64 {
    ["eof", "reset", "error", "idle", "shutdown"]
        .iter()
        .map(|r| s[&format!("closed_{r}")])
        .sum()
}

/// Chunk lines logged for `peer`.
pub(super) fn chunk_lines(log: &str, peer: SocketAddr) -> usize {
    let start = format!("INFO  [readyloop::journal] {peer} sent ");
    log.lines().filter(|l| l.starts_with(&start)).count()
}

/// Chunk lines reported suppressed for `peer`.
pub(super) fn suppressed_reports(log: &str, peer: SocketAddr) -> u64 {
    reports(log).get(&peer).copied().unwrap_or(0)
}

/// Per peer, the sum of its `PEER: N chunk lines suppressed` reports.
pub(super) fn reports(log: &str) -> HashMap<SocketAddr, u64> {
    let mut all = HashMap::new();
    for line in log.lines().filter(|l| l.starts_with("INFO  [")) {
        let Some(rest) =
            line.strip_suffix(" chunk lines suppressed (log-rate)")
        else {
            continue;
        };
        let Some((peer, n)) = rest.rsplit_once(' ').and_then(|(head, n)| {
            let peer = head.rsplit(' ').next()?.strip_suffix(':')?;
            Some((peer.parse().ok()?, n.parse::<u64>().ok()?))
        }) else {
            continue;
        };
        *all.entry(peer).or_insert(0) += n;
    }
    all
}

pub(super) fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
