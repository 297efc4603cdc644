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
    /// The current connection's seat (see [`Slot::next`]).
    seat: Option<String>,
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
    /// the current one until [`Slot::finished`], with a fresh seat: 128 random bits (hex) that
    /// the player's thread tells that connection's page, and that page alone, so that its
    /// video connection can show it is this player's ([`Slot::seated`]).
    pub fn next(&self) -> Option<(Incoming, String)> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            if let Some(incoming) = state.pending.take() {
                state.current = incoming.shutdown.try_clone().ok();
                state.replaced = false;
                let seat = crate::token::random_token();
                state.seat = Some(seat.clone());
                // A takeover that came while the slot was between connections is not one.
                return Some((incoming, seat));
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The current connection ended; returns whether it was taken over. Its seat is void.
    pub fn finished(&self) -> bool {
        let mut state = self.lock();
        state.current = None;
        state.seat = None;
        std::mem::take(&mut state.replaced)
    }

    /// Whether `seat` is the current connection's (compared in constant time).
    pub fn seated(&self, seat: &str) -> bool {
        self.lock()
            .seat
            .as_deref()
            .is_some_and(|current| crate::token::token_matches(current, seat))
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

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::input::PlayerStream;

    /// A server-side connection over loopback, and its client end (kept open).
    fn incoming(takeover: bool) -> (Incoming, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let incoming = Incoming::new(PlayerStream::Plain(server), Vec::new(), takeover).unwrap();
        (incoming, client)
    }

    #[test]
    fn each_connection_gets_a_seat_of_its_own_while_it_is_current() {
        let slot = Slot::new(1);
        assert!(!slot.seated(""), "an empty slot holds no seat");
        let (first, _client) = incoming(false);
        assert!(matches!(slot.hand_off(first), Handed::Queued));
        assert!(!slot.seated(""), "a queued connection has no seat yet");
        let (_first, seat) = slot.next().unwrap();
        assert_eq!(seat.len(), 32);
        assert!(seat.chars().all(|c| c.is_ascii_hexdigit()), "{seat}");
        assert!(slot.seated(&seat));
        let mut last_differs = seat.clone();
        last_differs.replace_range(31.., if seat.ends_with('0') { "1" } else { "0" });
        for wrong in ["", &seat[..31], &last_differs, &format!("{seat}0")] {
            assert!(!slot.seated(wrong), "{wrong:?}");
        }

        // The one that takes over has another; the old seat is void once its connection ends.
        let (second, _client) = incoming(true);
        assert!(matches!(slot.hand_off(second), Handed::Queued));
        assert!(slot.finished(), "taken over");
        assert!(!slot.seated(&seat));
        let (_second, next_seat) = slot.next().unwrap();
        assert_ne!(next_seat, seat);
        assert!(slot.seated(&next_seat) && !slot.seated(&seat));
        assert!(!slot.finished());
        assert!(
            !slot.seated(&next_seat),
            "a connection that ended holds no seat"
        );
    }
}
