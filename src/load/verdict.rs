//! Whether a run that completed shows a working server. The generator
//! may finish without a hitch against a server that echoes nothing,
//! drops connections or stops answering; such a run fails (exit 3), with
//! its report printed as usual.

use std::fmt;

use super::pattern::Pattern;
use super::report::Report;

/// One reason a completed run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Connections failed to connect, broke, stalled or echoed wrong
    /// bytes: this many.
    Errors(u64),
    /// Not one message completed (a server that does not echo).
    NoMessages,
    /// Idle: fewer connections held at the end than asked for.
    Held {
        /// Connections held.
        held: u64,
        /// Connections asked for.
        asked: u64,
    },
}

impl Shortfall {
    /// Every reason `report` fails; empty when the run passed.
    pub fn of(report: &Report) -> Vec<Shortfall> {
        let t = &report.tally;
        let mut found = Vec::new();
        if t.errors() > 0 {
            found.push(Shortfall::Errors(t.errors()));
        }
        if t.messages == 0 {
            found.push(Shortfall::NoMessages);
        }
        if report.pattern == Pattern::Idle && t.held < report.connections {
            let asked = report.connections;
            found.push(Shortfall::Held { held: t.held, asked });
        }
        found
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::Errors(1) => f.write_str("1 error"),
            Shortfall::Errors(n) => write!(f, "{n} errors"),
            Shortfall::NoMessages => f.write_str(
                "no message completed (is the server echoing? readyloop \
                 echoes only with `serve --mode echo`; the default mode \
                 logs what it reads and answers nothing)",
            ),
            Shortfall::Held { held, asked } => {
                write!(f, "{held} of {asked} connections held")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::Tally;

    fn report(pattern: Pattern, tally: Tally) -> Report {
        Report {
            pattern,
            connections: 4,
            size: 64,
            elapsed: Duration::from_secs(1),
            tally,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let tally = Tally { messages: 10, held: 4, ..Tally::default() };
        assert_eq!(Shortfall::of(&report(Pattern::Pingpong, tally)), []);
        let tally = Tally { messages: 4, held: 4, ..Tally::default() };
        assert_eq!(Shortfall::of(&report(Pattern::Idle, tally)), []);
    }

    #[test]
    fn silence_stalls_and_lost_connections_fail() {
        let silent = Tally { stalls: 4, ..Tally::default() };
        assert_eq!(
            Shortfall::of(&report(Pattern::Pingpong, silent)),
            [Shortfall::Errors(4), Shortfall::NoMessages]
        );
        let dropped =
            Tally { messages: 1, held: 1, io_errors: 3, ..Tally::default() };
        let found = Shortfall::of(&report(Pattern::Idle, dropped));
        assert_eq!(
            found,
            [Shortfall::Errors(3), Shortfall::Held { held: 1, asked: 4 }]
        );
        assert_eq!(found[1].to_string(), "1 of 4 connections held");
    }
}
