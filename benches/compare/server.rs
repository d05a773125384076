//! Starting a server under test as a child process, checking that it
//! echoes, and stopping it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;
use rustix::process::{kill_process, Pid, Signal};

/// How a server under test is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `readyloop serve --model M`.
    Readyloop(Model),
    /// The same, with the binary `READYLOOP_BENCH_BEFORE` names
    /// (`before_cost.rs`).
    Before(Model),
    /// The tokio peer on this runtime flavor.
    Tokio(&'static str),
    /// The monoio peer, a binary of its own (`monoio_peer.rs`).
    Monoio,
    /// A floor (`floor.rs`): `epoll` or `uring`.
    Floor(&'static str),
}

/// A server under test.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Short name in the tables.
    pub name: &'static str,
    /// How to start it.
    pub kind: Kind,
}

/// Every server, peers then floors last; the first tokio one is the
/// ratio baseline. A floor's name says it is one, in every table.
pub const SERVERS: [Spec; 10] = [
    Spec { name: "mio", kind: Kind::Readyloop(Model::Mio) },
    Spec { name: "uring", kind: Kind::Readyloop(Model::Uring) },
    Spec { name: "iterative", kind: Kind::Readyloop(Model::Iterative) },
    Spec { name: "thread", kind: Kind::Readyloop(Model::Thread) },
    Spec { name: "process", kind: Kind::Readyloop(Model::Process) },
    Spec { name: "tokio-ct", kind: Kind::Tokio("current_thread") },
    Spec { name: "tokio-mt", kind: Kind::Tokio("multi_thread") },
    Spec { name: "monoio", kind: Kind::Monoio },
    Spec { name: "floor-epoll", kind: Kind::Floor("epoll") },
    Spec { name: "floor-uring", kind: Kind::Floor("uring") },
];

/// The servers whose syscalls, start-up RSS and profiles the report
/// shows: each event-driven model with its floor and its peer (the
/// baseline for mio, monoio for uring).
pub fn headline(name: &str) -> bool {
    matches!(name, "mio" | "uring" | "floor-epoll" | "floor-uring" | "monoio")
        || name == BASELINE
}

/// The ratio baseline.
pub const BASELINE: &str = "tokio-ct";

/// The readyloop binary cargo built for this benchmark.
pub fn readyloop() -> &'static str {
    env!("CARGO_BIN_EXE_readyloop")
}

/// A command, pinned to `cpu` with taskset when pinning is on.
pub fn pinned(cpu: Option<u32>, program: &str) -> Command {
    confined(cpu.map(|c| c.to_string()).as_deref(), program)
}

/// A command confined to the CPUs of `list` (taskset's syntax: `0-3`,
/// `4,5`) when there is one.
pub fn confined(list: Option<&str>, program: &str) -> Command {
    match list {
        Some(list) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", list, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// A running server.
pub struct Running {
    child: Child,
    /// The server's pid (taskset execs, so it is the child's).
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    lines: Receiver<String>,
}

/// The arguments that start `spec` on a free loopback port, or why it
/// cannot start (a peer that did not build).
pub fn command(spec: &Spec, cpu: Option<u32>) -> Result<Command, String> {
    command_on(spec, cpu.map(|c| c.to_string()).as_deref())
}

/// The same, confined to the CPUs of `list`. A tokio peer takes its
/// worker thread count as one more argument.
pub fn command_on(spec: &Spec, list: Option<&str>) -> Result<Command, String> {
    Ok(match spec.kind {
        Kind::Readyloop(model) | Kind::Before(model) => {
            let binary = match spec.kind {
                Kind::Before(_) => crate::before_cost::binary(),
                _ => None,
            };
            let mut cmd =
                confined(list, binary.as_deref().unwrap_or(readyloop()));
            cmd.args(["serve", "--model", model.name(), "--mode", "echo"]);
            cmd.args(["--addr", "127.0.0.1:0", "--log-level", "warn"]);
            cmd.args(["--max-connections", "200000"]);
            cmd
        }
        Kind::Tokio(flavor) => {
            let peer = crate::peers::tokio()?;
            let mut cmd = confined(list, &peer.to_string_lossy());
            cmd.args([flavor, "127.0.0.1:0"]);
            cmd
        }
        Kind::Monoio => {
            let peer = crate::peers::monoio()?;
            let mut cmd = confined(list, &peer.to_string_lossy());
            cmd.arg("127.0.0.1:0");
            cmd
        }
        Kind::Floor(which) => myself(list, ["floor", which]),
    })
}

/// This benchmark binary re-executed as `compare ARGS 127.0.0.1:0`.
fn myself(list: Option<&str>, args: [&str; 2]) -> Command {
    let me = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = confined(list, &me);
    cmd.args(args).arg("127.0.0.1:0");
    cmd
}

impl Running {
    /// Starts `cmd`, waits for its `listening on ADDR` line and checks
    /// that one byte comes back; otherwise says why it is unavailable.
    pub fn start(cmd: Command) -> Result<Running, String> {
        Running::start_with(cmd, true)
    }

    /// [`Running::start`], without the echo check unless `probe` (a
    /// server with `--proxy-protocol` closes a client without a
    /// header).
    pub fn start_with(
        mut cmd: Command,
        probe: bool,
    ) -> Result<Running, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let pid = child.id();
        let lines = read_lines(child.stderr.take());
        let mut server = Running {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
        };
        let line =
            server.wait_for("listening on ", Duration::from_secs(10))?;
        server.addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no address in {line:?}"))?;
        let checked = if probe { echo_probe(server.addr) } else { Ok(()) };
        if let Err(e) = checked {
            thread::sleep(Duration::from_millis(100));
            let said: Vec<String> = server.lines.try_iter().collect();
            let why = said
                .iter()
                .find(|l| l.contains("error"))
                .cloned()
                .unwrap_or_else(|| format!("does not echo: {e}"));
            return Err(why);
        }
        Ok(server)
    }

    /// Reads where the server serves its metrics (`--metrics-addr`) and
    /// starts scraping them every second.
    pub fn metrics(&mut self) -> Result<crate::metrics_cost::Scraper, String> {
        let line =
            self.wait_for("metrics on http://", Duration::from_secs(10))?;
        let addr = crate::metrics_cost::addr(&line)
            .ok_or_else(|| format!("no metrics address in {line:?}"))?;
        Ok(crate::metrics_cost::Scraper::start(addr))
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(
        &mut self,
        needle: &str,
        patience: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + patience;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => {
                    return Err(seen
                        .pop()
                        .unwrap_or_else(|| "exited without a word".into()))
                }
            }
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL if it lingers.
    pub fn stop(mut self) {
        terminate(self.pid);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid` (a process this benchmark started); one gone
/// already is no error.
pub fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::TERM);
    }
}

/// One byte there and back, with a deadline.
fn echo_probe(addr: SocketAddr) -> std::io::Result<()> {
    let patience = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, patience)?;
    s.set_read_timeout(Some(patience))?;
    s.write_all(b"x")?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back)?;
    Ok(())
}

/// Lines of a child's stderr, read on a thread.
pub fn read_lines(
    stderr: Option<impl Read + Send + 'static>,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(stderr) = stderr {
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
