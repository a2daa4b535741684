//! TLS with rustls (ring provider, TLS 1.2 and 1.3): loading PEM files,
//! the server side of the client port and RESP listener, and the client
//! side used by the client library, the CLI, replicas and backups.
//!
//! Invariants:
//! - a server with a certificate accepts TLS only; a plaintext peer gets
//!   one plaintext refusal naming the problem and is closed, so it fails
//!   fast instead of waiting on a handshake that will never come;
//! - the client always verifies the server's certificate against the CA
//!   it was given (there is no "insecure" switch), under the host name
//!   of the address or an explicit `--tls-server-name`;
//! - the handshake is bounded by the caller's timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::stream::{ClientStream, ServerStream};

/// First byte of a TLS record carrying a handshake message: what every
/// TLS client sends first.
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// How soon a TLS port looks again at a peer's first bytes when they are
/// too few to tell a ClientHello from plaintext.
const PEEK_AGAIN: Duration = Duration::from_millis(10);

/// Why TLS could not be set up. Each message names the file or the peer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("invalid TLS setup: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid CA certificate in {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName { name: String },
}

/// The TLS files of a node or a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain this node serves (leaf first).
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM CA bundle that the servers this side connects to must chain to.
    pub ca: Option<PathBuf>,
    /// Name to verify instead of the host part of the address.
    pub server_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PEM CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// The server configuration for `cert` and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs("--tls-cert (KVSTORE_TLS_CERT)", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "--tls-key (KVSTORE_TLS_KEY)",
            path: key.to_path_buf(),
            expected: "PEM private key",
        },
        other => TlsError::File {
            what: "--tls-key (KVSTORE_TLS_KEY)",
            path: key.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Arc::new(config))
}

/// The client configuration trusting the CAs in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("--tls-ca (KVSTORE_TLS_CA)", ca)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client side: a CA to verify against and an optional name override.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Loads `files.ca`; `None` when no CA is set (plaintext).
    pub fn from_files(files: &TlsFiles) -> Result<Option<Connector>, TlsError> {
        let Some(ca) = &files.ca else {
            return Ok(None);
        };
        Ok(Some(Connector {
            config: client_config(ca)?,
            server_name: files.server_name.clone(),
        }))
    }

    /// This connector for a node reached at an address resolved from
    /// `name`: it verifies `name`, unless a name was set explicitly
    /// (`--tls-server-name`), which still wins.
    pub fn for_name(&self, name: &str) -> Connector {
        Connector {
            config: Arc::clone(&self.config),
            server_name: Some(self.server_name.clone().unwrap_or_else(|| name.to_string())),
        }
    }

    /// The name the server's certificate must carry when reached at
    /// `addr` (`host:port`, `[v6]:port`).
    pub fn server_name(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_string(),
        };
        ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName { name })
    }

    /// Runs the client handshake on `tcp`, connected to `addr`.
    pub async fn connect(&self, tcp: TcpStream, addr: &str) -> std::io::Result<ClientStream> {
        let name = self.server_name(addr).map_err(std::io::Error::other)?;
        let tls = TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_error(addr, e))?;
        Ok(ClientStream::Tls(Box::new(tls)))
    }
}

/// A failed client handshake, with the likeliest cause spelled out.
fn handshake_error(addr: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "TLS handshake with {addr} failed: {e} (does the server use TLS on this port, \
             and does its certificate chain to --tls-ca?)"
        ),
    )
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

/// What the first bytes of a connection say about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS ClientHello, by its full shape.
    ClientHello,
    /// Anything else: a kvstore frame, a RESP request.
    NotTls,
    /// Too few bytes yet, all of them consistent with a ClientHello.
    Undecided,
}

/// Bytes of a ClientHello's start that [`first_bytes`] needs to decide.
pub const CLIENT_HELLO_PREFIX: usize = 11;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The smallest ClientHello body: version (2), random (32), an empty
/// session id (1), one cipher suite (2 + 2), one compression method (1 + 1).
const MIN_CLIENT_HELLO: u32 = 41;

/// Recognises a TLS ClientHello from the first bytes a peer sent, by its
/// whole shape, not by its first byte: record type 22 (handshake), record
/// version 3.x, record length L, handshake type 1 (ClientHello), handshake
/// length L − 4 and at least 41, `legacy_version` 3.3 (every TLS 1.2 and
/// 1.3 client). A kvstore frame may start with the same three bytes (N =
/// 790 + k·65,536 reads `16 03 kk 00`) and a RESP request never does, but
/// neither fits the whole shape. Decides as soon as one byte does not fit,
/// at the latest after [`CLIENT_HELLO_PREFIX`] bytes.
pub fn first_bytes(prefix: &[u8]) -> FirstBytes {
    let at = |i: usize| prefix.get(i).copied();
    let differs = |i: usize, want: u8| at(i).is_some_and(|b| b != want);
    if differs(0, HANDSHAKE_RECORD) || differs(1, 3) || differs(5, CLIENT_HELLO) {
        return FirstBytes::NotTls;
    }
    if let (Some(hi), Some(lo)) = (at(3), at(4)) {
        let record = u32::from(u16::from_be_bytes([hi, lo]));
        if record < MIN_CLIENT_HELLO + 4 {
            return FirstBytes::NotTls;
        }
        if let (Some(a), Some(b), Some(c)) = (at(6), at(7), at(8)) {
            let handshake = u32::from_be_bytes([0, a, b, c]);
            if handshake != record - 4 {
                return FirstBytes::NotTls;
            }
        }
    }
    if differs(9, 3) || differs(10, 3) {
        return FirstBytes::NotTls;
    }
    if prefix.len() >= CLIENT_HELLO_PREFIX {
        FirstBytes::ClientHello
    } else {
        FirstBytes::Undecided
    }
}

/// What a TLS server port does with one accepted connection.
pub enum Accepted {
    /// Ready to serve.
    Stream(ServerStream),
    /// Closed; the reason is for the log.
    Refused(String),
}

/// Accepts `tcp` on a port that requires TLS when `acceptor` is set. A
/// peer whose first bytes are not a ClientHello ([`first_bytes`]) gets
/// `refusal` (the protocol's own error, in plaintext) and is closed. Waits
/// at most `timeout` for the first bytes and the handshake.
pub async fn accept(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    timeout: Duration,
    refusal: &[u8],
) -> Accepted {
    let Some(acceptor) = acceptor else {
        return Accepted::Stream(ServerStream::Plain(tcp));
    };
    let mut tcp = tcp;
    let peeked = async {
        let mut first = [0u8; CLIENT_HELLO_PREFIX];
        loop {
            let n = tcp.peek(&mut first).await?;
            if n == 0 {
                return Ok(None);
            }
            match first_bytes(first.get(..n).unwrap_or_default()) {
                // The rest of the record header is on its way (a client
                // sends its ClientHello in one write; this is rare): look
                // again shortly. Peeking leaves the bytes for the handshake.
                FirstBytes::Undecided => tokio::time::sleep(PEEK_AGAIN).await,
                verdict => return Ok::<_, std::io::Error>(Some(verdict)),
            }
        }
    };
    match tokio::time::timeout(timeout, peeked).await {
        Err(_) => return Accepted::Refused("no TLS handshake in time".into()),
        Ok(Err(e)) => return Accepted::Refused(format!("I/O error before the handshake: {e}")),
        Ok(Ok(None)) => return Accepted::Refused("closed before the handshake".into()),
        Ok(Ok(Some(FirstBytes::ClientHello))) => {}
        Ok(Ok(Some(_))) => {
            let _ = tokio::time::timeout(timeout, async {
                let _ = tcp.write_all(refusal).await;
                let _ = tcp.shutdown().await;
            })
            .await;
            return Accepted::Refused("plaintext client on a TLS port".into());
        }
    }
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Err(_) => Accepted::Refused("TLS handshake timed out".into()),
        Ok(Err(e)) => Accepted::Refused(format!("TLS handshake failed: {e}")),
        Ok(Ok(tls)) => Accepted::Stream(ServerStream::Tls(Box::new(tls))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_handles_names_ips_and_v6() {
        assert_eq!(
            host_of("kvstore-0.kvstore-headless:5555"),
            "kvstore-0.kvstore-headless"
        );
        assert_eq!(host_of("127.0.0.1:5555"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5555"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    /// rustls's first flight: a real ClientHello.
    fn client_hello() -> Vec<u8> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        tls.write_tls(&mut out).expect("ClientHello");
        out
    }

    #[test]
    fn a_client_hello_is_recognised_by_its_whole_shape() {
        let hello = client_hello();
        assert_eq!(first_bytes(&hello), FirstBytes::ClientHello);
        // Every prefix is undecided until the shape is complete.
        for n in 0..CLIENT_HELLO_PREFIX {
            assert_eq!(first_bytes(&hello[..n]), FirstBytes::Undecided, "{n}");
        }
    }

    #[test]
    fn frames_and_resp_requests_that_start_like_a_record_are_not_tls() {
        // HELLO, N = 790, 778-byte client name: 16 03 00 00 01 01 00 00 ...
        let hello = [
            0x16, 0x03, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(first_bytes(&hello), FirstBytes::NotTls);
        // PUT, N = 66,326, 1-byte key: 16 03 01 00 04 01 00 00 00 ...
        let put = [
            0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, b'p', 0x00,
        ];
        assert_eq!(first_bytes(&put), FirstBytes::NotTls);
        // A record-length-consistent prefix with another legacy_version.
        let old = [
            0x16, 0x03, 0x01, 0x00, 0x31, 0x01, 0x00, 0x00, 0x2d, 0x03, 0x01,
        ];
        assert_eq!(first_bytes(&old), FirstBytes::NotTls);
        assert_eq!(first_bytes(b"*1\r\n$4\r\nPING\r\n"), FirstBytes::NotTls);
        assert_eq!(first_bytes(b"PING\r\n"), FirstBytes::NotTls);
        assert_eq!(first_bytes(&[0x16, 0x00]), FirstBytes::NotTls);
        assert_eq!(first_bytes(&[0x16]), FirstBytes::Undecided);
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").expect("write");
        let err = client_config(&empty).expect_err("no certificate");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = server_config(&missing, &missing).expect_err("missing");
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }
}
