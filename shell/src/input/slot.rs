//! A player slot: at most one controller, plus the connection waiting to take over from it.
//! Accepting threads hand connections in ([`Slot::hand_off`]); the player's thread takes them
//! out one at a time ([`Slot::next`]) and reports when one ends ([`Slot::finished`]).

use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::stream::Incoming;

/// Why a connection did not get the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The slot has a controller and the connection did not ask to take over.
    Taken,
    /// The session is ending.
    Stopping,
}

#[derive(Debug, Default)]
struct State {
    /// The next connection for the player's thread.
    pending: Option<Incoming>,
    /// The socket of the connection the player's thread serves now.
    current: Option<TcpStream>,
    /// The current connection was shut down because another one took over.
    replaced: bool,
    stopping: bool,
}

/// What became of a connection offered to a slot.
#[derive(Debug)]
pub enum Handed {
    /// It is the player thread's next connection.
    Queued,
    /// It is the next connection, and this one, which was waiting, is not: close it as taken
    /// over.
    Displaced(Incoming),
    /// It did not get the slot: close it with the reason.
    Refused(Incoming, Refusal),
}

/// One player's slot.
#[derive(Debug)]
pub struct Slot {
    /// 1 or 2.
    pub player: u8,
    state: Mutex<State>,
    wake: Condvar,
}

impl Slot {
    pub fn new(player: u8) -> Self {
        Self {
            player,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did: every field is set whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers `incoming` to the slot. Without takeover it is refused while the slot has a
    /// controller (or one waiting); with takeover the controller's socket is shut down (its
    /// thread releases its keys, then serves `incoming`), and a connection that was still
    /// waiting is handed back to be closed as taken over.
    pub fn hand_off(&self, incoming: Incoming) -> Handed {
        let mut state = self.lock();
        if state.stopping {
            return Handed::Refused(incoming, Refusal::Stopping);
        }
        let busy = state.current.is_some() || state.pending.is_some();
        if busy && !incoming.takeover {
            return Handed::Refused(incoming, Refusal::Taken);
        }
        if !state.replaced
            && let Some(current) = &state.current
        {
            // Ends the thread's blocking read; the write side stays open for the close frame.
            let _ = current.shutdown(Shutdown::Read);
            state.replaced = true;
        }
        let displaced = state.pending.replace(incoming);
        self.wake.notify_all();
        match displaced {
            Some(old) => Handed::Displaced(old),
            None => Handed::Queued,
        }
    }

    /// Waits for the next connection; `None` once the slot is stopping. The connection becomes
    /// the current one until [`Slot::finished`].
    pub fn next(&self) -> Option<Incoming> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            if let Some(incoming) = state.pending.take() {
                state.current = incoming.shutdown.try_clone().ok();
                state.replaced = false;
                // A takeover that came while the slot was between connections is not one.
                return Some(incoming);
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The current connection ended; returns whether it was taken over.
    pub fn finished(&self) -> bool {
        let mut state = self.lock();
        state.current = None;
        std::mem::take(&mut state.replaced)
    }

    /// Stops the slot: the current connection is shut down, and the waiting one handed back
    /// to be closed.
    pub fn stop(&self) -> Option<Incoming> {
        let mut state = self.lock();
        state.stopping = true;
        if let Some(current) = &state.current {
            let _ = current.shutdown(Shutdown::Read);
        }
        self.wake.notify_all();
        state.pending.take()
    }

    /// Whether the session is stopping.
    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }
}
