//! Running `readyloop load --json` against a server, reading its
//! result, and measuring the server's CPU meanwhile.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use readyloop::load::Pattern;

use crate::sample::Sample;
use crate::server::{confined, read_lines, readyloop, Running};
use readyloop_harness::load_json::LoadReport;
use readyloop_harness::proc;

/// Loopback source addresses for the connect test.
const CONNECT_SOURCES: &str = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,\
                               127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8";

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Test {
    /// `--pattern`.
    pub pattern: Pattern,
    /// `--connections`.
    pub connections: u64,
    /// `--size`.
    pub size: u64,
}

impl Test {
    /// A short label: `pingpong 64B C=1000`.
    pub fn label(&self) -> String {
        match self.pattern {
            Pattern::Idle => format!("idle C={}", self.connections),
            p => format!(
                "{} {} C={}",
                p.name(),
                size(self.size),
                self.connections
            ),
        }
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 && b % 1024 == 0 => format!("{}KiB", b / 1024),
        b => format!("{b}B"),
    }
}

/// How to drive one run.
pub struct Drive<'a> {
    /// The server.
    pub addr: SocketAddr,
    /// What to run.
    pub test: Test,
    /// `--duration`, or `--messages` when set.
    pub duration: Duration,
    /// `--messages` instead of a duration.
    pub messages: Option<u64>,
    /// Confine the generator to these CPUs (taskset's list syntax).
    pub cpus: Option<String>,
    /// `--threads`.
    pub threads: usize,
    /// Called once when an idle run says every connection is held.
    pub on_held: Option<&'a mut dyn FnMut()>,
}

/// Runs the load generator to its end.
pub fn run(drive: Drive<'_>) -> Result<LoadReport, String> {
    let t = drive.test;
    let mut cmd = confined(drive.cpus.as_deref(), readyloop());
    cmd.args(["load", "--json", "--quiet", "--addr", &drive.addr.to_string()]);
    cmd.args(["--pattern", t.pattern.name()]);
    cmd.args(["--connections", &t.connections.to_string()]);
    cmd.args(["--threads", &drive.threads.max(1).to_string()]);
    cmd.args(["--size", &t.size.to_string()]);
    if t.pattern == Pattern::Connect {
        // Tens of thousands of connections a second, each leaving a
        // TIME_WAIT behind on the client side: one source address runs
        // out of its ~28,000 ports within the run, and the kernel's
        // search for a free port then dominates. Eight loopback sources
        // give eight times the room.
        cmd.args(["--source", CONNECT_SOURCES]);
    }
    match drive.messages {
        Some(n) => cmd.args(["--messages", &n.to_string()]),
        None => {
            cmd.args(["--duration", &drive.duration.as_secs_f64().to_string()])
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn load: {e}"))?;
    let lines = read_lines(child.stderr.take());
    let mut said = Vec::new();
    if let Some(on_held) = drive.on_held {
        // The line comes once every connection is held, or never (a
        // server that cannot hold them all); the run ends either way.
        for line in lines.iter() {
            let held = line.starts_with("load: holding");
            said.push(line);
            if held {
                on_held();
                break;
            }
        }
    }
    let out =
        child.wait_with_output().map_err(|e| format!("wait load: {e}"))?;
    said.extend(lines.try_iter());
    let why = || said.last().cloned().unwrap_or_default();
    // Exit 3: the run completed with errors; its report is still there
    // and the errors are in it.
    if !matches!(out.status.code(), Some(0 | 3)) {
        return Err(format!("load failed ({}): {}", out.status, why()));
    }
    LoadReport::parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| format!("load output unreadable ({e}): {}", why()))
}

/// Runs `drive` against `server`, calls `before_stop`, stops the
/// server, and makes the sample of `name` in `round`: the generator's
/// figures and the server's CPU time over the run.
pub fn measure(
    server: Running,
    name: &'static str,
    round: u32,
    drive: Drive<'_>,
    before_stop: impl FnOnce(),
) -> Sample {
    let test = drive.test;
    let pid = server.pid;
    let cpu_before = proc::cpu_ticks(pid).unwrap_or(0);
    let load_before = reaped_ticks();
    let start = Instant::now();
    let outcome = run(drive);
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = proc::cpu_ticks(pid).unwrap_or(cpu_before);
    let tick = proc::ticks_per_second() as f64;
    let cpu = (cpu_after - cpu_before) as f64 / tick;
    // The generator is the one child reaped meanwhile.
    let load_cpu = load_before
        .zip(reaped_ticks())
        .map(|(before, after)| after.saturating_sub(before) as f64 / tick);
    before_stop();
    server.stop();
    let outcome = match outcome {
        Ok(o) => o,
        Err(why) => return Sample::skipped(round, name, test, why),
    };
    let messages = outcome.messages;
    let idle = test.pattern == Pattern::Idle;
    Sample {
        round,
        server: name,
        test,
        workers: None,
        skipped: None,
        messages,
        rate: outcome.messages_per_s,
        mb_per_s: outcome.mb_per_s,
        p50_us: outcome.p50_us,
        p99_us: outcome.p99_us,
        cpu_us_per_msg: (messages > 0 && !idle)
            .then(|| cpu * 1e6 / messages as f64),
        util_pct: (wall > 0.0).then(|| cpu / wall * 100.0),
        load_util_pct: load_cpu
            .filter(|_| wall > 0.0)
            .map(|c| c / wall * 100.0),
        mem_kb: None,
        kernel: None,
        rounds: outcome.rounds_min.zip(outcome.rounds_max),
        held: outcome.held,
        errors: outcome.errors,
    }
}

/// CPU ticks of this process's children that have been waited for
/// (cutime + cstime of /proc/self/stat).
fn reaped_ticks() -> Option<u64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    u64::try_from(stat.cutime + stat.cstime).ok()
}
