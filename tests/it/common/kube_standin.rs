//! A STAND-IN for the Kubernetes API server, in-process, over plain HTTP
//! on loopback. No API server can run on this machine, so the Lease
//! coordinator's tests and the manifest tests (tests/it/k8s.rs: the pods'
//! role labels the master patches, the Services resolved through them) run
//! against this instead. It is not Kubernetes; it keeps the
//! semantics the coordinator depends on (docs/RELIABILITY.md, "The
//! Kubernetes API stand-in"):
//! - `metadata.resourceVersion` from one global counter, bumped by every
//!   write that changes an object; an update whose `resourceVersion` is not
//!   the stored one gets 409 Conflict; an update without one is
//!   unconditional (as the API server allows for Leases and Pods); an update
//!   that changes nothing keeps the version (the API server skips no-op
//!   writes).
//! - 404 NotFound, 409 AlreadyExists on create, 400 on a name or kind that
//!   does not match the URL or a body that does not fit the schema, 422 on
//!   a Lease spec the API server rejects, 401 without the bearer token;
//!   errors are `Status` objects.
//! - Objects are stored and returned as k8s-openapi (de)serialises them
//!   (unknown fields dropped, as the API server does); list items carry no
//!   `apiVersion`/`kind`, as in the API server's lists.
//! - Resources: `coordination.k8s.io/v1` `leases` and `v1` `pods`,
//!   namespaced. Verbs: get, list (equality label selectors), create,
//!   update (PUT), patch (JSON merge patch; a strategic merge patch only
//!   without lists, where both mean the same), delete (at once: there is
//!   no kubelet, no graceful deletion, no finalizers).
//!
//! `start_tls` serves HTTPS with a certificate from a fresh CA, so the
//! client's TLS (rustls with ring, as in a pod) is exercised too.
//!
//! It does NOT do watches, server-side apply, JSON patch, field or set
//! label selectors, admission, RBAC, defaulting, or the API server's own
//! clock-driven behaviour; tests must not rely on any of it.
//!
//! Include with `#[path = "common/kube_standin.rs"] mod kube_standin;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[path = "kube_standin/store.rs"]
mod store;
#[path = "kube_standin/wire.rs"]
mod wire;

use store::status;
pub use store::{Answer, Store};

/// The stand-in served over HTTP (or HTTPS) on a loopback port, on its
/// own thread (so sync and async tests can use it alike). Stops on drop.
pub struct KubeStandIn {
    /// `http://127.0.0.1:PORT` (`https://` with TLS): the API server URL.
    pub url: String,
    /// The bearer token every request must carry.
    pub token: String,
    /// With TLS: the PEM file of the CA that signed the stand-in's
    /// certificate (what a pod finds in its service account).
    pub ca_file: Option<PathBuf>,
    /// Holds the TLS files.
    _pki: Option<tempfile::TempDir>,
    store: Arc<Mutex<Store>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    token: String,
}

impl KubeStandIn {
    /// Plain HTTP.
    pub fn start() -> KubeStandIn {
        KubeStandIn::launch(None)
    }

    /// HTTPS with a certificate for 127.0.0.1 signed by a fresh CA
    /// (`ca_file`), served with kvstore's own rustls (ring) configuration.
    pub fn start_tls() -> KubeStandIn {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "kube stand-in CA");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("sign");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca_cert.pem()).expect("write CA");
        std::fs::write(path("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(path("key.pem"), key.serialize_pem()).expect("write key");
        let config = kvstore::security::tls::server_config(&path("cert.pem"), &path("key.pem"))
            .expect("stand-in TLS configuration");
        let mut standin = KubeStandIn::launch(Some(tokio_rustls::TlsAcceptor::from(config)));
        standin.ca_file = Some(path("ca.pem"));
        standin._pki = Some(dir);
        standin
    }

    fn launch(tls: Option<tokio_rustls::TlsAcceptor>) -> KubeStandIn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
        listener.set_nonblocking(true).expect("nonblocking");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let token = format!("stand-in-token-{}", std::process::id());
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = Shared {
            store: store.clone(),
            token: token.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stand-in runtime");
            rt.block_on(async move {
                let tcp = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(serve).with_state(shared);
                match tls {
                    Some(acceptor) => run(TlsListener { tcp, acceptor }, app, rx).await,
                    None => run(tcp, app, rx).await,
                }
            });
        });
        KubeStandIn {
            url,
            token,
            ca_file: None,
            _pki: None,
            store,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// One request straight to the store (no HTTP, no token): for a test
    /// to seed or inspect objects, e.g. a Lease with any `renewTime`.
    pub fn request(&self, method: Method, path: &str, body: Value) -> Answer {
        let body = serde_json::to_vec(&body).expect("json");
        let mut store = self.store.lock().expect("stand-in store");
        store.handle(&method, path, "", "application/merge-patch+json", &body)
    }

    /// The stored object, if any.
    pub fn object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.store
            .lock()
            .expect("stand-in store")
            .object(resource, ns, name)
    }
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run<L>(listener: L, app: axum::Router, stop: tokio::sync::oneshot::Receiver<()>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
}

/// Accepts TCP connections and completes the TLS handshake; a client that
/// fails it is dropped and the next one accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!("Bearer {}", shared.token);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let (code, value) = if auth != Some(expected.as_str()) {
        status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        )
    } else {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut store = match shared.store.lock() {
            Ok(store) => store,
            Err(poisoned) => poisoned.into_inner(),
        };
        store.handle(
            &method,
            uri.path(),
            uri.query().unwrap_or(""),
            content_type,
            &body,
        )
    };
    (
        code,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}
