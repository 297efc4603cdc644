//! What the control plane is told: the game catalog and the shape of a session (images, ingress,
//! lifetimes, limits). Both are plain data, read from JSON files that the Helm chart renders
//! into a ConfigMap, so an operator adds a game without rebuilding anything.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::manifests::{
    STREAMER_STARTUP_FAILURES, STREAMER_STARTUP_PERIOD, STREAMER_WAIT_FOR_DISPLAY,
};

/// The shortest `startupGraceSeconds`: how long a session pod's streamer may take to be ready
/// with nothing wrong, as its startup probe allows.
pub const MIN_STARTUP_GRACE_SECONDS: u32 =
    (STREAMER_STARTUP_FAILURES * STREAMER_STARTUP_PERIOD) as u32;

/// The games a session may run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub games: Vec<Game>,
}

/// One catalog entry: any emulator or X11 game image. The image's command is expected to start
/// Xvfb on display `:0` with `-fbdir /run/playpod/fb` and a PulseAudio null sink on
/// `/run/playpod/pulse/native` (the game-base image's entrypoint does both), then the game.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Game {
    /// Short name used in the API and in labels: a DNS label of at most 40 characters.
    pub name: String,
    /// Human-readable title.
    #[serde(default)]
    pub title: String,
    /// Container image of the game side.
    pub image: String,
    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment of the game container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// CPU and memory of the game container. Default: [`default_game_resources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Give the game container one `nvidia.com/gpu` (a time-slice of one where the NVIDIA device
    /// plugin shares GPUs).
    #[serde(default)]
    pub gpu: bool,
}

/// How sessions are built and how long they live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Base of the URLs handed out, e.g. `https://play.example.com`; the session URL is
    /// `<publicUrl>/play/<token>/`. Default: `https://<ingress.host>`.
    pub public_url: Option<String>,
    /// The playpod streamer container.
    pub streamer: StreamerConfig,
    pub ingress: IngressConfig,
    /// A session ends this many minutes after it was created (at most [`MAX_TTL_MINUTES`]).
    pub ttl_minutes: u32,
    /// A session ends when no player or viewer has been connected for this many minutes.
    pub idle_minutes: u32,
    /// A session whose pod has not been ready for this long (image pull errors, crashes) ends;
    /// at least [`MIN_STARTUP_GRACE_SECONDS`].
    pub startup_grace_seconds: u32,
    /// At most this many sessions exist at once.
    pub max_sessions: u32,
    /// Size limit of the in-memory framebuffer volume (768x768x4 bytes fits in 4Mi).
    pub framebuffer_size_limit: String,
    /// Size limit of each container's writable /tmp.
    pub tmp_size_limit: String,
    /// Pull policy of both images (`Always` unless images are pinned by digest).
    pub image_pull_policy: String,
    /// The UID and GID both containers run as (non-root; above 10000).
    pub run_as_user: i64,
    /// Image pull secrets of session pods.
    pub image_pull_secrets: Vec<String>,
    /// Node selector of session pods.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of session pods, e.g. of the taint of nodes set aside for games. Sessions with
    /// a GPU (the game's `gpu` or `streamer.gpu`) also tolerate the GPU nodes'
    /// `nvidia.com/gpu:NoSchedule` taint, once.
    pub tolerations: Vec<Toleration>,
    /// Affinity of session pods (node affinity to a game node pool, anti-affinity between
    /// sessions, ...); `{}` counts as none.
    pub affinity: Option<Affinity>,
    /// Priority class of session pods.
    pub priority_class_name: Option<String>,
}

/// The streamer container of a session pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StreamerConfig {
    pub image: String,
    pub resources: ResourceRequirements,
    /// Extra arguments after the fixed ones (e.g. `--encoder`, `--bitrate-kbps`).
    pub extra_args: Vec<String>,
    /// Give the streamer container one `nvidia.com/gpu` (a time-slice of one where the NVIDIA
    /// device plugin shares GPUs) and the NVIDIA runtime's `video` capability: `--encoder auto`
    /// then converts with CUDA and encodes with NVENC where the GPU has it.
    pub gpu: bool,
}

/// The Ingress of a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressConfig {
    pub class_name: Option<String>,
    pub host: Option<String>,
    /// Secret holding the TLS certificate for `host`; no TLS section without it.
    pub tls_secret_name: Option<String>,
    /// Annotations, e.g. ingress-nginx's WebSocket-friendly timeouts.
    pub annotations: BTreeMap<String, String>,
}

/// The version of the streamer image matching this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn resources(cpu_req: &str, mem_req: &str, cpu_lim: &str, mem_lim: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", cpu_req), ("memory", mem_req)])),
        limits: Some(quantities(&[("cpu", cpu_lim), ("memory", mem_lim)])),
        ..ResourceRequirements::default()
    }
}

/// What a game container gets when its catalog entry names no resources.
pub fn default_game_resources() -> ResourceRequirements {
    resources("500m", "256Mi", "1", "512Mi")
}

impl Default for StreamerConfig {
    fn default() -> Self {
        Self {
            image: format!("ghcr.io/playpod/streamer:{VERSION}"),
            // One core encodes 768x768 at 60 fps with openh264; the rest is headroom for viewers.
            resources: resources("1", "256Mi", "2", "512Mi"),
            extra_args: Vec::new(),
            gpu: false,
        }
    }
}

impl Default for IngressConfig {
    fn default() -> Self {
        let annotations = [
            // WebSockets live as long as a session: do not cut them after nginx's default 60 s.
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "3600"),
            // Frames must not wait in a proxy buffer.
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            class_name: Some("nginx".to_owned()),
            host: Some("play.example.com".to_owned()),
            tls_secret_name: None,
            annotations,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            streamer: StreamerConfig::default(),
            ingress: IngressConfig::default(),
            ttl_minutes: 120,
            idle_minutes: 10,
            startup_grace_seconds: 300,
            max_sessions: 20,
            framebuffer_size_limit: "16Mi".to_owned(),
            tmp_size_limit: "64Mi".to_owned(),
            image_pull_policy: "Always".to_owned(),
            run_as_user: 10001,
            image_pull_secrets: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            priority_class_name: None,
        }
    }
}

impl Default for Catalog {
    /// The built-in game on the game-base image (which carries the playpod binary).
    fn default() -> Self {
        Self {
            games: vec![Game {
                name: "pong".to_owned(),
                title: "Pong (built in, two players)".to_owned(),
                image: format!("ghcr.io/playpod/game-base:{VERSION}"),
                command: Vec::new(),
                args: ["playpod", "game", "--display", ":0", "--scene", "pong"]
                    .map(str::to_owned)
                    .to_vec(),
                env: BTreeMap::new(),
                resources: None,
                gpu: false,
            }],
        }
    }
}

/// A name usable as a label value and inside object names: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
pub fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An optional string where `""` (what Helm values hold for "unset") counts as unset.
pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Longest session lifetime: a year. Far longer ones would run the expiry time off the calendar.
pub const MAX_TTL_MINUTES: u32 = 366 * 24 * 60;

/// Longest game name: it goes into a label value (63) and reads well in a URL-free API.
pub const MAX_GAME_NAME: usize = 40;

impl Catalog {
    /// Reads a catalog from a JSON file and checks it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read catalog {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// Parses and checks a catalog.
    pub fn from_json(text: &str) -> Result<Self> {
        let catalog: Self = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("bad catalog JSON: {e}")))?;
        catalog.check()?;
        Ok(catalog)
    }

    fn check(&self) -> Result<()> {
        if self.games.is_empty() {
            return Err(Error::Config("the catalog has no games".to_owned()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for game in &self.games {
            if !is_dns_label(&game.name, MAX_GAME_NAME) {
                return Err(Error::Config(format!(
                    "game name {:?} must be 1 to {MAX_GAME_NAME} characters of a-z 0-9 - \
                     (not starting or ending with -)",
                    game.name
                )));
            }
            if !seen.insert(game.name.as_str()) {
                return Err(Error::Config(format!(
                    "game {:?} is listed twice",
                    game.name
                )));
            }
            if game.image.trim().is_empty() {
                return Err(Error::Config(format!("game {:?} has no image", game.name)));
            }
        }
        Ok(())
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Game> {
        self.games.iter().find(|g| g.name == name)
    }
}

impl SessionConfig {
    /// Reads a session configuration from a JSON file and checks it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read session config {}: {e}",
                path.display()
            ))
        })?;
        Self::from_json(&text)
    }

    /// Parses and checks a session configuration.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("bad session config JSON: {e}")))?;
        config.check()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> Result<()> {
        if self.streamer.image.trim().is_empty() {
            return Err(Error::Config("streamer.image is empty".to_owned()));
        }
        if self.ttl_minutes == 0 || self.idle_minutes == 0 {
            return Err(Error::Config(
                "ttlMinutes and idleMinutes must be at least 1".to_owned(),
            ));
        }
        if self.ttl_minutes > MAX_TTL_MINUTES {
            return Err(Error::Config(format!(
                "ttlMinutes {} is more than a year ({MAX_TTL_MINUTES})",
                self.ttl_minutes
            )));
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(Error::Config(format!(
                "imagePullPolicy {:?} must be Always, IfNotPresent or Never",
                self.image_pull_policy
            )));
        }
        if self.max_sessions == 0 {
            return Err(Error::Config("maxSessions must be at least 1".to_owned()));
        }
        if self.startup_grace_seconds < MIN_STARTUP_GRACE_SECONDS {
            return Err(Error::Config(format!(
                "startupGraceSeconds {} is shorter than the {MIN_STARTUP_GRACE_SECONDS} s a session \
                 pod may take to be ready with nothing wrong (its streamer waits up to {} s for the \
                 game's display, its startup probe 15 s more): sessions still starting would be ended",
                self.startup_grace_seconds, STREAMER_WAIT_FOR_DISPLAY
            )));
        }
        if self.run_as_user <= 0 {
            return Err(Error::Config(
                "runAsUser must be a non-root UID (above 0; above 10000 recommended)".to_owned(),
            ));
        }
        self.base_url()?;
        Ok(())
    }

    /// `https://host` (no trailing slash), from `publicUrl` or the ingress host.
    pub fn base_url(&self) -> Result<String> {
        if let Some(url) = non_empty(&self.public_url) {
            let url = url.trim_end_matches('/');
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error::Config(format!(
                    "publicUrl {url:?} must start with https:// or http://"
                )));
            }
            return Ok(url.to_owned());
        }
        match non_empty(&self.ingress.host) {
            Some(host) => Ok(format!("https://{host}")),
            None => Err(Error::Config(
                "set publicUrl or ingress.host so that session URLs can be made".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = SessionConfig::default();
        config.check().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(SessionConfig::from_json(&json).unwrap(), config);
        let catalog = Catalog::default();
        let json = serde_json::to_string(&catalog).unwrap();
        assert_eq!(Catalog::from_json(&json).unwrap(), catalog);
        assert_eq!(
            config.base_url().unwrap(),
            "https://play.example.com".to_owned()
        );
    }

    #[test]
    fn partial_config_takes_defaults() {
        let config =
            SessionConfig::from_json(r#"{"publicUrl":"https://x.test/","maxSessions":3}"#).unwrap();
        assert_eq!(config.max_sessions, 3);
        assert_eq!(config.ttl_minutes, 120);
        assert_eq!(config.base_url().unwrap(), "https://x.test");
        assert!(!config.streamer.gpu);
        let config = SessionConfig::from_json(
            r#"{"streamer":{"gpu":true,"extraArgs":["--encoder","nvenc"]}}"#,
        )
        .unwrap();
        assert!(config.streamer.gpu);
        assert_eq!(config.streamer.extra_args, ["--encoder", "nvenc"]);
        assert_eq!(config.streamer.image, StreamerConfig::default().image);
    }

    #[test]
    fn scheduling_of_session_pods_is_read() {
        // As the chart renders it: `sessions.tolerations` and `sessions.affinity`.
        let config = SessionConfig::from_json(
            r#"{"nodeSelector":{"example.com/pool":"games"},
                "tolerations":[{"key":"example.com/pool","operator":"Equal","value":"games",
                                "effect":"NoSchedule"},
                               {"key":"example.com/drain","operator":"Exists",
                                "effect":"NoExecute","tolerationSeconds":30}],
                "affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms":[{"matchExpressions":
                        [{"key":"example.com/pool","operator":"In","values":["games"]}]}]}}}}"#,
        )
        .unwrap();
        assert_eq!(config.node_selector["example.com/pool"], "games");
        assert_eq!(config.tolerations.len(), 2);
        assert_eq!(config.tolerations[0].value.as_deref(), Some("games"));
        assert_eq!(config.tolerations[1].toleration_seconds, Some(30));
        let terms = &config
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        // The chart's defaults: none of either.
        let config = SessionConfig::from_json(r#"{"tolerations":[],"affinity":{}}"#).unwrap();
        assert!(config.tolerations.is_empty());
        assert_eq!(config.affinity, Some(Affinity::default()));
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(SessionConfig::from_json(&json).unwrap(), config);
    }

    #[test]
    fn bad_catalogs_are_refused() {
        for bad in [
            r#"{"games":[]}"#,
            r#"{"games":[{"name":"Pong","image":"x"}]}"#,
            r#"{"games":[{"name":"-pong","image":"x"}]}"#,
            r#"{"games":[{"name":"pong","image":" "}]}"#,
            r#"{"games":[{"name":"pong","image":"x"},{"name":"pong","image":"y"}]}"#,
            r#"{"games":[{"name":"pong","image":"x","typo":1}]}"#,
            r#"{"games":"#,
        ] {
            assert!(Catalog::from_json(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"ttlMinutes":0}"#,
            r#"{"ttlMinutes":527041}"#,
            r#"{"ttlMinutes":4294967295}"#,
            r#"{"maxSessions":0}"#,
            r#"{"runAsUser":0}"#,
            r#"{"publicUrl":"ftp://x"}"#,
            r#"{"publicUrl":null,"ingress":{"host":null}}"#,
            r#"{"publicUrl":"","ingress":{"host":" "}}"#,
            r#"{"streamer":{"image":""}}"#,
            r#"{"streamer":{"gpu":"yes"}}"#,
            r#"{"unknown":true}"#,
            r#"{"imagePullPolicy":"Sometimes"}"#,
            r#"{"tolerations":{"key":"example.com/pool"}}"#,
            r#"{"tolerations":[{"key":"example.com/pool","tolerationSeconds":"soon"}]}"#,
            r#"{"affinity":[]}"#,
        ] {
            assert!(SessionConfig::from_json(bad).is_err(), "{bad} accepted");
        }
    }

    /// A grace shorter than a healthy session pod may take to be ready would end sessions
    /// still starting.
    #[test]
    fn the_startup_grace_covers_a_healthy_start() {
        assert_eq!(MIN_STARTUP_GRACE_SECONDS, 75);
        let err = SessionConfig::from_json(r#"{"startupGraceSeconds":74}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("startupGraceSeconds 74 is shorter than the 75 s"),
            "{err}"
        );
        let ok = SessionConfig::from_json(r#"{"startupGraceSeconds":75}"#).unwrap();
        assert_eq!(ok.startup_grace_seconds, 75);
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("pong", 40));
        assert!(is_dns_label("super-mario-3", 40));
        assert!(!is_dns_label("", 40));
        assert!(!is_dns_label("a_b", 40));
        assert!(!is_dns_label("ab-", 40));
        assert!(!is_dns_label(&"a".repeat(41), 40));
    }
}
