//! `readyloop`: a thin layer over the library. Parse the command line,
//! set up logging, run, and map the outcome to an exit code (0 clean stop,
//! 1 set-up or runtime error, 2 invalid flags).

use std::process::ExitCode;

use clap::Parser;
use log::LevelFilter;
use readyloop::cli::{Cli, Command, ServeArgs};
use readyloop::journal::STATUS;
use simple_logger::SimpleLogger;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => readyloop::load::main(args),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    // Logs go to stderr; stdout stays free for machine-readable output.
    let logger = SimpleLogger::new()
        .with_level(args.log_level.filter())
        .with_module_level(STATUS, LevelFilter::Info);
    if let Err(e) = readyloop::journal::init(logger) {
        eprintln!("error: cannot set up logging: {e}");
        return ExitCode::from(1);
    }
    let mut config = args.config();
    config.handle_signals = true;
    // Each connection is a descriptor: allow as many as the hard limit
    // does. When they still run out, accept pauses and says so.
    if let Err(e) = readyloop::rlimit::raise_to_hard() {
        eprintln!("warning: cannot raise the descriptor limit: {e}");
    }
    let outcome = readyloop::bind(config).and_then(readyloop::Server::run);
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
