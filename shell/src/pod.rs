//! `playpod pod`: streams a display that someone else started (the game-pod case).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use playpod_hotpath::capture::{
    CaptureError, FrameSource, FramebufferFile, FramebufferSegment, XShmSource,
};

use crate::audio::AudioSource;
use crate::cli::PodArgs;
use crate::cores::{Machine, Placement};
use crate::display::DisplayWatch;
use crate::session::{self, Session};

/// Opens the capture source the flags name.
pub fn open_source(args: &PodArgs) -> anyhow::Result<Box<dyn FrameSource>> {
    let (w, h) = (u32::from(args.stream.size.0), u32::from(args.stream.size.1));
    Ok(match (&args.framebuffer, args.shmid) {
        // Xvfb's -fbdir names the directory; the file is in it.
        (Some(path), _) if path.is_dir() => anyhow::bail!(
            "--framebuffer {} is a directory: give the file Xvfb writes in it ({})",
            path.display(),
            path.join("Xvfb_screen0").display()
        ),
        (Some(path), _) => Box::new(FramebufferFile::open(path, w, h)?),
        (None, Some(id)) => Box::new(FramebufferSegment::attach(id, w, h)?),
        (None, None) => Box::new(XShmSource::connect(&args.display, w, h)?),
    })
}

/// Opens the capture source and watches the display, retrying for `--wait-for-display`
/// seconds while either is missing.
async fn open_display(args: &PodArgs) -> anyhow::Result<Opened> {
    let wait = Duration::from_secs(args.wait_for_display.into());
    let started = Instant::now();
    let capture = match (&args.framebuffer, args.shmid) {
        (Some(path), _) => format!("framebuffer file {}", path.display()),
        (None, Some(id)) => format!("framebuffer segment {id}"),
        (None, None) => "XShmGetImage".to_owned(),
    };
    tracing::info!(display = %args.display, %capture, "opening the display");
    let mut said = false;
    loop {
        // Past --wait-for-display, an attempt still under way (a server that took the
        // connection and never answers) gets ATTEMPT_GRACE more, then the pod gives up.
        let deadline = (started + wait).max(Instant::now()) + ATTEMPT_GRACE;
        match attempt(args, deadline).await {
            Ok(opened) => {
                if said {
                    let waited_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(display = %args.display, waited_ms, "the display is up");
                }
                if opened.0.kind() == "xshm" {
                    tracing::info!(
                        "no --framebuffer or --shmid: capturing through MIT-SHM XShmGetImage (one copy per frame)"
                    );
                }
                return Ok(opened);
            }
            // Up, but never streamable as asked: waiting would not change it.
            Err(err) if cannot_be_streamed(&err) => return Err(err),
            Err(err) if started.elapsed() < wait => {
                if !said {
                    said = true;
                    tracing::info!(
                        display = %args.display,
                        err = crate::error_text(&err),
                        "waiting up to {} s for the display",
                        wait.as_secs()
                    );
                }
                tokio::time::sleep(DISPLAY_RETRY).await;
            }
            Err(err) if said => {
                return Err(err.context(format!(
                    "the display was not up after waiting {} s (--wait-for-display)",
                    wait.as_secs()
                )));
            }
            Err(err) => return Err(err),
        }
    }
}

/// How long an attempt at opening the display may outlast `--wait-for-display`.
const ATTEMPT_GRACE: Duration = Duration::from_secs(10);

type Opened = (Box<dyn FrameSource>, DisplayWatch);

/// One attempt at opening the capture source and watching the display, on a thread of its own:
/// connecting to an X server blocks, and a server that takes the connection but never answers
/// (hung, or stopped) would hold it, and with it the stop signals, for good. An attempt not
/// done by `deadline` is given up on; its thread ends with the process.
async fn attempt(args: &PodArgs, deadline: Instant) -> anyhow::Result<Opened> {
    let begun = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_args = args.clone();
    std::thread::Builder::new()
        .name("playpod-open".into())
        .spawn(move || {
            let opened = open_source(&thread_args).and_then(|source| {
                let watch =
                    DisplayWatch::start(&thread_args.display, !thread_args.stream.every_frame)?;
                Ok((source, watch))
            });
            // The pod may have stopped waiting: then this opening is dropped here.
            let _ = tx.send(opened);
        })
        .context("cannot start a thread to open the display")?;
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(_)) => anyhow::bail!("opening the display failed (its thread ended early)"),
        Err(_) => anyhow::bail!(
            "X display {} takes connections but does not answer (a hung or stopped X server?): \
             gave up after {} s",
            args.display,
            deadline.saturating_duration_since(begun).as_secs()
        ),
    }
}

/// Whether `err` says the display is up but can never be streamed as asked (a screen smaller
/// than `--size`, another depth, no MIT-SHM), rather than not up yet.
fn cannot_be_streamed(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<CaptureError>(),
            Some(CaptureError::TooSmall { .. } | CaptureError::Depth(_) | CaptureError::NoShm)
        )
    })
}

pub async fn run(args: PodArgs) -> anyhow::Result<()> {
    // Signal handlers first, in place for all that follows (waiting for the display too).
    let mut stop_signal = std::pin::pin!(session::shutdown_signal());
    session::preflight(&args.stream)?;
    let cores = Placement::decide_here(&args.stream, Machine::Shared)?;
    let (listener, addr) = session::bind(args.stream.listen)?;
    let tls = crate::tls::config(&args.stream.tls, addr).await?;
    let (source, watch) = tokio::select! {
        opened = open_display(&args) => opened?,
        () = &mut stop_signal => return Ok(()),
    };
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
    let mut session =
        Session::start_with_audio(source, watch.screen_changes(), &args.stream, &audio, cores)?;
    // Players' keys go into the display the pod streams.
    session.start_input(&args.display, &args.stream, tls.as_ref())?;
    let health = session.state.health.clone();
    let shutdown = async {
        tokio::select! {
            () = stop_signal => {}
            reason = watch.closed() => {
                health.end_game();
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
                err = crate::error_text(&err),
                "the X server closed the display (the game is over): stopped"
            );
            Ok(())
        }
        other => other,
    }
}

/// How long a failed frame thread waits to learn whether its display has gone.
const DISPLAY_GRACE: Duration = Duration::from_millis(500);
/// How often `--wait-for-display` tries again.
const DISPLAY_RETRY: Duration = Duration::from_millis(100);
