//! The connection limit: over `--max-connections` a client is refused
//! promptly (an error and/or a close, never a hang), the clients already
//! connected are not disturbed, and a freed slot is reused.

use crate::common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::{metric, wait_for, Server, START_DEADLINE};

#[test]
fn over_the_limit_is_refused_and_a_freed_slot_is_reused() {
    let server = Server::start(&["--max-connections", "2"]);
    let http = server.http_addr;
    let until = |what: &str, name: &str, want: f64| {
        wait_for(START_DEADLINE, what, || {
            (metric(http, name) == want).then_some(())
        });
    };

    let first = TcpStream::connect(server.addr).unwrap();
    let _second = TcpStream::connect(server.addr).unwrap();
    until("two accepted", "kvstore_connections_active", 2.0);

    // The third is closed by the server (after an optional error message).
    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    match third.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the refused connection was not closed: {e}"),
    }
    until("one rejected", "kvstore_connections_rejected_total", 1.0);
    assert_eq!(metric(http, "kvstore_connections_active"), 2.0);

    // A freed slot is taken by the next client.
    drop(first);
    until("slot freed", "kvstore_connections_active", 1.0);
    let _fourth = TcpStream::connect(server.addr).unwrap();
    until("fourth accepted", "kvstore_connections_accepted_total", 3.0);
    assert_eq!(metric(http, "kvstore_connections_active"), 2.0);
    assert_eq!(metric(http, "kvstore_connections_rejected_total"), 1.0);
}
