//! Every behaviour the models share, as one test per model made by
//! [`per_model!`]: the real binary serves (forking a multi-threaded test
//! process would be unsound, and the binary is what users run), clients
//! talk to it over loopback, and the summary line must say exactly what
//! they did.

mod buffers;
mod chaos;
mod chaos_checks;
mod closes;
mod counted;
mod echo;
mod exhaustion;
mod hostile;
mod idle;
mod limits;
mod log;
mod surroundings;
