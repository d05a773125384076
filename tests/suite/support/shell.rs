//! Commands as a reader of the docs types them: through `sh -c`, with
//! the binary cargo built first on `PATH`, each in a process group of
//! its own that the test kills however it ends.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;

use rustix::process::{kill_process_group, Pid, Signal};

use super::server::binary;
use super::wait::eventually;

/// `sh -c COMMAND` in a process group of its own, the built `readyloop`
/// first on `PATH` (and `/usr/sbin`, where Debian keeps some tools).
pub fn shell(command: &str) -> Command {
    let dir = Path::new(binary()).parent().expect("the binary's directory");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command);
    cmd.env("PATH", format!("{}:{path}:/usr/sbin", dir.display()));
    cmd.process_group(0);
    cmd
}

/// A started command's process group, killed (SIGKILL to the group)
/// and reaped when dropped.
pub struct Group(pub Child);

impl Group {
    /// Starts `cmd` (from [`shell`]).
    pub fn spawn(mut cmd: Command) -> Group {
        Group(cmd.spawn().expect("spawn sh"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pid = i32::try_from(self.0.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

/// What a command printed, and how it exited.
#[derive(Debug)]
pub struct Ran {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Runs `command` (from [`shell`]) with no stdin, waiting (bounded) for
/// it to exit.
pub fn run(command: &str) -> Ran {
    let mut cmd = shell(command);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut group = Group::spawn(cmd);
    let out = read_all(group.0.stdout.take().expect("stdout"));
    let err = read_all(group.0.stderr.take().expect("stderr"));
    let mut status = None;
    eventually(&format!("`{command}` exits"), || {
        status = group.0.try_wait().expect("wait");
        status.is_some()
    });
    let lines = |t: thread::JoinHandle<String>| {
        t.join().expect("a reader").lines().map(str::to_string).collect()
    };
    Ran {
        code: status.and_then(|s| s.code()),
        stdout: lines(out),
        stderr: lines(err),
    }
}

/// Everything `from` gives until its end, read on a thread of its own.
fn read_all(
    mut from: impl Read + Send + 'static,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    })
}
