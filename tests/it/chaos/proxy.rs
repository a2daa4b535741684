//! A fault-injecting TCP proxy on loopback, placed between a replica and
//! its master. Every accepted connection is pumped both ways by two
//! threads; the current [`Mode`] decides what happens to each chunk:
//! forwarded, delayed, duplicated once (which breaks the framing, as a
//! buggy middlebox would), or dropped (a partition: the bytes vanish and
//! the peers see silence until their timeouts fire). [`Proxy::cut`] closes
//! every open connection at once (a reset link).
//!
//! Bounded: sockets have short read timeouts, so every pump notices a cut
//! or the proxy being dropped within ~50 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    Delay = 1,
    DuplicateOnce = 2,
    Drop = 3,
}

struct Shared {
    mode: AtomicU8,
    /// Bumped by `cut`: pumps of an older generation close their sockets.
    generation: AtomicU64,
    stopped: AtomicBool,
    pub faults: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on("127.0.0.1:0", target)
    }

    /// A proxy listening on `bind` (e.g. the root side of a veth pair).
    pub fn start_on(bind: &str, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(bind).expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass as u8),
            generation: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            faults: AtomicU64::new(0),
        });
        let s = shared.clone();
        thread::spawn(move || {
            while !s.stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let gen = s.generation.load(Ordering::Relaxed);
                        let Ok(up) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        for (from, to) in [(&down, &up), (&up, &down)] {
                            let (from, to) = (from.try_clone(), to.try_clone());
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let s = s.clone();
                                thread::spawn(move || pump(from, to, gen, &s));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { addr, shared }
    }

    pub fn set(&self, mode: Mode) {
        if mode != Mode::Pass {
            self.shared.faults.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Closes every connection open now; new ones are accepted.
    pub fn cut(&self) {
        self.shared.faults.fetch_add(1, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, gen: u64, s: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = to.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if s.generation.load(Ordering::Relaxed) != gen {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        let ok = match s.mode.load(Ordering::Relaxed) {
            1 => {
                thread::sleep(Duration::from_millis(30));
                to.write_all(chunk).is_ok()
            }
            2 => {
                // One duplicated chunk, then back to passing bytes.
                s.mode.store(Mode::Pass as u8, Ordering::Relaxed);
                to.write_all(chunk).is_ok() && to.write_all(chunk).is_ok()
            }
            3 => true,
            _ => to.write_all(chunk).is_ok(),
        };
        if !ok {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
