//! Watches the X display a pod streams. When its server goes away (the game ended and its
//! entrypoint stopped Xvfb, or Xvfb crashed) the session is over: without this, a pod reading
//! the framebuffer in place would go on streaming the last picture and saying it is ready.

use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use x11rb::connection::Connection as _;

/// A thread holding a connection to the display, which selects no events and sends no
/// requests: the connection ends only when the server goes away (or on drop).
#[derive(Debug)]
pub struct DisplayWatch {
    display: String,
    /// A second handle on the connection's socket, to shut it down and wake the thread.
    closer: UnixStream,
    closed: watch::Receiver<Option<String>>,
    thread: Option<JoinHandle<()>>,
}

impl DisplayWatch {
    /// Connects to `display` (`:0`, `host:0`) and starts watching it.
    pub fn start(display: &str) -> anyhow::Result<Self> {
        let (conn, _screen) = x11rb::connect(Some(display))
            .with_context(|| format!("cannot connect to X display {display}"))?;
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
                // Events come only unasked (MappingNotify goes to every client): skip them.
                let err = loop {
                    if let Err(err) = conn.wait_for_event() {
                        break err;
                    }
                };
                // On drop too, where nobody can be waiting any more.
                let _ = tx.send(Some(err.to_string()));
            })
            .context("cannot start the display watch thread")?;
        Ok(Self {
            display: display.to_owned(),
            closer,
            closed,
            thread: Some(thread),
        })
    }

    /// The display watched.
    pub fn display(&self) -> &str {
        &self.display
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
