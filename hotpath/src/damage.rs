//! Whether anything was drawn on the screen since the frame thread last looked, from the X
//! server's DAMAGE extension. A tick with nothing drawn is skipped before capture: a paused,
//! turn-based or waiting game costs the frame thread nothing.
//!
//! The X connection lives on another thread (the one watching the display, which waits for
//! events anyway); the frame thread only swaps an atomic flag. On each notification that thread
//! empties the damage region and waits for the server to have done so *before* raising the
//! flag, so every drawing either happened before the flag was raised (and the frame captured
//! after it includes it) or damages the empty region again and raises the flag anew: no drawing
//! is ever left out of the stream.
//!
//! A game may draw in many small pieces; each piece drawn after an emptying notifies again. So
//! that such a game cannot keep the watch thread busy with round trips, it waits
//! [`MIN_INTERVAL`] after each: a piece drawn meanwhile is handled when the wait ends, still
//! before the next tick (ticks are further apart), and a tick between reads the framebuffer as
//! it is then, that piece included.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::errors::{ReplyError, ReplyOrIdError};
use x11rb::protocol::Event;
use x11rb::protocol::damage::{self, ConnectionExt as _, ReportLevel};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};

/// The shortest time between two emptyings of the damage region: at most 500 round trips a
/// second, whatever the game draws; shorter than the tick of the highest frame rate (240 fps).
pub const MIN_INTERVAL: Duration = Duration::from_millis(2);

/// Notifications this close after the one before belong to the same drawing (a frame drawn in
/// pieces, the pieces seen at most every [`MIN_INTERVAL`]); after a longer quiet, a new drawing
/// has started.
pub const QUIET_BEFORE_DRAWING: Duration = Duration::from_millis(4);

/// A flag raised when something was drawn, taken by the frame thread. Cloned handles share it.
#[derive(Debug, Clone)]
pub struct ScreenChanges(Arc<Flag>);

#[derive(Debug)]
struct Flag {
    raised: AtomicBool,
    /// Times it was raised, for tests and logs.
    marks: AtomicU64,
    /// The clock of the two times below.
    epoch: Instant,
    /// When the latest drawing started (its first notification came), in ns since `epoch`,
    /// plus one (0: none yet).
    drawing_ns: AtomicU64,
    /// When the latest notification came, in ns since `epoch`.
    notified_ns: AtomicU64,
}

impl Default for ScreenChanges {
    fn default() -> Self {
        Self::new()
    }
}

impl ScreenChanges {
    /// Starts raised: the first tick always captures.
    pub fn new() -> Self {
        Self(Arc::new(Flag {
            raised: AtomicBool::new(true),
            marks: AtomicU64::new(0),
            epoch: Instant::now(),
            drawing_ns: AtomicU64::new(0),
            notified_ns: AtomicU64::new(0),
        }))
    }

    /// Something was drawn.
    pub fn mark(&self) {
        self.0.marks.fetch_add(1, Ordering::Relaxed);
        self.0.raised.store(true, Ordering::Release);
    }

    /// Whether something was drawn since the last call; lowers the flag.
    pub fn take(&self) -> bool {
        self.0.raised.swap(false, Ordering::AcqRel)
    }

    /// How many times the flag was raised.
    pub fn marks(&self) -> u64 {
        self.0.marks.load(Ordering::Relaxed)
    }

    /// The server said something was drawn, at `at`: the start of a new drawing when nothing
    /// was for [`QUIET_BEFORE_DRAWING`]. Called by the one thread watching the display.
    pub fn notified(&self, at: Instant) {
        let f = &*self.0;
        let ns =
            u64::try_from(at.saturating_duration_since(f.epoch).as_nanos()).unwrap_or(u64::MAX);
        let before = f.notified_ns.swap(ns, Ordering::Relaxed);
        let quiet = u64::try_from(QUIET_BEFORE_DRAWING.as_nanos()).unwrap_or(u64::MAX);
        if f.drawing_ns.load(Ordering::Relaxed) == 0 || ns.saturating_sub(before) >= quiet {
            f.drawing_ns.store(ns.saturating_add(1), Ordering::Release);
        }
    }

    /// When the latest drawing started, if any was seen.
    pub fn drawing_started(&self) -> Option<Instant> {
        let f = &*self.0;
        match f.drawing_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(f.epoch + Duration::from_nanos(ns - 1)),
        }
    }
}

/// Tracks drawing on a root window for a [`ScreenChanges`].
#[derive(Debug)]
pub struct DamageTracker {
    damage: damage::Damage,
    changes: ScreenChanges,
}

impl DamageTracker {
    /// Starts tracking drawing anywhere on `root` (its inferiors included). `Ok(None)` when the
    /// server has no DAMAGE extension; then nothing can be skipped.
    pub fn start<C: Connection>(
        conn: &C,
        root: Window,
        changes: ScreenChanges,
    ) -> Result<Option<Self>, ReplyOrIdError> {
        if conn
            .extension_information(damage::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Ok(None);
        }
        // The extension answers nothing before its version is asked.
        conn.damage_query_version(1, 1)?.reply()?;
        let damage = conn.generate_id()?;
        // One notification each time the region goes from empty to not: at most one per
        // drawing after each `subtract`, however much is drawn.
        conn.damage_create(damage, root, ReportLevel::NON_EMPTY)?
            .check()?;
        changes.mark();
        Ok(Some(Self { damage, changes }))
    }

    /// The flag this tracker raises.
    pub fn changes(&self) -> ScreenChanges {
        self.changes.clone()
    }

    /// Handles one event of the connection; others than damage notifications are ignored.
    /// After a notification it waits [`MIN_INTERVAL`].
    pub fn handle<C: Connection>(&self, conn: &C, event: &Event) -> Result<(), ReplyError> {
        let Event::DamageNotify(notify) = event else {
            return Ok(());
        };
        if notify.damage != self.damage {
            return Ok(());
        }
        self.changes.notified(Instant::now());
        conn.damage_subtract(self.damage, x11rb::NONE, x11rb::NONE)?;
        // A round trip: the server has emptied the region, so whatever it draws from now on
        // notifies again, and all it drew before is in its framebuffer.
        conn.get_input_focus()?.reply()?;
        self.changes.mark();
        std::thread::sleep(MIN_INTERVAL);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawing_starts_after_a_quiet_and_its_pieces_do_not_restart_it() {
        let changes = ScreenChanges::new();
        assert_eq!(changes.drawing_started(), None);
        let t0 = Instant::now() + Duration::from_millis(1);
        let ms = Duration::from_millis;
        changes.notified(t0);
        assert_eq!(changes.drawing_started(), Some(t0));
        // Pieces of the same frame, 2 ms apart: still the drawing that started at t0.
        changes.notified(t0 + ms(2));
        changes.notified(t0 + ms(4));
        assert_eq!(changes.drawing_started(), Some(t0));
        // The next frame, after a quiet.
        changes.notified(t0 + ms(16));
        assert_eq!(changes.drawing_started(), Some(t0 + ms(16)));
    }

    #[test]
    fn the_flag_starts_raised_and_is_taken_once() {
        let changes = ScreenChanges::new();
        let seen_by_thread = changes.clone();
        assert!(changes.take(), "the first tick captures");
        assert!(!changes.take());
        seen_by_thread.mark();
        assert!(changes.take());
        assert!(!changes.take());
    }
}
