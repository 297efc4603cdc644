//! A session as the control plane sees it, read back from its Pod (labels, annotations, status),
//! so that the view can be rebuilt from the cluster after a restart.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

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

fn pod_state(pod: &Pod, created_at: Timestamp) -> PodState {
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
                .and_then(|c| c.last_transition_time.as_ref())
                .map_or(created_at, |t| t.0),
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
