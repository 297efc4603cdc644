//! The control plane's kube-rs code against a fake Kubernetes API server: the exact objects it
//! applies, the delete path, 409/422/500 handling, an API server that stops answering, the
//! rebuild after a restart and while sessions come and go, the reaper and the session limit.

mod control_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use control_common::{FakeApi, FakeProbe, Hold, NAMESPACE, config, plane, plane_with};
use jiff::{SignedDuration, Timestamp};
use playpod::control::RetryPolicy;
use playpod::control::config::Catalog;
use playpod::control::manifests::{self, SessionSpec};
use playpod::control::session::SessionView;
use serde_json::{Value, json};

fn spec_of(view: &SessionView) -> SessionSpec {
    SessionSpec {
        id: view.id.clone(),
        token: view.token.clone(),
        game: view.game.clone(),
        created_at: view.created_at.parse().unwrap(),
        expires_at: view.expires_at.parse().unwrap(),
    }
}

fn name(view: &SessionView) -> String {
    manifests::object_name(&view.id)
}

#[tokio::test]
async fn create_applies_exactly_the_session_objects() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();

    assert_eq!(view.token.len(), 32);
    assert_eq!(view.url, format!("https://play.test/play/{}/", view.token));
    let created: Timestamp = view.created_at.parse().unwrap();
    let expires: Timestamp = view.expires_at.parse().unwrap();
    assert_eq!(
        expires.duration_since(created),
        SignedDuration::from_mins(120)
    );

    let requests = api.requests();
    let applied: Vec<_> = requests.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(applied, ["pods", "services", "ingresses"]);
    for r in &requests {
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(r.namespace, NAMESPACE);
        assert_eq!(r.name, name(&view));
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some("playpod")
        );
        assert_eq!(r.query.get("force"), None, "no forced apply");
    }

    // The very objects the pure builders make, nothing more, nothing less.
    let spec = spec_of(&view);
    let catalog = Catalog::default();
    let expected_pod = manifests::pod(&spec, catalog.get("pong").unwrap(), &config(5), NAMESPACE);
    assert_eq!(
        requests[0].body,
        serde_json::to_value(&expected_pod).unwrap()
    );
    let uid = api.object("pods", &name(&view)).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = manifests::owner_reference(&name(&view), &uid);
    assert_eq!(
        requests[1].body,
        serde_json::to_value(manifests::service(&spec, NAMESPACE, &owner)).unwrap()
    );
    assert_eq!(
        requests[2].body,
        serde_json::to_value(manifests::ingress(&spec, &config(5), NAMESPACE, &owner)).unwrap()
    );
    // Spot checks of the contract, independent of the builders.
    let ingress = &requests[2].body;
    assert_eq!(ingress["metadata"]["ownerReferences"][0]["uid"], json!(uid));
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["path"],
        json!(format!("/play/{}/", view.token))
    );
    let pod = &requests[0].body;
    assert_eq!(
        pod["metadata"]["labels"]["playpod.io/session"],
        json!(view.id)
    );
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "playpod"
    );

    assert_eq!(plane.list().len(), 1);
    let metrics = plane.metrics().encode();
    assert!(
        metrics.contains("playpod_control_sessions_created_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("playpod_control_sessions_active 1"));
    assert!(metrics.contains("playpod_control_session_create_seconds_count 1"));
}

#[tokio::test]
async fn delete_removes_all_three_objects() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();
    api.clear_requests();

    plane.delete(&view.id).await.unwrap();
    let requests = api.requests();
    let deleted: Vec<_> = requests
        .iter()
        .map(|r| (r.method.clone(), r.resource.as_str(), r.name.clone()))
        .collect();
    assert_eq!(
        deleted,
        [
            (Method::DELETE, "ingresses", name(&view)),
            (Method::DELETE, "services", name(&view)),
            (Method::DELETE, "pods", name(&view)),
        ]
    );
    for r in &requests {
        assert_eq!(r.body["propagationPolicy"], "Background");
    }
    api.assert_no_objects();
    assert!(plane.list().is_empty());
    assert_eq!(
        plane.delete(&view.id).await.unwrap_err().status(),
        axum::http::StatusCode::NOT_FOUND
    );

    // Objects someone already removed (404) do not make the delete fail.
    let view = plane.create("pong").await.unwrap();
    api.fail(Method::DELETE, "ingresses", 404, 1);
    plane.delete(&view.id).await.unwrap();
    assert!(api.names("pods").is_empty());
}

#[tokio::test]
async fn a_failed_delete_keeps_the_session() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();
    // Every attempt fails.
    api.fail(Method::DELETE, "services", 500, 3);
    let err = plane.delete(&view.id).await.unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::BAD_GATEWAY);
    assert_eq!(
        plane.list().len(),
        1,
        "still listed, so it can be deleted again"
    );
    // The pod, which owns the other two, is deleted all the same.
    assert!(api.names("pods").is_empty());
    assert_eq!(api.names("services").len(), 1);
    plane.delete(&view.id).await.unwrap();
    assert!(api.names("services").is_empty());
    assert!(plane.list().is_empty());
}

#[tokio::test]
async fn deletes_retry_server_errors() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();
    api.clear_requests();
    api.fail(Method::DELETE, "ingresses", 500, 1);
    api.fail(Method::DELETE, "pods", 503, 2);
    plane.delete(&view.id).await.unwrap();
    let calls = api.calls();
    assert_eq!(
        calls,
        [
            "DELETE ingresses",
            "DELETE ingresses",
            "DELETE services",
            "DELETE pods",
            "DELETE pods",
            "DELETE pods"
        ]
    );
    api.assert_no_objects();
    assert!(plane.list().is_empty());
}

#[tokio::test]
async fn concurrent_deletes_of_one_session_count_it_once() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();
    let (a, b) = tokio::join!(plane.delete(&view.id), plane.delete(&view.id));
    a.unwrap();
    b.unwrap();
    assert!(api.names("pods").is_empty());
    let metrics = plane.metrics().encode();
    for line in [
        "playpod_control_sessions_deleted_total 1\n",
        "playpod_control_sessions_active 0\n",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

#[tokio::test]
async fn conflict_on_the_service_backs_out() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    api.fail(Method::PATCH, "services", 409, 1);
    let err = plane.create("pong").await.unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::CONFLICT);
    assert_eq!(err.metric_label(), "kube_conflict");
    // No retry of a conflict, then the pod that was made is deleted again.
    let calls = api.calls();
    assert_eq!(
        calls,
        [
            "PATCH pods",
            "PATCH services",
            "DELETE ingresses",
            "DELETE services",
            "DELETE pods"
        ]
    );
    api.assert_no_objects();
    assert!(plane.list().is_empty());
    let metrics = plane.metrics().encode();
    assert!(
        metrics.contains("playpod_control_sessions_failed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("playpod_control_sessions_created_total 0"));
}

#[tokio::test]
async fn a_back_out_deletes_the_pod_even_when_the_ingress_delete_fails() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    api.fail(Method::PATCH, "services", 409, 1);
    // Every attempt to delete the (never made) ingress fails.
    api.fail(Method::DELETE, "ingresses", 500, 3);
    let err = plane.create("pong").await.unwrap_err();
    assert_eq!(err.status(), StatusCode::CONFLICT, "the cause is answered");
    assert!(
        api.names("pods").is_empty(),
        "the pod of the failed session was left running"
    );
    assert!(plane.list().is_empty());
    // The failed cleanup is counted.
    assert!(
        plane
            .metrics()
            .encode()
            .contains("playpod_control_errors_total{kind=\"kube_api\"} 3")
    );
}

#[tokio::test]
async fn invalid_ingress_is_422_and_backs_out() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    api.fail(Method::PATCH, "ingresses", 422, 1);
    let err = plane.create("pong").await.unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(err.to_string().contains("apply ingress"), "{err}");
    api.assert_no_objects();
}

#[tokio::test]
async fn server_errors_are_retried_then_given_up() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);

    // One 500: the second attempt succeeds.
    api.fail(Method::PATCH, "pods", 500, 1);
    plane.create("pong").await.unwrap();
    let pod_patches = api
        .requests()
        .iter()
        .filter(|r| r.method == Method::PATCH && r.resource == "pods")
        .count();
    assert_eq!(pod_patches, 2);
    assert!(
        plane
            .metrics()
            .encode()
            .contains("playpod_control_errors_total{kind=\"kube_api\"} 1")
    );

    // 500 every time: three attempts, a 502, nothing more applied, nothing left. A server
    // error leaves unknown whether the pod was made, so it is deleted (here: already absent).
    api.clear_requests();
    api.fail(Method::PATCH, "pods", 500, 3);
    let err = plane.create("pong").await.unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::BAD_GATEWAY);
    let calls = api.calls();
    assert_eq!(
        calls,
        ["PATCH pods", "PATCH pods", "PATCH pods", "DELETE pods"]
    );
    assert_eq!(api.names("pods").len(), 1, "only the first session's pod");
    assert_eq!(plane.list().len(), 1);
}

/// Thousands of sessions are listed a page at a time (the API server's `limit` and `continue`),
/// so that neither it nor the control plane holds every session pod as one answer; the pages
/// make one view.
#[tokio::test]
async fn thousands_of_session_pods_are_listed_a_page_at_a_time() {
    const SESSIONS: usize = 1234;
    let api = FakeApi::start().await;
    let first = plane(&api, Arc::new(FakeProbe::default()), 5000);
    let made = first.create("pong").await.unwrap();
    drop(first);
    let template = api.object("pods", &name(&made)).unwrap();
    api.remove("pods", &name(&made));
    eprintln!(
        "one session pod as the control plane applies it: {} bytes of JSON",
        serde_json::to_vec(&template).unwrap().len()
    );
    let mut ids: Vec<String> = (1..=SESSIONS).map(|i| format!("{i:016x}")).collect();
    for id in &ids {
        let mut pod = template.clone();
        pod["metadata"]["name"] = json!(manifests::object_name(id));
        pod["metadata"]["labels"]["playpod.io/session"] = json!(id);
        api.insert("pods", pod);
    }

    let plane = plane(&api, Arc::new(FakeProbe::default()), 5000);
    api.clear_requests();
    assert_eq!(plane.rebuild().await.unwrap(), SESSIONS);
    let pages: Vec<_> = api
        .requests()
        .into_iter()
        .map(|r| {
            assert_eq!((r.method, r.resource.as_str()), (Method::GET, "pods"));
            (
                r.query.get("limit").cloned(),
                r.query.get("continue").cloned(),
            )
        })
        .collect();
    let page = |from: Option<&str>| (Some("500".to_owned()), from.map(str::to_owned));
    assert_eq!(pages, [page(None), page(Some("500")), page(Some("1000"))]);
    let mut listed: Vec<String> = plane.list().into_iter().map(|v| v.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn a_restarted_control_plane_rebuilds_its_view_from_labels() {
    let api = FakeApi::start().await;
    let first = plane(&api, Arc::new(FakeProbe::default()), 5);
    let a = first.create("pong").await.unwrap();
    let b = first.create("pong").await.unwrap();
    drop(first);

    // Pods that are not this control plane's sessions: a Helm-made one, a broken one, and one
    // without the session label.
    let mut helm = api.object("pods", &name(&a)).unwrap();
    helm["metadata"]["name"] = json!("helm-session");
    helm["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    api.insert("pods", helm);
    let mut broken = api.object("pods", &name(&a)).unwrap();
    broken["metadata"]["name"] = json!("playpod-00000000000000ff");
    broken["metadata"]["labels"]["playpod.io/session"] = json!("00000000000000ff");
    broken["metadata"]["annotations"] = json!({});
    api.insert("pods", broken);
    api.insert(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "labels": {"app": "x"}},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );

    let second = plane(&api, Arc::new(FakeProbe::default()), 5);
    assert!(second.list().is_empty());
    api.clear_requests();
    assert_eq!(second.rebuild().await.unwrap(), 2);
    let list = api.requests();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].method, Method::GET);
    assert_eq!(
        list[0].query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io/managed-by=playpod,playpod.io/session")
    );
    let mut rebuilt: Vec<_> = second
        .list()
        .into_iter()
        .map(|v| (v.id, v.token, v.url, v.expires_at))
        .collect();
    let mut before: Vec<_> = [a, b]
        .into_iter()
        .map(|v| (v.id, v.token, v.url, v.expires_at))
        .collect();
    rebuilt.sort();
    before.sort();
    assert_eq!(rebuilt, before);
    assert!(
        second
            .metrics()
            .encode()
            .contains("playpod_control_errors_total{kind=\"bad_session_pod\"} 1")
    );
    assert!(
        second
            .metrics()
            .encode()
            .contains("playpod_control_sessions_active 2")
    );
    // The rebuilt sessions can be deleted.
    second.delete(&rebuilt[0].0).await.unwrap();
    assert_eq!(second.list().len(), 1);
}

fn ready(ip: &str, since: &str) -> Value {
    json!({"phase": "Running", "podIP": ip, "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": since}]})
}

#[tokio::test]
async fn the_reaper_ends_idle_finished_unready_and_expired_sessions() {
    let api = FakeApi::start().await;
    let probe = Arc::new(FakeProbe::default());
    let plane = plane(&api, probe.clone(), 10);
    let idle = plane.create("pong").await.unwrap();
    let busy = plane.create("pong").await.unwrap();
    let ended = plane.create("pong").await.unwrap();
    let unready = plane.create("pong").await.unwrap();
    let unprobed = plane.create("pong").await.unwrap();
    let created: Timestamp = busy.created_at.parse().unwrap();
    let since = created.to_string();
    api.set_pod_status(&name(&idle), ready("10.0.0.1", &since));
    api.set_pod_status(&name(&busy), ready("10.0.0.2", &since));
    api.set_pod_status(
        &name(&ended),
        json!({"phase": "Failed", "podIP": "10.0.0.3"}),
    );
    api.set_pod_status(&name(&unready), json!({"phase": "Pending"}));
    api.set_pod_status(&name(&unprobed), ready("10.0.0.5", &since));
    probe.set("10.0.0.1", Some(600)); // 10 minutes: the idle limit
    probe.set("10.0.0.2", Some(0));
    probe.set("10.0.0.5", None); // the probe fails: not a reason to end it

    // Shortly after: nothing is old enough yet.
    let soon = created + SignedDuration::from_mins(1);
    let mut reaped = plane.reap_once(soon).await.unwrap();
    reaped.sort();
    let mut expected = vec![(idle.id.clone(), "idle"), (ended.id.clone(), "ended")];
    expected.sort();
    assert_eq!(reaped, expected);

    // After the startup grace, the never-ready one goes too.
    let later = created + SignedDuration::from_mins(6);
    let reaped = plane.reap_once(later).await.unwrap();
    assert_eq!(reaped, vec![(unready.id.clone(), "unready")]);
    let mut left: Vec<_> = plane.list().into_iter().map(|v| v.id).collect();
    left.sort();
    let mut want = vec![busy.id.clone(), unprobed.id.clone()];
    want.sort();
    assert_eq!(left, want);
    for gone in [&idle, &ended, &unready] {
        assert!(api.object("pods", &name(gone)).is_none());
        assert!(api.object("services", &name(gone)).is_none());
        assert!(api.object("ingresses", &name(gone)).is_none());
    }

    // Past the TTL, everything ends, busy or not.
    let expired = created + SignedDuration::from_mins(121);
    let reaped = plane.reap_once(expired).await.unwrap();
    assert_eq!(reaped.len(), 2);
    assert!(reaped.iter().all(|(_, why)| *why == "ttl"));
    assert!(api.names("pods").is_empty());
    let metrics = plane.metrics().encode();
    for line in [
        "playpod_control_sessions_reaped_total{reason=\"idle\"} 1",
        "playpod_control_sessions_reaped_total{reason=\"ended\"} 1",
        "playpod_control_sessions_reaped_total{reason=\"unready\"} 1",
        "playpod_control_sessions_reaped_total{reason=\"ttl\"} 2",
        "playpod_control_errors_total{kind=\"probe\"} 2",
        "playpod_control_sessions_active 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
}

#[tokio::test]
async fn the_view_follows_pods_deleted_behind_its_back() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 10);
    let gone = plane.create("pong").await.unwrap();
    let terminating = plane.create("pong").await.unwrap();
    // Someone deletes one pod with kubectl (the garbage collector removes the rest) and starts
    // deleting the other.
    api.remove("pods", &name(&gone));
    let mut pod = api.object("pods", &name(&terminating)).unwrap();
    pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    api.insert("pods", pod);
    assert_eq!(plane.list().len(), 2);
    let reaped = plane.reap_once(Timestamp::now()).await.unwrap();
    assert!(reaped.is_empty());
    assert!(plane.list().is_empty(), "{:?}", plane.list());
}

#[tokio::test]
async fn the_session_limit_holds_under_concurrency() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 3);
    let results = futures_util::future::join_all((0..10).map(|_| {
        let plane = plane.clone();
        async move { plane.create("pong").await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3);
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.metric_label(), "too_many_sessions");
    }
    assert_eq!(api.names("pods").len(), 3);
    // Deleting one frees a slot.
    let first = plane.list()[0].id.clone();
    plane.delete(&first).await.unwrap();
    plane.create("pong").await.unwrap();
    assert!(plane.create("pong").await.is_err());
}

#[tokio::test]
async fn unknown_games_touch_nothing() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 3);
    let err = plane.create("tetris").await.unwrap_err();
    assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
    assert!(err.to_string().contains("pong"), "{err}");
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn the_reaper_asks_a_bounded_number_of_streamers_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let api = FakeApi::start().await;
    let probe = Arc::new(FakeProbe {
        delay: std::time::Duration::from_millis(20),
        ..FakeProbe::default()
    });
    let sessions = 200;
    let plane = plane(&api, probe.clone(), sessions);
    let mut since = None;
    for i in 0..sessions {
        let view = plane.create("pong").await.unwrap();
        let created = since.get_or_insert_with(|| view.created_at.clone()).clone();
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        api.set_pod_status(&name(&view), ready(&ip, &created));
        probe.set(&ip, Some(0));
    }
    let reaped = plane.reap_once(Timestamp::now()).await.unwrap();
    assert!(reaped.is_empty(), "{reaped:?}");
    assert_eq!(probe.probes.load(SeqCst), sessions as usize);
    let most = probe.most_in_flight.load(SeqCst);
    assert_eq!(
        most,
        playpod::control::plane::PROBES_AT_ONCE,
        "streamers asked at the same time"
    );
}

/// A policy that waits `timeout` for each answer, `attempts` times, without backoff.
fn quick(attempts: u32, timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff: Duration::from_millis(1),
        timeout,
    }
}

#[tokio::test]
async fn an_api_server_that_stops_answering_fails_the_create_in_time_and_leaves_nothing() {
    let api = FakeApi::start().await;
    let plane = plane_with(
        &api,
        Arc::new(FakeProbe::default()),
        5,
        quick(2, Duration::from_millis(300)),
    );

    // The first apply of the pod is stored but never answered: the retry (apply is idempotent)
    // makes the session.
    let _hung = api.hold(Method::PATCH, "pods", Hold::After);
    let started = Instant::now();
    let view = plane.create("pong").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} for a server that does not answer",
        started.elapsed()
    );
    assert!(api.object("ingresses", &name(&view)).is_some());
    assert_eq!(plane.list().len(), 1);

    // No answer to any attempt: 504 in about two timeouts, and the pod the server did store is
    // deleted again.
    let _first = api.hold(Method::PATCH, "pods", Hold::After);
    let _second = api.hold(Method::PATCH, "pods", Hold::After);
    let started = Instant::now();
    let err = plane.create("pong").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT, "{err}");
    assert_eq!(err.metric_label(), "kube_timeout");
    assert!(err.to_string().contains("apply pod"), "{err}");
    assert_eq!(
        api.names("pods"),
        [name(&view)],
        "only the first session's pod may be left"
    );
    assert_eq!(plane.list().len(), 1);
    let metrics = plane.metrics().encode();
    assert!(
        metrics.contains("playpod_control_errors_total{kind=\"kube_timeout\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_reaper_outlives_an_api_server_that_stops_answering() {
    let api = FakeApi::start().await;
    // Lists may take twice the timeout.
    let plane = plane_with(
        &api,
        Arc::new(FakeProbe::default()),
        5,
        quick(1, Duration::from_millis(100)),
    );
    let ended = plane.create("pong").await.unwrap();
    api.set_pod_status(&name(&ended), json!({"phase": "Succeeded"}));

    let _hung = api.hold(Method::GET, "pods", Hold::Before);
    let started = Instant::now();
    let err = plane.reap_once(Timestamp::now()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the reaper waited {:?} for the list",
        started.elapsed()
    );
    assert_eq!(err.metric_label(), "kube_timeout", "{err}");
    assert_eq!(plane.list().len(), 1, "nothing reaped on no information");

    // The next pass finds the server answering again.
    let reaped = plane.reap_once(Timestamp::now()).await.unwrap();
    assert_eq!(reaped, [(ended.id.clone(), "ended")]);
    assert!(api.names("pods").is_empty());
}

#[tokio::test]
async fn a_session_created_while_a_rebuild_lists_stays_in_view_and_counted() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 1);
    let pod_apply = api.hold(Method::PATCH, "pods", Hold::Before);
    let list = api.hold(Method::GET, "pods", Hold::After);
    let creating = tokio::spawn({
        let plane = plane.clone();
        async move { plane.create("pong").await }
    });
    // The creation has begun; its pod is not made yet when the rebuild reads the list.
    pod_apply.arrived().await;
    let rebuilding = tokio::spawn({
        let plane = plane.clone();
        async move { plane.rebuild().await }
    });
    list.arrived().await;
    pod_apply.release();
    let view = creating.await.unwrap().unwrap();
    list.release();
    assert_eq!(rebuilding.await.unwrap().unwrap(), 1);

    // Right after its 201 the session can be read, deleted, and counts against the limit.
    assert_eq!(plane.get(&view.id).unwrap().token, view.token);
    let err = plane.create("pong").await.unwrap_err();
    assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(api.names("pods").len(), 1);
    plane.delete(&view.id).await.unwrap();
    assert!(api.names("pods").is_empty());
}

#[tokio::test]
async fn a_session_deleted_while_a_rebuild_lists_stays_deleted() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let view = plane.create("pong").await.unwrap();
    let list = api.hold(Method::GET, "pods", Hold::After);
    let rebuilding = tokio::spawn({
        let plane = plane.clone();
        async move { plane.rebuild().await }
    });
    // The list holds the pod; then the session is deleted before the rebuild uses the list.
    list.arrived().await;
    plane.delete(&view.id).await.unwrap();
    list.release();
    assert_eq!(rebuilding.await.unwrap().unwrap(), 0);
    assert!(plane.list().is_empty(), "{:?}", plane.list());
    assert!(plane.get(&view.id).is_err());
    assert!(
        plane
            .metrics()
            .encode()
            .contains("playpod_control_sessions_active 0\n")
    );
}

#[tokio::test]
async fn a_failed_creation_seen_by_a_rebuild_leaves_no_ghost() {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 5);
    let service_apply = api.hold(Method::PATCH, "services", Hold::Before);
    api.fail(Method::PATCH, "services", 409, 1);
    let creating = tokio::spawn({
        let plane = plane.clone();
        async move { plane.create("pong").await }
    });
    // The pod is made, its service not yet: a rebuild lists the half-made session.
    service_apply.arrived().await;
    assert_eq!(plane.rebuild().await.unwrap(), 1);
    service_apply.release();
    let err = creating.await.unwrap().unwrap_err();
    assert_eq!(err.status(), StatusCode::CONFLICT);
    assert!(api.names("pods").is_empty());
    assert!(plane.list().is_empty(), "{:?}", plane.list());
    assert!(
        plane
            .metrics()
            .encode()
            .contains("playpod_control_sessions_active 0\n")
    );
}
