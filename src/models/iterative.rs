//! Placeholder until the comparison-models issue.

use crate::error::Error;
use crate::server::Server;
use crate::stats::Summary;

/// Runs this model until it is stopped.
pub fn run(_server: Server) -> Result<Summary, Error> {
    Err(Error::Setup {
        what: "run this model",
        source: std::io::Error::other("not built yet"),
    })
}
