//! The monoio peer: the echo server people write with monoio, the
//! io_uring runtime, as in monoio's own `echo` example: one task per
//! connection, owned buffers passed to `read` and `write_all` and handed
//! back with the result, on the io_uring driver, one thread.
//!
//! `readyloop-monoio-peer ADDR` runs until killed and prints `listening
//! on ADDR (monoio)` to stderr, as readyloop does, so the benchmark
//! starts it like every other server.

use std::process::ExitCode;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// The per-task buffer: 8 KiB, as monoio's example has it. The kernel
/// owns it while a read is in flight, so an idle connection holds it.
const BUF: usize = 8 * 1024;

fn main() -> ExitCode {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:0".into());
    let runtime =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build();
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot build the io_uring runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(async {
        let listener = TcpListener::bind(addr.as_str())?;
        eprintln!("listening on {} (monoio)", listener.local_addr()?);
        loop {
            // A failed accept loses that one connection and the peer
            // goes on, as the tokio peer does (monoio's example stops).
            if let Ok((stream, _)) = listener.accept().await {
                monoio::spawn(echo(stream));
            }
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

/// Echoes until the client closes or an operation fails.
async fn echo(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let (read, back) = stream.read(buf).await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (written, mut back) = stream.write_all(back).await;
        if written.is_err() {
            return;
        }
        back.clear();
        buf = back;
    }
}
