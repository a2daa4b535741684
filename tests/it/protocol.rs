//! The wire protocol against a real `kvstore serve`: raw frames as
//! documented in docs/PROTOCOL.md, pipelining, and hostile input. Every
//! hostile case asserts that the offender gets a clear error or a closed
//! connection and that the server keeps serving other clients.

use crate::common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::host::{raise_fd_limit, rss_kib};
use common::{assert_serves, raw_connect, Answer, Server};
use kvstore::client::Error as ClientError;
use kvstore::protocol::{BatchOp, ErrorCode, Request, Response};
use rand::{Rng, SeedableRng};

fn encode(request: &Request) -> Vec<u8> {
    let mut buf = BytesMut::new();
    request.encode(&mut buf).expect("encode");
    buf.to_vec()
}

fn expect_error(answer: Answer, want: ErrorCode) {
    match answer {
        Answer::Frame(Response::Error { code, message }) => {
            assert_eq!(code, want, "message: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected ERROR {want}, got {other:?}"),
    }
}

#[test]
fn documented_bytes_get_documented_answers() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    // HELLO, version 1, no credential, client name "cli" (PROTOCOL.md).
    s.send(&[
        0x0f, 0, 0, 0, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, b'c', b'l', b'i',
    ])
    .unwrap();
    match s.answer() {
        Answer::Frame(Response::HelloOk(hello)) => {
            assert_eq!(hello.version, 1);
            assert!(hello.server.starts_with("kvstore"));
            assert!(hello.limits.max_key_bytes >= 1024);
        }
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
    // PUT k1 = hello, GET k1, GET k2 (absent), PING, pipelined in one write.
    let mut burst = vec![
        0x10, 0, 0, 0, 0x04, 2, 0, 0, 0, b'k', b'1', 5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o',
    ];
    burst.extend_from_slice(&[0x07, 0, 0, 0, 0x03, 2, 0, 0, 0, b'k', b'1']);
    burst.extend_from_slice(&[0x07, 0, 0, 0, 0x03, 2, 0, 0, 0, b'k', b'2']);
    burst.extend_from_slice(&[0x01, 0, 0, 0, 0x02]);
    s.send(&burst).unwrap();
    assert!(matches!(s.answer(), Answer::Frame(Response::Ok)));
    match s.answer() {
        Answer::Frame(Response::Value(v)) => assert_eq!(&v[..], b"hello"),
        other => panic!("expected VALUE, got {other:?}"),
    }
    assert!(matches!(s.answer(), Answer::Frame(Response::NotFound)));
    assert!(matches!(s.answer(), Answer::Frame(Response::Pong)));
}

#[test]
fn pipelining_ten_thousand_requests_answers_in_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let n = 10_000;
    let puts: Vec<Request> = (0..n)
        .map(|i| Request::Put {
            key: Bytes::from(format!("pipe-{i}")),
            value: Bytes::from(format!("value-{i}")),
        })
        .collect();
    let answers = client.pipeline(&puts).expect("pipelined puts");
    assert_eq!(answers.len(), n);
    assert!(answers.iter().all(|a| *a == Response::Ok));

    let gets: Vec<Request> = (0..n)
        .map(|i| Request::Get {
            key: Bytes::from(format!("pipe-{i}")),
        })
        .collect();
    let answers = client.pipeline(&gets).expect("pipelined gets");
    assert_eq!(answers.len(), n);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            *answer,
            Response::Value(Bytes::from(format!("value-{i}"))),
            "answer {i}"
        );
    }
}

#[test]
fn a_read_after_writes_in_one_pipeline_sees_them() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let key = Bytes::from_static(b"order");
    let mut requests = Vec::new();
    for i in 0..200 {
        requests.push(Request::Put {
            key: key.clone(),
            value: Bytes::from(i.to_string()),
        });
        if i % 7 == 0 {
            requests.push(Request::Get { key: key.clone() });
        }
        if i % 50 == 49 {
            requests.push(Request::Delete { key: key.clone() });
            requests.push(Request::Exists { key: key.clone() });
        }
    }
    let answers = client.pipeline(&requests).expect("pipeline");
    let mut current: Option<String> = None;
    for (request, answer) in requests.iter().zip(&answers) {
        match request {
            Request::Put { value, .. } => {
                assert_eq!(*answer, Response::Ok);
                current = Some(String::from_utf8(value.to_vec()).unwrap());
            }
            Request::Get { .. } => {
                let want = current.clone().expect("a put came first");
                assert_eq!(*answer, Response::Value(Bytes::from(want)));
            }
            Request::Delete { .. } => {
                assert_eq!(*answer, Response::Deleted { existed: true });
                current = None;
            }
            Request::Exists { .. } => assert_eq!(*answer, Response::Exists(false)),
            _ => unreachable!(),
        }
    }
}

/// Consecutive PUTs of a pipeline go to the engine as one append; each is
/// still answered, counted and stored as if sent alone, and the writes
/// between them (an expiring put, a delete) run in their place.
#[test]
fn pipelined_puts_are_answered_counted_and_stored_one_by_one() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let put = |k: &str, v: &str| Request::Put {
        key: Bytes::from(k.to_owned()),
        value: Bytes::from(v.to_owned()),
    };
    let mut requests: Vec<Request> = (0..20).map(|i| put(&format!("p{i}"), "1")).collect();
    requests.push(Request::Delete {
        key: Bytes::from_static(b"p5"),
    });
    requests.push(Request::PutExpiring {
        key: Bytes::from_static(b"p6"),
        value: Bytes::from_static(b"2"),
        expiry: kvstore::protocol::Expiry::In(600_000),
    });
    requests.extend((0..20).map(|i| put(&format!("q{i}"), "3")));
    requests.push(put("p0", "4"));
    let answers = client.pipeline(&requests).expect("pipeline");
    for (i, answer) in answers.iter().enumerate() {
        let want = match i {
            20 => Response::Deleted { existed: true },
            _ => Response::Ok,
        };
        assert_eq!(*answer, want, "answer {i}");
    }
    assert_eq!(client.get(b"p0").unwrap().as_deref(), Some(&b"4"[..]));
    assert_eq!(client.get(b"p5").unwrap(), None);
    assert_eq!(client.get(b"p6").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(client.get(b"q19").unwrap().as_deref(), Some(&b"3"[..]));
    let puts = common::labelled_metric(server.http_addr, "kvstore_requests_total", "op", "put");
    assert_eq!(puts, 41.0, "PUTs counted one by one");
}

#[test]
fn random_bytes_are_refused_and_the_server_stays_up() {
    let server = Server::start(&[]);
    let mut bystander = server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b76_7374);
    for round in 0..40 {
        let len = rng.gen_range(1..4096);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Half the rounds get a plausible small length so the body is
        // parsed: random opcodes and payloads, not just huge lengths.
        if round % 2 == 0 && junk.len() > 8 {
            let body = u32::try_from(junk.len() - 4).unwrap();
            junk[..4].copy_from_slice(&body.to_le_bytes());
        }
        let mut s = raw_connect(server.addr);
        // The server may close before reading everything: ignore EPIPE.
        let _ = s.send(&junk);
        s.shutdown_write();
        s.until_closed();
        bystander
            .ping()
            .expect("a connected client is still served");
    }
    assert_serves(server.addr);
}

#[test]
fn frame_length_u32_max_is_refused_without_reading_it() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    s.send(&[0xFF, 0xFF, 0xFF, 0xFF, 0x03]).unwrap();
    expect_error(s.answer(), ErrorCode::FRAME_TOO_LARGE);
    assert!(matches!(s.answer(), Answer::Closed));
    assert_serves(server.addr);
}

#[test]
fn truncated_frame_then_eof_is_closed() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    // Announces 100 bytes, sends 10, closes its side.
    s.send(&[100, 0, 0, 0, 0x04, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .unwrap();
    s.shutdown_write();
    s.until_closed();
    assert_serves(server.addr);
}

#[test]
fn a_frame_that_never_finishes_times_out() {
    let server = Server::start(&["--frame-timeout-secs", "1"]);
    let mut s = raw_connect(server.addr);
    let started = Instant::now();
    s.send(&[100, 0, 0, 0, 0x04, 1, 2, 3]).unwrap();
    expect_error(s.answer(), ErrorCode::FRAME_TIMEOUT);
    assert!(matches!(s.answer(), Answer::Closed));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_serves(server.addr);
}

#[test]
fn unknown_opcode_is_refused_and_closed() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    // A well-formed frame with opcode 0x3F (free request range) and a
    // response-range opcode sent by a client.
    s.send(&[1, 0, 0, 0, 0x3F]).unwrap();
    expect_error(s.answer(), ErrorCode::UNKNOWN_OPCODE);
    assert!(matches!(s.answer(), Answer::Closed));
    let mut s = raw_connect(server.addr);
    s.send(&[1, 0, 0, 0, 0x80]).unwrap();
    expect_error(s.answer(), ErrorCode::UNKNOWN_OPCODE);
    assert_serves(server.addr);
}

#[test]
fn oversized_key_value_and_batch_are_request_errors() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    // GET whose key length (70,000) is over the 64 KiB limit, with the key
    // bytes present: the connection stays usable.
    let key = vec![b'k'; 70_000];
    s.send(&encode(&Request::Get {
        key: Bytes::from(key.clone()),
    }))
    .unwrap();
    expect_error(s.answer(), ErrorCode::KEY_TOO_LARGE);
    s.send(&encode(&Request::Ping)).unwrap();
    assert!(matches!(s.answer(), Answer::Frame(Response::Pong)));

    let mut client = server.client();
    match client.put(&key, b"v") {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::KEY_TOO_LARGE),
        other => panic!("expected KEY_TOO_LARGE, got {other:?}"),
    }
    let ops: Vec<BatchOp> = (0..10_001)
        .map(|i| BatchOp::Delete {
            key: Bytes::from(format!("b{i}")),
        })
        .collect();
    match client.batch(ops) {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::BATCH_TOO_LARGE),
        other => panic!("expected BATCH_TOO_LARGE, got {other:?}"),
    }
    client
        .ping()
        .expect("the connection survives request errors");
    assert_serves(server.addr);
}

#[test]
fn ten_thousand_connections_are_bounded_and_others_are_served() {
    raise_fd_limit();
    let server = Server::start(&["--max-connections", "512"]);
    let mut bystander = server.client();
    let mut flood = Vec::new();
    let want = flood_size();
    let t0 = Instant::now();
    for _ in 0..want {
        // A SYN dropped on a full accept queue would cost a 1 s
        // retransmit; a short connect timeout keeps the flood fast.
        // Refusals and timeouts are fine: we only need the pressure.
        if let Ok(s) =
            std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(100))
        {
            flood.push(s);
        }
        if flood.len() % 1000 == 0 {
            bystander.ping().expect("served during the flood");
        }
    }
    eprintln!("flood: {} connections in {:?}", flood.len(), t0.elapsed());
    assert!(flood.len() > 1000, "opened only {}", flood.len());
    bystander
        .put(b"during", b"flood")
        .expect("put during flood");
    assert_eq!(
        bystander
            .get(b"during")
            .expect("get during flood")
            .as_deref(),
        Some(&b"flood"[..])
    );
    // Bounded: the server's resident memory stays modest.
    let rss_kib = rss_kib(server.pid());
    assert!(
        rss_kib < 512 * 1024,
        "server RSS {rss_kib} KiB during flood"
    );
    eprintln!("checks done at {:?}", t0.elapsed());
    drop(flood);
    common::wait_for(Duration::from_secs(30), "a new client to be served", || {
        std::panic::catch_unwind(|| assert_serves(server.addr)).ok()
    });
}

#[test]
fn a_one_byte_a_second_client_is_cut_off_and_others_are_served() {
    let server = Server::start(&["--frame-timeout-secs", "2"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let mut s = raw_connect(addr);
        let frame = encode(&Request::Put {
            key: Bytes::from_static(b"slow"),
            value: Bytes::from(vec![b'x'; 64]),
        });
        let started = Instant::now();
        for byte in &frame {
            if s.send(&[*byte]).is_err() {
                break;
            }
            // The server should cut us off long before the frame is done.
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            // Stop trickling once the server has answered.
            s.stream.set_nonblocking(true).unwrap();
            let mut probe = [0u8; 1];
            // Anything but "nothing yet" means answered or closed.
            let answered = !matches!(
                std::io::Read::read(&mut s.stream, &mut probe),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            s.stream.set_nonblocking(false).unwrap();
            if answered {
                return (started.elapsed(), true);
            }
        }
        (started.elapsed(), false)
    });
    // Meanwhile other clients are served promptly.
    let mut client = server.client();
    for i in 0..20u32 {
        let t = Instant::now();
        client.put(b"fast", &i.to_le_bytes()).expect("put");
        assert!(t.elapsed() < Duration::from_secs(2), "slow answer");
    }
    let (elapsed, answered) = slow.join().expect("slow client thread");
    assert!(answered, "the slow client was never cut off");
    assert!(
        elapsed < Duration::from_secs(10),
        "cut off after {elapsed:?}"
    );
    assert_serves(server.addr);
}

/// How many connections the flood test opens: 10,000, or fewer if the
/// open-files limit cannot allow it (the test process and the server share
/// the machine's limit).
fn flood_size() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    10_000.min(soft.saturating_sub(200))
}

#[test]
fn the_frame_timeout_restarts_with_each_frame() {
    // Frames that each complete within the timeout are fine even if the
    // connection always holds part of the next one.
    let server = Server::start(&["--frame-timeout-secs", "1"]);
    let mut s = raw_connect(server.addr);
    let ping = encode(&Request::Ping);
    s.send(&ping[..3]).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        // Finish the pending PING and start the next one.
        let mut bytes = ping[3..].to_vec();
        bytes.extend_from_slice(&ping[..3]);
        s.send(&bytes).unwrap();
        assert!(matches!(s.answer(), Answer::Frame(Response::Pong)));
    }
}

#[test]
fn hello_with_an_unsupported_version_is_refused_and_closed() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    s.send(&encode(&Request::Hello(kvstore::protocol::Hello {
        version: 0,
        auth: kvstore::protocol::Auth::None,
        client_name: "old".into(),
    })))
    .unwrap();
    expect_error(s.answer(), ErrorCode::UNSUPPORTED_VERSION);
    assert!(matches!(s.answer(), Answer::Closed));
    // A newer client is answered with the version this server speaks.
    let mut s = raw_connect(server.addr);
    s.send(&encode(&Request::Hello(kvstore::protocol::Hello {
        version: 9,
        auth: kvstore::protocol::Auth::Token(Bytes::from_static(b"ignored")),
        client_name: String::new(),
    })))
    .unwrap();
    match s.answer() {
        Answer::Frame(Response::HelloOk(hello)) => {
            assert_eq!(hello.version, kvstore::protocol::PROTOCOL_VERSION)
        }
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
}
