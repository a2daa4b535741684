//! The stand-in's objects and the API server semantics it keeps (see
//! `kube_standin.rs`).

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::wire::{has_list, merge_patch, parse_query, parse_selector};

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

fn key(resource: &str, ns: &str, name: &str) -> (String, String, String) {
    (resource.to_string(), ns.to_string(), name.to_string())
}

fn group(kind: &Kind) -> &'static str {
    kind.api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn details(kind: &Kind, name: &str) -> Value {
    json!({ "name": name, "group": group(kind), "kind": kind.resource })
}

pub(super) fn status(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Answer {
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
