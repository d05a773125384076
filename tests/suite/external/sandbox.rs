//! The service's command line inside the limits its unit sets. systemd
//! cannot run here (no PID 1), so the test runs the unit's ExecStart=
//! under strace, with the unit's LimitNOFILE= and a `NOTIFY_SOCKET` with
//! its WatchdogSec=, drives it (a client, SIGUSR1, a scrape, SIGTERM),
//! and checks what the sandbox would refuse or the unit would expect:
//! every system call is in SystemCallFilter= (its sets as
//! `systemd-analyze syscall-filter` expands them), every socket's family
//! in RestrictAddressFamilies=, no mapping is writable and executable
//! (MemoryDenyWriteExecute=), no more threads than TasksMax=, READY=1
//! and WATCHDOG=1 arrive (Type=notify, WatchdogSec=), and nothing is
//! warned about.
//!
//! The server binds its own listener here (`--addr`: socket, bind,
//! listen) where systemd would pass it one (fcntl, getsockopt,
//! getsockname): the same sets allow both.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use readyloop::Model;
use rustix::process::{kill_process, setrlimit, Pid, Resource, Rlimit};

use super::units::{exec_start, settings, unit};
use super::{tool, Scratch};
use crate::support::server::{binary, ServerProcess, Signal};
use crate::support::{echo_and_close, pattern, proc, PATIENCE};

/// The one value of `key` in `service`.
fn setting(service: &str, key: &str) -> String {
    let values = settings(service, key);
    assert_eq!(values.len(), 1, "one {key}= in the service: {values:?}");
    values[0].clone()
}

/// Every system call in the set `name` (`@system-service`), its nested
/// sets included.
fn expand(name: &str, into: &mut BTreeSet<String>) {
    if !name.starts_with('@') {
        into.insert(name.to_string());
        return;
    }
    let out = Command::new(tool("systemd-analyze", "systemd"))
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(out.status.success(), "syscall-filter {name}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines().skip(1).map(str::trim) {
        if !line.is_empty() && !line.starts_with('#') {
            expand(line, into);
        }
    }
}

/// The system calls the service's SystemCallFilter= lines allow: those
/// of its allow lists less those of its `~` deny lists.
fn allowed_calls(service: &str) -> BTreeSet<String> {
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for line in settings(service, "SystemCallFilter") {
        let (list, into) = match line.strip_prefix('~') {
            Some(rest) => (rest.to_string(), &mut deny),
            None => (line, &mut allow),
        };
        for name in list.split_whitespace() {
            expand(name, into);
        }
    }
    assert!(!allow.is_empty(), "the service has no allow list");
    allow.difference(&deny).cloned().collect()
}

/// What an strace log shows the traced program did, from its `execve`
/// of `program` on.
#[derive(Debug, Default)]
struct Trace {
    calls: BTreeSet<String>,
    families: BTreeSet<String>,
    writable_and_executable: Vec<String>,
}

fn read_trace(path: &Path, program: &str) -> Trace {
    let text = fs::read_to_string(path).expect("read the strace log");
    let exec = format!("execve(\"{program}\"");
    let start = text.find(&exec).expect("the server's execve in the trace");
    let mut trace = Trace::default();
    for line in text[start..].lines() {
        // "PID name(args) = result"; resumed calls, signals and exits
        // start with '<', '-' or '+' and name no new call.
        let Some((_, call)) = line.split_once(' ') else { continue };
        let Some((name, args)) = call.trim_start().split_once('(') else {
            continue;
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        trace.calls.insert(name.to_string());
        let arg = |i: usize| args.split(", ").nth(i).unwrap_or("");
        match name {
            "socket" | "socketpair" => {
                trace.families.insert(arg(0).to_string());
            }
            "mmap"
                if arg(2).contains("PROT_WRITE")
                    && arg(2).contains("PROT_EXEC") =>
            {
                trace.writable_and_executable.push(line.to_string());
            }
            "mprotect" | "pkey_mprotect" if arg(2).contains("PROT_EXEC") => {
                trace.writable_and_executable.push(line.to_string());
            }
            _ => {}
        }
    }
    trace
}

/// Waits for a datagram on the notify socket that holds `what`.
fn notified(socket: &UnixDatagram, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} on NOTIFY_SOCKET");
        socket.set_read_timeout(Some(left)).expect("notify timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.lines().any(|l| l == what) {
                return;
            }
        }
    }
}

/// A free loopback port (closed again, so the server can take it).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

/// A systemd time span in whole microseconds (`10s`, `10`).
fn micros(span: &str) -> u64 {
    let secs: u64 = span.trim_end_matches('s').parse().expect("seconds");
    secs * 1_000_000
}

per_model!(the_service_command_line_stays_inside_its_sandbox);

/// The filter is read as systemd applies it: the allow list's nested
/// sets count, a `~` line takes calls away.
#[test]
fn the_service_filter_allows_what_a_server_needs_and_no_more() {
    let allowed = allowed_calls(&unit("readyloop.service"));
    for call in ["accept4", "epoll_wait", "prlimit64", "clone3", "sendto"] {
        assert!(allowed.contains(call), "{call} refused");
    }
    for call in ["setrlimit", "chown", "setuid", "reboot", "mount", "ptrace"] {
        assert!(!allowed.contains(call), "{call} allowed");
    }
}

/// The unit's command line, with `--model` for each model, traced and
/// driven as described above, does nothing its sandbox forbids and
/// everything its unit expects. TasksMax= is the default mio model's:
/// the thread and process models need it raised (the unit says so).
fn the_service_command_line_stays_inside_its_sandbox(model: Model) {
    let service = unit("readyloop.service");
    let allowed = allowed_calls(&service);
    let families: BTreeSet<String> =
        setting(&service, "RestrictAddressFamilies")
            .split_whitespace()
            .map(str::to_string)
            .collect();
    let nofile: u64 = setting(&service, "LimitNOFILE").parse().expect("N");
    let tasks: usize = setting(&service, "TasksMax").parse().expect("N");
    let watchdog = micros(&setting(&service, "WatchdogSec"));

    let scratch = Scratch::new(&format!("sandbox-{}", model.name()));
    let notify_path = scratch.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind NOTIFY_SOCKET");
    let trace_path = scratch.join("strace.log");

    let mut args = exec_start(&service).split_off(1);
    let metrics = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .expect("the service serves metrics");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    args[metrics + 1] = metrics_addr.clone();
    args.extend(
        ["--model", model.name(), "--addr", "127.0.0.1:0"].map(String::from),
    );

    let mut cmd = Command::new(tool("strace", "strace"));
    cmd.args(["-f", "-qq", "-o"])
        .arg(&trace_path)
        .arg(binary())
        .args(&args)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", watchdog.to_string());
    let limit = Rlimit { current: Some(nofile), maximum: Some(nofile) };
    // SAFETY: setrlimit is one async-signal-safe system call on the
    // child alone, between fork and exec.
    unsafe {
        cmd.pre_exec(move || Ok(setrlimit(Resource::Nofile, limit)?));
    }
    let mut server = ServerProcess::start_command(cmd);
    let children = proc::children(server.pid());
    assert_eq!(children.len(), 1, "strace runs one server: {children:?}");
    let pid = i32::try_from(children[0].pid).ok().and_then(Pid::from_raw);
    let pid = pid.expect("the server's pid");

    notified(&notify, "READY=1");
    echo_and_close(server.addr, &pattern(6, 64 * 1024));
    if model == Model::Mio {
        let threads = proc::threads(children[0].pid).expect("its tasks");
        assert!(threads <= tasks, "{threads} threads, TasksMax={tasks}");
    }
    kill_process(pid, Signal::USR1).expect("SIGUSR1");
    server.wait_for_status("stats ");
    let mut scrape = TcpStream::connect(&metrics_addr).expect("connect");
    scrape.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send the scrape");
    let mut head = [0u8; 12];
    scrape.read_exact(&mut head).expect("the scrape's answer");
    assert_eq!(&head, b"HTTP/1.1 200", "scrape");
    notified(&notify, "WATCHDOG=1");
    kill_process(pid, Signal::TERM).expect("SIGTERM");
    assert_eq!(server.wait_exit(), 0, "exit code");
    server.wait_for_status("summary ");
    let warned: Vec<&String> = server
        .collect_log()
        .iter()
        .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
        .collect();
    assert!(warned.is_empty(), "warnings: {warned:?}");

    let trace = read_trace(&trace_path, binary());
    for call in ["accept4", "epoll_wait", "recvfrom", "sendto"] {
        assert!(trace.calls.contains(call), "no {call} in {trace:?}");
    }
    let refused: Vec<&String> = trace.calls.difference(&allowed).collect();
    assert!(refused.is_empty(), "outside SystemCallFilter=: {refused:?}");
    let foreign: Vec<&String> = trace.families.difference(&families).collect();
    assert!(
        foreign.is_empty(),
        "outside RestrictAddressFamilies=: {foreign:?}"
    );
    assert!(
        trace.writable_and_executable.is_empty(),
        "refused by MemoryDenyWriteExecute=: {:?}",
        trace.writable_and_executable
    );
    eprintln!(
        "{} system calls, families {:?}",
        trace.calls.len(),
        trace.families
    );
}
