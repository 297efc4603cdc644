//! `playpod control`: the Kubernetes control plane that creates game sessions on demand.
//!
//! A session is one Pod (the catalog's game container and the playpod streamer, sharing the
//! virtual screen's framebuffer, the X socket and the PulseAudio socket through in-memory
//! volumes), one Service and one Ingress on `/play/<token>/`, applied with server-side apply
//! (field manager `playpod`) and owned by the Pod. The control plane's view of the sessions is
//! rebuilt from the cluster's labels, so it survives restarts; a reaper ends sessions past their
//! TTL, idle (read from each streamer's `/readyz`), finished, or never ready.
//!
//! Layout: [`config`] (catalog and session shape, plain data), [`manifests`] (the objects, no
//! IO), [`session`] (a session read back from its Pod), [`plane`] (kube-rs calls, view, reaper),
//! [`probe`] (the streamer's /readyz), [`api`] (HTTP), [`api_token`] (the API's token and its
//! reload from a file), [`metrics`], [`error`].

pub mod api;
pub mod api_token;
pub mod config;
pub mod error;
pub mod manifests;
pub mod metrics;
pub mod plane;
pub mod probe;
pub mod session;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

pub use config::{Catalog, SessionConfig};
pub use error::{Error, Result};
pub use plane::{ControlPlane, RetryPolicy};

/// `playpod control` options.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// Address to serve the API, /metrics, /healthz and /readyz on. `[::]:PORT` serves IPv6
    /// and IPv4 (IPv4 only on a host without IPv6).
    #[arg(long, default_value = "127.0.0.1:8090", env = "PLAYPOD_CONTROL_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Bearer token the API requires (16 to 128 characters of A-Z a-z 0-9 - _). Exactly one of
    /// --api-token and --api-token-file is required.
    #[arg(long, env = "PLAYPOD_API_TOKEN", hide_env_values = true, value_parser = crate::token::parse_token)]
    pub api_token: Option<String>,
    /// File holding the bearer token the API requires, e.g. a mounted Kubernetes Secret; read
    /// again when it changes, so the token can be rotated without a restart.
    ///
    /// The same rules as --api-token apply; surrounding whitespace (a trailing newline) is
    /// ignored. A file that is missing or holds no valid token at start stops the control plane.
    /// While it runs, the file is checked every 2 s: a changed file with a valid token replaces
    /// the token in use, and the replaced token is still accepted for 60 s so that clients can
    /// switch over; a file that goes missing or holds no valid token is logged and the last good
    /// token stays in use. Exactly one of --api-token and --api-token-file is required.
    #[arg(
        long,
        env = "PLAYPOD_API_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<PathBuf>,
    /// How long the token replaced by a reload of --api-token-file is still accepted (not a flag:
    /// [`api_token::ROTATION_GRACE`]; tests shorten it).
    #[arg(skip = api_token::ROTATION_GRACE)]
    pub api_token_grace: Duration,
    /// How often --api-token-file is checked for a change (not a flag: [`api_token::POLL_INTERVAL`]).
    #[arg(skip = api_token::POLL_INTERVAL)]
    pub api_token_poll: Duration,
    /// Kubeconfig to use instead of the in-cluster service account or $KUBECONFIG.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace the sessions live in (default: the kubeconfig's or the service account's).
    #[arg(long, env = "PLAYPOD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Game catalog, JSON `{"games":[{"name","title","image","command","args","env","resources","gpu"}]}`
    /// (default: the built-in pong).
    #[arg(long, env = "PLAYPOD_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// Session configuration, JSON (images, ingress, ttlMinutes, idleMinutes, maxSessions, ...).
    #[arg(long, env = "PLAYPOD_SESSION_CONFIG")]
    pub session_config: Option<PathBuf>,
    /// Seconds between reaper passes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reap_interval_seconds: u64,
    /// Write the objects a session of each catalog game is made of, as YAML, into DIR and exit
    /// (for schema validation and security checks; needs no cluster).
    #[arg(long, value_name = "DIR")]
    pub dump_session_manifests: Option<PathBuf>,
}

/// Runs the control plane until Ctrl-C, SIGTERM or SIGHUP.
pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    // Installed now, not when first polled: a signal during start-up stops it gracefully too.
    let signal = crate::session::shutdown_signal();
    serve(args, async {
        signal.await;
        tracing::info!("shutting down");
    })
    .await
}

/// Runs the control plane until `shutdown` resolves, then stops serving gracefully.
pub async fn serve(
    args: ControlArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let catalog = match &args.catalog {
        Some(path) => Catalog::from_file(path)?,
        None => Catalog::default(),
    };
    let config = match &args.session_config {
        Some(path) => SessionConfig::from_file(path)?,
        None => SessionConfig::default(),
    };

    if let Some(dir) = &args.dump_session_manifests {
        let namespace = args.namespace.as_deref().unwrap_or("playpod");
        let mut out = std::io::stdout().lock();
        for path in manifests::dump(dir, &catalog, &config, namespace)? {
            // A reader that has gone (`| head -1`) ends the list, not in a panic.
            if writeln!(out, "{}", path.display()).is_err() {
                break;
            }
        }
        return Ok(());
    }

    let (api_token, token_file) = match (&args.api_token, &args.api_token_file) {
        (Some(token), None) => (token.clone(), None),
        (None, Some(path)) => {
            let (token, stamp) = api_token::load(path)?;
            (token, Some((path.clone(), stamp)))
        }
        (Some(_), Some(_)) => anyhow::bail!(
            "give the API token with one of --api-token (PLAYPOD_API_TOKEN) and --api-token-file \
             (PLAYPOD_API_TOKEN_FILE), not both"
        ),
        (None, None) => anyhow::bail!(
            "set the API token with --api-token (or PLAYPOD_API_TOKEN) or --api-token-file (or \
             PLAYPOD_API_TOKEN_FILE)"
        ),
    };
    let api_token = Arc::new(api_token::ApiToken::with_grace(
        &api_token,
        args.api_token_grace,
    ));
    // kube's rustls needs a process-wide crypto provider; another one already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (in-cluster or kubeconfig)")?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    let client = kube::Client::try_from(kube_config).context("Kubernetes client")?;
    let metrics = Arc::new(metrics::Metrics::new());
    let probe = Arc::new(probe::HttpProbe::new(
        manifests::STREAMER_PORT,
        Duration::from_secs(2),
    ));
    let plane = Arc::new(ControlPlane::new(
        client,
        namespace.clone(),
        catalog,
        config,
        probe,
        metrics.clone(),
        RetryPolicy::default(),
    )?);
    let found = plane
        .rebuild()
        .await
        .context("reading the existing sessions")?;
    tracing::info!(%namespace, sessions = found, "view rebuilt from the cluster");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reaper = tokio::spawn(plane.clone().run_reaper(
        Duration::from_secs(args.reap_interval_seconds),
        wait_for(stop_rx.clone()),
    ));
    let listener = crate::listen::bind(args.listen)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        })
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, "control plane API up");
    let watcher = token_file.map(|(path, stamp)| {
        tracing::info!(file = %path.display(), "API token read; the file is watched for a new one");
        let watcher = api_token::Watcher::new(path, api_token.clone(), metrics, stamp);
        tokio::spawn(watcher.run(args.api_token_poll))
    });
    let app = api::router_with_token(plane, api_token);
    let server = axum::serve(listener, app).with_graceful_shutdown(wait_for(stop_rx));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let served = server.await;
    reaper.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    served.context("API server")?;
    Ok(())
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    use super::*;

    /// The `--help` of --api-token-file states the poll interval and the grace period the code uses.
    #[test]
    fn the_token_file_help_states_the_constants() {
        let command = ControlArgs::augment_args(Command::new("control"));
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "api_token_file")
            .expect("--api-token-file");
        let help = arg.get_long_help().expect("a long help").to_string();
        for needle in [
            format!("every {} s", api_token::POLL_INTERVAL.as_secs()),
            format!("for {} s", api_token::ROTATION_GRACE.as_secs()),
            "Exactly one of --api-token and --api-token-file".to_owned(),
        ] {
            assert!(help.contains(&needle), "{needle:?} missing in {help:?}");
        }
    }

    #[test]
    fn the_token_flags_conflict() {
        let command = ControlArgs::augment_args(Command::new("control"));
        let err = command
            .try_get_matches_from([
                "control",
                "--api-token",
                "0123456789abcdef",
                "--api-token-file",
                "token",
            ])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
