//! The first bytes of a connection on a plaintext port: a TLS ClientHello
//! is recognised and the connection closed at once, but only by its full
//! shape (docs/PROTOCOL.md section 1), so no valid first frame is taken
//! for one. A frame of N = 790 + k·65,536 bytes starts `16 03 kk 00`,
//! which is also how a TLS record header starts; every opcode at such
//! lengths must get the protocol's answer, never a silent close.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{raw_connect, resp_addr, Answer, Server, NET_DEADLINE};
use kvstore::protocol::{opcode, Response};

/// The lengths whose first bytes read `16 03 kk 00`: a TLS record header
/// of version 3.k. k = 0..=4 covers SSL 3.0 to TLS 1.3's record versions.
const LENGTHS: [u32; 5] = [790, 66_326, 131_862, 197_398, 262_934];

/// A frame of body length `n` with `opcode`, whose payload is a valid
/// request where the layout allows one at that length, else bytes the
/// server must refuse with an ERROR.
fn frame_of_length(op: u8, n: u32) -> Vec<u8> {
    let payload_len = usize::try_from(n - 1).expect("fits");
    let bytes_field = |len: usize| u32::try_from(len).expect("fits").to_le_bytes();
    let payload: Vec<u8> = match op {
        // version 1, no auth, empty credential, client name of the rest.
        opcode::HELLO => {
            let name = payload_len - 11;
            [
                &1u16.to_le_bytes()[..],
                &[0],
                &bytes_field(0),
                &bytes_field(name),
                &vec![b'n'; name],
            ]
            .concat()
        }
        // One key of the rest.
        opcode::GET | opcode::DELETE | opcode::EXISTS => {
            let key = payload_len - 4;
            [&bytes_field(key)[..], &vec![b'k'; key]].concat()
        }
        // A one-byte key, the value of the rest.
        opcode::PUT => {
            let value = payload_len - 9;
            [
                &bytes_field(1)[..],
                b"p",
                &bytes_field(value),
                &vec![b'v'; value],
            ]
            .concat()
        }
        // One put of a one-byte key.
        opcode::BATCH => {
            let value = payload_len - 14;
            [
                &1u32.to_le_bytes()[..],
                &[1],
                &bytes_field(1),
                b"b",
                &bytes_field(value),
                &vec![b'v'; value],
            ]
            .concat()
        }
        // A master address without a port: refused, nothing repointed.
        opcode::REPLICATE => {
            let text = payload_len - 4;
            [&bytes_field(text)[..], &vec![b'h'; text]].concat()
        }
        // Every other opcode: bytes its decoder refuses.
        _ => vec![0xFF; payload_len],
    };
    let mut frame = n.to_le_bytes().to_vec();
    frame.push(op);
    frame.extend_from_slice(&payload);
    assert_eq!(frame.len(), n as usize + 4);
    frame
}

#[test]
fn first_frames_that_start_like_a_tls_record_are_answered() {
    let server = Server::start(&[]);
    let mut opcodes = vec![
        opcode::HELLO,
        opcode::PING,
        opcode::GET,
        opcode::PUT,
        opcode::DELETE,
        opcode::EXISTS,
        opcode::BATCH,
        opcode::COMPACT,
        opcode::STATS,
        opcode::PROMOTE,
        opcode::REPLICATE,
        opcode::REPL_SYNC,
        opcode::REPL_ACK,
        opcode::SWITCHOVER,
        opcode::CLUSTER_STATUS,
        opcode::BACKUP,
    ];
    // Unknown and reserved opcodes, and a response opcode.
    opcodes.extend([0x12, 0x3F, 0x61, 0x70, 0x7F, 0x80, 0xFF]);
    for n in LENGTHS {
        for &op in &opcodes {
            let what = format!("opcode {op:#04x} ({}) at N = {n}", opcode::name(op));
            let frame = frame_of_length(op, n);
            assert_eq!(
                frame[..2],
                [0x16, 0x03],
                "{what}: the frame starts like TLS"
            );
            let mut s = raw_connect(server.addr);
            s.send(&frame).expect("send");
            let answer = match s.answer() {
                Answer::Frame(response) => response,
                Answer::Closed => panic!("{what}: closed without an answer"),
            };
            match (op, n, &answer) {
                (opcode::HELLO, 790, Response::HelloOk(_)) => {}
                (opcode::PUT | opcode::BATCH, _, Response::Ok) => {}
                (opcode::GET, 790, Response::NotFound) => {}
                (opcode::EXISTS, 790, Response::Exists(false)) => {}
                (opcode::DELETE, 790, Response::Deleted { existed: false }) => {}
                (opcode::HELLO | opcode::PUT | opcode::BATCH, 790, other) => {
                    panic!("{what}: a valid request got {other:?}")
                }
                (_, _, Response::Error { .. }) => {}
                (_, _, other) => panic!("{what}: expected an ERROR, got {other:?}"),
            }
        }
    }
    // The values written above are all there: nothing was cut short.
    let mut client = server.client();
    let value = client
        .get(b"p")
        .expect("get")
        .expect("PUT at the last length");
    assert_eq!(value.len(), *LENGTHS.last().expect("lengths") as usize - 10);
}

/// The first flight of a real TLS client: rustls's ClientHello.
fn client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .expect("client connection");
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("ClientHello");
    hello
}

#[test]
fn a_tls_client_on_the_plaintext_port_is_closed_at_once() {
    let server = Server::start(&["--resp-listen", "127.0.0.1:0"]);
    let hello = client_hello();
    for addr in [server.addr, resp_addr(&server)] {
        let mut s = TcpStream::connect_timeout(&addr, NET_DEADLINE).expect("connect");
        s.set_read_timeout(Some(NET_DEADLINE)).expect("timeout");
        s.write_all(&hello).expect("send the ClientHello");
        let mut rest = Vec::new();
        // Closed at once: EOF (or a reset) well before any timeout.
        match s.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{addr}: answered {rest:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{addr}: {e}"),
        }
    }
}

/// RESP's first bytes: a multibulk request starts with `*`, an inline one
/// with its command name; neither is ever taken for TLS, whatever the
/// lengths that follow.
#[test]
fn resp_requests_are_never_taken_for_tls() {
    let server = Server::start(&["--resp-listen", "127.0.0.1:0"]);
    let addr = resp_addr(&server);
    for n in LENGTHS {
        let value = vec![b'x'; n as usize];
        let request = kvstore::resp::parse::encode_request(&[b"SET", b"k", &value]);
        let mut s = TcpStream::connect_timeout(&addr, NET_DEADLINE).expect("connect");
        s.set_read_timeout(Some(NET_DEADLINE)).expect("timeout");
        s.write_all(&request).expect("send");
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply).expect("an answer");
        assert_eq!(&reply, b"+OK\r\n", "SET of {n} bytes");
        s.write_all(b"PING\r\n").expect("inline");
        let mut pong = [0u8; 7];
        s.read_exact(&mut pong).expect("PONG");
        assert_eq!(&pong, b"+PONG\r\n");
    }
}
