//! A session as the control plane sees it, read back from its Pod (labels, annotations, status),
//! so that the view can be rebuilt from the cluster after a restart.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::manifests::{
    ANNOTATION_CREATED, ANNOTATION_EXPIRES, FIELD_MANAGER, LABEL_GAME, LABEL_MANAGED_BY,
    LABEL_SESSION, STREAMER_CONTAINER, SessionSpec, TOKEN_ENV, is_session_id,
};

/// What the cluster says about a session's pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: Option<String>,
    /// The pod's `Ready` condition is `True`.
    pub ready: bool,
    /// When the `Ready` condition last changed, or when the pod was created.
    pub ready_changed_at: Option<Timestamp>,
    /// Where its streamer answers /readyz.
    pub pod_ip: Option<String>,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub spec: SessionSpec,
    pub pod: PodState,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: String,
    pub url: String,
    pub token: String,
    pub expires_at: String,
    pub game: String,
    pub created_at: String,
    pub phase: String,
    pub ready: bool,
}

impl Session {
    /// The API view, with URLs under `base_url`.
    pub fn view(&self, base_url: &str) -> SessionView {
        SessionView {
            id: self.spec.id.clone(),
            url: format!("{base_url}/play/{}/", self.spec.token),
            token: self.spec.token.clone(),
            expires_at: self.spec.expires_at.to_string(),
            game: self.spec.game.clone(),
            created_at: self.spec.created_at.to_string(),
            phase: self
                .pod
                .phase
                .clone()
                .unwrap_or_else(|| "Pending".to_owned()),
            ready: self.pod.ready,
        }
    }

    /// Reads a session back from its pod. `Err` says why the pod is not a well-formed session of
    /// this control plane (then it is left alone and reported).
    pub fn from_pod(pod: &Pod) -> Result<Self, String> {
        let listed = serde_json::to_value(pod)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("pod {}: {e}", pod.metadata.name.as_deref().unwrap_or("?")))?;
        Self::from_listed(&listed)
    }

    /// [`Session::from_pod`] from the parts of the pod a session is read from.
    pub fn from_listed(pod: &ListedPod) -> Result<Self, String> {
        let meta = &pod.metadata;
        let name = meta.name.as_deref().unwrap_or("?");
        let labels = meta.labels.as_ref().ok_or("no labels")?;
        if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(FIELD_MANAGER) {
            return Err(format!("pod {name} is not managed by playpod"));
        }
        let id = labels
            .get(LABEL_SESSION)
            .filter(|id| is_session_id(id))
            .ok_or_else(|| format!("pod {name} has no valid {LABEL_SESSION} label"))?;
        let game = labels
            .get(LABEL_GAME)
            .ok_or_else(|| format!("pod {name} has no {LABEL_GAME} label"))?;
        let time = |key: &str| -> Result<Timestamp, String> {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .ok_or_else(|| format!("pod {name} has no {key} annotation"))?
                .parse()
                .map_err(|e| format!("pod {name}: bad {key}: {e}"))
        };
        let token = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == STREAMER_CONTAINER))
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == TOKEN_ENV))
            .and_then(|e| e.value.clone())
            .ok_or_else(|| format!("pod {name} has no {TOKEN_ENV} in its streamer container"))?;
        let spec = SessionSpec {
            id: id.clone(),
            token,
            game: game.clone(),
            created_at: time(ANNOTATION_CREATED)?,
            expires_at: time(ANNOTATION_EXPIRES)?,
        };
        Ok(Self {
            pod: pod_state(pod, spec.created_at),
            spec,
        })
    }
}

/// The parts of a Pod a session is read from. The list of every session pod is read into these
/// alone, serde passing over the rest (most of the spec, the managed fields): thousands of
/// session pods, a page at a time, then cost little memory while they are read, and leave
/// little of it scattered behind.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedPod {
    #[serde(default)]
    pub metadata: ListedMeta,
    pub spec: Option<ListedSpec>,
    pub status: Option<ListedStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedMeta {
    pub name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// Set once the pod is being deleted (its value does not matter here).
    pub deletion_timestamp: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedSpec {
    #[serde(default)]
    pub containers: Vec<ListedContainer>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedContainer {
    pub name: String,
    pub env: Option<Vec<ListedEnv>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListedEnv {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    pub conditions: Option<Vec<ListedCondition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_transition_time: Option<Timestamp>,
}

fn pod_state(pod: &ListedPod, created_at: Timestamp) -> PodState {
    let Some(status) = &pod.status else {
        return PodState {
            ready_changed_at: Some(created_at),
            ..PodState::default()
        };
    };
    let ready = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    PodState {
        phase: status.phase.clone(),
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_changed_at: Some(
            ready
                .and_then(|c| c.last_transition_time)
                .unwrap_or(created_at),
        ),
        pod_ip: status.pod_ip.clone().filter(|ip| !ip.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Catalog, SessionConfig};
    use super::super::manifests;
    use super::super::manifests::tests::spec;
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_built_pod_reads_back_as_the_same_session() {
        let catalog = Catalog::default();
        let mut pod = manifests::pod(&spec(), &catalog.games[0], &SessionConfig::default(), "ns");
        let session = Session::from_pod(&pod).unwrap();
        assert_eq!(session.spec, spec());
        assert!(!session.pod.ready);

        pod.status = Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("10.0.0.7".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                last_transition_time: Some(Time("2026-01-01T00:01:00Z".parse().unwrap())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        let session = Session::from_pod(&pod).unwrap();
        assert!(session.pod.ready);
        assert_eq!(session.pod.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            session.pod.ready_changed_at,
            Some("2026-01-01T00:01:00Z".parse().unwrap())
        );
        let view = session.view("https://x.test");
        assert_eq!(
            view.url,
            "https://x.test/play/fedcba9876543210fedcba9876543210/"
        );
        assert_eq!(view.expires_at, "2026-01-01T02:00:00Z");
    }

    /// A pod as the API server lists it, with what the session is not read from (volumes,
    /// managed fields, container statuses), reads as the same session as the typed Pod.
    #[test]
    fn a_listed_pod_reads_as_the_typed_one() {
        let catalog = Catalog::default();
        let pod = manifests::pod(&spec(), &catalog.games[0], &SessionConfig::default(), "ns");
        let mut json = serde_json::to_value(&pod).unwrap();
        json["metadata"]["managedFields"] = serde_json::json!([{"manager": "playpod",
            "fieldsV1": {"f:spec": {"f:containers": {}}}}]);
        json["status"] = serde_json::json!({
            "phase": "Running", "podIP": "10.1.2.3", "hostIP": "10.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:09Z"}
            ],
            "containerStatuses": [{"name": "streamer", "ready": true, "restartCount": 0}]
        });
        let listed: ListedPod = serde_json::from_value(json.clone()).unwrap();
        let typed: Pod = serde_json::from_value(json).unwrap();
        let session = Session::from_listed(&listed).unwrap();
        assert_eq!(session, Session::from_pod(&typed).unwrap());
        assert_eq!(session.spec, spec());
        assert_eq!(
            session.pod,
            PodState {
                phase: Some("Running".to_owned()),
                ready: true,
                ready_changed_at: Some("2026-01-01T00:00:09Z".parse().unwrap()),
                pod_ip: Some("10.1.2.3".to_owned()),
            }
        );
        assert!(listed.metadata.deletion_timestamp.is_none());
        let deleting: ListedPod = serde_json::from_value(
            serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        )
        .unwrap();
        assert!(deleting.metadata.deletion_timestamp.is_some());
    }

    #[test]
    fn foreign_or_broken_pods_are_refused() {
        let catalog = Catalog::default();
        let good = manifests::pod(&spec(), &catalog.games[0], &SessionConfig::default(), "ns");
        let mut helm = good.clone();
        helm.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_MANAGED_BY.to_owned(), "Helm".to_owned());
        assert!(Session::from_pod(&helm).is_err());
        let mut no_expiry = good.clone();
        no_expiry
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ANNOTATION_EXPIRES);
        assert!(Session::from_pod(&no_expiry).is_err());
        let mut bad_id = good.clone();
        bad_id
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_SESSION.to_owned(), "x".to_owned());
        assert!(Session::from_pod(&bad_id).is_err());
        let mut no_token = good;
        no_token.spec.as_mut().unwrap().containers[1].env = None;
        assert!(Session::from_pod(&no_token).is_err());
    }
}
