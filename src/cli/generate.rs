//! `readyloop generate`: the manual pages and the shell completions,
//! written from the same clap definition that parses the command line,
//! so neither can drift from `--help`. The Debian package ships what
//! this writes (`contrib/deb/build`); `cargo install` users run it
//! themselves.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Subcommand};
use clap_complete::Shell;

use super::Cli;

/// Flags of `readyloop generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write.
    #[command(subcommand)]
    pub what: Generated,
}

/// What `readyloop generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generated {
    /// Write the manual pages (troff, section 1) into DIR, created if
    /// missing: readyloop.1, and readyloop-serve.1 and so on, one for
    /// each subcommand. Read one with `man -l DIR/readyloop-serve.1`.
    Man {
        /// The directory to write the pages into.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout, e.g.
    /// `readyloop generate completions bash >
    /// ~/.local/share/bash-completion/completions/readyloop`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
}

/// Runs `readyloop generate`: 0 when everything was written, 1 (with
/// `error: …` on stderr) when a file or stdout could not be.
pub fn generate(args: &GenerateArgs) -> ExitCode {
    let outcome = match &args.what {
        Generated::Man { dir } => man_pages(dir),
        Generated::Completions { shell } => {
            let mut stdout = io::stdout().lock();
            let script = completions(*shell);
            stdout.write_all(&script).and_then(|()| stdout.flush()).map_err(
                |e| format!("cannot write the {shell} completions: {e}"),
            )
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes one page for `readyloop` and one for each subcommand, at every
/// depth (`readyloop-generate-man.1`), into `dir`.
fn man_pages(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // clap's `help` subcommand would get a page saying nothing that
    // `--help` does not.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, so that every subcommand knows its full name
    // (`readyloop-serve`), as its page's title and file name.
    cmd.build();
    write_pages(&cmd, dir)
}

/// Writes the page of `cmd` and those of its visible subcommands.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<(), String> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| format!("cannot render the page {name}.1: {e}"))?;
    fs::write(&path, ascii(&String::from_utf8_lossy(&page)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    Ok(())
}

/// `page` with every character outside ASCII written as a troff escape:
/// groff rendering for a terminal in the C locale (a service's, an ssh
/// session's) has no glyph for a literal `…` and drops it with a
/// warning, while `...` and its named escapes render everywhere.
fn ascii(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        match c {
            c if c.is_ascii() => out.push(c),
            '…' => out.push_str("..."),
            '—' => out.push_str("\\(em"),
            '–' => out.push_str("\\(en"),
            '→' => out.push_str("\\(->"),
            '‘' | '’' => out.push_str("\\(aq"),
            '“' | '”' => out.push_str("\\(dq"),
            c => out.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// The completion script for `shell`, held in memory so that a failed
/// write to stdout is an error message, not a panic.
fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "readyloop",
        &mut script,
    );
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASCII passes unchanged; typography becomes its ASCII or named
    /// troff form; anything else a `\[uXXXX]` escape.
    #[test]
    fn pages_keep_ascii_and_escape_the_rest() {
        assert_eq!(ascii("--drain SECS"), "--drain SECS");
        assert_eq!(ascii("CIDR[,CIDR…]"), "CIDR[,CIDR...]");
        assert_eq!(ascii("a—b→c é"), "a\\(emb\\(->c \\[u00E9]");
    }
}
