//! What only the process model promises: every child is reaped and gone
//! by the end, children's log lines stay whole, and it refuses to fork a
//! multi-threaded process.

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use readyloop::Model;

use crate::library::config;
use crate::support::proc::Child;
use crate::support::server::Signal;
use crate::support::*;

/// Three clients, each echoed once, and the child serving each.
fn three_children(server: &ServerProcess) -> (Vec<TcpStream>, Vec<Child>) {
    let mut held: Vec<TcpStream> =
        (0..3).map(|_| connect(server.addr)).collect();
    for s in &mut held {
        assert_eq!(echo_round(s, b"hold"), b"hold");
    }
    let kids = proc::children(server.pid());
    assert_eq!(kids.len(), 3, "one child per connection: {kids:?}");
    (held, kids)
}

/// 200 short connections leave no zombie: the parent reaps every child.
#[test]
fn process_model_leaves_no_zombie() {
    let mut server = serve(Model::Process, &["--mode", "echo"]);
    let addr = server.addr;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..50 {
                    let mut s = connect(addr);
                    assert_eq!(echo_round(&mut s, b"z"), b"z");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client");
    }
    wait_count(&mut server, "closed: eof", 200);
    let pid = server.pid();
    let zombies =
        || proc::children(pid).iter().filter(|c| c.state == 'Z').count();
    eventually("no zombie child", || zombies() == 0);
    eventually("no child left", || proc::children(pid).is_empty());
    let summary = stop(server);
    assert_eq!((summary.accepted, summary.closed_eof), (200, 200));
}

/// Killing the parent (SIGKILL, or the OOM killer) leaves no orphan
/// serving clients: every child stops with it, and its client sees the
/// connection end.
#[test]
fn process_model_children_die_with_their_parent() {
    let mut server = serve(Model::Process, &["--mode", "echo"]);
    let (mut held, kids) = three_children(&server);
    server.signal(Signal::KILL);
    server.wait_exit();
    for s in &mut held {
        let (rest, _) = read_to_end(s);
        assert!(rest.is_empty());
    }
    for kid in kids {
        eventually("the orphan exits", || !proc::exists(&kid));
    }
}

/// At shutdown every child is told to stop and is gone before the server
/// exits.
#[test]
fn process_model_children_are_gone_after_shutdown() {
    let server = serve(Model::Process, &["--mode", "echo"]);
    let (_held, kids) = three_children(&server);
    let (code, summary) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(summary.closed_shutdown, 3);
    for kid in kids {
        assert!(!proc::exists(&kid), "child {} outlived the server", kid.pid);
    }
}

/// Children log concurrently to the stderr they share with the parent;
/// every line still arrives whole (one write each), never merged with
/// another or split.
#[test]
fn process_model_log_lines_stay_whole() {
    let mut server = serve(Model::Process, &["--mode", "log"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..64)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for k in 0..100 {
                    s.write_all(format!("{i}.{k};").as_bytes())
                        .expect("write");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    wait_count(&mut server, "closed: eof", 64);
    assert_whole_records(Model::Process, server.collect_log());
    stop(server);
}

/// The process model refuses to fork a multi-threaded process (fork
/// copies only the calling thread) instead of risking a deadlock.
#[test]
fn the_process_model_refuses_a_multi_threaded_process() {
    // Make sure this process has another thread, however tests are run.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = thread::spawn(move || rx.recv());
    let config = config(Model::Process, readyloop::Mode::Echo);
    let outcome = readyloop::bind(config).expect("bind").run();
    let e = outcome.expect_err("forked in a multi-threaded process");
    assert!(e.to_string().contains("single-threaded"), "{e}");
    drop(tx);
    let _ = other.join();
}
