//! The tokio peers: the echo server people write with tokio (one task per
//! connection, the usual read/write loop with a per-task buffer, as in
//! tokio's own `echo-tcp` example), on a current_thread and on a
//! multi_thread runtime. The benchmark binary runs them by re-executing
//! itself as `compare peer FLAVOR ADDR [THREADS]`, so `cargo bench`
//! builds them and nothing else has to be built by hand. THREADS sets
//! the multi_thread runtime's worker threads (tokio's default: one per
//! CPU the process may use).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The per-task buffer: tokio's example uses 1 KiB; 4 KiB is the common
/// choice in real servers, and what tokio's measured 4.9 KB per idle
/// connection in the benchmark's idle table implies.
const BUF: usize = 4096;

/// Runs the peer until killed; prints `listening on ADDR` to stderr like
/// readyloop does, so the benchmark starts both the same way.
pub fn main(
    flavor: &str,
    addr: &str,
    threads: Option<&str>,
) -> std::process::ExitCode {
    let threads = match threads.map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("error: worker threads must be a positive number");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match flavor {
        "current_thread" => {
            tokio::runtime::Builder::new_current_thread().enable_io().build()
        }
        "multi_thread" => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                builder.worker_threads(n);
            }
            builder.enable_io().build()
        }
        other => {
            eprintln!("error: unknown tokio flavor {other}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let served = runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("listening on {} (tokio {flavor})", listener.local_addr()?);
        loop {
            let (mut socket, _) = match listener.accept().await {
                Ok(pair) => pair,
                Err(_) => continue,
            };
            tokio::spawn(async move {
                let mut buf = vec![0; BUF];
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
