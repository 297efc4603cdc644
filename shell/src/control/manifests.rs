//! The Kubernetes objects of one session, built as plain values (no IO): a Pod (game container +
//! streamer container sharing in-memory volumes), a Service and an Ingress on `/play/<token>/`.
//! The Service and the Ingress are owned by the Pod, so deleting the Pod removes the session.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    LocalObjectReference, Pod, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{Catalog, Game, SessionConfig, default_game_resources, non_empty};
use super::error::{Error, Result};

/// Field manager of every server-side apply the control plane makes.
pub const FIELD_MANAGER: &str = "playpod";
/// Label carrying the session id (on all three objects).
pub const LABEL_SESSION: &str = "playpod.io/session";
/// Label carrying the game name.
pub const LABEL_GAME: &str = "playpod.io/game";
/// Standard label: who manages the object. Sessions made with the playpod-session Helm chart
/// say `Helm` here and are left alone by the control plane.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Annotation: when the session was created (RFC 3339).
pub const ANNOTATION_CREATED: &str = "playpod.io/created-at";
/// Annotation: when the session ends at the latest (RFC 3339).
pub const ANNOTATION_EXPIRES: &str = "playpod.io/expires-at";
/// The label selector of every session this control plane made.
pub const SESSION_SELECTOR: &str = "app.kubernetes.io/managed-by=playpod,playpod.io/session";
/// The streamer's HTTP port (player, WebSockets, /healthz, /readyz, /metrics).
pub const STREAMER_PORT: u16 = 8080;
/// Name of the game container.
pub const GAME_CONTAINER: &str = "game";
/// Name of the streamer container.
pub const STREAMER_CONTAINER: &str = "streamer";
/// Environment variable the streamer reads its token from.
pub const TOKEN_ENV: &str = "PLAYPOD_TOKEN";

/// checkov checks that do not fit a session pod, each with the reason (checkov reads
/// `checkov.io/skipN: CHECK=reason` annotations).
pub const CHECKOV_SKIPS: [(&str, &str); 3] = [
    (
        "CKV_K8S_8",
        "the game container runs any catalog image, which need not have a shell or an HTTP port; its \
         health is the streamer's /healthz and /readyz, which check the display it serves",
    ),
    (
        "CKV_K8S_9",
        "readiness of the game container is the streamer's /readyz (display, encoder, audio)",
    ),
    (
        "CKV_K8S_43",
        "images come from the catalog and values by tag; operators pin digests there (image@sha256:...)",
    ),
];

/// Where Xvfb writes its framebuffer file, in both containers.
pub const FRAMEBUFFER_DIR: &str = "/run/playpod/fb";
/// Where PulseAudio puts its socket, in both containers.
pub const PULSE_DIR: &str = "/run/playpod/pulse";
/// The X socket directory, in both containers.
pub const X11_DIR: &str = "/tmp/.X11-unix";
/// How long the streamer waits for the game container's Xvfb (seconds): the kubelet starts a
/// pod's containers without waiting for one to be up before the next.
pub const STREAMER_WAIT_FOR_DISPLAY: i32 = 60;
/// Period of the streamer's startup probe (seconds).
pub const STREAMER_STARTUP_PERIOD: i32 = 5;
/// Failures the streamer's startup probe allows: its HTTP port opens only once the display is
/// up, so the probe waits out the whole `--wait-for-display` and 15 s more (the streamer's own
/// start, the encoder's opening) before the liveness probe takes over.
pub const STREAMER_STARTUP_FAILURES: i32 =
    (STREAMER_WAIT_FOR_DISPLAY + 15) / STREAMER_STARTUP_PERIOD;
/// The extended resource of one GPU (or one time-slice of one) of the NVIDIA device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// What the NVIDIA container runtime mounts into a streamer with a GPU: CUDA (`compute`, the
/// colour conversion), NVENC's libnvidia-encode (`video`) and nvidia-smi (`utility`).
pub const STREAMER_DRIVER_CAPABILITIES: &str = "compute,video,utility";

/// One session's identity and lifetime: everything that is not configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// 64 random bits as 16 hex digits; names the objects (`playpod-<id>`).
    pub id: String,
    /// 128 random bits: the secret path segment.
    pub token: String,
    /// Catalog name of the game.
    pub game: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// The name of all three objects of session `id`.
pub fn object_name(id: &str) -> String {
    format!("playpod-{id}")
}

/// Whether `s` has the form of a session id (16 lowercase hex digits).
pub fn is_session_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh session id: 64 random bits.
pub fn random_id() -> String {
    crate::token::random_token()[..16].to_owned()
}

/// The labels of all three objects.
pub fn labels(spec: &SessionSpec) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "playpod-session"),
        ("app.kubernetes.io/component", "game-session"),
        ("app.kubernetes.io/instance", &object_name(&spec.id)),
        (LABEL_MANAGED_BY, FIELD_MANAGER),
        (LABEL_SESSION, &spec.id),
        (LABEL_GAME, &spec.game),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn memory_volume(name: &str, limit: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity(limit.to_owned())),
        }),
        ..Volume::default()
    }
}

fn disk_volume(name: &str, limit: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(limit.to_owned())),
        }),
        ..Volume::default()
    }
}

fn seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The locked-down container security context both containers share.
fn container_security(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        capabilities: Some(Capabilities {
            drop: Some(strings(&["ALL"])),
            add: None,
        }),
        seccomp_profile: Some(seccomp()),
        ..SecurityContext::default()
    }
}

/// Volumes shared by the two containers, and where they are mounted.
fn shared_mounts() -> Vec<VolumeMount> {
    vec![
        mount("framebuffer", FRAMEBUFFER_DIR),
        mount("x11", X11_DIR),
        mount("pulse", PULSE_DIR),
    ]
}

/// Environment both containers see: where the display and the sound server are.
fn shared_env() -> Vec<EnvVar> {
    vec![
        env("DISPLAY", ":0"),
        env("PULSE_SERVER", &format!("unix:{PULSE_DIR}/native")),
        env("PULSE_RUNTIME_PATH", PULSE_DIR),
        env("HOME", "/tmp"),
    ]
}

/// `resources` with one GPU requested and limited (replacing any other count), if `gpu`.
fn with_gpu(mut resources: ResourceRequirements, gpu: bool) -> ResourceRequirements {
    if gpu {
        let one = Quantity("1".to_owned());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.to_owned(), one.clone());
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.to_owned(), one);
    }
    resources
}

fn game_resources(game: &Game) -> ResourceRequirements {
    let resources = game
        .resources
        .clone()
        .unwrap_or_else(default_game_resources);
    with_gpu(resources, game.gpu)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The toleration of the GPU nodes' taint (the NVIDIA GPU operator's `nvidia.com/gpu:NoSchedule`).
fn gpu_toleration() -> Toleration {
    Toleration {
        key: Some(GPU_RESOURCE.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    }
}

/// The configured tolerations, then the GPU nodes' one if the session has a GPU, each once; none
/// at all when that leaves an empty list.
fn tolerations(config: &SessionConfig, gpu: bool) -> Option<Vec<Toleration>> {
    let mut all: Vec<Toleration> = Vec::new();
    for toleration in config
        .tolerations
        .iter()
        .cloned()
        .chain(gpu.then(gpu_toleration))
    {
        if !all.contains(&toleration) {
            all.push(toleration);
        }
    }
    (!all.is_empty()).then_some(all)
}

/// The session's Pod.
pub fn pod(spec: &SessionSpec, game: &Game, config: &SessionConfig, namespace: &str) -> Pod {
    let uid = config.run_as_user;
    let mut annotations: BTreeMap<String, String> = [
        (ANNOTATION_CREATED.to_owned(), spec.created_at.to_string()),
        (ANNOTATION_EXPIRES.to_owned(), spec.expires_at.to_string()),
    ]
    .into();
    for (i, (check, reason)) in CHECKOV_SKIPS.iter().enumerate() {
        annotations.insert(
            format!("checkov.io/skip{}", i + 1),
            format!("{check}={reason}"),
        );
    }

    let mut game_env = shared_env();
    game_env.push(env("PLAYPOD_FB_DIR", FRAMEBUFFER_DIR));
    game_env.extend(game.env.iter().map(|(k, v)| env(k, v)));
    let mut game_mounts = shared_mounts();
    game_mounts.push(mount("game-tmp", "/tmp"));
    let game_container = Container {
        name: GAME_CONTAINER.to_owned(),
        image: Some(game.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: (!game.command.is_empty()).then(|| game.command.clone()),
        args: (!game.args.is_empty()).then(|| game.args.clone()),
        env: Some(game_env),
        resources: Some(game_resources(game)),
        security_context: Some(container_security(uid)),
        volume_mounts: Some(game_mounts),
        ..Container::default()
    };

    let mut streamer_args = strings(&[
        "pod",
        "--display",
        ":0",
        "--framebuffer",
        &format!("{FRAMEBUFFER_DIR}/Xvfb_screen0"),
        "--listen",
        &format!("[::]:{STREAMER_PORT}"),
        // The game container starts Xvfb beside us: wait for it.
        "--wait-for-display",
        &STREAMER_WAIT_FOR_DISPLAY.to_string(),
    ]);
    streamer_args.extend(config.streamer.extra_args.iter().cloned());
    let mut streamer_env = shared_env();
    streamer_env.push(env(TOKEN_ENV, &spec.token));
    streamer_env.push(env("PLAYPOD_LOG_FORMAT", "json"));
    if config.streamer.gpu {
        streamer_env.push(env(
            "NVIDIA_DRIVER_CAPABILITIES",
            STREAMER_DRIVER_CAPABILITIES,
        ));
    }
    let mut streamer_mounts = shared_mounts();
    streamer_mounts.push(mount("streamer-tmp", "/tmp"));
    let streamer = Container {
        name: STREAMER_CONTAINER.to_owned(),
        image: Some(config.streamer.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(streamer_args),
        env: Some(streamer_env),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: i32::from(STREAMER_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // Nothing answers before the display is up: the startup probe allows for the whole wait,
        // and holds back the other two until the streamer answers.
        startup_probe: Some(http_probe(
            "/healthz",
            STREAMER_STARTUP_PERIOD,
            STREAMER_STARTUP_FAILURES,
        )),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: Some(with_gpu(
            config.streamer.resources.clone(),
            config.streamer.gpu,
        )),
        security_context: Some(container_security(uid)),
        volume_mounts: Some(streamer_mounts),
        ..Container::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(object_name(&spec.id)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(spec)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // A session is one run of the game: when it exits, the session has ended.
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(10),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(uid),
                run_as_group: Some(uid),
                fs_group: Some(uid),
                seccomp_profile: Some(seccomp()),
                ..PodSecurityContext::default()
            }),
            image_pull_secrets: (!config.image_pull_secrets.is_empty()).then(|| {
                config
                    .image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            node_selector: (!config.node_selector.is_empty()).then(|| config.node_selector.clone()),
            priority_class_name: non_empty(&config.priority_class_name).map(str::to_owned),
            tolerations: tolerations(config, game.gpu || config.streamer.gpu),
            affinity: config
                .affinity
                .clone()
                .filter(|affinity| *affinity != Affinity::default()),
            volumes: Some(vec![
                memory_volume("framebuffer", &config.framebuffer_size_limit),
                memory_volume("x11", "1Mi"),
                memory_volume("pulse", "8Mi"),
                disk_volume("game-tmp", &config.tmp_size_limit),
                disk_volume("streamer-tmp", &config.tmp_size_limit),
            ]),
            containers: vec![game_container, streamer],
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Makes the Pod (once the API server gave it a uid) the owner of the Service and Ingress.
pub fn owner_reference(pod_name: &str, pod_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: pod_name.to_owned(),
        uid: pod_uid.to_owned(),
        controller: Some(true),
        // Setting blockOwnerDeletion needs update rights on pods/finalizers; not needed here.
        block_owner_deletion: None,
    }
}

fn owned_meta(spec: &SessionSpec, namespace: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(&spec.id)),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(spec)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The session's Service: the streamer's port, selected by session id.
pub fn service(spec: &SessionSpec, namespace: &str, owner: &OwnerReference) -> Service {
    Service {
        metadata: owned_meta(spec, namespace, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some([(LABEL_SESSION.to_owned(), spec.id.clone())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(STREAMER_PORT),
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The path prefix the Ingress routes: the streamer serves everything under it.
pub fn play_path(token: &str) -> String {
    format!("/play/{token}/")
}

/// The session's Ingress: `/play/<token>/` on the configured host, to the Service.
pub fn ingress(
    spec: &SessionSpec,
    config: &SessionConfig,
    namespace: &str,
    owner: &OwnerReference,
) -> Ingress {
    let ingress = &config.ingress;
    let mut metadata = owned_meta(spec, namespace, owner);
    metadata.annotations = (!ingress.annotations.is_empty()).then(|| ingress.annotations.clone());
    let host = non_empty(&ingress.host).map(str::to_owned);
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: non_empty(&ingress.class_name).map(str::to_owned),
            tls: non_empty(&ingress.tls_secret_name).map(|secret| {
                vec![IngressTLS {
                    hosts: host.clone().map(|h| vec![h]),
                    secret_name: Some(secret.to_owned()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host,
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(play_path(&spec.token)),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: object_name(&spec.id),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".to_owned()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

/// Writes `<game>.yaml` (Pod, Service, Ingress of a sample session) for every catalog game into
/// `dir`, for schema validation and security checks of exactly what the control plane applies.
pub fn dump(
    dir: &Path,
    catalog: &Catalog,
    config: &SessionConfig,
    namespace: &str,
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
    let created_at = Timestamp::now();
    let mut written = Vec::new();
    for game in &catalog.games {
        let spec = SessionSpec {
            id: "00000000000000d1".to_owned(),
            token: "0123456789abcdef0123456789abcdef".to_owned(),
            game: game.name.clone(),
            created_at,
            expires_at: created_at + jiff::SignedDuration::from_mins(config.ttl_minutes.into()),
        };
        let pod = pod(&spec, game, config, namespace);
        let owner = owner_reference(
            &object_name(&spec.id),
            "00000000-0000-4000-8000-0000000000d1",
        );
        let service = service(&spec, namespace, &owner);
        let ingress = ingress(&spec, config, namespace, &owner);
        let docs = [
            serde_saphyr::to_string(&pod),
            serde_saphyr::to_string(&service),
            serde_saphyr::to_string(&ingress),
        ]
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Io(format!("cannot write YAML: {e}")))?;
        let path = dir.join(format!("{}.yaml", game.name));
        std::fs::write(&path, docs.join("---\n"))
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A session made on 2026-01-01 for two hours, shared by the control plane's unit tests.
    pub(in crate::control) fn spec() -> SessionSpec {
        let created_at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        SessionSpec {
            id: "0123456789abcdef".to_owned(),
            token: "fedcba9876543210fedcba9876543210".to_owned(),
            game: "pong".to_owned(),
            created_at,
            expires_at: created_at + jiff::SignedDuration::from_hours(2),
        }
    }

    #[test]
    fn pod_is_locked_down_and_shares_the_screen() {
        let catalog = Catalog::default();
        let pod = pod(
            &spec(),
            catalog.get("pong").unwrap(),
            &SessionConfig::default(),
            "games",
        );
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["name"], "playpod-0123456789abcdef");
        assert_eq!(v["metadata"]["labels"][LABEL_SESSION], "0123456789abcdef");
        assert_eq!(
            v["metadata"]["annotations"][ANNOTATION_EXPIRES],
            "2026-01-01T02:00:00Z"
        );
        let spec = &v["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in spec["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"][0], "ALL");
            let mounts: Vec<_> = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            for shared in [FRAMEBUFFER_DIR, X11_DIR, PULSE_DIR, "/tmp"] {
                assert!(mounts.contains(&shared), "{} lacks {shared}", c["name"]);
            }
        }
        let streamer = &spec["containers"][1];
        assert_eq!(streamer["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(streamer["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(
            streamer["resources"]["limits"]
                .get("nvidia.com/gpu")
                .is_none(),
            "{streamer}"
        );
        assert!(
            !streamer["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "NVIDIA_DRIVER_CAPABILITIES")
        );
        assert_eq!(
            streamer["args"],
            serde_json::json!([
                "pod",
                "--display",
                ":0",
                "--framebuffer",
                "/run/playpod/fb/Xvfb_screen0",
                "--listen",
                "[::]:8080",
                "--wait-for-display",
                "60"
            ])
        );
        let token_env = streamer["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == TOKEN_ENV)
            .unwrap();
        assert_eq!(token_env["value"], "fedcba9876543210fedcba9876543210");
        let fb = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "framebuffer")
            .unwrap();
        assert_eq!(fb["emptyDir"]["medium"], "Memory");
        assert!(spec.get("tolerations").is_none());
        assert!(
            spec["containers"][0]["resources"]["limits"]
                .get("nvidia.com/gpu")
                .is_none()
        );
    }

    #[test]
    fn gpu_games_get_a_gpu() {
        let mut game = Catalog::default().games.remove(0);
        game.gpu = true;
        let pod = pod(&spec(), &game, &SessionConfig::default(), "games");
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        assert_eq!(v["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
        let streamer = &v["spec"]["containers"][1];
        assert!(
            streamer["resources"]["limits"]
                .get("nvidia.com/gpu")
                .is_none()
        );
    }

    #[test]
    fn a_gpu_streamer_gets_a_gpu_and_nvenc() {
        let mut config = SessionConfig::default();
        config.streamer.gpu = true;
        config.streamer.extra_args = strings(&["--encoder", "nvenc"]);
        let catalog = Catalog::default();
        let v = serde_json::to_value(pod(&spec(), catalog.get("pong").unwrap(), &config, "games"))
            .unwrap();
        let streamer = &v["spec"]["containers"][1];
        assert_eq!(streamer["name"], STREAMER_CONTAINER);
        for kind in ["limits", "requests"] {
            assert_eq!(
                streamer["resources"][kind]["nvidia.com/gpu"], "1",
                "{streamer}"
            );
        }
        // The configured CPU and memory stay.
        assert_eq!(streamer["resources"]["limits"]["cpu"], "2");
        assert_eq!(streamer["resources"]["requests"]["memory"], "256Mi");
        let caps = streamer["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "NVIDIA_DRIVER_CAPABILITIES")
            .unwrap();
        assert_eq!(caps["value"], "compute,video,utility");
        let args = streamer["args"].as_array().unwrap();
        assert_eq!(args[args.len() - 2..], ["--encoder", "nvenc"]);
        // Scheduled onto GPU nodes, the game (no GPU of its own) left as it was.
        assert_eq!(v["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
        assert!(
            v["spec"]["containers"][0]["resources"]["limits"]
                .get("nvidia.com/gpu")
                .is_none()
        );
    }

    /// Session config placing pods on tainted game nodes: `nodeSelector`, a toleration of the
    /// nodes' taint and of the GPU nodes' one, and a node affinity.
    fn game_nodes_config() -> SessionConfig {
        SessionConfig::from_json(
            r#"{"nodeSelector":{"example.com/pool":"games"},
                "tolerations":[{"key":"example.com/pool","operator":"Equal","value":"games",
                                "effect":"NoSchedule"},
                               {"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"},
                               {"key":"example.com/pool","operator":"Equal","value":"games",
                                "effect":"NoSchedule"}],
                "affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms":[{"matchExpressions":
                        [{"key":"example.com/pool","operator":"In","values":["games"]}]}]}}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn sessions_go_to_the_configured_nodes() {
        let config = game_nodes_config();
        let pool = serde_json::json!({
            "key": "example.com/pool", "operator": "Equal", "value": "games", "effect": "NoSchedule"
        });
        let gpu = serde_json::json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"});
        let mut game = Catalog::default().games.remove(0);
        for (game_gpu, streamer_gpu) in [(false, false), (true, false), (false, true), (true, true)]
        {
            game.gpu = game_gpu;
            let mut config = config.clone();
            config.streamer.gpu = streamer_gpu;
            let v = serde_json::to_value(pod(&spec(), &game, &config, "games")).unwrap();
            let spec = &v["spec"];
            assert_eq!(spec["nodeSelector"]["example.com/pool"], "games");
            assert_eq!(
                spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0],
                "games"
            );
            // Each toleration once, in the configured order: the configured GPU one counts for
            // the one a GPU session needs.
            assert_eq!(
                spec["tolerations"],
                serde_json::json!([pool, gpu]),
                "gpu {game_gpu}/{streamer_gpu}"
            );
        }
    }

    #[test]
    fn the_gpu_toleration_follows_the_configured_ones() {
        // The game nodes' toleration alone.
        let mut config = SessionConfig {
            tolerations: game_nodes_config().tolerations.split_off(2),
            ..SessionConfig::default()
        };
        let mut game = Catalog::default().games.remove(0);
        let v = serde_json::to_value(pod(&spec(), &game, &config, "games")).unwrap();
        assert_eq!(v["spec"]["tolerations"].as_array().unwrap().len(), 1);
        assert_eq!(v["spec"]["tolerations"][0]["key"], "example.com/pool");
        game.gpu = true;
        let v = serde_json::to_value(pod(&spec(), &game, &config, "games")).unwrap();
        let keys: Vec<_> = v["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["example.com/pool", "nvidia.com/gpu"]);
        // An empty affinity (the chart's `{}`) is none.
        config.affinity = Some(Affinity::default());
        let v = serde_json::to_value(pod(&spec(), &game, &config, "games")).unwrap();
        assert!(v["spec"].get("affinity").is_none(), "{}", v["spec"]);
    }

    #[test]
    fn the_startup_probe_waits_for_the_display() {
        let catalog = Catalog::default();
        let config = SessionConfig::default();
        let v = serde_json::to_value(pod(&spec(), catalog.get("pong").unwrap(), &config, "games"))
            .unwrap();
        let streamer = &v["spec"]["containers"][1];
        let args = streamer["args"].as_array().unwrap();
        let at = args.iter().position(|a| a == "--wait-for-display").unwrap();
        let wait: i64 = args[at + 1].as_str().unwrap().parse().unwrap();
        let startup = &streamer["startupProbe"];
        assert_eq!(startup["httpGet"]["path"], "/healthz");
        assert_eq!(startup["httpGet"]["port"], "http");
        // Its HTTP port opens only once the display is up: the probe allows the whole wait and
        // a margin before the container is restarted.
        let allowed = startup["periodSeconds"].as_i64().unwrap()
            * startup["failureThreshold"].as_i64().unwrap();
        assert!(allowed >= wait + 10, "{allowed} s for a {wait} s wait");
        // The liveness probe runs only after it, so it needs no initial delay of its own; it
        // ends a streamer that stops answering within half a minute.
        let liveness = &streamer["livenessProbe"];
        assert!(liveness.get("initialDelaySeconds").is_none(), "{liveness}");
        assert!(
            liveness["periodSeconds"].as_i64().unwrap()
                * liveness["failureThreshold"].as_i64().unwrap()
                <= 30
        );
    }

    #[test]
    fn ingress_routes_the_token_path_to_the_service() {
        let mut config = SessionConfig::default();
        config.ingress.tls_secret_name = Some("play-tls".to_owned());
        let owner = owner_reference("playpod-0123456789abcdef", "uid-1");
        let v = serde_json::to_value(ingress(&spec(), &config, "games", &owner)).unwrap();
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Pod");
        let path = &v["spec"]["rules"][0]["http"]["paths"][0];
        assert_eq!(path["path"], "/play/fedcba9876543210fedcba9876543210/");
        assert_eq!(path["pathType"], "Prefix");
        assert_eq!(
            path["backend"]["service"]["name"],
            "playpod-0123456789abcdef"
        );
        assert_eq!(v["spec"]["tls"][0]["secretName"], "play-tls");
        assert_eq!(v["spec"]["tls"][0]["hosts"][0], "play.example.com");
        // Helm's "unset" is "": no TLS section, no class, no host.
        config.ingress.tls_secret_name = Some(String::new());
        config.ingress.class_name = Some(String::new());
        config.ingress.host = Some(String::new());
        let bare = serde_json::to_value(ingress(&spec(), &config, "games", &owner)).unwrap();
        assert!(bare["spec"].get("tls").is_none(), "{bare}");
        assert!(bare["spec"].get("ingressClassName").is_none());
        assert!(bare["spec"]["rules"][0].get("host").is_none());
        assert_eq!(
            v["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "3600"
        );
        let s = serde_json::to_value(service(&spec(), "games", &owner)).unwrap();
        assert_eq!(s["spec"]["selector"][LABEL_SESSION], "0123456789abcdef");
        assert_eq!(s["spec"]["ports"][0]["port"], 8080);
    }

    #[test]
    fn ids() {
        let id = random_id();
        assert!(is_session_id(&id), "{id}");
        assert!(!is_session_id("0123456789ABCDEF"));
        assert!(!is_session_id("0123"));
        assert!(!is_session_id("../../etc/passwd"));
    }

    #[test]
    fn dump_writes_parseable_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let files = dump(
            dir.path(),
            &Catalog::default(),
            &SessionConfig::default(),
            "games",
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert_eq!(text.matches("---\n").count(), 2);
        assert!(text.contains("kind: Pod"), "{text}");
        assert!(text.contains("kind: Ingress"));
    }
}
