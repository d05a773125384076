//! The README's five-minute tour runs as written. Its code blocks are
//! read from README.md (not copied here) as transcripts: `$ COMMAND`
//! runs a command through `sh -c`, with the built binary first on
//! `PATH`; the lines after it are what that command prints; `^C` sends
//! SIGINT to the running server; and lines before any `$` in a block,
//! or after a `^C`, are what the running server prints next.
//!
//! What the test changes, and only that: `readyloop serve` listens on
//! a free loopback port (`--addr 127.0.0.1:0`), and `readyloop client`
//! and `readyloop load` are given that address, so the tour runs beside
//! anything else on the machine. Lines are compared without their
//! timestamps, with runs of spaces as one, and with every number other
//! than 0 standing for any number: a 0 the README shows must be a 0
//! (`closed_reset=0`, `errors 0`). Every command exits 0, each server
//! once its `^C` stopped it, and a server prints no line the tour does
//! not show.

use std::fs;
use std::net::SocketAddr;

use crate::support::markdown::blocks;
use crate::support::server::Signal;
use crate::support::shell::{self, shell};
use crate::support::wait::eventually;
use crate::support::{log_line, ServerProcess};

/// The README section whose code blocks are the tour.
const TOUR: &str = "A five-minute tour";

/// One step of a transcript.
#[derive(Debug, PartialEq)]
enum Step {
    /// `$ readyloop serve …`: start a server.
    Serve(String),
    /// `$ COMMAND` and the lines it prints.
    Run(String, Vec<String>),
    /// `^C`: SIGINT to the running server.
    Interrupt,
    /// A line the running server prints next.
    Says(String),
}

/// The steps of the transcripts `blocks` (each a list of lines).
fn steps(blocks: &[Vec<&str>]) -> Vec<Step> {
    let mut steps = Vec::new();
    for block in blocks {
        // A block starts in the server's terminal.
        let mut to_server = true;
        for line in block {
            if let Some(command) = line.strip_prefix("$ ") {
                let serve = command.contains("readyloop serve");
                steps.push(match serve {
                    true => Step::Serve(command.to_string()),
                    false => Step::Run(command.to_string(), Vec::new()),
                });
                to_server = serve;
            } else if line.trim() == "^C" {
                steps.push(Step::Interrupt);
                to_server = true;
            } else if let (false, Some(Step::Run(_, lines))) =
                (to_server, steps.last_mut())
            {
                lines.push(line.to_string());
            } else {
                steps.push(Step::Says(line.to_string()));
            }
        }
    }
    steps
}

/// `line` as compared: no priority or timestamp, one space for a run
/// of them, and `N` for every number but a lone 0.
fn normalized(line: &str) -> String {
    let record = log_line::record(line.trim());
    let words = record.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut chars = words.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut number = String::from(c);
        while let Some(&d) = chars.peek() {
            let dot =
                d == '.' && number.ends_with(|c: char| c.is_ascii_digit());
            if !d.is_ascii_digit() && !dot {
                break;
            }
            number.push(d);
            chars.next();
        }
        // A trailing dot ends a sentence, not the number.
        let dot = number.ends_with('.');
        let number = number.trim_end_matches('.');
        out.push_str(if number == "0" { "0" } else { "N" });
        if dot {
            out.push('.');
        }
    }
    out
}

/// What differs between the `expected` lines and the `actual` ones,
/// compared [`normalized`], or `None`.
fn differs(expected: &[String], actual: &[String]) -> Option<String> {
    let want: Vec<String> = expected.iter().map(|l| normalized(l)).collect();
    let got: Vec<String> = actual.iter().map(|l| normalized(l)).collect();
    (want != got).then(|| {
        format!(
            "the README shows:\n  {}\nbut it printed:\n  {}",
            expected.join("\n  "),
            actual.join("\n  ")
        )
    })
}

/// Whether a line the README shows goes to stderr: the client's and the
/// load generator's own lines, and errors.
fn to_stderr(line: &str) -> bool {
    ["client: ", "load: ", "error: "].iter().any(|p| line.starts_with(p))
}

/// `command` with the test's address: a free port for `readyloop
/// serve`, the running server's address for `readyloop client` and
/// `readyloop load`.
fn substituted(command: &str, server: Option<SocketAddr>) -> String {
    assert!(
        !command.contains("--addr"),
        "the tour names an address itself: {command}"
    );
    let at = |sub: &str| {
        let addr = server.unwrap_or_else(|| {
            panic!("`{command}` runs with no server running")
        });
        match sub {
            "client" => format!("readyloop client {addr}"),
            _ => format!("readyloop load --addr {addr}"),
        }
    };
    match command {
        c if c.contains("readyloop serve") => c.replacen(
            "readyloop serve",
            "readyloop serve --addr 127.0.0.1:0",
            1,
        ),
        c if c.contains("readyloop client") => {
            c.replacen("readyloop client", &at("client"), 1)
        }
        c if c.contains("readyloop load") => {
            c.replacen("readyloop load", &at("load"), 1)
        }
        c => c.to_string(),
    }
}

/// Runs `command` (bounded) and checks that it exits 0 printing the
/// `expected` lines: those of [`to_stderr`] on stderr (the load
/// generator's progress lines aside, which come only when a run is
/// slow), the others on stdout.
fn run(command: &str, expected: &[String]) {
    let ran = shell::run(command);
    assert_eq!(ran.code, Some(0), "`{command}`: {:?}", ran.stderr);
    let progress = |l: &String| l.starts_with("load: ") && l.contains(" s, ");
    let err: Vec<String> =
        ran.stderr.into_iter().filter(|l| !progress(l)).collect();
    let (want_err, want_out): (Vec<String>, Vec<String>) =
        expected.iter().cloned().partition(|l| to_stderr(l));
    if let Some(d) = differs(&want_out, &ran.stdout) {
        panic!("`{command}`, stdout: {d}");
    }
    if let Some(d) = differs(&want_err, &err) {
        panic!("`{command}`, stderr: {d}");
    }
}

/// A server of the tour and how many of its lines were compared.
struct Server {
    process: ServerProcess,
    seen: usize,
}

impl Server {
    /// Checks that the server's next line is `expected`.
    fn says(&mut self, expected: &str) {
        let process = &mut self.process;
        eventually(&format!("the server prints {expected:?}"), || {
            process.collect_log().len() > self.seen
        });
        let line = process.log[self.seen].clone();
        if let Some(d) = differs(&[expected.into()], &[line]) {
            panic!("the server's line {}: {d}", self.seen + 1);
        }
        self.seen += 1;
    }

    /// Checks that the server, stopped, exited 0 and printed nothing
    /// more than the tour showed.
    fn stopped(mut self) {
        assert_eq!(self.process.wait_exit(), 0, "the server's exit code");
        let log = self.process.read_to_end();
        assert_eq!(
            log.len(),
            self.seen,
            "the server printed lines the tour does not show: {:#?}",
            &log[self.seen.min(log.len())..]
        );
    }
}

/// Runs the tour's `steps`.
fn tour(steps: Vec<Step>) {
    let mut server: Option<Server> = None;
    for step in steps {
        let at = server.as_ref().map(|s| s.process.addr);
        match step {
            Step::Serve(command) => {
                if let Some(last) = server.take() {
                    last.stopped();
                }
                let serve = substituted(&command, None);
                let process = ServerProcess::start_command(shell(&format!(
                    "exec {serve}"
                )));
                server = Some(Server { process, seen: 0 });
            }
            Step::Run(command, lines) => {
                run(&substituted(&command, at), &lines)
            }
            Step::Interrupt => {
                let s = server.as_ref().expect("^C with no server running");
                s.process.signal(Signal::INT);
            }
            Step::Says(line) => {
                let s = server.as_mut().expect("a server line, no server");
                s.says(&line);
            }
        }
    }
    if let Some(last) = server {
        last.stopped();
    }
}

/// The README's tour, run as written against real servers on a free
/// loopback port, prints what the README shows.
#[test]
fn the_readme_tour_runs_as_written() {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = fs::read_to_string(readme).expect("read README.md");
    let found: Vec<Vec<&str>> = blocks(&text)
        .into_iter()
        .filter(|b| b.heading == TOUR)
        .inspect(|b| {
            assert!(
                matches!(b.info, "" | "text" | "console"),
                "README.md:{}: a tour block is a transcript (```text), \
                 not `{}`",
                b.lines.first().map_or(0, |l| l.0 - 1),
                b.info
            )
        })
        .map(|b| b.lines.into_iter().map(|(_, l)| l).collect())
        .collect();
    let steps = steps(&found);
    let serves = steps.iter().filter(|s| matches!(s, Step::Serve(_))).count();
    let runs = steps.iter().filter(|s| matches!(s, Step::Run(..))).count();
    assert!(serves > 0 && runs > 0, "no tour under `## {TOUR}`: {steps:?}");
    tour(steps);
}

/// The transcript reader and the comparison can fail: a server's lines
/// are told from a command's, a changed word or a 0 that became 1 is a
/// difference, a timestamp, a port or a count is not.
#[test]
fn a_transcript_is_read_and_compared_as_the_docs_say() {
    let blocks = [
        vec!["$ readyloop serve", "T INFO listening on 127.0.0.1:8989"],
        vec!["$ readyloop client -v", "client: sent 6 bytes", "hello"],
        vec!["INFO accepted", "^C", "INFO summary accepted=1"],
    ];
    let steps = steps(&blocks);
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        steps,
        [
            Step::Serve("readyloop serve".into()),
            Step::Says("T INFO listening on 127.0.0.1:8989".into()),
            Step::Run("readyloop client -v".into(), owned(&blocks[1][1..])),
            Step::Says("INFO accepted".into()),
            Step::Interrupt,
            Step::Says("INFO summary accepted=1".into()),
        ]
    );
    let line = |s: &str| vec![s.to_string()];
    let stamped = "2026-12-07T01:18:41.508Z INFO  [x] summary accepted=1 \
        closed_reset=0 bytes_in=6.";
    let same = "INFO [x] summary accepted=1111 closed_reset=0 bytes_in=64.";
    assert_eq!(differs(&line(stamped), &line(same)), None);
    let reset = "INFO [x] summary accepted=1111 closed_reset=1 bytes_in=64.";
    assert!(differs(&line(stamped), &line(reset)).is_some());
    let word = "INFO [x] summary accepted=1 closed_error=0 bytes_in=6.";
    assert!(differs(&line(stamped), &line(word)).is_some());
    assert!(differs(&line("hello"), &[]).is_some());
    assert_eq!(
        substituted(
            "printf 'hi\\n' | readyloop client -v",
            "127.0.0.1:9".parse().ok()
        ),
        "printf 'hi\\n' | readyloop client 127.0.0.1:9 -v"
    );
}
