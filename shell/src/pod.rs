//! `playpod pod`: streams a display that someone else started (the game-pod case).

use playpod_hotpath::capture::{FrameSource, FramebufferFile, FramebufferSegment, XShmSource};

use crate::cli::PodArgs;
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
    if args.pulse_server.is_some() {
        tracing::info!("audio is not streamed yet; --pulse-server is ignored");
    }
    let (listener, addr) = session::bind(args.stream.listen)?;
    let tls = crate::tls::config(&args.stream.tls, addr).await?;
    let source = open_source(&args)?;
    let session = Session::start(source, &args.stream)?;
    session::serve(session, listener, tls, session::shutdown_signal()).await
}
