//! One streaming session: the frame thread over a capture source, and the server in front of it.
//! `playpod demo` and `playpod pod` both come here, so the demo exercises the game-pod path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use playpod_hotpath::capture::FrameSource;
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder, VideoEncoder};
use playpod_hotpath::pipeline::{FrameStage, Pipeline, PipelineConfig};

use crate::cli::{EncoderChoice, StreamArgs};
use crate::metrics::Metrics;
use crate::server::{self, AppState, Health, StreamInfo};
use crate::token::random_token;

/// A running session: the frame thread and the state the server shares.
#[derive(Debug)]
pub struct Session {
    pub pipeline: Pipeline,
    pub state: Arc<AppState>,
}

fn make_encoder(
    choice: EncoderChoice,
    settings: EncoderSettings,
) -> anyhow::Result<Box<dyn VideoEncoder>> {
    match choice {
        EncoderChoice::Auto | EncoderChoice::Openh264 => {
            if choice == EncoderChoice::Auto {
                tracing::info!(
                    reason = "no GPU encoder in this build",
                    "encoder: openh264 (CPU)"
                );
            }
            Ok(Box::new(Openh264Encoder::new(settings)?))
        }
        EncoderChoice::Nvenc => {
            bail!("NVENC is not available in this build; use --encoder openh264 or --encoder auto")
        }
    }
}

/// The core the frame thread goes on: the flag's, else the last core when there are several.
fn pin_core(args: &StreamArgs) -> Option<usize> {
    if args.no_pin {
        return None;
    }
    args.pin_core.or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores > 1).then_some(cores - 1)
    })
}

impl Session {
    /// Starts the frame thread over `source`.
    pub fn start(source: Box<dyn FrameSource>, args: &StreamArgs) -> anyhow::Result<Self> {
        let (width, height) = (u32::from(args.size.0), u32::from(args.size.1));
        let settings = EncoderSettings {
            width,
            height,
            fps: args.fps,
            bitrate_bps: args.bitrate_kbps * 1000,
        };
        let encoder = make_encoder(args.encoder, settings)?;
        let health = Arc::new(Health::new(encoder.name(), source.kind()));
        tracing::info!(
            capture = source.kind(),
            encoder = encoder.name(),
            size = %format_args!("{width}x{height}"),
            fps = args.fps,
            bitrate_kbps = args.bitrate_kbps,
            "starting the frame pipeline"
        );
        let (stage, ring, stats) = FrameStage::with_ring(source, encoder, settings);
        let pipeline = Pipeline::spawn(
            stage,
            PipelineConfig {
                fps: args.fps,
                pin_core: pin_core(args),
                always_encode: false,
            },
        )
        .context("cannot start the frame thread")?;
        let metrics = Metrics::new(stats, health.clone(), ring.clone());
        let state = Arc::new(AppState {
            token: args.token.clone().unwrap_or_else(random_token),
            ring,
            stream: StreamInfo {
                width,
                height,
                fps: args.fps,
            },
            health,
            metrics,
        });
        Ok(Self { pipeline, state })
    }
}

/// Binds the listener now (so a taken port fails at once, and port 0 works), returning it
/// with the address it got.
pub fn bind(listen: SocketAddr) -> anyhow::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!(
            "cannot listen on {listen} (is another playpod running? choose another with --listen)"
        )
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The URL players open.
pub fn player_url(addr: SocketAddr, token: &str, tls: bool) -> String {
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    format!(
        "{}://{shown}/play/{token}/",
        if tls { "https" } else { "http" }
    )
}

/// Serves the session until `shutdown` resolves or the frame thread stops. Prints the one
/// `playpod: open URL` line once listening.
pub async fn serve(
    mut session: Session,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = server::router(session.state.clone());
    let handle = axum_server::Handle::new();
    let url = player_url(addr, &session.state.token, tls.is_some());
    let server = {
        let handle = handle.clone();
        let service = app.into_make_service();
        async move {
            match tls {
                Some(tls) => {
                    axum_server::from_tcp_rustls(listener, tls)?
                        .handle(handle)
                        .serve(service)
                        .await
                }
                None => {
                    axum_server::from_tcp(listener)?
                        .handle(handle)
                        .serve(service)
                        .await
                }
            }
        }
    };
    let server = tokio::spawn(server);
    println!("playpod: open {url}");
    let health = session.state.health.clone();
    let pipeline_ended = async {
        loop {
            if let Some(result) = session.pipeline.try_finish() {
                health.display_ok.store(false, Ordering::Relaxed);
                return result;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        result = pipeline_ended => match result {
            Ok(()) => Ok(()),
            Err(err) => Err(anyhow::Error::new(err).context("the frame pipeline stopped")),
        },
    };
    // Stop the frame thread first: its ring closes, so every viewer gets a close message and
    // its connection ends, and the graceful shutdown below has nothing left to wait for.
    drop(session);
    handle.graceful_shutdown(Some(Duration::from_secs(2)));
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "server ended with an error"),
        Err(err) => tracing::warn!(%err, "server task failed"),
    }
    outcome
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled: a signal that arrives in between (say right after the `playpod: open` line)
/// must start the graceful shutdown, not kill the process with the default action and leave its
/// children's framebuffer files and segments behind.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind)
            .inspect_err(|err| tracing::warn!(%err, "cannot watch {name}"))
            .ok()
    };
    let mut ctrl_c = watch(SignalKind::interrupt(), "Ctrl-C (SIGINT)");
    let mut term = watch(SignalKind::terminate(), "SIGTERM");
    async fn recv(signal: Option<&mut Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            () = recv(ctrl_c.as_mut()) => tracing::info!("Ctrl-C: stopping"),
            () = recv(term.as_mut()) => tracing::info!("SIGTERM: stopping"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = "0123456789abcdef";
        assert_eq!(
            player_url("0.0.0.0:8080".parse().unwrap(), t, false),
            "http://127.0.0.1:8080/play/0123456789abcdef/"
        );
        assert_eq!(
            player_url("192.168.1.2:443".parse().unwrap(), t, true),
            "https://192.168.1.2:443/play/0123456789abcdef/"
        );
    }
}
