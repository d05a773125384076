//! The command line: `readyloop serve`, `readyloop load`,
//! `readyloop client` and `readyloop generate`.
//!
//! Exit codes: 0 on a clean stop, 1 when the server cannot start or its
//! loop fails (`error: …` on stderr), 2 for invalid flags (clap prints the
//! error and the usage).
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the subcommands |
//! | `flags` | `serve`'s flags, as `serve --help` shows them |
//! | `serve_config` | the flags as a `Config`; the checks between flags |
//! | `combos` | flags that cannot take effect beside others: refused or warned |
//! | `values` | one flag's value: addresses, sizes in bytes |
//! | `run` | running `serve`: logging, the descriptor limit, exit codes |
//! | `generate` | the manual pages and shell completions, from clap |

use clap::{Parser, Subcommand};

pub use flags::{LogLevel, ServeArgs};
pub use generate::{generate, GenerateArgs, Generated};
pub use run::serve;
pub use values::AddrArg;

mod combos;
mod flags;
mod generate;
mod run;
mod serve_config;
mod values;

/// A single-threaded readiness-IO TCP server, the classic models it is
/// compared with, and a load generator to compare them.
#[derive(Debug, Parser)]
#[command(name = "readyloop", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server until SIGINT or SIGTERM, then print a summary.
    Serve(ServeArgs),
    /// Drive a server with many connections and report what it did.
    Load(crate::load::LoadArgs),
    /// Connect to a server, send stdin, print what comes back; `-v`
    /// narrates the handshake, the half-close and any reset.
    Client(crate::client::ClientArgs),
    /// Write the manual pages or print a shell's completions, made from
    /// this command line's own definition (the Debian package ships
    /// both).
    Generate(GenerateArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
