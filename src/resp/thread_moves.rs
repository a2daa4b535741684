//! Connections moved between the connection threads
//! ([`crate::node::workers`]) by RESP clients' own requests: a node in
//! this process, its balancing driven by hand, so each move happens
//! exactly when the test orders it.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::{Durability, Engine, Options};
use crate::lifecycle::{Health, ShutdownTrigger};
use crate::node::memory::Budget;
use crate::node::workers::{Move, Workers};
use crate::node::{Limits, Node};
use crate::replication::{Replication, RoleView};
use crate::security::Security;

/// A master node in this process, without its HTTP server, and the
/// trigger of its shutdown.
async fn node(dir: &std::path::Path) -> (Arc<Node>, ShutdownTrigger) {
    let engine = Engine::open(dir, Options::default()).unwrap();
    let health = Arc::new(Health::default());
    let security = Arc::new(Security::load(Default::default(), Default::default()).unwrap());
    let settings = crate::replication::Settings {
        security: Arc::clone(&security),
        ..Default::default()
    };
    let replication = Replication::start(
        engine.clone(),
        settings,
        Arc::clone(&health),
        RoleView::Master,
    )
    .await
    .unwrap();
    health.set_engine_open();
    let (trigger, shutdown) = crate::lifecycle::channel();
    let limits = Limits::default();
    let node = Node {
        memory: Arc::new(Budget::new(limits.client_memory_bytes)),
        engine,
        durability: Durability::Never,
        security,
        replication,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        limits,
        shutdown,
        health,
        ha: None,
    };
    (Arc::new(node), trigger)
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Sends `requests` in one write and reads exactly `expected` back.
async fn exchange(stream: &mut TcpStream, requests: &[u8], expected: &[u8]) {
    stream.write_all(requests).await.unwrap();
    let mut got = vec![0; expected.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("answered in time")
        .unwrap();
    if got.starts_with(b"-") && !expected.starts_with(b"-") {
        let mut more = [0; 200];
        let n = stream.read(&mut more).await.unwrap_or(0);
        got.extend_from_slice(&more[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Polls until the pool's connections per thread are `loads`.
async fn settle(workers: &Workers, loads: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while workers.loads() != loads {
        assert!(
            Instant::now() < deadline,
            "loads {:?}, not {loads:?}",
            workers.loads()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(name, key)` of each client below, for its own state and keys.
const CLIENTS: [(&str, &str); 2] = [("one", "k1"), ("two", "k2")];

/// Sends each client the same kind of request (`make` of its name and
/// key) and checks each answer.
async fn each(clients: &mut [TcpStream], make: impl Fn(&str, &str) -> (Vec<u8>, Vec<u8>)) {
    for (stream, (name, key)) in clients.iter_mut().zip(CLIENTS) {
        let (request, answer) = make(name, key);
        exchange(stream, &request, &answer).await;
    }
}

fn bulk(v: &str) -> Vec<u8> {
    format!("${}\r\n{v}\r\n", v.len()).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_between_threads_between_requests_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let (node, trigger) = node(dir.path()).await;
    let workers = Arc::new(Workers::start(2).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = crate::resp::Settings::new(addr, &node);
    let served = tokio::spawn(crate::resp::serve(
        listener,
        Arc::clone(&node),
        settings,
        Arc::clone(&workers),
    ));
    let mut clients = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // Per-connection state that must travel with it: its name.
    each(&mut clients, |name, _| {
        (command(&["CLIENT", "SETNAME", name]), b"+OK\r\n".to_vec())
    })
    .await;
    // Both on the first thread (the pool fills one thread first).
    assert_eq!(workers.loads(), vec![2, 0]);
    // One of them (whichever reaches a pause between requests first)
    // goes to the second thread; the other stays.
    workers.order(Move {
        from: 0,
        to: 1,
        count: 1,
        pack: false,
    });
    each(&mut clients, |_, key| {
        (command(&["SET", key, "1"]), b"+OK\r\n".to_vec())
    })
    .await;
    settle(&workers, &[1, 1]).await;
    each(&mut clients, |name, key| {
        let mut request = command(&["CLIENT", "GETNAME"]);
        request.extend(command(&["GET", key]));
        let mut answer = bulk(name);
        answer.extend(bulk("1"));
        (request, answer)
    })
    .await;
    // Back to the first thread, in the middle of long pipelines.
    workers.order(Move {
        from: 1,
        to: 0,
        count: 1,
        pack: true,
    });
    each(&mut clients, |name, key| {
        let (mut request, mut answer) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let (k, v) = (format!("{key}-{i}"), i.to_string());
            request.extend(command(&["SET", &k, &v]));
            request.extend(command(&["GET", &k]));
            answer.extend(b"+OK\r\n");
            answer.extend(bulk(&v));
        }
        request.extend(command(&["CLIENT", "GETNAME"]));
        answer.extend(bulk(name));
        (request, answer)
    })
    .await;
    settle(&workers, &[2, 0]).await;
    // What one wrote, the other reads.
    each(&mut clients, |_, key| {
        let other = if key == "k1" { "k2-199" } else { "k1-199" };
        (command(&["GET", other]), bulk("199"))
    })
    .await;
    // A connection that closes after moving leaves no seat behind.
    drop(clients);
    settle(&workers, &[0, 0]).await;
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the listener drains")
        .unwrap();
}
