//! A fake Kubernetes API server, served by axum on 127.0.0.1, that the real kube-rs client of
//! the control plane talks HTTP to. It keeps Pods, Services and Ingresses in memory, records
//! every request, understands server-side apply, delete and label-selected lists, fails
//! requests on demand with a Kubernetes `Status` (409, 422, 500, ...), and holds requests on
//! demand (before or after they take effect) until the test releases them, which is how tests
//! order races and play an API server that stops answering.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use playpod::control::config::{Catalog, SessionConfig};
use playpod::control::metrics::Metrics;
use playpod::control::probe::{Readiness, ReadyProbe};
use playpod::control::{ControlPlane, Error, RetryPolicy};
use serde_json::{Value, json};

pub const NAMESPACE: &str = "games";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// `pods`, `services` or `ingresses`.
    pub resource: String,
    pub namespace: String,
    /// Empty for collection requests (list).
    pub name: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: Value,
}

#[derive(Debug)]
struct Failure {
    method: Method,
    resource: String,
    code: u16,
    left: u32,
}

/// When a held request waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Before it takes effect (and before any injected failure): the API server has not got to it.
    Before,
    /// After it took effect, before the answer: the object is stored (or deleted, or the list
    /// read) but the client hears nothing yet.
    After,
}

/// A request held by the fake until the test releases it.
#[derive(Debug)]
pub struct Gate {
    arrived: tokio::sync::Semaphore,
    release: tokio::sync::Semaphore,
}

impl Gate {
    /// Waits until the held request has arrived (and, with [`Hold::After`], taken effect).
    pub async fn arrived(&self) {
        self.arrived.acquire().await.unwrap().forget();
    }

    /// Lets the held request go on.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

#[derive(Debug)]
struct Held {
    method: Method,
    resource: String,
    when: Hold,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct FakeState {
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    requests: Vec<Recorded>,
    failures: VecDeque<Failure>,
    holds: VecDeque<Held>,
    next_uid: u64,
}

/// The fake API server.
#[derive(Debug, Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeApi {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// A kube-rs client of this server.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        config.default_namespace = NAMESPACE.to_owned();
        config.read_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).unwrap()
    }

    /// Fails the next `times` requests of `method` on `resource` with `code`.
    pub fn fail(&self, method: Method, resource: &str, code: u16, times: u32) {
        self.state.lock().unwrap().failures.push_back(Failure {
            method,
            resource: resource.to_owned(),
            code,
            left: times,
        });
    }

    /// Holds the next request of `method` on `resource` (`Hold::Before` or `Hold::After` it takes
    /// effect) until the returned gate is released; a request never released plays an API
    /// server that stopped answering.
    pub fn hold(&self, method: Method, resource: &str, when: Hold) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            arrived: tokio::sync::Semaphore::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        self.state.lock().unwrap().holds.push_back(Held {
            method,
            resource: resource.to_owned(),
            when,
            gate: gate.clone(),
        });
        gate
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests so far, as "METHOD resource".
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.resource))
            .collect()
    }

    /// Fails the test if any session object is left.
    pub fn assert_no_objects(&self) {
        for resource in ["pods", "services", "ingresses"] {
            assert!(self.names(resource).is_empty(), "{resource} left behind");
        }
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// The stored object, if any.
    pub fn object(&self, resource: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(resource.to_owned(), NAMESPACE.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Names of the stored objects of `resource`.
    pub fn names(&self, resource: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .objects
            .keys()
            .filter(|(r, _, _)| r == resource)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    /// Stores an object as if someone else had made it.
    pub fn insert(&self, resource: &str, object: Value) {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        self.state
            .lock()
            .unwrap()
            .objects
            .insert((resource.to_owned(), NAMESPACE.to_owned(), name), object);
    }

    /// Removes an object behind the control plane's back.
    pub fn remove(&self, resource: &str, name: &str) {
        self.state.lock().unwrap().objects.remove(&(
            resource.to_owned(),
            NAMESPACE.to_owned(),
            name.to_owned(),
        ));
    }

    /// Sets a pod's status, as the kubelet would.
    pub fn set_pod_status(&self, name: &str, status: Value) {
        let mut state = self.state.lock().unwrap();
        let pod = state
            .objects
            .get_mut(&("pods".to_owned(), NAMESPACE.to_owned(), name.to_owned()))
            .expect("pod exists");
        pod["status"] = status;
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        })),
    )
        .into_response()
}

/// `/api/v1/namespaces/NS/pods[/NAME]`, `/apis/networking.k8s.io/v1/namespaces/NS/ingresses/NAME`.
fn parse_path(path: &str) -> Option<(String, String, String)> {
    let rest = path
        .strip_prefix("/api/v1/namespaces/")
        .or_else(|| path.strip_prefix("/apis/networking.k8s.io/v1/namespaces/"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [ns, resource] => Some((resource.to_string(), ns.to_string(), String::new())),
        [ns, resource, name] => Some((resource.to_string(), ns.to_string(), name.to_string())),
        _ => None,
    }
}

fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => labels.get(term).is_some(),
        })
}

async fn handle(State(state): State<Arc<Mutex<FakeState>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let Some((resource, namespace, name)) = parse_path(parts.uri.path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let held = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded {
            method: parts.method.clone(),
            resource: resource.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body_json.clone(),
        });
        let at = state
            .holds
            .iter()
            .position(|h| h.method == parts.method && h.resource == resource);
        at.and_then(|at| state.holds.remove(at))
    };
    let wait = |gate: Arc<Gate>| async move {
        gate.arrived.add_permits(1);
        gate.release.acquire().await.unwrap().forget();
    };
    let mut after = None;
    if let Some(held) = held {
        match held.when {
            Hold::Before => wait(held.gate).await,
            Hold::After => after = Some(held.gate),
        }
    }
    let response = answer(
        &mut state.lock().unwrap(),
        parts.method,
        (resource, namespace, name),
        &query,
        &content_type,
        body_json,
    );
    if let Some(gate) = after {
        wait(gate).await;
    }
    response
}

/// What the fake does with a request (a held one once it is let go on).
fn answer(
    state: &mut FakeState,
    method: Method,
    (resource, namespace, name): (String, String, String),
    query: &BTreeMap<String, String>,
    content_type: &str,
    body_json: Value,
) -> Response {
    if let Some(failure) = state
        .failures
        .iter_mut()
        .find(|f| f.method == method && f.resource == resource && f.left > 0)
    {
        failure.left -= 1;
        let code = failure.code;
        state.failures.retain(|f| f.left > 0);
        let reason = match code {
            409 => "Conflict",
            422 => "Invalid",
            _ => "InternalError",
        };
        return status(code, reason, &format!("injected {code} on {resource}"));
    }
    let key = (resource.clone(), namespace.clone(), name.clone());
    match method {
        Method::PATCH => {
            if content_type != "application/apply-patch+yaml" {
                return status(415, "UnsupportedMediaType", "only server-side apply here");
            }
            if query.get("fieldManager").map(String::as_str) != Some("playpod") {
                return status(422, "Invalid", "fieldManager is required for apply");
            }
            if body_json["metadata"]["name"].as_str() != Some(name.as_str()) {
                return status(
                    400,
                    "BadRequest",
                    "the name in the body differs from the URL",
                );
            }
            let mut object = body_json;
            let existing = state.objects.get(&key).cloned();
            let created = existing.is_none();
            let uid = match &existing {
                Some(old) => old["metadata"]["uid"].clone(),
                None => {
                    state.next_uid += 1;
                    json!(format!("00000000-0000-4000-8000-{:012}", state.next_uid))
                }
            };
            object["metadata"]["uid"] = uid;
            object["metadata"]["resourceVersion"] = json!("1");
            object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            state.objects.insert(key, object.clone());
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(object)).into_response()
        }
        Method::DELETE => match state.objects.remove(&key) {
            Some(object) => axum::Json(object).into_response(),
            None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
        },
        Method::GET if name.is_empty() => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<&Value> = state
                .objects
                .iter()
                .filter(|((r, ns, _), _)| *r == resource && *ns == namespace)
                .map(|(_, o)| o)
                .filter(|o| selector_matches(&selector, &o["metadata"]["labels"]))
                .collect();
            let kind = match resource.as_str() {
                "pods" => "PodList",
                "services" => "ServiceList",
                _ => "IngressList",
            };
            // Pages as the API server makes them: `limit` items, then a continue token (here
            // the offset of the next item) while more are left.
            let from = match query.get("continue").map(|c| c.parse::<usize>()) {
                None => 0,
                Some(Ok(from)) => from,
                Some(Err(_)) => return status(400, "BadRequest", "bad continue token"),
            };
            let limit = query
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .filter(|&l| l > 0)
                .unwrap_or(usize::MAX);
            let end = from.saturating_add(limit).min(items.len());
            let mut metadata = json!({"resourceVersion": "1"});
            if end < items.len() {
                metadata["continue"] = json!(end.to_string());
            }
            let page = items.get(from..end).unwrap_or_default();
            axum::Json(json!({
                "apiVersion": "v1", "kind": kind, "metadata": metadata, "items": page
            }))
            .into_response()
        }
        Method::GET => match state.objects.get(&key) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => status(404, "NotFound", "not found"),
        },
        _ => status(405, "MethodNotAllowed", "not supported by the fake"),
    }
}

/// Decodes `a=b&c=d%2Ce` (enough for kube's query strings).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A readiness probe that answers from a table: pod IP -> idle seconds, or an error; after
/// `delay`, counting the probes in flight.
#[derive(Debug, Default)]
pub struct FakeProbe {
    pub answers: Mutex<HashMap<String, Option<u64>>>,
    pub delay: Duration,
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub most_in_flight: std::sync::atomic::AtomicUsize,
    pub probes: std::sync::atomic::AtomicUsize,
}

impl FakeProbe {
    pub fn set(&self, ip: &str, idle_seconds: Option<u64>) {
        self.answers
            .lock()
            .unwrap()
            .insert(ip.to_owned(), idle_seconds);
    }
}

impl ReadyProbe for FakeProbe {
    fn probe<'a>(&'a self, pod_ip: &'a str) -> BoxFuture<'a, Result<Readiness, Error>> {
        use std::sync::atomic::Ordering::SeqCst;
        let answer = self.answers.lock().unwrap().get(pod_ip).copied().flatten();
        Box::pin(async move {
            self.probes.fetch_add(1, SeqCst);
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.in_flight.fetch_sub(1, SeqCst);
            answer
                .map(|idle_seconds| Readiness {
                    ready: true,
                    idle_seconds,
                })
                .ok_or_else(|| Error::Probe {
                    target: pod_ip.to_owned(),
                    reason: "connection refused".to_owned(),
                })
        })
    }
}

/// The session configuration of the tests.
pub fn config(max_sessions: u32) -> SessionConfig {
    SessionConfig {
        public_url: Some("https://play.test".to_owned()),
        max_sessions,
        ttl_minutes: 120,
        idle_minutes: 10,
        startup_grace_seconds: 300,
        ..SessionConfig::default()
    }
}

/// A control plane against `api`, with the fake probe and no waiting between retries.
pub fn plane(api: &FakeApi, probe: Arc<FakeProbe>, max_sessions: u32) -> Arc<ControlPlane> {
    plane_with(
        api,
        probe,
        max_sessions,
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
            timeout: Duration::from_secs(5),
        },
    )
}

/// A control plane against `api`, with the fake probe and this retry policy.
pub fn plane_with(
    api: &FakeApi,
    probe: Arc<FakeProbe>,
    max_sessions: u32,
    retry: RetryPolicy,
) -> Arc<ControlPlane> {
    Arc::new(
        ControlPlane::new(
            api.client(),
            NAMESPACE,
            Catalog::default(),
            config(max_sessions),
            probe,
            Arc::new(Metrics::new()),
            retry,
        )
        .unwrap(),
    )
}
