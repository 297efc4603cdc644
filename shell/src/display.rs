//! Watches the X display a pod streams. When its server goes away (the game ended and its
//! entrypoint stopped Xvfb, or Xvfb crashed) the session is over: without this, a pod reading
//! the framebuffer in place would go on streaming the last picture and saying it is ready.
//!
//! The same connection tracks drawing with the DAMAGE extension, so that the frame thread
//! skips the ticks on which nothing was drawn ([`playpod_hotpath::damage`]).

use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use playpod_hotpath::damage::{DamageTracker, ScreenChanges};
use tokio::sync::watch;
use x11rb::connection::Connection as _;
use x11rb::errors::ReplyError;

/// A thread holding a connection to the display, which selects no events and sends no
/// requests but those of damage tracking: the connection ends only when the server goes away
/// (or on drop).
#[derive(Debug)]
pub struct DisplayWatch {
    display: String,
    changes: Option<ScreenChanges>,
    /// A second handle on the connection's socket, to shut it down and wake the thread.
    closer: UnixStream,
    closed: watch::Receiver<Option<String>>,
    thread: Option<JoinHandle<()>>,
}

impl DisplayWatch {
    /// Connects to `display` (`:0`, `host:0`) and starts watching it; with `track_damage`,
    /// tracks drawing on its screen too ([`DisplayWatch::screen_changes`]).
    pub fn start(display: &str, track_damage: bool) -> anyhow::Result<Self> {
        let (conn, screen) = x11rb::connect(Some(display))
            .with_context(|| format!("cannot connect to X display {display}"))?;
        let tracker = if track_damage {
            let root = conn.setup().roots[screen].root;
            let tracker = DamageTracker::start(&conn, root, ScreenChanges::new())
                .with_context(|| format!("cannot track drawing on X display {display}"))?;
            if tracker.is_none() {
                let name = display; // `display` is a name inside tracing's macros
                tracing::info!(
                    display = name,
                    "the X server has no DAMAGE extension: the screen is read on every tick \
                     (unchanged pictures are still not encoded)"
                );
            }
            tracker
        } else {
            None
        };
        let changes = tracker.as_ref().map(DamageTracker::changes);
        // Only ever shut down (shutdown(2) is the same call for every kind of socket, so the
        // std type does not matter), never read or written.
        let closer = conn
            .stream()
            .as_fd()
            .try_clone_to_owned()
            .map(UnixStream::from)
            .context("cannot duplicate the X connection's socket")?;
        let (tx, closed) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("playpod-display".into())
            .spawn(move || {
                // Other events come only unasked (MappingNotify goes to every client): skip them.
                let err = loop {
                    let event = match conn.wait_for_event() {
                        Ok(event) => event,
                        Err(err) => break err,
                    };
                    let Some(tracker) = &tracker else { continue };
                    match tracker.handle(&conn, &event) {
                        Ok(()) => {}
                        Err(ReplyError::ConnectionError(err)) => break err,
                        Err(ReplyError::X11Error(err)) => {
                            // Not expected; frames go on being made, on every tick.
                            tracing::warn!(?err, "damage tracking failed");
                            tracker.changes().mark();
                        }
                    }
                };
                // On drop too, where nobody can be waiting any more.
                let _ = tx.send(Some(err.to_string()));
            })
            .context("cannot start the display watch thread")?;
        Ok(Self {
            display: display.to_owned(),
            changes,
            closer,
            closed,
            thread: Some(thread),
        })
    }

    /// The display watched.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// What the frame thread asks whether anything was drawn; `None` when damage is not
    /// tracked (not asked for, or the server has no DAMAGE extension).
    pub fn screen_changes(&self) -> Option<ScreenChanges> {
        self.changes.clone()
    }

    /// Resolves once the display's server has closed the connection, with the error the
    /// connection ended with.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The thread ended without a word: it panicked.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether the display closes within `limit` (at once if it already has).
    pub async fn closed_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.closed()).await.is_ok()
    }
}

impl Drop for DisplayWatch {
    fn drop(&mut self) {
        let _ = self.closer.shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
