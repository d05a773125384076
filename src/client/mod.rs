//! `readyloop client`: a small `nc` for watching one TCP connection
//! from the client's side. It sends stdin, prints what comes back on
//! stdout (the raw bytes, unchanged), and with `-v` narrates on stderr
//! how the connection opens and ends:
//!
//! ```text
//! client: connected to 127.0.0.1:8989 from 127.0.0.1:51234 (handshake done)
//! client: sent FIN (half-close): still reading; 6 bytes sent
//! client: peer sent FIN: closing; 6 bytes sent, 6 received
//! ```
//!
//! Two threads move the bytes, each a plain blocking loop (see
//! `pump.rs`): one copies stdin to the socket, the other the socket to
//! stdout. Each reports on a channel how its side ended, and the main
//! thread decides in one place, `Session::on`, what that means for the
//! connection: on stdin's end it shuts down its write side (a FIN) and
//! keeps reading; on the peer's FIN it is done; an RST is an error.
//!
//! Exit codes: 0 after an orderly close (the peer's FIN, or `--rst`
//! once stdin ends), 1 when it cannot connect, the peer resets the
//! connection or an IO error ends it, 2 for invalid flags. A reader of
//! stdout that goes away (`| head -c1`) ends the client quietly with 0,
//! as for any Unix tool whose reader quit.

mod pump;

use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use socket2::SockRef;

use crate::secs::{at_least, parse_secs};
use pump::{Counts, Event};

/// Flags of `readyloop client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, as HOST:PORT: an address (`127.0.0.1:8989`,
    /// `[::1]:8989`) or a host name (`localhost:8989`).
    #[arg(default_value = "127.0.0.1:8989", value_name = "ADDR",
          value_parser = parse_target)]
    pub addr: String,

    /// Narrate the connection on stderr: the handshake, each FIN or RST,
    /// and the bytes sent and received.
    #[arg(short, long)]
    pub verbose: bool,

    /// When stdin ends, close with SO_LINGER 0: the kernel sends an RST
    /// instead of a FIN, and the server counts a reset.
    #[arg(long)]
    pub rst: bool,

    /// After connecting, send nothing for this many seconds (fractions
    /// allowed) while still reading: long enough, and the server's
    /// `--idle-timeout` closes the connection.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = parse_secs)]
    pub idle: Option<Duration>,

    /// Give up on the handshake after SECS seconds (fractions allowed):
    /// a full backlog or an address that drops SYNs would otherwise wait
    /// for the kernel's SYN retries, about two minutes.
    #[arg(long, default_value = "10", value_name = "SECS",
          allow_negative_numbers = true,
          value_parser = at_least(Duration::from_millis(1)))]
    pub connect_timeout: Duration,
}

/// Runs `readyloop client` and maps its outcome to an exit code.
pub fn main(args: ClientArgs) -> ExitCode {
    let say = Narrator { verbose: args.verbose };
    let (stream, peer) = match connect(&args.addr, args.connect_timeout, say) {
        Ok(connected) => connected,
        Err(why) => return say.fail(format_args!("{why}")),
    };
    let local = stream.local_addr().map_or("?".into(), |a| a.to_string());
    say.line(format_args!(
        "connected to {peer} from {local} (handshake done)"
    ));
    let counts = Arc::new(Counts::default());
    let (events, inbox) = mpsc::channel();
    let spawned = stream.try_clone().and_then(|socket| {
        pump::download(socket, Arc::clone(&counts), events.clone())
    });
    if let Err(e) = spawned {
        return say.fail(format_args!("cannot start reading: {e}"));
    }
    let mut session = Session { stream, rst: args.rst, say, counts };
    if let Some(idle) = args.idle {
        if let Some(code) = session.idle(idle, &inbox) {
            return code;
        }
    }
    let spawned = session.stream.try_clone().and_then(|socket| {
        pump::upload(socket, Arc::clone(&session.counts), events)
    });
    if let Err(e) = spawned {
        return say.fail(format_args!("cannot start sending: {e}"));
    }
    loop {
        // Both pumps hang up only after the download side has reported
        // its end, which ends the session first.
        let Ok(event) = inbox.recv() else { return ExitCode::from(1) };
        if let Step::Exit(code) = session.on(event) {
            return code;
        }
    }
}

/// What the session does after an event.
enum Step {
    /// Keep waiting for the next event.
    Go,
    /// The connection is over: exit with this code.
    Exit(ExitCode),
}

/// The connection and what the main thread knows about it.
struct Session {
    stream: TcpStream,
    rst: bool,
    say: Narrator,
    counts: Arc<Counts>,
}

impl Session {
    /// `--idle`: wait without sending, still handling what the download
    /// side reports (the server's idle timeout is a FIN from the peer).
    /// `Some(code)` when the connection ended meanwhile.
    fn idle(
        &mut self,
        idle: Duration,
        inbox: &Receiver<Event>,
    ) -> Option<ExitCode> {
        let secs = idle.as_secs_f64();
        self.say.line(format_args!("idle: sending nothing for {secs} s"));
        // `idle` is at most about 100 years (secs::MAX): no overflow.
        let deadline = Instant::now() + idle;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(left) {
                Ok(event) => match self.on(event) {
                    Step::Go => continue,
                    Step::Exit(code) => return Some(code),
                },
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(ExitCode::from(1));
                }
            }
        }
        self.say.line(format_args!("idle: over, sending stdin"));
        None
    }

    /// The one place that acts on how a side of the connection ended.
    fn on(&mut self, event: Event) -> Step {
        let (sent, received) = self.counts.get();
        match event {
            Event::StdinEnd if self.rst => {
                // With SO_LINGER 0, closing the socket's last descriptor
                // sends an RST and drops whatever is unsent or unread;
                // the process's exit closes it.
                let linger = Some(Duration::ZERO);
                if let Err(e) = SockRef::from(&self.stream).set_linger(linger)
                {
                    return self
                        .fail(format_args!("cannot set SO_LINGER: {e}"));
                }
                self.say.line(format_args!(
                    "closing with RST (SO_LINGER 0); {sent} bytes sent, \
                     {received} received"
                ));
                Step::Exit(ExitCode::SUCCESS)
            }
            Event::StdinEnd => {
                // A half-close: our FIN tells the server we are done
                // sending; its echo and its own FIN still come back.
                match self.stream.shutdown(Shutdown::Write) {
                    Ok(()) => self.say.line(format_args!(
                        "sent FIN (half-close): still reading; {sent} bytes \
                         sent"
                    )),
                    // The peer is already gone; the download side says how.
                    Err(e) => {
                        self.say.line(format_args!("cannot send FIN: {e}"))
                    }
                }
                Step::Go
            }
            Event::StdinFailed(e) => {
                self.fail(format_args!("cannot read stdin: {e}"))
            }
            Event::SendFailed(e) => {
                // The peer closed or reset; the download side tells which.
                self.say.line(format_args!("cannot send: {e}"));
                Step::Go
            }
            Event::PeerFin => {
                self.say.line(format_args!(
                    "peer sent FIN: closing; {sent} bytes sent, {received} \
                     received"
                ));
                Step::Exit(ExitCode::SUCCESS)
            }
            Event::PeerReset => self.fail(format_args!(
                "connection reset by peer (RST); {sent} bytes sent, \
                 {received} received"
            )),
            Event::ReceiveFailed(e) => {
                self.fail(format_args!("cannot receive: {e}"))
            }
            Event::StdoutGone => {
                self.say.line(format_args!("stdout closed: closing"));
                Step::Exit(ExitCode::SUCCESS)
            }
            Event::StdoutFailed(e) => {
                self.fail(format_args!("cannot write stdout: {e}"))
            }
        }
    }

    fn fail(&self, why: fmt::Arguments<'_>) -> Step {
        Step::Exit(self.say.fail(why))
    }
}

/// Lines on stderr. `eprintln!` panics when stderr is gone; these lose
/// the line instead, since there is nowhere left to say so.
#[derive(Clone, Copy)]
struct Narrator {
    verbose: bool,
}

impl Narrator {
    /// A narration line, shown with `-v`.
    fn line(&self, text: fmt::Arguments<'_>) {
        if self.verbose {
            let _ = writeln!(io::stderr().lock(), "client: {text}");
        }
    }

    /// The one error line, always shown; the exit code that goes with it.
    fn fail(&self, why: fmt::Arguments<'_>) -> ExitCode {
        let _ = writeln!(io::stderr().lock(), "error: {why}");
        ExitCode::from(1)
    }
}

/// Resolves `target` and connects to the first of its addresses that
/// answers (`localhost` may be `::1` and `127.0.0.1`, and a server may
/// listen on only one of them).
fn connect(
    target: &str,
    timeout: Duration,
    say: Narrator,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match target.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err(format!("cannot resolve {target}: {e}")),
    };
    // One deadline for every address the name has, as one connect.
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for &addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        say.line(format_args!(
            "connecting to {addr}: SYN sent, waiting for the handshake \
             (at most {:.3} s)",
            left.as_secs_f64()
        ));
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok((stream, addr)),
            // The handshake completed and an RST followed before the
            // wait for it returned: the connection was reset, not refused.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err("connection reset by peer (RST); 0 bytes sent, \
                            0 received"
                    .into());
            }
            Err(e) => last = Some(e),
        }
    }
    if last.as_ref().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) {
        return Err(format!(
            "connect to {target} timed out after {} s",
            timeout.as_secs_f64()
        ));
    }
    let Some(e) = last else {
        return Err(format!("cannot resolve {target}: no address"));
    };
    let tried = match addrs.as_slice() {
        [one] if one.to_string() == target => String::new(),
        _ => {
            let list: Vec<String> =
                addrs.iter().map(SocketAddr::to_string).collect();
            format!(" ({})", list.join(", "))
        }
    };
    Err(format!("cannot connect to {target}{tried}: {e}"))
}

/// `ADDR`: an address with a port, or a host name with a port. The
/// name is looked up only when connecting; a lookup that fails is a
/// runtime error (exit 1), a malformed ADDR a usage error (exit 2).
fn parse_target(text: &str) -> Result<String, String> {
    let no_port =
        |port: &str| format!("the port must be 1 to 65535, not {port:?}");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(no_port("0")),
            _ => Ok(text.to_string()),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected HOST:PORT, like 127.0.0.1:8989 or \
                    localhost:8989"
            .into());
    };
    if host.is_empty() {
        return Err("a host is missing before the :PORT".into());
    }
    if host.contains(':') {
        return Err("an IPv6 address needs brackets: [::1]:8989".into());
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(text.to_string()),
        _ => Err(no_port(port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_host_names_parse_and_nonsense_does_not() {
        for good in ["127.0.0.1:8989", "[::1]:80", "localhost:8989", "a:1"] {
            assert_eq!(parse_target(good).as_deref(), Ok(good));
        }
        for bad in
            ["", "8989", "localhost", ":80", "::1:80", "h:0", "h:x", "[::1]:0"]
        {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
        assert!(parse_target("h:65536").unwrap_err().contains("1 to 65535"));
    }
}
