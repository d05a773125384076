//! Running `readyloop load --json` against a server and reading its
//! result.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use readyloop::load::Pattern;

use crate::load_json::LoadReport;
use crate::server::{pinned, read_lines, readyloop};

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
    /// Pin the generator to this CPU.
    pub cpu: Option<u32>,
    /// Called once when an idle run says every connection is held.
    pub on_held: Option<&'a mut dyn FnMut()>,
}

/// Runs the load generator to its end.
pub fn run(drive: Drive<'_>) -> Result<LoadReport, String> {
    let t = drive.test;
    let mut cmd = pinned(drive.cpu, readyloop());
    cmd.args(["load", "--json", "--quiet", "--addr", &drive.addr.to_string()]);
    cmd.args(["--pattern", t.pattern.name()]);
    cmd.args(["--connections", &t.connections.to_string()]);
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
