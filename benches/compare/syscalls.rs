//! Syscalls per echoed message: the server under `strace -c -f` while
//! the load generator completes a fixed number of round trips.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::load::{self, Drive, Test};
use crate::server::{command, Running, Spec};
use readyloop_harness::proc;

/// One server's syscall counts.
#[derive(Debug)]
pub struct Count {
    /// The server.
    pub server: &'static str,
    /// Round trips the load generator completed.
    pub messages: u64,
    /// (syscall, calls) for the busiest syscalls, most first.
    pub calls: Vec<(String, u64)>,
    /// All syscalls.
    pub total: u64,
    /// Syscalls that open, register or close connections (and start
    /// the process): paid once per connection, not per message.
    pub setup: u64,
}

impl Count {
    /// Syscalls per message, all of them.
    pub fn per_message(&self) -> f64 {
        self.total as f64 / self.messages.max(1) as f64
    }

    /// Syscalls per message without the per-connection set-up and
    /// teardown (which a longer run amortises further).
    pub fn steady_per_message(&self) -> f64 {
        (self.total - self.setup) as f64 / self.messages.max(1) as f64
    }
}

/// Whether strace is there (`.ci/run` installs it; the benchmark
/// installs nothing itself).
pub fn strace_available() -> Result<(), String> {
    let have = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    match have {
        true => Ok(()),
        false => Err("strace is not installed (apt-get install strace, \
                      as .ci/run does)"
            .into()),
    }
}

/// Counts the syscalls of `spec` while `test` runs `messages` messages.
pub fn count(
    spec: &Spec,
    test: Test,
    messages: u64,
    cpu: (Option<u32>, Option<u32>),
) -> Result<Count, String> {
    let out = std::env::temp_dir().join(format!(
        "readyloop-strace-{}-{}.txt",
        spec.name,
        std::process::id()
    ));
    let server_cmd = command(spec, None)?;
    let mut cmd = crate::server::pinned(cpu.0, "strace");
    cmd.args(["-f", "-c", "-o"]).arg(&out).arg("--");
    cmd.arg(server_cmd.get_program()).args(server_cmd.get_args());
    let server = Running::start(cmd)?;
    let outcome = load::run(Drive {
        addr: server.addr,
        test,
        duration: Duration::ZERO,
        messages: Some(messages),
        cpus: cpu.1.map(|c| c.to_string()),
        threads: 1,
        on_held: None,
    });
    // Stop the traced server itself (strace's child), so that it exits
    // cleanly and strace writes its table.
    for child in proc::children(server.pid) {
        crate::server::terminate(child.pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc::rss_kib(server.pid).is_some() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        if !fs::read_to_string(&out).unwrap_or_default().contains("total") {
            continue;
        }
        break;
    }
    server.stop();
    let outcome = outcome?;
    let text =
        fs::read_to_string(&out).map_err(|e| format!("strace output: {e}"))?;
    let _ = fs::remove_file(&out);
    let done = outcome.messages;
    parse(spec.name, &text, done)
}

/// The syscalls an echo server makes per message; every other one is
/// counted as set-up (accept4, epoll_ctl, close, mmap, ...).
const STEADY: [&str; 10] = [
    "read",
    "recvfrom",
    "recvmsg",
    "readv",
    "write",
    "sendto",
    "sendmsg",
    "writev",
    "epoll_wait",
    "epoll_pwait",
];

/// Reads strace's `-c` table: `% time seconds usecs/call calls [errors]
/// syscall`, ending in a `total` row.
fn parse(
    server: &'static str,
    text: &str,
    messages: u64,
) -> Result<Count, String> {
    let mut calls = Vec::new();
    let mut total = 0;
    let mut setup = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let (Ok(n), Some(name)) = (fields[3].parse::<u64>(), fields.last())
        else {
            continue;
        };
        match *name {
            "total" => total = n,
            _ => {
                if !STEADY.contains(name) {
                    setup += n;
                }
                calls.push((name.to_string(), n));
            }
        }
    }
    if total == 0 {
        return Err("strace wrote no table".into());
    }
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    calls.truncate(6);
    Ok(Count { server, messages, calls, total, setup })
}
