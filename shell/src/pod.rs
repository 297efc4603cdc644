//! `playpod pod`: streams a display that someone else started (the game-pod case).

use playpod_hotpath::capture::{FrameSource, FramebufferFile, FramebufferSegment, XShmSource};

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::audio::AudioSource;
use crate::cli::PodArgs;
use crate::display::DisplayWatch;
use crate::session::{self, Session};

/// Opens the capture source the flags name.
pub fn open_source(args: &PodArgs) -> anyhow::Result<Box<dyn FrameSource>> {
    let (w, h) = (u32::from(args.stream.size.0), u32::from(args.stream.size.1));
    Ok(match (&args.framebuffer, args.shmid) {
        (Some(path), _) => Box::new(FramebufferFile::open(path, w, h)?),
        (None, Some(id)) => Box::new(FramebufferSegment::attach(id, w, h)?),
        (None, None) => {
            tracing::info!(
                "no --framebuffer or --shmid: capturing through MIT-SHM XShmGetImage (one copy per frame)"
            );
            Box::new(XShmSource::connect(&args.display, w, h)?)
        }
    })
}

pub async fn run(args: PodArgs) -> anyhow::Result<()> {
    // Signal handlers first, in place for all that follows.
    let stop_signal = session::shutdown_signal();
    let (listener, addr) = session::bind(args.stream.listen)?;
    let tls = crate::tls::config(&args.stream.tls, addr).await?;
    let source = open_source(&args)?;
    let watch = DisplayWatch::start(&args.display)?;
    let audio = match &args.pulse_server {
        Some(server) => AudioSource::Pulse {
            server: server.clone(),
            source: args.pulse_source.clone(),
        },
        None => {
            if !args.stream.audio.no_audio {
                tracing::info!("no --pulse-server or PULSE_SERVER: no audio");
            }
            AudioSource::Off
        }
    };
    let mut session = Session::start_with_audio(source, &args.stream, &audio)?;
    // Players' keys go into the display the pod streams.
    session.start_input(&args.display, &args.stream, tls.as_ref())?;
    let health = session.state.health.clone();
    let shutdown = async {
        tokio::select! {
            () = stop_signal => {}
            reason = watch.closed() => {
                health.display_ok.store(false, Ordering::Relaxed);
                tracing::info!(
                    display = watch.display(),
                    %reason,
                    "the X server closed the display (the game is over): stopping"
                );
            }
        }
    };
    let served = session::serve(session, listener, tls, shutdown).await;
    match served {
        // Capturing through XShmGetImage, the frame thread may see the server go before the
        // watch does: the same end of the game, not a failure.
        Err(err) if watch.closed_within(DISPLAY_GRACE).await => {
            tracing::info!(
                display = watch.display(),
                err = format!("{err:#}"),
                "the X server closed the display (the game is over): stopped"
            );
            Ok(())
        }
        other => other,
    }
}

/// How long a failed frame thread waits to learn whether its display has gone.
const DISPLAY_GRACE: Duration = Duration::from_millis(500);
