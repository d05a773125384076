//! `readyloop client`: a real client process against a real server over
//! loopback (`serve --mode echo`, or a listener of the test's own that
//! resets), its stdin, stdout, stderr and exit code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};

use socket2::{Domain, Socket, Type};

use crate::support::server::binary;
use crate::support::{eventually, pattern, reset, stop, ServerProcess};

/// What the test feeds the client's stdin.
enum Input {
    /// `/dev/null`: EOF at once.
    Null,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// A pipe held open until the client exits: stdin never ends.
    Open,
}

/// How a client run ended.
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// Runs `readyloop client ARGS…`, waiting (bounded) for it to exit.
/// With `stdout_closed` its stdout is a pipe nobody reads, closed at
/// once.
fn client(args: &[&str], input: Input, stdout_closed: bool) -> Ran {
    let child = Command::new(binary())
        .arg("client")
        .args(args)
        .stdin(match input {
            Input::Null => Stdio::null(),
            _ => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn readyloop client");
    let mut reaped = Reaped(child);
    let child = &mut reaped.0;
    let mut held_stdin = None;
    if let Some(mut stdin) = child.stdin.take() {
        match input {
            // A client that stops early closes the pipe: EPIPE here is
            // its business, judged by its exit code.
            Input::Bytes(bytes) => {
                thread::spawn(move || stdin.write_all(&bytes));
            }
            Input::Open | Input::Null => held_stdin = Some(stdin),
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let stdout = match stdout_closed {
        true => {
            drop(stdout);
            None
        }
        false => Some(read_all(stdout)),
    };
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let code = wait(child);
    drop(held_stdin);
    let stdout = stdout.map(|t| t.join().expect("stdout reader"));
    Ran {
        code,
        stdout: stdout.unwrap_or_default(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr"))
            .into_owned(),
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// The exit code once `child` has exited; a client that does not exit
/// in time fails the test (and [`Reaped`] kills it).
fn wait(child: &mut Child) -> Option<i32> {
    let mut status = None;
    eventually("the client exits", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    status.and_then(|s| s.code())
}

/// A client process, killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn echo_server() -> ServerProcess {
    ServerProcess::start(&["--mode", "echo"])
}

/// Every byte value and a mebibyte come back unchanged, in order, and
/// the client exits 0 once the server closes after its half-close.
#[test]
fn stdin_round_trips_exactly_including_binary_and_a_mebibyte() {
    let server = echo_server();
    let mut input: Vec<u8> = (0..=255).collect();
    input.extend(pattern(15, 1 << 20));
    let addr = server.addr.to_string();
    let ran = client(&[&addr], Input::Bytes(input.clone()), false);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.len(), input.len(), "{}", ran.stderr);
    assert!(ran.stdout == input, "the echo differs from stdin");
    assert_eq!(ran.stderr, "", "quiet without -v");
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_eof), (1, 1), "{summary}");
    assert_eq!(summary.bytes_in, input.len() as u64, "{summary}");
}

/// `-v` narrates the handshake, the half-close and the server's FIN, in
/// that order, with the bytes each way; the local address it names is
/// the one the server saw.
#[test]
fn verbose_narrates_the_half_close_in_order() {
    let mut server = echo_server();
    let addr = server.addr.to_string();
    let ran = client(&["-v", &addr], Input::Bytes(b"hello\n".to_vec()), false);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, b"hello\n");
    let lines = ran.lines();
    assert_eq!(lines.len(), 4, "{}", ran.stderr);
    let waiting = format!("client: connecting to {addr}: SYN sent");
    assert!(lines[0].starts_with(&waiting), "{}", ran.stderr);
    let connected = format!("client: connected to {addr} from ");
    let local = lines[1]
        .strip_prefix(&connected)
        .and_then(|rest| rest.strip_suffix(" (handshake done)"))
        .unwrap_or_else(|| panic!("first line: {}", ran.stderr));
    let local: SocketAddr = local.parse().expect("a local address");
    assert_eq!(
        &lines[2..],
        [
            "client: sent FIN (half-close): still reading; 6 bytes sent",
            "client: peer sent FIN: closing; 6 bytes sent, 6 received",
        ]
    );
    server.wait_for_line(&format!("{local} closed: eof"));
}

/// A server that accepts and resets (SO_LINGER 0): exit 1, one line
/// that says RST.
#[test]
fn a_reset_from_the_server_exits_1_and_says_rst() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let resetter = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        reset(stream);
    });
    let ran = client(&[&addr], Input::Open, false);
    resetter.join().expect("the resetting listener");
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(
        ran.lines(),
        ["error: connection reset by peer (RST); 0 bytes sent, 0 received"]
    );
}

/// Nothing listening (a port bound but not listening refuses every
/// connect): exit 1 and one line naming the address (after `-v`'s line
/// that the handshake began).
#[test]
fn nothing_listening_exits_1_with_one_line() {
    let taken = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    taken.bind(&any.into()).expect("bind");
    let addr = taken.local_addr().expect("address").as_socket().expect("ip");
    let ran = client(&["-v", &addr.to_string()], Input::Null, false);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let lines = ran.lines();
    assert_eq!(lines.len(), 2, "{}", ran.stderr);
    let want = format!("error: cannot connect to {addr}: ");
    assert!(lines[1].starts_with(&want), "{}", ran.stderr);
    assert!(lines[1].contains("refused"), "{}", ran.stderr);
}

/// `--rst` ends the connection with an RST, which the server counts as a
/// reset, not an EOF; the client exits 0, since it closed on purpose.
#[test]
fn rst_closes_with_a_reset_the_server_counts() {
    // A discarding server sends nothing back, so the client holds no
    // unread input: only SO_LINGER 0 can turn its close into an RST
    // (with unread input, any close would, trap 17).
    let mut server = ServerProcess::start(&["--mode", "discard"]);
    let addr = server.addr.to_string();
    let input = Input::Bytes(b"bye\n".to_vec());
    let ran = client(&["-v", "--rst", &addr], input, false);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let last = ran.lines().last().copied().unwrap_or_default();
    assert!(
        last.starts_with(
            "client: closing with RST (SO_LINGER 0); 4 bytes sent"
        ),
        "{}",
        ran.stderr
    );
    let closed = server.wait_for_line(" closed: ");
    assert!(closed.contains(" closed: reset "), "{closed}");
    let summary = stop(server);
    assert_eq!(
        (summary.closed_reset, summary.closed_eof),
        (1, 0),
        "{summary}"
    );
}

/// `--idle` sends nothing while the server's idle timeout runs out: the
/// server's FIN ends the wait, and the client exits 0.
#[test]
fn idle_sends_nothing_until_the_server_closes() {
    let server =
        ServerProcess::start(&["--mode", "echo", "--idle-timeout", "0.2"]);
    let addr = server.addr.to_string();
    // Far longer than the test waits: only the server's close ends it.
    let ran = client(&["-v", "--idle", "600", &addr], Input::Open, false);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        &ran.lines()[2..],
        [
            "client: idle: sending nothing for 600 s",
            "client: peer sent FIN: closing; 0 bytes sent, 0 received",
        ]
    );
    let summary = stop(server);
    assert_eq!(summary.closed_idle, 1, "{summary}");
}

/// A host name is looked up: `localhost:PORT` reaches a server on
/// 127.0.0.1 (trying `::1` first where localhost has both).
#[test]
fn a_host_name_is_resolved() {
    let server = echo_server();
    let target = format!("localhost:{}", server.addr.port());
    let ran = client(&[&target], Input::Bytes(b"hi\n".to_vec()), false);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, b"hi\n");
    stop(server);
}

/// A reader of stdout that has gone (EPIPE) ends the client quietly with
/// exit 0, never a panic.
#[test]
fn a_closed_stdout_ends_the_client_quietly() {
    let server = echo_server();
    let addr = server.addr.to_string();
    let input = Input::Bytes(pattern(8, 1 << 20));
    let ran = client(&["-v", &addr], input, true);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("client: stdout closed: closing"),
        "{}",
        ran.stderr
    );
    stop(server);
}

/// Bad flags and malformed addresses exit 2 with clap's one-line error.
#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--idle", "-1"][..],
        &["--idle", "soon"],
        &["not-an-address"],
        &["::1:8989"],
        &["localhost:99999"],
        &["127.0.0.1:0"],
        &["--no-such-flag"],
    ] {
        let ran = client(args, Input::Null, false);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.starts_with("error: "), "{args:?}: {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{args:?}");
    }
}

/// A handshake that never completes (a listener whose accept queue is
/// full drops the SYN) ends at `--connect-timeout`: exit 1, one line
/// that names the address and the timeout, and `-v` says it was
/// waiting for the handshake. Without the flag the kernel's SYN retries
/// would hold it for about two minutes.
#[test]
fn a_handshake_that_never_completes_times_out() {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue: once it is full, SYNs are dropped.
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let timeout = std::time::Duration::from_millis(300);
        if s.connect_timeout(&addr.into(), timeout).is_ok() {
            held.push(s);
        }
    }
    let target = addr.to_string();
    let ran = client(
        &["-v", "--connect-timeout", "0.5", &target],
        Input::Null,
        false,
    );
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let lines = ran.lines();
    let waiting = format!("client: connecting to {target}: SYN sent");
    assert!(lines[0].starts_with(&waiting), "{lines:?}");
    let error = format!("error: connect to {target} timed out after 0.5 s");
    assert_eq!(lines.last(), Some(&error.as_str()), "{lines:?}");
    drop(held);
}
