//! The port file (`--port-file PATH`): where a node says which addresses it
//! actually bound, so that tests and scripts can ask for port 0.
//!
//! Format, one `key=value` per line:
//!
//! ```text
//! listen=127.0.0.1:40123
//! http=127.0.0.1:40124
//! resp=127.0.0.1:40125      (only with --resp-listen)
//! ```
//!
//! It is written once both listeners are bound, to `PATH.tmp` and then
//! renamed, so a reader sees either no file or a complete one. An
//! unspecified bind address (`0.0.0.0`, `::`) is written as loopback of the
//! same family, which is what a local reader can connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The address a local client should use to reach a listener bound to `addr`.
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Writes the port file atomically and durably (temporary file, fsync,
/// rename, directory fsync).
pub fn write(path: &Path, listen: SocketAddr, http: SocketAddr) -> std::io::Result<()> {
    write_with_resp(path, listen, http, None)
}

/// [`write`], plus a `resp=host:port` line when the RESP listener is on.
pub fn write_with_resp(
    path: &Path,
    listen: SocketAddr,
    http: SocketAddr,
    resp: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut body = format!(
        "listen={}\nhttp={}\n",
        connectable(listen),
        connectable(http)
    );
    if let Some(resp) = resp {
        body.push_str(&format!("resp={}\n", connectable(resp)));
    }
    Ok(crate::durable::write_file(path, body.as_bytes())?)
}

/// Reads a port file back: `(listen, http)`. `None` while it is absent or
/// not parseable.
pub fn read(path: &Path) -> Option<(SocketAddr, SocketAddr)> {
    let text = std::fs::read_to_string(path).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("listen")?, field("http")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_loopback_for_unspecified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports");
        assert_eq!(read(&path), None);
        write(
            &path,
            "0.0.0.0:5555".parse().unwrap(),
            "127.0.0.1:9555".parse().unwrap(),
        )
        .unwrap();
        let (listen, http) = read(&path).unwrap();
        assert_eq!(listen, "127.0.0.1:5555".parse().unwrap());
        assert_eq!(http, "127.0.0.1:9555".parse().unwrap());
    }
}
