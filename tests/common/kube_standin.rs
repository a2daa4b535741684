//! A STAND-IN for the Kubernetes API server, in-process, over plain HTTP
//! on loopback. No API server can run on this machine, so the Lease
//! coordinator's tests (and later the manifest tests that patch pod
//! labels) run against this instead. It is not Kubernetes; it keeps the
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

/// A resource the stand-in serves.
struct Kind {
    api_version: &'static str,
    resource: &'static str,
    kind: &'static str,
    /// Parses and re-serialises an object as the typed client would.
    normalise: fn(Value) -> Result<Value, String>,
    /// The API server's semantic checks that the tests rely on (422).
    validate: fn(&Value) -> Result<(), String>,
}

const KINDS: &[Kind] = &[
    Kind {
        api_version: "coordination.k8s.io/v1",
        resource: "leases",
        kind: "Lease",
        normalise: normalise::<Lease>,
        validate: validate_lease,
    },
    Kind {
        api_version: "v1",
        resource: "pods",
        kind: "Pod",
        normalise: normalise::<Pod>,
        validate: |_| Ok(()),
    },
];

fn normalise<K: serde::Serialize + serde::de::DeserializeOwned>(v: Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// `ValidateLeaseSpec` of the API server, the parts a client can trip.
fn validate_lease(v: &Value) -> Result<(), String> {
    let spec = &v["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64() {
        if d <= 0 {
            return Err("spec.leaseDurationSeconds: Invalid value: must be greater than 0".into());
        }
    }
    if let Some(t) = spec["leaseTransitions"].as_i64() {
        if t < 0 {
            return Err(
                "spec.leaseTransitions: Invalid value: must be greater than or equal to 0".into(),
            );
        }
    }
    Ok(())
}

/// The objects, keyed by (resource, namespace, name).
#[derive(Default)]
pub struct Store {
    objects: BTreeMap<(String, String, String), Value>,
    resource_version: u64,
    uids: u64,
}

/// An answer: HTTP status and JSON body.
pub type Answer = (StatusCode, Value);

impl Store {
    /// Serves one request (no authentication: the HTTP layer checks it).
    pub fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let Some((kind, ns, name)) = route(path) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
        };
        let params = parse_query(query);
        if params.iter().any(|(k, _)| k == "watch" || k == "dryRun") {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the stand-in does not do watch or dryRun",
                None,
            );
        }
        match (method.as_str(), name) {
            ("GET", Some(name)) => self.get(kind, &ns, &name),
            ("GET", None) => {
                let selector = params
                    .iter()
                    .find(|(k, _)| k == "labelSelector")
                    .map(|(_, v)| v.as_str());
                self.list(kind, &ns, selector.unwrap_or(""))
            }
            ("POST", None) => self.create(kind, &ns, body),
            ("PUT", Some(name)) => self.update(kind, &ns, &name, body),
            ("PATCH", Some(name)) => self.patch(kind, &ns, &name, content_type, body),
            ("DELETE", Some(name)) => self.delete(kind, &ns, &name, body),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ),
        }
    }

    /// The stored object, for a test to inspect.
    pub fn object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects.get(&key(resource, ns, name)).cloned()
    }

    fn next_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn get(&self, kind: &Kind, ns: &str, name: &str) -> Answer {
        match self.objects.get(&key(kind.resource, ns, name)) {
            Some(obj) => (StatusCode::OK, obj.clone()),
            None => not_found(kind, name),
        }
    }

    fn list(&self, kind: &Kind, ns: &str, selector: &str) -> Answer {
        let requirements = match parse_selector(selector) {
            Ok(r) => r,
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
        };
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((r, n, _), _)| r == kind.resource && n == ns)
            .filter(|(_, obj)| {
                requirements
                    .iter()
                    .all(|req| req.matches(&obj["metadata"]["labels"]))
            })
            .map(|(_, obj)| {
                let mut item = obj.clone();
                if let Some(m) = item.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                item
            })
            .collect();
        let list = json!({
            "apiVersion": kind.api_version,
            "kind": format!("{}List", kind.kind),
            "metadata": { "resourceVersion": self.resource_version.to_string() },
            "items": items,
        });
        (StatusCode::OK, list)
    }

    fn create(&mut self, kind: &Kind, ns: &str, body: &[u8]) -> Answer {
        let mut obj = match parse_body(kind, ns, body) {
            Ok(obj) => obj,
            Err(answer) => return answer,
        };
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
            return invalid(kind, "", "metadata.name: Required value: name is required (the stand-in has no generateName)");
        };
        if self.objects.contains_key(&key(kind.resource, ns, &name)) {
            let msg = format!(
                "{}.{} \"{name}\" already exists",
                kind.resource,
                group(kind)
            );
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &msg,
                Some(details(kind, &name)),
            );
        }
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uids);
        let created = serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null);
        let version = self.next_version();
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = created;
        meta["resourceVersion"] = json!(version);
        match self.store(kind, ns, &name, obj) {
            Ok(obj) => (StatusCode::CREATED, obj),
            Err(answer) => answer,
        }
    }

    fn update(&mut self, kind: &Kind, ns: &str, name: &str, body: &[u8]) -> Answer {
        match parse_body(kind, ns, body) {
            Ok(obj) => self.replace(kind, ns, name, obj),
            Err(answer) => answer,
        }
    }

    fn patch(
        &mut self,
        kind: &Kind,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Answer {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let strategic = media == "application/strategic-merge-patch+json";
        if media != "application/merge-patch+json" && !strategic {
            let msg = format!("the stand-in does not do {media:?} patches (merge patches only)");
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &msg,
                None,
            );
        }
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the patch is not JSON",
                None,
            );
        };
        if strategic && has_list(&patch) {
            let msg =
                "the stand-in does not do strategic merge patches with lists (use a merge patch)";
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                msg,
                None,
            );
        }
        let Some(current) = self.objects.get(&key(kind.resource, ns, name)).cloned() else {
            return not_found(kind, name);
        };
        let mut obj = current;
        // A version in the patch is a precondition, as on the API server.
        if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
            if Some(rv) != obj["metadata"]["resourceVersion"].as_str() {
                return conflict(kind, name);
            }
        }
        merge_patch(&mut obj, &patch);
        self.replace(kind, ns, name, obj)
    }

    /// The update path shared by PUT and PATCH.
    fn replace(&mut self, kind: &Kind, ns: &str, name: &str, mut obj: Value) -> Answer {
        if obj["metadata"]["name"].as_str() != Some(name) {
            let msg = format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                obj["metadata"]["name"]
            );
            return status(StatusCode::BAD_REQUEST, "BadRequest", &msg, None);
        }
        let Some(old) = self.objects.get(&key(kind.resource, ns, name)).cloned() else {
            return not_found(kind, name);
        };
        let stored_version = old["metadata"]["resourceVersion"].clone();
        match obj["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() && Some(rv) != stored_version.as_str() => {
                return conflict(kind, name)
            }
            _ => {}
        }
        // Fields the server owns.
        for field in ["uid", "creationTimestamp", "namespace"] {
            obj["metadata"][field] = old["metadata"][field].clone();
        }
        obj["metadata"]["resourceVersion"] = stored_version;
        let normalised = match (kind.normalise)(obj.clone()) {
            Ok(n) => n,
            Err(e) => return bad_schema(kind, &e),
        };
        if normalised == old {
            return (StatusCode::OK, old);
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_version());
        match self.store(kind, ns, name, obj) {
            Ok(obj) => (StatusCode::OK, obj),
            Err(answer) => answer,
        }
    }

    fn delete(&mut self, kind: &Kind, ns: &str, name: &str, body: &[u8]) -> Answer {
        let Some(old) = self.objects.get(&key(kind.resource, ns, name)) else {
            return not_found(kind, name);
        };
        let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if let Some(rv) = options["preconditions"]["resourceVersion"].as_str() {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return conflict(kind, name);
            }
        }
        let old = self
            .objects
            .remove(&key(kind.resource, ns, name))
            .unwrap_or(Value::Null);
        self.next_version();
        (StatusCode::OK, old)
    }

    /// Checks the object against the schema and the API server's rules,
    /// then stores it in its normalised form.
    fn store(&mut self, kind: &Kind, ns: &str, name: &str, obj: Value) -> Result<Value, Answer> {
        let obj = (kind.normalise)(obj).map_err(|e| bad_schema(kind, &e))?;
        (kind.validate)(&obj).map_err(|e| invalid(kind, name, &e))?;
        self.objects
            .insert(key(kind.resource, ns, name), obj.clone());
        Ok(obj)
    }
}

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

/// `/api/v1/namespaces/NS/RES[/NAME]` or
/// `/apis/GROUP/VERSION/namespaces/NS/RES[/NAME]`.
fn route(path: &str) -> Option<(&'static Kind, String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (ns, resource, name) = match rest {
        ["namespaces", ns, resource] => (ns, resource, None),
        ["namespaces", ns, resource, name] => (ns, resource, Some(name.to_string())),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.resource == *resource)?;
    Some((kind, ns.to_string(), name))
}

fn parse_body(kind: &Kind, ns: &str, body: &[u8]) -> Result<Value, Answer> {
    let obj: Value = serde_json::from_slice(body).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body is not JSON: {e}"),
            None,
        )
    })?;
    if !obj.is_object() {
        return Err(bad_schema(kind, "the body is not an object"));
    }
    if obj["apiVersion"].as_str() != Some(kind.api_version)
        || obj["kind"].as_str() != Some(kind.kind)
    {
        let msg = format!(
            "the object's apiVersion/kind ({}/{}) does not match {}/{}",
            obj["apiVersion"], obj["kind"], kind.api_version, kind.kind
        );
        return Err(status(StatusCode::BAD_REQUEST, "BadRequest", &msg, None));
    }
    if let Some(other) = obj["metadata"]["namespace"].as_str() {
        if other != ns {
            let msg = "the namespace of the provided object does not match the namespace sent on the request";
            return Err(status(StatusCode::BAD_REQUEST, "BadRequest", msg, None));
        }
    }
    Ok(obj)
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else
/// replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in fields {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn has_list(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m.values().any(has_list),
        _ => false,
    }
}

/// An equality-based label selector requirement.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        }
    }
}

fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.contains(" in ") || part.contains(" notin ") || part.contains('(') {
            return Err(format!(
                "the stand-in does not do set-based selectors: {part:?}"
            ));
        }
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::Absent(k.trim().into())
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn key(resource: &str, ns: &str, name: &str) -> (String, String, String) {
    (resource.to_string(), ns.to_string(), name.to_string())
}

fn group(kind: &Kind) -> &'static str {
    kind.api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn details(kind: &Kind, name: &str) -> Value {
    json!({ "name": name, "group": group(kind), "kind": kind.resource })
}

fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Answer {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    (code, s)
}

fn not_found(kind: &Kind, name: &str) -> Answer {
    let msg = format!("{}.{} \"{name}\" not found", kind.resource, group(kind));
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &msg,
        Some(details(kind, name)),
    )
}

fn conflict(kind: &Kind, name: &str) -> Answer {
    let msg = format!(
        "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
        kind.resource,
        group(kind)
    );
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &msg,
        Some(details(kind, name)),
    )
}

fn bad_schema(kind: &Kind, e: &str) -> Answer {
    let msg = format!(
        "{} in version \"{}\" cannot be handled as a {}: {e}",
        kind.kind, kind.api_version, kind.kind
    );
    status(StatusCode::BAD_REQUEST, "BadRequest", &msg, None)
}

fn invalid(kind: &Kind, name: &str, e: &str) -> Answer {
    let msg = format!("{} \"{name}\" is invalid: {e}", kind.kind);
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &msg,
        Some(details(kind, name)),
    )
}
