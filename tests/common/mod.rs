//! Helpers shared by the integration tests: start a server (in-process or
//! as the real binary), connect clients, wait with bounded retries.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::{Config, Mode, Model, Running, Summary};

/// Generous bound for anything a test waits on; tests never assert time.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A config for `model` in `mode` on a free loopback port.
pub fn config(model: Model, mode: Mode) -> Config {
    let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.model = model;
    config.mode = mode;
    config
}

/// Starts an in-process server (not for the process model: forking a
/// multi-threaded test process is unsound; use [`ServerProcess`]).
pub fn start_server(config: Config) -> Running {
    assert_ne!(config.model, Model::Process, "use ServerProcess");
    readyloop::bind(config).expect("bind").spawn()
}

/// Connects to `addr` with read and write timeouts so a broken server
/// fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `data` and reads back exactly as many bytes.
pub fn echo_round(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read echo");
    back
}

/// Reads until EOF; returns the bytes and whether the end was a clean EOF
/// (false on a reset or another error).
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (all, true),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (all, false),
        }
    }
}

/// A deterministic test pattern of `len` bytes that differs per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Retries `check` until it returns true or [`PATIENCE`] runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Path of the `readyloop` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_readyloop")
}

/// The real binary running `serve`, with its stderr read line by line.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Receiver<String>,
    /// Every stderr line seen so far.
    pub log: Vec<String>,
}

impl ServerProcess {
    /// Runs `readyloop serve --addr 127.0.0.1:0 ARGS…` and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
        ServerProcess::start_command(cmd)
    }

    /// Like [`ServerProcess::start`] for a prepared command (for example
    /// one wrapped in `prlimit`).
    pub fn start_command(mut cmd: Command) -> ServerProcess {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn readyloop");
        let lines = read_lines(child.stderr.take().expect("stderr"));
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for_status("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        server.addr = addr;
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for(needle, |line| line.contains(needle))
    }

    /// Waits for a line of the always-shown status target that starts
    /// with `what` (`listening on`, `summary`): a client cannot forge
    /// one, since its bytes only ever appear after a peer address.
    pub fn wait_for_status(&mut self, what: &str) -> String {
        let prefix = format!("INFO  [readyloop::status] {what}");
        self.wait_for(what, |line| line.starts_with(&prefix))
    }

    fn wait_for(
        &mut self,
        needle: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(line) = self.log.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?}; stderr so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Takes every stderr line that has arrived so far into `log`.
    pub fn collect_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// Sends `signal` (a libc signal number) to the server.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and still own.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }

    /// Sends SIGTERM, waits for exit and returns the exit code and the
    /// parsed summary line.
    pub fn terminate(mut self) -> (i32, Summary) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        let line = self.wait_for_status("summary ");
        let summary = Summary::parse(&line).expect("parse summary");
        (status, summary)
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < PATIENCE, "server did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Number of open descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(stderr: ChildStderr) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Writes `chunk` over and over without reading until writes stay
/// blocked (the server has stopped reading us) or `limit` bytes went;
/// returns what was written. Leaves the stream blocking.
pub fn write_until_stalled(
    stream: &mut TcpStream,
    chunk: &[u8],
    limit: usize,
) -> Vec<u8> {
    stream.set_nonblocking(true).unwrap();
    let mut sent = Vec::new();
    let mut stalls = 0;
    while stalls < 20 && sent.len() < limit {
        match stream.write(chunk) {
            Ok(n) => {
                sent.extend_from_slice(&chunk[..n]);
                stalls = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalls += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    sent
}

/// Closes `stream` with an RST instead of a FIN (SO_LINGER 0).
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// CPU time (user + system) the process `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}
