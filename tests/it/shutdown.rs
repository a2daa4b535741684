//! Graceful shutdown under load: while clients write, SIGTERM stops the
//! node with exit code 0 within a bound, and every write acknowledged
//! before it is there after a restart.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect_client, wait_for, Server, START_DEADLINE};

const WRITERS: usize = 4;

#[test]
fn sigterm_under_load_exits_zero_and_keeps_every_acknowledged_write() {
    let mut server = Server::start(&["--durability", "always"]);
    let addr = server.addr;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let give_up = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let acked = Arc::clone(&acked);
            let give_up = Arc::clone(&give_up);
            std::thread::spawn(move || {
                let mut client = connect_client(addr);
                // Bounded: the server stops within the test's deadline, and
                // then every put fails.
                for n in 0u64.. {
                    if give_up.load(Ordering::Relaxed) {
                        return;
                    }
                    let key = format!("w{w}-{n}");
                    if client.put(key.as_bytes(), key.as_bytes()).is_err() {
                        return;
                    }
                    acked[w].store(n + 1, Ordering::Release);
                }
            })
        })
        .collect();

    let total = || acked.iter().map(|a| a.load(Ordering::Acquire)).sum::<u64>();
    wait_for(START_DEADLINE, "writes to flow", || {
        (total() >= 200).then_some(())
    });
    let t = Instant::now();
    let status = server.sigterm();
    let took = t.elapsed();
    give_up.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    assert_eq!(status.code(), Some(0), "{}", server.logs());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let counts: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
    server.restart();
    let mut client = server.client();
    for (w, &count) in counts.iter().enumerate() {
        for n in 0..count {
            let key = format!("w{w}-{n}");
            let value = client.get(key.as_bytes()).expect("get after restart");
            assert_eq!(
                value.as_deref(),
                Some(key.as_bytes()),
                "acknowledged {key} lost"
            );
        }
    }
}

/// A connection to `addr` whose receive buffer is small, so that a large
/// answer stays mostly in the server's send queue until it is read.
fn small_window_connect(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use rustix::net::{connect, socket, sockopt, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_recv_buffer_size(&fd, 32 * 1024).expect("SO_RCVBUF");
    connect(&fd, &addr).expect("connect");
    std::net::TcpStream::from(fd)
}

/// docs/PROTOCOL.md section 7, SHUTTING_DOWN: a request the server has
/// received when SIGTERM arrives gets its answer in full, even a 4 MiB
/// VALUE still in flight; a request that arrives after the shutdown began
/// gets SHUTTING_DOWN, then the server closes.
#[test]
fn sigterm_finishes_the_answer_in_flight_and_refuses_what_comes_after() {
    use kvstore::protocol::{ErrorCode, Request, Response};
    let mut server = Server::start(&[]);
    let value: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    server.client().put(b"big", &value).expect("put");

    let stream = small_window_connect(server.addr);
    let mut raw = common::Raw::over(stream);
    let get = Request::Get {
        key: bytes::Bytes::from_static(b"big"),
    };
    raw.send(&common::request_bytes(&get)).expect("send GET");
    // The answer has started: the server is writing it, blocked on our
    // small window.
    let mut first = [0u8; 1];
    raw.stream.peek(&mut first).expect("the answer starts");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    wait_for(START_DEADLINE, "the shutdown to begin", || {
        // 503 while it drains, or no answer once it is gone.
        (!matches!(common::http_get(server.http_addr, "/readyz"), Ok((200, _)))).then_some(())
    });
    // Pipelined after the shutdown began.
    raw.send(&common::request_bytes(&Request::Ping))
        .expect("send PING");

    match raw.answer() {
        common::Answer::Frame(Response::Value(v)) => {
            assert!(
                v[..] == value[..],
                "the VALUE arrived altered ({} bytes)",
                v.len()
            )
        }
        other => panic!("expected the whole VALUE, got {other:?}"),
    }
    match raw.answer() {
        common::Answer::Frame(Response::Error { code, .. }) => {
            assert_eq!(code, ErrorCode::SHUTTING_DOWN)
        }
        other => panic!("expected SHUTTING_DOWN for the PING, got {other:?}"),
    }
    assert!(matches!(raw.answer(), common::Answer::Closed));
    drop(raw);
    assert_eq!(server.sigterm().code(), Some(0), "{}", server.logs());
}

/// An idle connection at SIGTERM: its next request gets SHUTTING_DOWN,
/// not a bare close.
#[test]
fn a_request_after_sigterm_on_an_idle_connection_gets_shutting_down() {
    use kvstore::protocol::{ErrorCode, Request, Response};
    let mut server = Server::start(&[]);
    let mut raw = common::raw_connect(server.addr);
    raw.send(&common::request_bytes(&Request::Ping))
        .expect("ping");
    assert!(matches!(
        raw.answer(),
        common::Answer::Frame(Response::Pong)
    ));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    wait_for(START_DEADLINE, "the shutdown to begin", || {
        // 503 while it drains, or no answer once it is gone.
        (!matches!(common::http_get(server.http_addr, "/readyz"), Ok((200, _)))).then_some(())
    });
    // The server may already have closed its side; the request may fail
    // to send, but the answer to it is there to read.
    let _ = raw.send(&common::request_bytes(&Request::Ping));
    match raw.answer() {
        common::Answer::Frame(Response::Error { code, .. }) => {
            assert_eq!(code, ErrorCode::SHUTTING_DOWN)
        }
        other => panic!("expected SHUTTING_DOWN, got {other:?}"),
    }
    drop(raw);
    assert_eq!(server.sigterm().code(), Some(0), "{}", server.logs());
}
