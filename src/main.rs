//! `readyloop`: a thin layer over the library. Parse the command line and
//! run the subcommand, which maps its outcome to an exit code (0 clean
//! stop, 1 set-up or runtime error, 2 invalid flags).

use std::process::ExitCode;

use clap::Parser;
use readyloop::cli::{self, Cli, Command};

fn main() -> ExitCode {
    abort_on_panic();
    match Cli::parse().command {
        Command::Serve(args) => cli::serve(&args),
        Command::Load(args) => readyloop::load::main(args),
        Command::Client(args) => readyloop::client::main(args),
        Command::Generate(args) => cli::generate(&args),
    }
}

/// Makes any panic, on any thread, end the whole process with SIGABRT
/// once the default hook has printed its one line: a bug is a crash
/// (exit 134 in a shell, a failure to systemd), never a worker or a
/// connection thread quietly gone while the rest serves on. This is
/// what `panic = "abort"` does; a hook does it in every profile without
/// that setting, which would make `cargo test --release` build the
/// library and its dependencies twice (the test harness needs unwinding).
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Set only in the copy of this test binary that the test starts.
    const CHILD: &str = "READYLOOP_TEST_PANIC_CHILD";

    /// With the hook set, a panic on a thread that is not `main` (a
    /// worker's, a connection's) aborts the whole process after the
    /// panic's message; without it the process would exit 0 here.
    #[test]
    fn a_panic_on_any_thread_aborts_the_process() {
        if std::env::var_os(CHILD).is_some() {
            super::abort_on_panic();
            let _ = std::thread::spawn(|| panic!("a worker's bug")).join();
            std::process::exit(0);
        }
        let test = "tests::a_panic_on_any_thread_aborts_the_process";
        let exe = std::env::current_exe().expect("the test binary");
        let out = Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
        assert!(stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("a worker's bug"), "{stderr}");
    }
}
