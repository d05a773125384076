//! The server under test: the real `readyloop serve` binary, its stderr
//! read line by line, stopped with a signal.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

use readyloop::{Model, Summary};
pub use rustix::process::Signal;
use rustix::process::{kill_process, setrlimit, Pid, Resource, Rlimit};

use super::log_line;
use super::net::echo_and_close;
use super::rng::pattern;
use super::wait::{eventually, PATIENCE};
use super::{proc, STATUS};

/// Bytes the [`ServerProcess::warm_up`] client echoes.
pub const WARM_UP_BYTES: usize = 4096;

/// Path of the `readyloop` binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_readyloop")
}

/// The binary serving `model` on a free port with `args`.
pub fn serve(model: Model, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--model", model.name()];
    all.extend_from_slice(args);
    ServerProcess::start(&all)
}

/// SIGTERM, exit 0, one close for each accepted connection, and the
/// summary.
pub fn stop(server: ServerProcess) -> Summary {
    let (code, summary) = server.terminate();
    assert_eq!(code, 0, "exit code");
    assert_eq!(summary.closed(), summary.accepted, "{summary}");
    summary
}

/// The addresses of a `listening on A, B (…)` line.
pub fn listening_addrs(line: &str) -> Vec<SocketAddr> {
    let rest = line.split("listening on ").nth(1).unwrap_or("");
    let list = rest.split(" (").next().unwrap_or("");
    list.split(", ")
        .map(|a| {
            a.parse().unwrap_or_else(|_| panic!("bad address {a:?}: {line}"))
        })
        .collect()
}

/// The real binary running `serve`, with its stderr read line by line.
pub struct ServerProcess {
    pub child: Child,
    /// The first address of its `listening on` line.
    pub addr: SocketAddr,
    /// Every address of its `listening on` line.
    pub addrs: Vec<SocketAddr>,
    lines: Receiver<Vec<u8>>,
    /// Every stderr line seen so far (invalid UTF-8 replaced), as its
    /// record (`LEVEL [target] message`): the priority and timestamp
    /// that begin it are taken off ([`log_line::record`]).
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

    /// Like [`ServerProcess::start`] with RLIMIT_NOFILE set to `nofile`
    /// in the server process only.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> ServerProcess {
        let mut cmd = ServerProcess::command(args);
        let limit = Rlimit { current: Some(nofile), maximum: Some(nofile) };
        // SAFETY: setrlimit is one async-signal-safe system call on the
        // child alone, between fork and exec.
        unsafe {
            cmd.pre_exec(move || Ok(setrlimit(Resource::Nofile, limit)?));
        }
        ServerProcess::start_command(cmd)
    }

    fn command(args: &[&str]) -> Command {
        ServerProcess::command_at("127.0.0.1:0", args)
    }

    /// `readyloop serve --addr ADDR ARGS…`, not started yet.
    pub fn command_at(addr: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--addr", addr]).args(args);
        cmd
    }

    /// Starts `cmd` (from [`ServerProcess::command_at`]) and waits for
    /// its `listening on` line.
    pub fn start_command(mut cmd: Command) -> ServerProcess {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn readyloop");
        let lines = read_lines(child.stderr.take().expect("stderr"));
        ServerProcess::started(child, lines)
    }

    /// Starts `cmd`, whose stderr the caller gave it (a socket, as the
    /// journal's stream is), reading its lines from `stderr`, the other
    /// end. `cmd` is dropped once spawned, closing this process's copy
    /// of the server's end, so the lines end when the server's do.
    pub fn start_command_reading(
        mut cmd: Command,
        stderr: impl Read + Send + 'static,
    ) -> ServerProcess {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd.spawn().expect("spawn readyloop");
        drop(cmd);
        ServerProcess::started(child, read_lines(stderr))
    }

    /// The process `child`, once its `listening on` line came.
    fn started(child: Child, lines: Receiver<Vec<u8>>) -> ServerProcess {
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            addrs: Vec::new(),
            lines,
            log: Vec::new(),
            raw_log: Vec::new(),
        };
        let line = server.wait_for_status("listening on ");
        server.addrs = listening_addrs(&line);
        server.addr = *server
            .addrs
            .first()
            .unwrap_or_else(|| panic!("no address in {line:?}"));
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
        let start = format!("INFO  [{STATUS}] {message}");
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

    /// Takes every line the server wrote into `log`, to the end of its
    /// stderr: for a server that has exited (bounded by [`PATIENCE`]).
    pub fn read_to_end(&mut self) -> &[String] {
        while let Ok(raw) = self.lines.recv_timeout(PATIENCE) {
            self.push_line(raw);
        }
        &self.log
    }

    /// How often `needle` occurs in the server's stderr so far.
    pub fn count(&mut self, needle: &str) -> usize {
        self.collect_log().iter().map(|l| l.matches(needle).count()).sum()
    }

    fn push_line(&mut self, raw: Vec<u8>) -> String {
        let whole = String::from_utf8_lossy(&raw);
        let line = log_line::record(&whole).to_owned();
        self.log.push(line.clone());
        self.raw_log.push(raw);
        line
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).ok().and_then(Pid::from_raw);
        kill_process(pid.expect("a child's pid"), signal).expect("kill");
    }

    /// Sends SIGTERM, waits for exit and returns the exit code and the
    /// parsed summary line.
    pub fn terminate(mut self) -> (i32, Summary) {
        self.finish()
    }

    /// Like [`ServerProcess::terminate`], keeping the process's record
    /// (its log) for the caller to inspect; every line is collected.
    pub fn finish(&mut self) -> (i32, Summary) {
        self.finish_with(&[Signal::TERM])
    }

    /// Sends `signals` one after another, then waits for the exit and
    /// the summary as [`ServerProcess::finish`] does.
    pub fn finish_with(&mut self, signals: &[Signal]) -> (i32, Summary) {
        for &signal in signals {
            self.signal(signal);
        }
        let status = self.wait_exit();
        let line = self.wait_for_status("summary ");
        let summary = Summary::parse(&line).expect("parse summary");
        while let Ok(raw) = self.lines.recv_timeout(PATIENCE) {
            self.push_line(raw);
        }
        (status, summary)
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let mut code = None;
        eventually("the server exits", || {
            code = self.child.try_wait().expect("wait").map(|s| s.code());
            code.is_some()
        });
        code.flatten().unwrap_or(-1)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
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
        proc::fd_count(self.pid())
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
fn read_lines(stderr: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
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

/// Every stderr line is one whole log record. (In echo mode no client
/// bytes are logged, so a second record header inside a line can only
/// mean two records written over each other.)
pub fn assert_whole_records(model: Model, log: &[String]) {
    let levels = ["ERROR ", "WARN  ", "INFO  ", "DEBUG ", "TRACE "];
    let torn: Vec<&String> = log
        .iter()
        .filter(|l| {
            !levels.iter().any(|lv| l.starts_with(lv))
                || l.matches(" [readyloop::").count() != 1
        })
        .collect();
    assert!(
        torn.is_empty(),
        "{model}: {} of {} stderr lines are not one whole record, first: \
         {:#?}",
        torn.len(),
        log.len(),
        &torn[..torn.len().min(3)]
    );
}
