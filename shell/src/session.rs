//! One streaming session: the frame thread over a capture source, and the server in front of it.
//! `playpod demo` and `playpod pod` both come here, so the demo exercises the game-pod path.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use playpod_ffi::cuda::ChromaLayout;
use playpod_hotpath::audio::AudioPipeline;
use playpod_hotpath::capture::FrameSource;
use playpod_hotpath::damage::ScreenChanges;
use playpod_hotpath::encode::{EncoderSettings, InputKind, Openh264Encoder, VideoEncoder};
use playpod_hotpath::gpu::{GpuChoice, GpuConverter, NvencEncoder};
use playpod_hotpath::pipeline::{FrameStage, Pipeline, PipelineConfig, Unchanged};
use playpod_hotpath::rendition::{LowRendition, low_settings};

use crate::audio::AudioSource;
use crate::cli::{EncoderChoice, StreamArgs};
use crate::cores::{Machine, Placement};
use crate::metrics::Metrics;
use crate::server::{self, AppState, Health, LowStream, StreamInfo};
use crate::token::random_token;

/// A running session: the frame thread and the state the server shares.
#[derive(Debug)]
pub struct Session {
    pub pipeline: Pipeline,
    pub state: Arc<AppState>,
    /// The player threads, once [`Session::start_input`] started them; stopped on drop.
    pub input: Option<crate::input::PlayerThreads>,
    /// The audio capture and encoder threads, when audio is on; stopped on drop.
    pub audio: Option<AudioPipeline>,
    /// The cores of the player threads, for [`Session::start_input`].
    player_cores: [Option<usize>; 2],
}

/// The video path: the encoder, the GPU converter when conversion runs there, and why.
struct VideoPath {
    encoder: Box<dyn VideoEncoder>,
    converter: Option<GpuConverter>,
    reason: String,
}

/// NVENC's preset: P2, the original platform's `-preset p2`, with ultra-low-latency tuning.
const NVENC_PRESET: u8 = 2;

fn nvenc_path(choice: &GpuChoice, settings: EncoderSettings) -> anyhow::Result<VideoPath> {
    let (Some(gpu), Some(nvenc)) = (&choice.gpu, &choice.nvenc) else {
        bail!("NVENC is not available: {}", choice.reason);
    };
    let encoder = NvencEncoder::new(nvenc, gpu, settings, NVENC_PRESET)
        .with_context(|| format!("cannot open an NVENC session on {}", gpu.name()))?;
    let converter = GpuConverter::new(
        gpu.clone(),
        settings.width,
        settings.height,
        ChromaLayout::Nv12,
    )
    .context("cannot set up the CUDA conversion for NVENC")?;
    Ok(VideoPath {
        encoder: Box::new(encoder),
        converter: Some(converter),
        reason: choice.reason.clone(),
    })
}

/// What can be found wrong with the flags before anything starts (a screen, a sound server, a
/// game): a picture H.264 cannot carry, a player's input port already taken, `--encoder nvenc`
/// where there is no NVENC. Each is met again later, where it is used; this says it first.
pub fn preflight(args: &StreamArgs) -> anyhow::Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    // Bound and let go: the player threads bind them again when they start.
    drop(args.input.bind_ports(args.listen.ip())?);
    if args.encoder == EncoderChoice::Nvenc {
        let found = GpuChoice::detect();
        if found.nvenc.is_none() {
            bail!(
                "--encoder nvenc: NVENC is not available: {}; --encoder auto uses the GPU where \
                 it can and the CPU otherwise",
                found.reason
            );
        }
    }
    Ok(())
}

fn make_video_path(choice: EncoderChoice, settings: EncoderSettings) -> anyhow::Result<VideoPath> {
    let cpu = |reason: String| -> anyhow::Result<VideoPath> {
        Ok(VideoPath {
            encoder: Box::new(Openh264Encoder::new(settings)?),
            converter: None,
            reason,
        })
    };
    match choice {
        EncoderChoice::Openh264 => cpu("chosen with --encoder openh264".to_owned()),
        EncoderChoice::Nvenc => nvenc_path(&GpuChoice::detect(), settings),
        EncoderChoice::Auto => {
            let found = GpuChoice::detect();
            if found.nvenc.is_some() {
                match nvenc_path(&found, settings) {
                    Ok(path) => return Ok(path),
                    Err(err) => tracing::warn!(reason = %crate::error_text(&err), "NVENC unusable"),
                }
            }
            let Some(gpu) = &found.gpu else {
                return cpu(format!("no GPU: {}", found.reason));
            };
            match GpuConverter::new(
                gpu.clone(),
                settings.width,
                settings.height,
                ChromaLayout::I420,
            ) {
                Ok(converter) => Ok(VideoPath {
                    encoder: Box::new(Openh264Encoder::new(settings)?),
                    converter: Some(converter),
                    reason: found.reason.clone(),
                }),
                Err(err) => cpu(format!("{}; CUDA conversion unusable: {err}", found.reason)),
            }
        }
    }
}

/// The low rendition for spectators on slow links ([`playpod_hotpath::rendition`]): made for a
/// CPU encoder, unless `--no-low-rendition` or the picture is too small.
fn low_rendition(
    args: &StreamArgs,
    settings: EncoderSettings,
    host_input: bool,
) -> anyhow::Result<Option<(LowRendition, LowStream)>> {
    if args.no_low_rendition {
        tracing::info!("--no-low-rendition: a spectator on a slow link skips ahead instead");
        return Ok(None);
    }
    let Some(low) = low_settings(settings) else {
        tracing::info!("no low rendition: the picture is too small to halve");
        return Ok(None);
    };
    if !host_input {
        tracing::info!(
            "no low rendition with NVENC: a spectator on a slow link skips ahead instead"
        );
        return Ok(None);
    }
    let encoder = Openh264Encoder::new(low).context("cannot make the low rendition's encoder")?;
    let (rendition, ring, stats) =
        LowRendition::with_ring(Box::new(encoder), low, args.fixed_bitrate);
    tracing::info!(
        size = %format_args!("{}x{}", low.width, low.height),
        bitrate_kbps = low.bitrate_bps / 1000,
        "a low rendition for spectators on slow links (encoded only while one watches it)"
    );
    let stream = StreamInfo {
        width: low.width,
        height: low.height,
        fps: low.fps,
    };
    Ok(Some((
        rendition,
        LowStream {
            ring,
            stats,
            stream,
        },
    )))
}

impl Session {
    /// Starts the frame thread over `source`, with no audio and no damage tracking.
    pub fn start(source: Box<dyn FrameSource>, args: &StreamArgs) -> anyhow::Result<Self> {
        let cores = Placement::decide_here(args, Machine::Shared)?;
        Self::start_with_audio(source, None, args, &AudioSource::Off, cores)
    }

    /// Starts the frame thread over `source`, and the audio threads recording `audio`
    /// (unless `--no-audio`). `changes`, when the display's damage is tracked, lets the frame
    /// thread skip reading the screen when nothing was drawn. `cores`: where the frame thread
    /// and the player threads run ([`Placement::decide_here`], before anything else starts).
    pub fn start_with_audio(
        source: Box<dyn FrameSource>,
        changes: Option<ScreenChanges>,
        args: &StreamArgs,
        audio: &AudioSource,
        cores: Placement,
    ) -> anyhow::Result<Self> {
        tracing::info!(
            frame_thread = ?cores.frame,
            player_threads = ?cores.players,
            reason = %cores.reason,
            "{}",
            if cores.frame.is_some() { "threads pinned to cores" } else { "threads not pinned" }
        );
        let (width, height) = (u32::from(args.size.0), u32::from(args.size.1));
        let settings = EncoderSettings {
            width,
            height,
            fps: args.fps,
            bitrate_bps: args.bitrate_kbps * 1000,
        };
        let VideoPath {
            encoder,
            converter,
            reason,
        } = make_video_path(args.encoder, settings)?;
        let conversion = if converter.is_some() { "cuda" } else { "cpu" };
        tracing::info!(
            encoder = encoder.name(),
            conversion,
            %reason,
            "video path chosen"
        );
        let health = Arc::new(
            Health::new(encoder.name(), source.kind()).with_video_path(conversion, reason),
        );
        tracing::info!(
            capture = source.kind(),
            encoder = encoder.name(),
            size = %format_args!("{width}x{height}"),
            fps = args.fps,
            bitrate_kbps = args.bitrate_kbps,
            "starting the frame pipeline"
        );
        let host_input = encoder.input() == InputKind::HostI420;
        let (stage, ring, stats) = FrameStage::with_ring(source, encoder, settings);
        let (stage, low) = match low_rendition(args, settings, host_input)? {
            Some((rendition, low)) => (stage.with_low_rendition(rendition), Some(low)),
            None => (stage, None),
        };
        let stage = match converter {
            Some(converter) => stage.with_gpu_converter(converter),
            None => stage,
        };
        let stage = if args.fixed_bitrate {
            tracing::info!("--fixed-bitrate: the bitrate stays as set whatever the viewers' links");
            stage
        } else {
            stage.adapt_bitrate(settings.bitrate_bps)
        };
        let stage = if args.every_frame {
            tracing::info!("--every-frame: a frame on every tick, changed or not");
            stage
        } else {
            tracing::info!(
                damage = changes.is_some(),
                "frames are made when the picture changes (and once a second)"
            );
            let stage = stage.skip_unchanged(Unchanged::for_fps(args.fps));
            match changes {
                Some(changes) => stage.with_screen_changes(changes),
                None => stage,
            }
        };
        let pipeline = Pipeline::spawn(
            stage,
            PipelineConfig {
                fps: args.fps,
                pin_core: cores.frame,
                always_encode: false,
                follow_drawing: !args.free_clock,
            },
        )
        .context("cannot start the frame thread")?;
        let players = Arc::new(crate::input::Players::default());
        let audio = if args.audio.no_audio {
            &AudioSource::Off
        } else {
            audio
        };
        // The audio gives up the share of its bitrate a slow link takes from the video.
        let follow = (!args.fixed_bitrate).then(|| stats.clone());
        let (audio_threads, audio_feed) = match crate::audio::start(
            audio,
            args.audio.audio_bitrate_kbps,
            !args.every_frame,
            follow,
        )? {
            Some((threads, feed)) => (Some(threads), Some(feed)),
            None => (None, None),
        };
        let metrics = Metrics::new(stats.clone(), health.clone(), ring.clone())
            .with_input(players.stats().clone())
            .with_low_rendition(low.as_ref().map(|low| low.stats.clone()))
            .with_audio(audio_feed.clone());
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
            video: stats,
            low,
            input: players,
            audio: audio_feed,
        });
        Ok(Self {
            pipeline,
            state,
            input: None,
            audio: audio_threads,
            player_cores: cores.players,
        })
    }

    /// Starts the player threads, which send players' keys into `display` (the game's X
    /// display), and the `--input-port-N` listeners. Without this call the input WebSockets
    /// answer 503.
    pub fn start_input(
        &mut self,
        display: &str,
        args: &StreamArgs,
        tls: Option<&axum_server::tls_rustls::RustlsConfig>,
    ) -> anyhow::Result<()> {
        let setup = crate::input::InputSetup {
            display: display.to_owned(),
            args: args.input.clone(),
            cores: self.player_cores,
            listen_ip: args.listen.ip(),
            token: self.state.token.clone(),
            tls: tls.map(|tls| tls.get_inner()),
        };
        let threads = crate::input::PlayerThreads::start(
            self.state.input.clone(),
            &setup,
            self.state.health.clone(),
        )?;
        self.input = Some(threads);
        Ok(())
    }
}

/// Binds the listener now (so a taken port fails at once, and port 0 works), returning it
/// with the address it got.
pub fn bind(listen: SocketAddr) -> anyhow::Result<(std::net::TcpListener, SocketAddr)> {
    let listener = crate::listen::bind(listen).with_context(|| {
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

/// How long open connections get to finish once the session stops.
const GRACE: Duration = Duration::from_secs(2);
/// How long a client gets to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the session until `shutdown` resolves or the frame thread stops. Prints the one
/// `playpod: open URL` line once listening.
///
/// Connections are served as HTTP/1.1 by hyper directly (over TLS when `tls` is given, with
/// ALPN `http/1.1`), so that an upgraded input WebSocket hands its own TCP stream to a player
/// thread (see [`crate::input`]).
pub async fn serve(
    mut session: Session,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = server::router(session.state.clone());
    let url = player_url(addr, &session.state.token, tls.is_some());
    let tls = tls.map(|tls| {
        let mut config = (*tls.get_inner()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(accept_loop(listener, app, tls, stop_rx));
    // A reader that has gone (a closed pipe) does not stop the session, as `println!` would.
    if let Err(err) = writeln!(std::io::stdout(), "playpod: open {url}") {
        tracing::warn!(%err, "cannot write the `playpod: open` line on stdout");
    }
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
    // its connection ends, and the graceful shutdown below has nothing left to wait for. The
    // player threads stop with it, closing their sockets.
    let Session {
        pipeline,
        state,
        input,
        audio,
        player_cores: _,
    } = session;
    if let Err(err) = pipeline.stop() {
        if state.health.game_over() {
            // Its display went away under it: how the session ended, not a new failure.
            tracing::debug!(%err, "frame thread ended with its display");
        } else {
            tracing::error!(%err, "frame thread ended with an error");
        }
    }
    drop((input, audio, state));
    let _ = stop_tx.send(true);
    if let Err(err) = server.await {
        tracing::warn!(%err, "server task failed");
    }
    outcome
}

/// Accepts connections until `stop` turns true, then gives the open ones [`GRACE`] to finish.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    crate::listen::tune_accepted(&tcp);
                    connections.spawn(serve_connection(tcp, app.clone(), tls.clone(), stop.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACE, drained).await.is_err() {
        tracing::debug!("closing connections still open after {GRACE:?}");
    }
    connections.shutdown().await;
}

/// Serves one connection as HTTP/1.1 with upgrades, closing it gracefully when `stop` turns.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Viewers' handlers watch their link through a duplicate of the socket's descriptor.
    let socket = match std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned() {
        Ok(fd) => Some(Arc::new(fd)),
        Err(err) => {
            tracing::debug!(%err, "cannot duplicate a connection's descriptor");
            None
        }
    };
    // Every request of the connection carries it (one wrapper around the router, whose
    // routes stay as they are).
    let app = tower_layer::Layer::layer(&axum::Extension(crate::server::ConnSocket(socket)), app);
    match tls {
        None => serve_http1(hyper_util::rt::TokioIo::new(tcp), app, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    serve_http1(hyper_util::rt::TokioIo::new(stream), app, stop).await
                }
                Ok(Err(err)) => tracing::debug!(%err, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

async fn serve_http1<I>(
    io: I,
    app: axum::middleware::AddExtension<axum::Router, crate::server::ConnSocket>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP. The handlers are installed by this call, not when the
/// future is first polled: a signal that arrives in between (say right after the `playpod: open`
/// line) must start the graceful shutdown, not kill the process with the default action and
/// leave its children's framebuffer files and segments behind.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind)
            .inspect_err(|err| tracing::warn!(%err, "cannot watch {name}"))
            .ok()
    };
    let mut ctrl_c = watch(SignalKind::interrupt(), "Ctrl-C (SIGINT)");
    let mut term = watch(SignalKind::terminate(), "SIGTERM");
    // The terminal it was started from closed (an SSH session dropped): stop as cleanly as on
    // Ctrl-C instead of dying with the framebuffer and the sound server's files left behind.
    let mut hangup = watch(SignalKind::hangup(), "SIGHUP");
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
            () = recv(hangup.as_mut()) => tracing::info!("SIGHUP (terminal closed): stopping"),
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
