//! Helpers shared by the integration tests: start a server (in-process or
//! as the real binary), connect clients, wait with bounded retries.
#![allow(dead_code)] // each test file uses its own subset

pub mod clients;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::{Config, Mode, Model, Running, Summary};

/// Generous bound for anything a test waits on; tests never assert time.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Bytes the [`ServerProcess::warm_up`] client echoes.
pub const WARM_UP_BYTES: usize = 4096;

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
    readyloop::bind(config).expect("bind").spawn().expect("spawn")
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

/// A fresh client: `data` echoes back exactly, then the client closes its
/// side and waits for the server to close, so the server has counted the
/// connection (every model counts a close before the socket goes).
/// Returns the client's address, as the server logs it.
pub fn echo_and_close(addr: SocketAddr, data: &[u8]) -> SocketAddr {
    let mut stream = connect(addr);
    let local = stream.local_addr().expect("local address");
    assert_eq!(echo_round(&mut stream, data), data, "fresh echo");
    close_and_wait(stream);
    local
}

/// Closes the client's side and waits for the server to close, which it
/// does only after counting the connection as `eof`.
pub fn close_and_wait(mut stream: TcpStream) {
    stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (rest, clean) = read_to_end(&mut stream);
    assert!(rest.is_empty() && clean, "no clean close from the server");
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
    Rng::new(seed).bytes(len)
}

/// A tiny seeded xorshift64 generator: reproducible runs without a
/// dependency. Not for anything but tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
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

/// The models this build implements, probed by running each once in echo
/// mode; one not built yet is reported on stderr and left out, so a suite
/// parameterised over [`Model::ALL`] runs on what exists.
pub fn built_models() -> Vec<Model> {
    Model::ALL
        .into_iter()
        .filter(|&model| {
            let built = echoes(model);
            if !built {
                eprintln!(
                    "SKIPPED: model {model} is not built on this branch"
                );
            }
            built
        })
        .collect()
}

fn echoes(model: Model) -> bool {
    let server =
        ServerProcess::start(&["--mode", "echo", "--model", model.name()]);
    let Ok(mut stream) = TcpStream::connect(server.addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let mut byte = [0u8];
    stream.write_all(b"?").is_ok()
        && stream.read_exact(&mut byte).is_ok()
        && byte == *b"?"
}

/// Path of the `readyloop` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_readyloop")
}

/// The real binary running `serve`, with its stderr read line by line.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Receiver<Vec<u8>>,
    /// Every stderr line seen so far (invalid UTF-8 replaced).
    pub log: Vec<String>,
    /// The same lines as the exact bytes the server wrote, each without
    /// its final `\n`.
    pub raw_log: Vec<Vec<u8>>,
}

impl ServerProcess {
    /// Runs `readyloop serve --addr 127.0.0.1:0 ARGS…` and waits for its
    /// `listening on` line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_command(ServerProcess::command(args))
    }

    /// The command [`ServerProcess::start`] runs, to adjust before
    /// starting it with [`ServerProcess::start_command`].
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
        cmd
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
            raw_log: Vec::new(),
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
        self.wait_for(|line| line.contains(needle), needle)
    }

    /// Waits for the status line (`listening on`, `summary`) that starts
    /// with `message`. Only a line that begins with the status target
    /// counts: client bytes logged in log mode may contain the same words
    /// but never start a line.
    pub fn wait_for_status(&mut self, message: &str) -> String {
        let start = format!("INFO  [{}] {message}", "readyloop::status");
        self.wait_for(|line| line.starts_with(&start), &start)
    }

    fn wait_for(
        &mut self,
        found: impl Fn(&str) -> bool,
        what: &str,
    ) -> String {
        if let Some(line) = self.log.iter().find(|l| found(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(raw) => {
                    let line = self.push_line(raw);
                    if found(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {what:?}; stderr so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Takes every stderr line that has arrived so far into `log`.
    pub fn collect_log(&mut self) -> &[String] {
        while let Ok(raw) = self.lines.try_recv() {
            self.push_line(raw);
        }
        &self.log
    }

    fn push_line(&mut self, raw: Vec<u8>) -> String {
        let line = String::from_utf8_lossy(&raw).into_owned();
        self.log.push(line.clone());
        self.raw_log.push(raw);
        line
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
        self.finish()
    }

    /// Like [`ServerProcess::terminate`], keeping the process's record
    /// (its log) for the caller to inspect; every line is collected.
    pub fn finish(&mut self) -> (i32, Summary) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        let line = self.wait_for_status("summary ");
        let summary = Summary::parse(&line).expect("parse summary");
        self.drain_log();
        (status, summary)
    }

    /// After exit: collects every line up to the end of stderr.
    fn drain_log(&mut self) {
        while let Ok(raw) = self.lines.recv_timeout(PATIENCE) {
            self.push_line(raw);
        }
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

    /// Serves one client and returns its address: after that the server
    /// is in its loop with everything set up (the process model, for
    /// one, opens its SIGCHLD pipe after the `listening on` line), so a
    /// descriptor or memory baseline taken then is not racy.
    pub fn warm_up(&self) -> SocketAddr {
        echo_and_close(self.addr, &pattern(5, WARM_UP_BYTES))
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

/// Reads stderr as raw lines: `BufRead::lines` would stop at the first
/// invalid UTF-8 and strip a `\r`, hiding exactly what hostile-input tests
/// look for.
fn read_lines(stderr: ChildStderr) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
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

/// What `/proc` says about one process: the figures the reliability
/// tests compare against a baseline.
pub mod procfs {
    use std::fs;

    /// A `VmXxx:` figure of `/proc/PID/status`, in KiB.
    fn status_kib(pid: u32, key: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmRSS:")
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(pid: u32) -> Option<u64> {
        status_kib(pid, "VmHWM:")
    }

    /// The fields of `/proc/PID/stat` after the command name, so that
    /// `stat_fields(pid)[0]` is the state (field 3 of proc(5)).
    fn stat_fields(pid: u32) -> Option<Vec<String>> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(str::to_owned).collect())
    }

    /// User plus system CPU time used so far, in clock ticks.
    pub fn cpu_ticks(pid: u32) -> Option<u64> {
        let f = stat_fields(pid)?;
        Some(
            f.get(11)?.parse::<u64>().ok()?
                + f.get(12)?.parse::<u64>().ok()?,
        )
    }

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub fn ticks_per_second() -> u64 {
        // SAFETY: sysconf only reads a configuration value.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        u64::try_from(t).unwrap_or(100)
    }

    /// A live child of some process: its pid, state letter and start time
    /// (to tell it from a later process that reuses the pid).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Child {
        pub pid: u32,
        pub state: char,
        pub start: u64,
    }

    /// Every process whose parent is `pid`, zombies included.
    pub fn children(pid: u32) -> Vec<Child> {
        let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(|p: u32| {
                let f = stat_fields(p)?;
                if f.get(1)?.parse::<u32>().ok()? != pid {
                    return None;
                }
                let state = f.first()?.chars().next()?;
                Some(Child { pid: p, state, start: f.get(19)?.parse().ok()? })
            })
            .collect()
    }

    /// Whether `child` still exists (as the same process, in any state).
    pub fn exists(child: &Child) -> bool {
        stat_fields(child.pid)
            .and_then(|f| f.get(19)?.parse::<u64>().ok())
            .is_some_and(|start| start == child.start)
    }
}
