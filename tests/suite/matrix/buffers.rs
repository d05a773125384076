//! `--send-buffer` and `--receive-buffer` reach every socket a model
//! serves, read back from the server's own descriptor.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use readyloop::Model;
use rustix::process::PidfdGetfdFlags;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags};

use crate::support::*;

per_model!(socket_buffers_reach_every_served_socket);

/// With `--send-buffer 16K --receive-buffer 24K`, the server's socket
/// for a client has SO_SNDBUF and SO_RCVBUF of twice that (the kernel
/// doubles both for its bookkeeping), in every model: the receive
/// buffer is the listener's, inherited at accept.
fn socket_buffers_reach_every_served_socket(model: Model) {
    let args = ["--mode", "echo", "--send-buffer", "16K"];
    let server =
        serve(model, &[&args[..], &["--receive-buffer", "24K"]].concat());
    let mut client = connect(server.addr);
    assert_eq!(echo_round(&mut client, b"hi"), b"hi");
    let me = client.local_addr().expect("local address");
    let socket = served_socket(server.pid(), me)
        .unwrap_or_else(|| panic!("{model}: no server socket for {me}"));
    let sock = socket2::SockRef::from(&socket);
    let sizes = (sock.send_buffer_size(), sock.recv_buffer_size());
    assert_eq!(
        (sizes.0.ok(), sizes.1.ok()),
        (Some(32 * 1024), Some(48 * 1024)),
        "{model}: (SO_SNDBUF, SO_RCVBUF)"
    );
    // The copy holds the connection open: let it go first.
    drop(socket);
    drop(client);
    stop(server);
}

/// A copy of the socket that process `pid` (or one of its children,
/// the process model's) serves the client at `peer` with, taken with
/// pidfd_getfd (a parent may take its children's descriptors).
fn served_socket(pid: u32, peer: SocketAddr) -> Option<OwnedFd> {
    for pid in family(pid) {
        let Some(pidfd) = Pid::from_raw(pid as i32)
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
        else {
            continue;
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        for entry in fds.flatten() {
            let name = entry.file_name();
            let Some(fd) = name.to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(copy) =
                pidfd_getfd(pidfd.as_fd(), fd, PidfdGetfdFlags::empty())
            else {
                continue;
            };
            let addr = socket2::SockRef::from(&copy).peer_addr().ok();
            if addr.and_then(|a| a.as_socket()) == Some(peer) {
                return Some(copy);
            }
        }
    }
    None
}

/// `pid` and its descendants.
fn family(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut at = 0;
    while let Some(&p) = all.get(at) {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let path = task.path().join("children");
            let children = std::fs::read_to_string(path).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        at += 1;
    }
    all
}
