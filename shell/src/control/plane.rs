//! The control plane proper: creates sessions with server-side apply, deletes them, keeps a view
//! that is rebuilt from the cluster (labels, not memory), and reaps sessions past their TTL, idle,
//! ended or never ready.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, ObjectList, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::{Catalog, SessionConfig};
use super::error::{Error, Result};
use super::manifests::{self, FIELD_MANAGER, SESSION_SELECTOR, SessionSpec};
use super::metrics::Metrics;
use super::probe::ReadyProbe;
use super::session::{ListedPod, Session, SessionView};

/// Streamers the reaper asks for their readiness at the same time.
pub const PROBES_AT_ONCE: usize = 64;

/// A page of the list of session pods may take this many times [`RetryPolicy::timeout`] (the
/// API server itself ends a request after a minute).
pub const LIST_TIMEOUT_FACTOR: u32 = 2;

/// Session pods in one page of their list.
pub const LIST_PAGE: u32 = 500;

/// How long a Kubernetes API call may take, and how transient failures (5xx, 429, transport, no
/// answer in time) are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// Wait before retry n is n times this.
    pub backoff: Duration,
    /// Longest wait for one attempt's answer: an API server that stops answering must hold
    /// neither an API request nor the reaper for ever. The default is the longest an admission
    /// webhook may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why the reaper ended a session (the `reason` label of `sessions_reaped`).
pub mod reason {
    /// Past its TTL.
    pub const TTL: &str = "ttl";
    /// Nobody connected for the idle time.
    pub const IDLE: &str = "idle";
    /// The pod finished (the game exited, or the pod failed).
    pub const ENDED: &str = "ended";
    /// The pod has not been ready for the startup grace time.
    pub const UNREADY: &str = "unready";
}

/// The verdict that needs no network: TTL, pod phase, readiness. `None`: ask the streamer.
pub fn verdict(session: &Session, now: Timestamp, config: &SessionConfig) -> Option<&'static str> {
    if now >= session.spec.expires_at {
        return Some(reason::TTL);
    }
    if matches!(
        session.pod.phase.as_deref(),
        Some("Succeeded") | Some("Failed")
    ) {
        return Some(reason::ENDED);
    }
    if !session.pod.ready {
        let since = session
            .pod
            .ready_changed_at
            .unwrap_or(session.spec.created_at);
        let grace = SignedDuration::from_secs(config.startup_grace_seconds.into());
        if now.duration_since(since) > grace {
            return Some(reason::UNREADY);
        }
    }
    None
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeMap<String, Session>,
    /// Creations under way: they count against the limit.
    pending: u32,
    /// Rebuilds whose list of pods is in flight.
    rebuilds: u32,
    /// Sessions added (`Some`) or removed (`None`) while a rebuild was in flight, numbered: its
    /// list may have been read before they happened, so the rebuild replays them on it.
    changes: Vec<(u64, String, Option<Session>)>,
    /// Number of the latest change.
    changed: u64,
}

impl State {
    fn insert(&mut self, session: Session) {
        self.changed += 1;
        if self.rebuilds > 0 {
            self.changes
                .push((self.changed, session.spec.id.clone(), Some(session.clone())));
        }
        self.sessions.insert(session.spec.id.clone(), session);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        self.changed += 1;
        if self.rebuilds > 0 {
            self.changes.push((self.changed, id.to_owned(), None));
        }
        self.sessions.remove(id)
    }
}

/// The control plane.
pub struct ControlPlane {
    client: kube::Client,
    namespace: String,
    catalog: Catalog,
    config: SessionConfig,
    base_url: String,
    probe: Arc<dyn ReadyProbe>,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
    state: Mutex<State>,
}

impl Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("namespace", &self.namespace)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Frees a reserved session slot when creation ends, however it ends.
struct Slot<'a>(&'a ControlPlane);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.pending = state.pending.saturating_sub(1);
    }
}

/// Marks a rebuild in flight, however it ends.
struct Rebuilding<'a>(&'a ControlPlane);

impl Drop for Rebuilding<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.rebuilds = state.rebuilds.saturating_sub(1);
        if state.rebuilds == 0 {
            state.changes.clear();
        }
    }
}

impl ControlPlane {
    /// A control plane for `namespace`. Fails on an invalid session configuration.
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        catalog: Catalog,
        config: SessionConfig,
        probe: Arc<dyn ReadyProbe>,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
    ) -> Result<Self> {
        config.check()?;
        Ok(Self {
            client,
            namespace: namespace.into(),
            catalog,
            base_url: config.base_url()?,
            config,
            probe,
            metrics,
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the map stays usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn update_gauge(&self, state: &State) {
        self.metrics
            .sessions_active
            .set(i64::try_from(state.sessions.len()).unwrap_or(i64::MAX));
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<SessionView> {
        let state = self.lock();
        let mut sessions: Vec<_> = state.sessions.values().collect();
        sessions.sort_by_key(|s| (s.spec.created_at, s.spec.id.clone()));
        sessions.iter().map(|s| s.view(&self.base_url)).collect()
    }

    /// One session.
    pub fn get(&self, id: &str) -> Result<SessionView> {
        self.lock()
            .sessions
            .get(id)
            .map(|s| s.view(&self.base_url))
            .ok_or_else(|| unknown_session(id))
    }

    /// Adds a listed pod's session to `found`, unless it is being deleted; a pod labelled as a
    /// session that does not read as one is counted and passed over.
    fn take_listed(&self, pod: &ListedPod, found: &mut BTreeMap<String, Session>) {
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        match Session::from_listed(pod) {
            Ok(session) => {
                found.insert(session.spec.id.clone(), session);
            }
            Err(why) => {
                tracing::warn!(%why, "ignoring a pod labelled as a session");
                self.metrics
                    .errors
                    .get_or_create(&super::metrics::KindLabel {
                        kind: "bad_session_pod",
                    })
                    .inc();
            }
        }
    }

    /// Replaces the view with what the cluster holds: every pod labelled as a session of this
    /// control plane and not being deleted. Sessions created or deleted through this control
    /// plane while the list was in flight stay created or deleted. Returns how many sessions
    /// there are.
    pub async fn rebuild(&self) -> Result<usize> {
        let since = {
            let mut state = self.lock();
            state.rebuilds += 1;
            state.changed
        };
        let _rebuilding = Rebuilding(self);
        // Read as the parts a session is made of, not as whole Pods (see ListedPod).
        let pods = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", self.namespace));
        let mut found = BTreeMap::new();
        // A page at a time, each read into sessions (a small part of a Pod) before the next:
        // thousands of session pods are never one answer, in the API server or here. The pages
        // are one consistent list: the continue token carries its resource version.
        let mut next: Option<String> = None;
        loop {
            let mut params = ListParams::default()
                .labels(SESSION_SELECTOR)
                .limit(LIST_PAGE);
            if let Some(token) = next.take() {
                params = params.continue_token(&token);
            }
            let (pods, params, client) = (&pods, &params, &self.client);
            let page: ObjectList<ListedPod> = self
                .call(
                    "list session pods",
                    self.retry.timeout * LIST_TIMEOUT_FACTOR,
                    move || {
                        let request = pods.list(params).map_err(kube::Error::BuildRequest);
                        async move { client.request(request?).await }
                    },
                )
                .await?;
            for pod in &page.items {
                self.take_listed(pod, &mut found);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => break,
            }
        }
        let mut state = self.lock();
        // The list may predate what was created or deleted while it was in flight.
        for (_, id, change) in state.changes.iter().filter(|(n, ..)| *n > since) {
            match change {
                Some(session) => {
                    found.entry(id.clone()).or_insert_with(|| session.clone());
                }
                None => {
                    found.remove(id);
                }
            }
        }
        state.sessions = found;
        self.update_gauge(&state);
        let sessions = state.sessions.len();
        drop(state);
        Ok(sessions)
    }

    fn reserve(&self) -> Result<Slot<'_>> {
        let mut state = self.lock();
        let used = u32::try_from(state.sessions.len())
            .unwrap_or(u32::MAX)
            .saturating_add(state.pending);
        if used >= self.config.max_sessions {
            return Err(Error::TooManySessions(self.config.max_sessions));
        }
        state.pending += 1;
        Ok(Slot(self))
    }

    /// Creates a session of `game`: Pod, then Service and Ingress owned by it. On any failure
    /// what was applied, or may have been, is deleted again. Callers that may be cancelled (an
    /// HTTP client hanging up) run it in a task of its own, so that it never stops half-way.
    pub async fn create(&self, game: &str) -> Result<SessionView> {
        let entry = self.catalog.get(game).ok_or_else(|| Error::UnknownGame {
            game: game.chars().take(64).collect(),
            known: self
                .catalog
                .games
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let _slot = self.reserve()?;
        let started = Instant::now();
        let now = Timestamp::now();
        let spec = SessionSpec {
            id: manifests::random_id(),
            token: crate::token::random_token(),
            game: entry.name.clone(),
            created_at: now,
            expires_at: now + SignedDuration::from_mins(self.config.ttl_minutes.into()),
        };
        let pod = manifests::pod(&spec, entry, &self.config, &self.namespace);
        match self.apply_session(&spec, &pod).await {
            Ok(applied) => {
                let session = Session::from_pod(&applied).unwrap_or(Session {
                    spec: spec.clone(),
                    pod: Default::default(),
                });
                let view = session.view(&self.base_url);
                let mut state = self.lock();
                state.insert(session);
                self.update_gauge(&state);
                drop(state);
                self.metrics.sessions_created.inc();
                self.metrics
                    .create_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(id = %spec.id, game = %spec.game, "session created");
                Ok(view)
            }
            Err(err) => {
                // A rebuild while it was being made may have listed its pod: it is gone again.
                let mut state = self.lock();
                state.remove(&spec.id);
                self.update_gauge(&state);
                drop(state);
                self.metrics.sessions_failed.inc();
                tracing::warn!(id = %spec.id, game = %spec.game, %err, "session creation failed");
                Err(err)
            }
        }
    }

    async fn apply_session(&self, spec: &SessionSpec, pod: &Pod) -> Result<Pod> {
        let name = manifests::object_name(&spec.id);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), &self.namespace);

        let applied = match self.apply(&pods, "pod", &name, pod).await {
            Ok(applied) => applied,
            Err(err) => {
                // No answer or a server error may still have made the pod: delete it again. A
                // definite refusal (409: someone else's object of that name; 422) made nothing.
                if err.is_transient()
                    && let Err(cleanup) = self.delete_object::<Pod>("pod", &name).await
                {
                    self.metrics.error(&cleanup);
                    tracing::error!(id = %spec.id, %cleanup, "could not delete a failed session's pod");
                }
                return Err(err);
            }
        };
        let result = async {
            let uid = applied.metadata.uid.as_deref().ok_or_else(|| {
                Error::Io(format!(
                    "the API server answered the apply of pod {name} without a uid"
                ))
            })?;
            let owner = manifests::owner_reference(&name, uid);
            let service = manifests::service(spec, &self.namespace, &owner);
            self.apply(&services, "service", &name, &service).await?;
            let ingress = manifests::ingress(spec, &self.config, &self.namespace, &owner);
            self.apply(&ingresses, "ingress", &name, &ingress).await
        }
        .await;
        match result {
            Ok(_) => Ok(applied),
            Err(err) => {
                // Back out: nothing of a failed session may stay behind.
                if let Err(cleanup) = self.delete_objects(&spec.id).await {
                    self.metrics.error(&cleanup);
                    tracing::error!(id = %spec.id, %cleanup, "could not delete a failed session's objects");
                }
                Err(err)
            }
        }
    }

    /// One Kubernetes API call (`attempt` makes it anew each time), each attempt bounded by
    /// `timeout`, transient failures retried as the policy says.
    async fn call<T, F, Fut>(&self, action: &str, timeout: Duration, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kube::Result<T>>,
    {
        let mut tries = 1;
        loop {
            let err = match tokio::time::timeout(timeout, attempt()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => Error::kube(action, e),
                Err(_) => Error::KubeTimeout {
                    action: action.to_owned(),
                    after: timeout,
                },
            };
            if !err.is_transient() || tries >= self.retry.attempts {
                return Err(err);
            }
            self.metrics.error(&err);
            tracing::warn!(%err, attempt = tries, "retrying");
            tokio::time::sleep(self.retry.backoff * tries).await;
            tries += 1;
        }
    }

    async fn apply<K>(&self, api: &Api<K>, kind: &str, name: &str, object: &K) -> Result<K>
    where
        K: Clone + DeserializeOwned + Serialize + Debug,
    {
        let params = PatchParams::apply(FIELD_MANAGER);
        let patch = Patch::Apply(object);
        let (params, patch) = (&params, &patch);
        self.call(
            &format!("apply {kind} {name}"),
            self.retry.timeout,
            move || api.patch(name, params, patch),
        )
        .await
    }

    /// Deletes one object of this namespace; one already gone is fine.
    async fn delete_object<K>(&self, kind: &str, name: &str) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = &Api::<K>::namespaced(self.client.clone(), &self.namespace);
        let params = &DeleteParams::background();
        self.call(
            &format!("delete {kind} {name}"),
            self.retry.timeout,
            move || async move {
                match api.delete(name, params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    /// Deletes the Ingress, the Service and the Pod of session `id` (each already gone is fine),
    /// and answers the first failure. Deleting the other two first takes the route down at once;
    /// the Pod is deleted even when they could not be, as it owns them: the garbage collector
    /// removes them with it.
    async fn delete_objects(&self, id: &str) -> Result<()> {
        let name = manifests::object_name(id);
        let ingress = self.delete_object::<Ingress>("ingress", &name).await;
        let service = self.delete_object::<Service>("service", &name).await;
        let pod = self.delete_object::<Pod>("pod", &name).await;
        ingress.and(service).and(pod)
    }

    /// Deletes session `id`. Deleting one that a concurrent delete (or the reaper) is ending
    /// succeeds too; it is counted once.
    pub async fn delete(&self, id: &str) -> Result<()> {
        if !self.lock().sessions.contains_key(id) {
            return Err(unknown_session(id));
        }
        self.delete_objects(id).await?;
        let mut state = self.lock();
        let removed = state.remove(id).is_some();
        self.update_gauge(&state);
        drop(state);
        if removed {
            self.metrics.sessions_deleted.inc();
            tracing::info!(%id, "session deleted");
        }
        Ok(())
    }

    /// Why session `s` should end at `now`, if it should; asks its streamer whether it is idle.
    async fn session_verdict(
        &self,
        s: &Session,
        now: Timestamp,
        idle_limit: u64,
    ) -> Option<&'static str> {
        if let Some(reason) = verdict(s, now, &self.config) {
            return Some(reason);
        }
        let ip = s.pod.pod_ip.as_deref()?;
        match self.probe.probe(ip).await {
            Ok(r) if r.idle_seconds >= idle_limit => Some(reason::IDLE),
            Ok(_) => None,
            Err(err) => {
                self.metrics.error(&err);
                tracing::warn!(id = %s.spec.id, %err, "cannot read the session's readiness");
                None
            }
        }
    }

    /// One pass of the reaper at time `now`: rebuilds the view from the cluster, then ends every
    /// session past its TTL, finished, never ready, or idle (asking each ready streamer's
    /// /readyz). Returns the sessions ended, with why.
    pub async fn reap_once(&self, now: Timestamp) -> Result<Vec<(String, &'static str)>> {
        self.rebuild().await?;
        let sessions: Vec<Session> = self.lock().sessions.values().cloned().collect();
        let idle_limit = u64::from(self.config.idle_minutes) * 60;
        // Collected first: a lazy map here makes the reaper's future not provably `Send`.
        let asks: Vec<_> = sessions
            .iter()
            .map(|s| self.session_verdict(s, now, idle_limit))
            .collect();
        // A bounded number at once: thousands of sessions must not become thousands of
        // connections (and descriptors) in the same instant.
        let verdicts: Vec<Option<&'static str>> = futures_util::stream::iter(asks)
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        let mut reaped = Vec::new();
        for (session, verdict) in sessions.iter().zip(verdicts) {
            let Some(why) = verdict else { continue };
            let id = &session.spec.id;
            match self.delete_objects(id).await {
                Ok(()) => {
                    let mut state = self.lock();
                    let removed = state.remove(id).is_some();
                    self.update_gauge(&state);
                    drop(state);
                    // Otherwise it was deleted through the API meanwhile, and counted there.
                    if removed {
                        self.metrics.reaped(why);
                        tracing::info!(%id, reason = why, "session reaped");
                        reaped.push((id.clone(), why));
                    }
                }
                Err(err) => {
                    self.metrics.error(&err);
                    tracing::warn!(%id, %err, "cannot reap the session; will try again");
                }
            }
        }
        Ok(reaped)
    }

    /// Runs the reaper every `interval` until `shutdown` resolves.
    pub async fn run_reaper(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {
                    if let Err(err) = self.reap_once(Timestamp::now()).await {
                        self.metrics.error(&err);
                        tracing::warn!(%err, "reaper pass failed");
                    }
                }
            }
        }
    }
}

fn unknown_session(id: &str) -> Error {
    Error::NotFound(format!(
        "no session with id {:?}",
        id.chars().take(64).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::super::session::PodState;
    use super::*;

    fn session(ready: bool, phase: &str) -> Session {
        let created_at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        Session {
            spec: SessionSpec {
                id: "0123456789abcdef".to_owned(),
                token: "t".repeat(32),
                game: "pong".to_owned(),
                created_at,
                expires_at: "2026-01-01T02:00:00Z".parse().unwrap(),
            },
            pod: PodState {
                phase: Some(phase.to_owned()),
                ready,
                ready_changed_at: Some(created_at),
                pod_ip: Some("10.0.0.1".to_owned()),
            },
        }
    }

    #[test]
    fn verdicts() {
        let config = SessionConfig::default(); // 300 s startup grace
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let running = session(true, "Running");
        assert_eq!(verdict(&running, at("2026-01-01T01:00:00Z"), &config), None);
        assert_eq!(
            verdict(&running, at("2026-01-01T02:00:00Z"), &config),
            Some(reason::TTL)
        );
        assert_eq!(
            verdict(
                &session(false, "Succeeded"),
                at("2026-01-01T00:00:01Z"),
                &config
            ),
            Some(reason::ENDED)
        );
        let starting = session(false, "Pending");
        assert_eq!(
            verdict(&starting, at("2026-01-01T00:05:00Z"), &config),
            None
        );
        assert_eq!(
            verdict(&starting, at("2026-01-01T00:05:01Z"), &config),
            Some(reason::UNREADY)
        );
    }
}
