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
