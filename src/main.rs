//! `readyloop`: a thin layer over the library. Parse the command line and
//! run the subcommand, which maps its outcome to an exit code (0 clean
//! stop, 1 set-up or runtime error, 2 invalid flags).

use std::process::ExitCode;

use clap::Parser;
use readyloop::cli::{self, Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => cli::serve(&args),
        Command::Load(args) => readyloop::load::main(args),
        Command::Client(args) => readyloop::client::main(args),
        Command::Generate(args) => cli::generate(&args),
    }
}
