//! `readyloop --version` and `readyloop generate`: the manual pages and
//! completions are made from the command line's own definition, so they
//! name every flag `serve` has, and a write that fails is a one-line
//! error, not a panic. (The external suite's `package` reads them as
//! `man` and `bash` do, from the Debian package.)

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use readyloop::cli::Cli;

use crate::support::server::binary;

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run readyloop")
}

/// Every long flag of `readyloop serve`, as clap defines them (`--help`
/// and `--version` included: the pages and completions name them too).
pub fn serve_flags() -> Vec<String> {
    let mut cli = Cli::command();
    cli.build();
    let serve = cli
        .find_subcommand("serve")
        .expect("a serve subcommand")
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")));
    serve.collect()
}

/// Every subcommand's name, clap's own `help` left out.
pub fn subcommands() -> Vec<String> {
    let names = Cli::command()
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .filter(|name| name != "help")
        .collect();
    names
}

/// A fresh directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir()
            .join(format!("readyloop-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The text a page's troff source shows for `text`'s dashes (`\-`).
fn troff(text: &str) -> String {
    text.replace('-', "\\-")
}

/// `--version` prints the name and the Cargo version; a subcommand's
/// prints its own name (`readyloop-serve 0.1.0`).
#[test]
fn version_prints_the_cargo_version() {
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(version, "0.1.0");
    for (args, name) in [
        (&["--version"][..], "readyloop"),
        (&["-V"], "readyloop"),
        (&["serve", "--version"], "readyloop-serve"),
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", out.status);
        let want = format!("{name} {version}\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}

/// `generate man DIR` creates DIR and writes a page for readyloop and
/// one for each subcommand, in ASCII; the top page names every
/// subcommand, the serve page every serve flag.
#[test]
fn generate_man_writes_a_page_for_every_subcommand() {
    let scratch = Scratch::new("generate-man");
    let dir = scratch.0.join("man1");
    let out = run(&["generate", "man", dir.to_str().expect("a UTF-8 path")]);
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    let page = |name: &str| {
        let text = fs::read_to_string(dir.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(text.starts_with(".ie"), "{name}.1 is no troff page");
        assert!(text.contains(".TH "), "{name}.1 has no title");
        // groff in the C locale has no glyph for most of the rest.
        assert!(text.is_ascii(), "{name}.1 is not ASCII");
        text
    };
    let top = page("readyloop");
    for sub in subcommands() {
        assert!(top.contains(&troff(&format!("readyloop-{sub}"))), "{sub}");
        page(&format!("readyloop-{sub}"));
    }
    assert!(!dir.join("readyloop-help.1").exists(), "a page for help");
    let serve = page("readyloop-serve");
    for flag in serve_flags() {
        assert!(serve.contains(&troff(&flag)), "serve page lacks {flag}");
    }
}

/// `generate completions SHELL` prints a script for bash, zsh and fish
/// that completes every serve flag.
#[test]
fn generate_completions_name_every_serve_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["generate", "completions", shell]);
        assert!(out.status.success(), "{shell}: {}", out.status);
        assert!(out.stderr.is_empty(), "{shell}");
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(script.contains("readyloop"), "{shell}: {script}");
        for flag in serve_flags() {
            // fish names a long flag without its dashes: `-l addr`.
            let named = match shell {
                "fish" => format!("-l {}", &flag[2..]),
                _ => flag.clone(),
            };
            assert!(script.contains(&named), "{shell} lacks {flag}");
        }
    }
    let out = run(&["generate", "completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell");
}

/// A page that cannot be written and a stdout that refuses the script
/// are one-line errors with exit 1.
#[test]
fn generate_fails_clearly_when_it_cannot_write() {
    let out = run(&["generate", "man", "/proc/readyloop-pages"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: cannot create /proc/readyloop-pages"));
    assert_eq!(err.lines().count(), 1, "{err}");

    let full = fs::File::create("/dev/full").expect("open /dev/full");
    let out = Command::new(binary())
        .args(["generate", "completions", "bash"])
        .stdout(Stdio::from(full))
        .output()
        .expect("run readyloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: cannot write the bash completions"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
