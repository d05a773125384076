//! The recipes of docs/service.md ("Recipes: checking it by hand"), read
//! from the chapter and run as written, from the repository's root with
//! the built binary first on `PATH`: `systemd-analyze verify` and
//! `security` of the units, `systemd-socket-activate`, and watching the
//! notify messages with `socat`.
//!
//! What the tests change, and only that: the port (a free one for
//! 8989), the notify socket's path (one in a scratch directory), and a
//! `--addr 127.0.0.1:0` for the server of the notify recipe, so that
//! the recipes run beside anything else on the machine. Ctrl-C is
//! SIGINT to the server.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::thread;

use crate::support::markdown::blocks;
use crate::support::proc;
use crate::support::server::Signal;
use crate::support::shell::{self, shell, Group};
use crate::support::wait::{eventually, PATIENCE};

use super::{tool, Scratch};

/// The chapter the recipes are in.
const CHAPTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/service.md");

/// The code blocks under `heading` in docs/service.md, each as its text.
fn recipe(heading: &str) -> Vec<String> {
    let text = fs::read_to_string(CHAPTER).expect("read docs/service.md");
    let found: Vec<String> = blocks(&text)
        .into_iter()
        .filter(|b| b.heading == heading)
        .map(|b| {
            let lines: Vec<&str> = b.lines.iter().map(|l| l.1).collect();
            lines.join("\n")
        })
        .collect();
    assert!(!found.is_empty(), "no recipe under `{heading}` in {CHAPTER}");
    found
}

/// `text` with `from` replaced by `to`; `from` must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the recipe lost {from:?}: {text}");
    text.replace(from, to)
}

/// A port free on 127.0.0.1 just now.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

/// The lines `from` gives, as they come (invalid UTF-8 replaced).
fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).into_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `lines` that contains `needle` (bounded).
fn line_with(lines: &Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(PATIENCE) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {needle:?} ({e}): {seen:#?}"),
        }
    }
}

/// The `readyloop` process `group` runs: the shell itself once it
/// exec'd the server, or its child.
fn server_of(group: &Group) -> i32 {
    let comm = |pid: u32| fs::read_to_string(format!("/proc/{pid}/comm"));
    let sh = group.0.id();
    let mut found = None;
    eventually("the server starts", || {
        let mut pids = vec![sh];
        pids.extend(proc::children(sh).iter().map(|c| c.pid));
        found = pids
            .into_iter()
            .find(|&p| comm(p).is_ok_and(|c| c.trim() == "readyloop"));
        found.is_some()
    });
    found.and_then(|p| i32::try_from(p).ok()).expect("a pid")
}

/// SIGINT to `pid`, as Ctrl-C in its terminal.
fn interrupt(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("a pid");
    rustix::process::kill_process(pid, Signal::INT).expect("SIGINT");
}

/// The exit code of `group`'s shell, once it exits (bounded).
fn exit_code(group: &mut Group) -> Option<i32> {
    let mut status = None;
    eventually("the recipe's command exits", || {
        status = group.0.try_wait().expect("wait");
        status.is_some()
    });
    status.and_then(|s| s.code())
}

/// "Check the units": the recipe exits 0, `verify` finds nothing, and
/// `security` ends with the exposure the chapter states.
#[test]
fn the_verify_recipe_passes_and_rates_the_service_0_9() {
    tool("systemd-analyze", "systemd");
    let script = &recipe("Check the units: `systemd-analyze verify`")[0];
    let root = env!("CARGO_MANIFEST_DIR");
    let ran = shell::run(&format!("cd '{root}' && set -e\n{script}"));
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    assert!(ran.stderr.is_empty(), "verify found something: {ran:#?}");
    let last = ran.stdout.iter().rev().find(|l| !l.trim().is_empty());
    let want = "Overall exposure level for readyloop.service: 0.9 SAFE";
    assert!(last.is_some_and(|l| l.contains(want)), "{ran:#?}");
}

/// "Socket activation": the launcher starts the server for the first
/// client, which gets its echo, and the server says it was activated.
#[test]
fn the_socket_activation_recipe_serves_a_client() {
    tool("systemd-socket-activate", "systemd");
    let blocks = recipe("Socket activation: `systemd-socket-activate`");
    let addr = format!("127.0.0.1:{}", free_port());
    let launch = replaced(&blocks[0], "127.0.0.1:8989", &addr);
    let mut cmd = shell(&format!("exec {launch}"));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut server = Group::spawn(cmd);
    let log = lines(server.0.stderr.take().expect("stderr"));
    line_with(&log, &format!("Listening on {addr}"));
    let client = replaced(
        &blocks[1],
        "readyloop client",
        &format!("readyloop client {addr}"),
    );
    let ran = shell::run(&client);
    assert_eq!((ran.code, &ran.stdout[..]), (Some(0), &["hello".into()][..]));
    line_with(&log, &format!("listening on {addr} (socket activation)"));
    interrupt(server_of(&server));
    assert_eq!(exit_code(&mut server), Some(0), "the server's exit code");
}

/// "Watching the notify messages": `socat` shows the messages the
/// chapter shows, in order, then `STOPPING=1` and `STATUS=stopping`
/// once Ctrl-C stops the server.
#[test]
fn the_notify_recipe_shows_what_the_server_tells_systemd() {
    tool("socat", "socat");
    let blocks = recipe("Watching the notify messages");
    let dir = Scratch::new("notify-recipe");
    let socket = dir.join("notify.sock").display().to_string();
    let path = "/tmp/readyloop-notify.sock";
    let mut cmd = shell(&replaced(&blocks[0], path, &socket));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut socat = Group::spawn(cmd);
    let said = lines(socat.0.stdout.take().expect("stdout"));
    eventually("socat makes its socket", || dir.join("notify.sock").exists());
    let serve = replaced(&blocks[1], path, &socket);
    let serve = replaced(
        &serve,
        "readyloop serve",
        "readyloop serve --addr 127.0.0.1:0",
    );
    let mut cmd = shell(&serve);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut server = Group::spawn(cmd);
    let shown: Vec<&str> = blocks[2].lines().collect();
    let got: Vec<String> = shown
        .iter()
        .map(|want| {
            said.recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("no message, {want:?} next: {e}"))
        })
        .collect();
    assert_eq!(got, shown, "the messages, in order");
    interrupt(server_of(&server));
    line_with(&said, "STOPPING=1");
    line_with(&said, "STATUS=stopping");
    assert_eq!(exit_code(&mut server), Some(0), "the server's exit code");
}
