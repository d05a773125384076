//! The tokio peers: the echo server people write with tokio (one task per
//! connection, the usual read/write loop with a per-task buffer, as in
//! tokio's own `echo-tcp` example), on a current_thread and on a
//! multi_thread runtime.
//!
//! `readyloop-tokio-peer FLAVOR ADDR [THREADS]` runs until killed and
//! prints `listening on ADDR (tokio FLAVOR)` to stderr, as readyloop
//! does, so the benchmark starts it like every other server. THREADS
//! sets the multi_thread runtime's worker threads (tokio's default: one
//! per CPU the process may use).

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The per-task buffer: tokio's example uses 1 KiB; 4 KiB is the common
/// choice in real servers, and what tokio's measured 4.9 KB per idle
/// connection in the benchmark's idle table implies.
const BUF: usize = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flavor = args.get(1).map_or("", String::as_str);
    let addr = args.get(2).map_or("127.0.0.1:0", String::as_str);
    let threads = args.get(3).map(String::as_str);
    let threads = match threads.map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("error: worker threads must be a positive number");
            return ExitCode::from(2);
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
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the runtime: {e}");
            return ExitCode::from(1);
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
