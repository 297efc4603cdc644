//! The control plane's HTTP API over real HTTP, backed by a fake Kubernetes API server:
//! authentication, every kind of bad input, the limits, and the answers of the happy path.

mod control_common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use control_common::{FakeApi, FakeProbe, Hold, plane};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use playpod_tests::soak::status_field;
use serde_json::{Value, json};

const TOKEN: &str = "test-api-token-0123456789";

struct Harness {
    addr: SocketAddr,
    api: FakeApi,
    http: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {:?}", self.text))
    }

    /// Asserts a JSON error answer with this status and a message containing `needle`.
    fn assert_error(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{}",
            self.text
        );
        let body = self.json();
        let message = body["error"].as_str().expect("an error message");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        assert_eq!(body.as_object().unwrap().len(), 1, "only \"error\": {body}");
    }
}

async fn start(max_sessions: u32) -> Harness {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), max_sessions);
    let app = playpod::control::api::router(plane, TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Harness {
        addr,
        api,
        http: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let response = self
            .http
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(TOKEN), None, "").await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, Some(TOKEN), None, "").await
    }

    /// GET and DELETE of `path` both answer a JSON 404 "no session".
    async fn assert_no_session(&self, path: &str) {
        self.get(path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no session");
        self.delete(path)
            .await
            .assert_error(StatusCode::NOT_FOUND, "no session");
    }

    async fn create(&self, body: &str) -> Answer {
        self.call(
            Method::POST,
            "/api/sessions",
            Some(TOKEN),
            Some("application/json"),
            body.to_owned(),
        )
        .await
    }

    async fn metrics(&self) -> String {
        let answer = self.call(Method::GET, "/metrics", None, None, "").await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.text
    }
}

#[tokio::test]
async fn the_api_needs_the_bearer_token() {
    let h = start(5).await;
    let wrong_tokens = [
        None,
        Some(""),
        Some("test-api-token-012345678"),   // one character short
        Some("test-api-token-0123456789x"), // one too many
        Some("TEST-API-TOKEN-0123456789"),
    ];
    for path in [
        "/api/games",
        "/api/sessions",
        "/api/sessions/0123456789abcdef",
        "/api/nope",
    ] {
        for token in wrong_tokens {
            let answer = h.call(Method::GET, path, token, None, "").await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "bearer token");
            assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    // A POST without the token creates nothing, even with a perfect body.
    let answer = h
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some("application/json"),
            r#"{"game":"pong"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // Basic auth with the right secret is not a bearer token.
    let answer = h
        .http
        .request(
            Request::get(format!("http://{}/api/games", h.addr))
                .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(h.api.requests().is_empty(), "nothing reached Kubernetes");

    // Health and metrics are open (they sit behind the NetworkPolicy, not the token).
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            h.call(Method::GET, path, None, None, "").await.status,
            StatusCode::OK
        );
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("playpod_control_errors_total{kind=\"unauthorized\"} 22"),
        "{metrics}"
    );
    assert_eq!(h.get("/api/games").await.status, StatusCode::OK);
    // The scheme is case-insensitive and may be followed by more than one space (RFC 9110).
    for value in [
        format!("bearer {TOKEN}"),
        format!("BEARER {TOKEN}"),
        format!("Bearer   {TOKEN}"),
    ] {
        let answer = h
            .http
            .request(
                Request::get(format!("http://{}/api/games", h.addr))
                    .header(header::AUTHORIZATION, &value)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{value}");
    }
}

#[tokio::test]
async fn create_get_list_delete() {
    let h = start(5).await;
    let games = h.get("/api/games").await;
    assert_eq!(games.status, StatusCode::OK);
    assert_eq!(
        games.json(),
        json!({"games": [{"name": "pong", "title": "Pong (built in, two players)", "gpu": false}]})
    );

    let created = h.create(r#"{"game":"pong"}"#).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let session = created.json();
    let id = session["id"].as_str().unwrap().to_owned();
    let token = session["token"].as_str().unwrap();
    assert_eq!(token.len(), 32, "128 bits as hex");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        session["url"],
        json!(format!("https://play.test/play/{token}/"))
    );
    assert!(
        session["expiresAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(session["game"], "pong");
    assert_eq!(
        created.headers[header::LOCATION],
        format!("/api/sessions/{id}").as_str()
    );

    let one = h.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["token"], session["token"]);
    let list = h.get("/api/sessions").await.json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["id"], json!(id));

    let deleted = h.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    h.get(&format!("/api/sessions/{id}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, &id);
    assert_eq!(h.get("/api/sessions").await.json(), json!({"sessions": []}));
    assert!(h.api.names("pods").is_empty());

    let metrics = h.metrics().await;
    assert!(metrics.contains("playpod_control_sessions_created_total 1"));
    assert!(metrics.contains("playpod_control_sessions_deleted_total 1"));
    assert!(metrics.contains("playpod_control_sessions_active 0"));
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_4xx() {
    let h = start(5).await;
    let post = |ct: Option<&'static str>, body: &'static str| {
        h.call(Method::POST, "/api/sessions", Some(TOKEN), ct, body)
    };
    post(None, r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    post(Some("text/plain"), r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    for (body, needle) in [
        ("", "bad JSON"),
        ("{", "bad JSON"),
        ("[]", "bad JSON"),
        ("{}", "missing field `game`"),
        (r#"{"game":7}"#, "invalid type"),
        (r#"{"game":"pong","extra":1}"#, "unknown field `extra`"),
        (r#"{"game":"pong"} trailing"#, "trailing characters"),
    ] {
        post(Some("application/json"), body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, needle);
    }
    h.create(r#"{"game":"tetris"}"#).await.assert_error(
        StatusCode::BAD_REQUEST,
        "unknown game \"tetris\"; the catalog has: pong",
    );
    // A charset parameter is fine.
    let ok = h
        .call(
            Method::POST,
            "/api/sessions",
            Some(TOKEN),
            Some("application/json; charset=utf-8"),
            r#"{"game":"pong"}"#,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);

    // Too large, declared or streamed.
    let big = format!(r#"{{"game":"{}"}}"#, "p".repeat(5000));
    h.create(&big)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "at most 4096 bytes");

    // Ids: malformed and unknown.
    for path in [
        "/api/sessions/nope",
        "/api/sessions/0123456789ABCDEF",
        "/api/sessions/0123456789abcdef0",
        "/api/sessions/0123456789abcdef",
    ] {
        h.assert_no_session(path).await;
    }
    h.get("/api/elsewhere")
        .await
        .assert_error(StatusCode::NOT_FOUND, "no such path");
    h.call(Method::PUT, "/api/sessions", Some(TOKEN), None, "")
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");

    let metrics = h.metrics().await;
    for line in [
        "playpod_control_errors_total{kind=\"unsupported_media_type\"} 2",
        "playpod_control_errors_total{kind=\"bad_request\"} 7",
        "playpod_control_errors_total{kind=\"unknown_game\"} 1",
        "playpod_control_errors_total{kind=\"payload_too_large\"} 1",
        "playpod_control_errors_total{kind=\"not_found\"} 9",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // Only the one good request reached Kubernetes.
    assert_eq!(h.api.names("pods").len(), 1);
}

#[tokio::test]
async fn the_session_limit_is_429() {
    let h = start(2).await;
    for _ in 0..2 {
        assert_eq!(
            h.create(r#"{"game":"pong"}"#).await.status,
            StatusCode::CREATED
        );
    }
    h.create(r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "the limit is 2");
    assert_eq!(h.api.names("pods").len(), 2);
    let id = h.get("/api/sessions").await.json()["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = h.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.create(r#"{"game":"pong"}"#).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn kubernetes_failures_are_json_errors() {
    let h = start(5).await;
    h.api.fail(Method::PATCH, "pods", 409, 1);
    h.create(r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::CONFLICT, "injected 409");
    h.api.fail(Method::PATCH, "services", 422, 1);
    h.create(r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "injected 422");
    h.api.fail(Method::PATCH, "ingresses", 500, 3);
    h.create(r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "injected 500");
    assert!(h.api.names("pods").is_empty(), "every failure backed out");
    assert!(h.api.names("services").is_empty());
    let metrics = h.metrics().await;
    for line in [
        "playpod_control_sessions_failed_total 3",
        "playpod_control_errors_total{kind=\"kube_conflict\"} 1",
        "playpod_control_errors_total{kind=\"kube_invalid\"} 1",
        "playpod_control_sessions_active 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // And it recovers.
    assert_eq!(
        h.create(r#"{"game":"pong"}"#).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn ids_that_do_not_decode_are_json_404s() {
    let h = start(5).await;
    for path in [
        "/api/sessions/%FF",
        "/api/sessions/%C3%28",
        "/api/sessions/%00",
        "/api/sessions/%2e%2e",
        "/api/sessions/0123456789abcde%66",
    ] {
        h.assert_no_session(path).await;
    }
    assert!(h.api.requests().is_empty(), "nothing reached Kubernetes");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("playpod_control_errors_total{kind=\"not_found\"} 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_hanging_up_leaves_no_half_made_session() {
    use tokio::io::AsyncWriteExt as _;
    let h = start(5).await;
    let service_apply = h.api.hold(Method::PATCH, "services", Hold::Before);
    let body = r#"{"game":"pong"}"#;
    let mut client = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    client
        .write_all(
            format!(
                "POST /api/sessions HTTP/1.1\r\nhost: control\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The pod is made, its Service not yet: the client gives up and hangs up.
    service_apply.arrived().await;
    drop(client);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    service_apply.release();

    // The creation ends anyway: the session is whole and listed.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = h.get("/api/sessions").await.json();
        if listed["sessions"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{listed}");
    let id = sessions[0]["id"].as_str().unwrap();
    let name = format!("playpod-{id}");
    for resource in ["pods", "services", "ingresses"] {
        assert!(
            h.api.object(resource, &name).is_some(),
            "{resource} missing"
        );
    }
}

#[tokio::test]
async fn dump_session_manifests_makes_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("not").join("yet").join("there");
    let mut a = args("127.0.0.1:9".parse().unwrap());
    a.api_token = None; // not needed to dump
    a.dump_session_manifests = Some(out.clone());
    playpod::control::serve(a, std::future::pending())
        .await
        .unwrap();
    let text = std::fs::read_to_string(out.join("pong.yaml")).unwrap();
    assert!(text.contains("kind: Pod"), "{text}");
    assert!(text.contains("kind: Ingress"), "{text}");

    // A path under a file is an error naming it, not a panic.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut a = args("127.0.0.1:9".parse().unwrap());
    a.dump_session_manifests = Some(file.join("sub"));
    let err = playpod::control::serve(a, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
}

fn args(listen: SocketAddr) -> playpod::control::ControlArgs {
    playpod::control::ControlArgs {
        listen,
        api_token: Some(TOKEN.to_owned()),
        api_token_file: None,
        api_token_grace: playpod::control::api_token::ROTATION_GRACE,
        api_token_poll: playpod::control::api_token::POLL_INTERVAL,
        kubeconfig: None,
        namespace: None,
        catalog: None,
        session_config: None,
        reap_interval_seconds: 3600,
        dump_session_manifests: None,
    }
}

/// A kubeconfig in `dir` that points at `api`.
fn fake_kubeconfig(dir: &std::path::Path, api: &FakeApi) -> std::path::PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: 'http://{}'}}}}]\n\
             users: [{{name: nobody, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: nobody, namespace: {}}}}}]\n",
            api.addr,
            control_common::NAMESPACE
        ),
    )
    .unwrap();
    kubeconfig
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    free.local_addr().unwrap().port()
}

/// Whether `url` answers 200 within 10 s.
async fn answers_ok(url: &str) -> bool {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for _ in 0..200 {
        let probe = http
            .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
            .await;
        if probe.is_ok_and(|r| r.status() == StatusCode::OK) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// The `playpod control` binary, on `[::]` (so reached over IPv4 too), stops gracefully and
/// exits 0 on Ctrl-C, SIGTERM and SIGHUP (a closed terminal) alike.
#[tokio::test]
async fn the_control_binary_stops_gracefully_on_every_stop_signal() {
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_kubeconfig(dir.path(), &api);
    for signal in ["-INT", "-TERM", "-HUP"] {
        let port = free_port();
        let child = std::process::Command::new(playpod_tests::playpod_bin())
            .args(["control", "--listen", &format!("[::]:{port}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("PLAYPOD_API_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start playpod control");
        let pid = child.id().to_string();
        let up = answers_ok(&format!("http://127.0.0.1:{port}/healthz")).await;
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .expect("wait for playpod control");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(up, "playpod control did not come up: {log}");
        assert!(out.status.success(), "{signal}: {} {log}", out.status);
        assert!(log.contains("shutting down"), "{signal}: {log}");
    }
}

#[tokio::test]
async fn playpod_control_rebuilds_serves_and_stops() {
    let api = FakeApi::start().await;
    // A session made by an earlier control plane.
    let earlier = plane(&api, Arc::new(FakeProbe::default()), 5)
        .create("pong")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_kubeconfig(dir.path(), &api);
    let session_config = dir.path().join("session.json");
    std::fs::write(
        &session_config,
        r#"{"publicUrl":"https://play.test","maxSessions":2}"#,
    )
    .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap();
    drop(free);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut a = args(listen);
    a.kubeconfig = Some(kubeconfig);
    a.session_config = Some(session_config);
    let server = tokio::spawn(playpod::control::serve(a, async {
        let _ = stopped.await;
    }));

    let h = Harness {
        addr: listen,
        api: api.clone(),
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    let mut up = false;
    for _ in 0..100 {
        let probe = h
            .http
            .request(
                Request::get(format!("http://{listen}/healthz"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        if probe.is_ok_and(|r| r.status() == StatusCode::OK) {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "playpod control did not come up");

    // The view was rebuilt from the cluster at start; the session config file was read.
    let list = h.get("/api/sessions").await.json();
    assert_eq!(list["sessions"][0]["id"], json!(earlier.id));
    assert_eq!(list["sessions"][0]["url"], json!(earlier.url));
    assert_eq!(
        h.create(r#"{"game":"pong"}"#).await.status,
        StatusCode::CREATED
    );
    h.create(r#"{"game":"pong"}"#)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "the limit is 2");

    stop_and_join(stop, server).await;
}

/// Asks a control plane served in this process to stop, and checks that it ends cleanly and
/// promptly.
async fn stop_and_join(
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    stop.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("stops promptly")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn playpod_control_refuses_bad_setups() {
    let listen: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut no_token = args(listen);
    no_token.api_token = None;
    let err = playpod::control::serve(no_token, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("PLAYPOD_API_TOKEN"), "{err:#}");

    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(&catalog, r#"{"games":[{"name":"Pong!","image":"x"}]}"#).unwrap();
    let mut bad_catalog = args(listen);
    bad_catalog.catalog = Some(catalog);
    let err = playpod::control::serve(bad_catalog, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("Pong!"), "{err:#}");

    let mut missing = args(listen);
    missing.session_config = Some(dir.path().join("absent.json"));
    let err = playpod::control::serve(missing, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("absent.json"), "{err:#}");
}

/// The kubelet's update of a Secret volume in `dir`: the files go into a new directory, the
/// `..data` symlink is swapped to it atomically, and `token` resolves through `..data/token`.
fn kubelet_write(dir: &std::path::Path, generation: u32, token: &str) {
    let data = format!("..2026_01_01_00_00_0{generation}");
    std::fs::create_dir(dir.join(&data)).unwrap();
    std::fs::write(dir.join(&data).join("token"), format!("{token}\n")).unwrap();
    std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if generation == 0 {
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
    } else {
        let old = format!("..2026_01_01_00_00_0{}", generation - 1);
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

impl Harness {
    /// The status of `GET /api/games` with `token`.
    async fn status_with(&self, token: &str) -> StatusCode {
        self.call(Method::GET, "/api/games", Some(token), None, "")
            .await
            .status
    }

    /// Whether `GET /api/games` with `token` answers `want` within 30 s.
    async fn until_status(&self, token: &str, want: StatusCode) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.status_with(token).await == want {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }

    /// Whether /metrics shows `needle` within 30 s.
    async fn until_metric(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.metrics().await.contains(needle) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }
}

/// A child process that is killed if the test ends before waiting for it.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `playpod control` binary with `--api-token-file` on a Secret volume laid out as the
/// kubelet does: it takes the file's token, and takes the new one when the file changes (the
/// kubelet's `..data` swap, a rewrite in place, a file renamed over it) without a restart,
/// accepting the replaced token for the grace period; a file that goes bad or missing keeps the
/// last good token. No token reaches the log.
#[tokio::test]
async fn the_control_binary_reloads_its_token_file() {
    const A: &str = "rotation-a-0123456789abcdef";
    const B: &str = "rotation-b-0123456789abcdef";
    const C: &str = "rotation-c-0123456789abcdef";
    const D: &str = "rotation-d-0123456789abcdef";
    const E: &str = "rotation-e-0123456789abcdef";
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_kubeconfig(dir.path(), &api);
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    kubelet_write(&secret, 0, A);
    let token_file = secret.join("token");
    let port = free_port();
    let mut child = Running(Some(
        std::process::Command::new(playpod_tests::playpod_bin())
            .args(["control", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--api-token-file")
            .arg(&token_file)
            .env_remove("PLAYPOD_API_TOKEN")
            .env_remove("PLAYPOD_API_TOKEN_FILE")
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start playpod control"),
    ));
    let h = Harness {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        api,
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    assert!(
        answers_ok(&format!("http://127.0.0.1:{port}/healthz")).await,
        "playpod control did not come up"
    );
    assert_eq!(h.status_with(A).await, StatusCode::OK);
    assert_eq!(h.status_with(B).await, StatusCode::UNAUTHORIZED);

    // The kubelet's atomic swap: the new token is taken, the old one kept for the grace period.
    kubelet_write(&secret, 1, B);
    assert!(h.until_status(B, StatusCode::OK).await, "B not taken");
    assert_eq!(h.status_with(A).await, StatusCode::OK, "A within its grace");

    // A rewrite in place (through the symlinks): only the token replaced last keeps its grace.
    std::fs::write(&token_file, C).unwrap();
    assert!(h.until_status(C, StatusCode::OK).await, "C not taken");
    assert_eq!(h.status_with(B).await, StatusCode::OK, "B within its grace");
    assert_eq!(h.status_with(A).await, StatusCode::UNAUTHORIZED);

    // A new file renamed over the path.
    let new = dir.path().join("token.new");
    std::fs::write(&new, format!("{D}\n")).unwrap();
    std::fs::rename(&new, &token_file).unwrap();
    assert!(h.until_status(D, StatusCode::OK).await, "D not taken");
    assert_eq!(h.status_with(B).await, StatusCode::UNAUTHORIZED);
    assert!(
        h.until_metric("api_token_reloads_total{result=\"ok\"} 3")
            .await
    );

    // An invalid token, then no file at all: D stays in use.
    std::fs::write(&token_file, "not a token\n").unwrap();
    assert!(
        h.until_metric("api_token_reloads_total{result=\"invalid\"} 1")
            .await
    );
    assert_eq!(h.status_with(D).await, StatusCode::OK);
    std::fs::remove_file(&token_file).unwrap();
    assert!(
        h.until_metric("api_token_reloads_total{result=\"invalid\"} 2")
            .await
    );
    assert_eq!(h.status_with(D).await, StatusCode::OK);
    assert_eq!(h.status_with("not a token").await, StatusCode::UNAUTHORIZED);
    // A valid file again.
    std::fs::write(&token_file, E).unwrap();
    assert!(h.until_status(E, StatusCode::OK).await, "E not taken");

    let mut child = child.0.take().unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(log.matches("API token reloaded").count(), 4, "{log}");
    assert_eq!(
        log.matches("the last good token stays in use").count(),
        2,
        "one warning per change: {log}"
    );
    assert!(log.contains("it is missing"), "{log}");
    for token in [A, B, C, D, E] {
        assert!(!log.contains(token), "the log shows a token: {log}");
    }
}

/// With a short grace period (set by the library's callers only), the replaced token is refused
/// once it has passed, while the new one goes on working.
#[tokio::test]
async fn a_replaced_token_is_refused_after_the_grace_period() {
    const A: &str = "grace-a-0123456789abcdef";
    const B: &str = "grace-b-0123456789abcdef";
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{A}\n")).unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut a = args(listen);
    a.api_token = None;
    a.api_token_file = Some(token_file.clone());
    a.api_token_grace = std::time::Duration::from_secs(1);
    a.api_token_poll = std::time::Duration::from_millis(100);
    a.kubeconfig = Some(fake_kubeconfig(dir.path(), &api));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(playpod::control::serve(a, async {
        let _ = stopped.await;
    }));
    let h = Harness {
        addr: listen,
        api,
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    assert!(answers_ok(&format!("http://{listen}/healthz")).await);
    assert_eq!(h.status_with(A).await, StatusCode::OK);

    let new = dir.path().join("token.new");
    std::fs::write(&new, B).unwrap();
    std::fs::rename(&new, &token_file).unwrap();
    assert!(h.until_status(B, StatusCode::OK).await, "B not taken");
    assert!(
        h.until_status(A, StatusCode::UNAUTHORIZED).await,
        "A still accepted after its grace"
    );
    assert_eq!(h.status_with(B).await, StatusCode::OK);

    stop_and_join(stop, server).await;
}

/// `playpod control` with the given arguments and no token in its environment: it must fail;
/// returns what it wrote on stderr.
fn control_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(playpod_tests::playpod_bin())
        .arg("control")
        .args(args)
        .env_remove("PLAYPOD_API_TOKEN")
        .env_remove("PLAYPOD_API_TOKEN_FILE")
        .output()
        .expect("run playpod control");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "playpod control {args:?} succeeded: {stderr}"
    );
    stderr
}

/// A token file that is missing, empty or invalid at start stops the control plane with an error
/// naming the file (before it reaches for a cluster); both token flags, or neither, are refused.
#[test]
fn the_control_binary_refuses_a_bad_token_file_or_both_token_flags() {
    let dir = tempfile::tempdir().unwrap();
    let flag = std::ffi::OsStr::new("--api-token-file");
    let missing = dir.path().join("absent-token");
    let err = control_fails(&[flag, missing.as_os_str()]);
    assert!(
        err.contains("API token file")
            && err.contains("absent-token")
            && err.contains("cannot open"),
        "{err}"
    );

    let file = dir.path().join("token");
    for (content, needle) in [
        ("\n", "empty"),
        ("short\n", "16 to 128 characters"),
        ("0123456789abcdef/0123\n", "A-Z a-z 0-9 - _"),
    ] {
        std::fs::write(&file, content).unwrap();
        let err = control_fails(&[flag, file.as_os_str()]);
        assert!(
            err.contains(&file.display().to_string()) && err.contains(needle),
            "{content:?}: {err}"
        );
    }

    std::fs::write(&file, TOKEN).unwrap();
    let err = control_fails(&[
        "--api-token".as_ref(),
        TOKEN.as_ref(),
        flag,
        file.as_os_str(),
    ]);
    assert!(
        err.contains("--api-token <API_TOKEN>") && err.contains("--api-token-file <FILE>"),
        "{err}"
    );
    let err = control_fails(&[]);
    assert!(
        err.contains("--api-token") && err.contains("--api-token-file"),
        "{err}"
    );
}

/// The real `playpod control` against the fake Kubernetes API holding `sessions` session pods,
/// each with a status and managed fields as the API server returns them: the time to its first
/// answer (its start-up list), its resident memory and peak after three reaper passes, and the
/// time and size of `GET /api/sessions`. Not in the suite (a minute); README, Operations:
/// `cargo build -p playpod && cargo test -p playpod-tests --test control_api -- --ignored --nocapture thousands`
#[tokio::test]
#[ignore = "a scale measurement, run by hand"]
async fn the_control_binary_with_thousands_of_sessions() {
    let api = FakeApi::start().await;
    let made = plane(&api, Arc::new(FakeProbe::default()), 10_000)
        .create("pong")
        .await
        .unwrap();
    let name = format!("playpod-{}", made.id);
    let mut template = api.object("pods", &name).expect("the session pod");
    api.remove("pods", &name);
    // What the API server adds to an applied pod: its status and the managed fields.
    let conditions = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}));
    let containers = ["game", "streamer"].map(|c| {
        json!({
            "name": c, "ready": true, "restartCount": 0, "started": true,
            "image": format!("registry.example.com/playpod/{c}:1.0"),
            "imageID": format!("registry.example.com/playpod/{c}@sha256:{}", "0".repeat(64)),
            "containerID": format!("containerd://{}", "f".repeat(64)),
            "state": {"running": {"startedAt": "2026-01-01T00:00:04Z"}},
        })
    });
    template["status"] = json!({
        "phase": "Running", "hostIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
        "conditions": conditions, "containerStatuses": containers,
    });
    template["metadata"]["managedFields"] = json!([{
        "manager": "playpod", "operation": "Apply", "apiVersion": "v1",
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {}, "f:annotations": {}}, "f:spec": template["spec"].clone()},
    }]);
    let pod_bytes = serde_json::to_vec(&template).unwrap().len();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake_kubeconfig(dir.path(), &api);
    let mut figures = Vec::new();
    for sessions in [0usize, 5_000] {
        for i in api.names("pods").len()..sessions {
            let id = format!("{:016x}", i + 1);
            let mut pod = template.clone();
            pod["metadata"]["name"] = json!(format!("playpod-{id}"));
            pod["metadata"]["labels"]["playpod.io/session"] = json!(id);
            api.insert("pods", pod);
        }
        let port = free_port();
        let started = std::time::Instant::now();
        let child = std::process::Command::new(playpod_tests::playpod_bin())
            .args(["control", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--reap-interval-seconds", "2"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("PLAYPOD_API_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start playpod control");
        let pid = child.id();
        assert!(answers_ok(&format!("http://127.0.0.1:{port}/healthz")).await);
        let up = started.elapsed();
        let rss_up = status_field(pid, "VmRSS:");
        api.clear_requests();
        // Three reaper passes, each a full list of the session pods.
        let pages = sessions.div_ceil(500).max(1);
        while api.requests().len() < 3 * pages {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Between two passes.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let h = Harness {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            api: api.clone(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        let asked = std::time::Instant::now();
        let answer = h.get("/api/sessions").await;
        let listed = asked.elapsed();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.json()["sessions"].as_array().unwrap().len(),
            sessions
        );
        let (rss, peak) = (status_field(pid, "VmRSS:"), status_field(pid, "VmHWM:"));
        playpod_tests::signal(pid, "-TERM");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        figures.push(format!(
            "{sessions} sessions: first answer after {up:.2?} (rss {:.1} MiB), rss {:.1} MiB (peak \
             {:.1} MiB) after 3 reaper passes, GET /api/sessions {} KiB in {listed:.2?}",
            rss_up as f64 / 1024.0,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            answer.text.len() / 1024
        ));
    }
    eprintln!("a session pod as listed: {pod_bytes} bytes of JSON");
    for line in figures {
        eprintln!("{line}");
    }
}
