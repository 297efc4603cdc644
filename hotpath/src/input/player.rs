//! One player's input: the state machine that the thread reading the player's WebSocket drives.

use super::{
    ErrorReply, Frame, InjectError, InputError, KeySink, PlayerKeys, XtestInjector, parse,
};

/// Why a message was not played.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message was invalid; no key changed. Reply with [`HandleError::reply`] and go on.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The key events could not be sent to the display: the player cannot play any more.
    #[error(transparent)]
    Inject(#[from] InjectError),
}

impl HandleError {
    /// The `{"error":"..."}` text reply to an invalid message (`None` for an X error).
    pub fn reply(&self) -> Option<ErrorReply> {
        match self {
            HandleError::Input(e) => Some(ErrorReply::new(e)),
            HandleError::Inject(_) => None,
        }
    }

    /// A short fixed name of the error, for metrics labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            HandleError::Input(e) => e.metric_label(),
            HandleError::Inject(_) => "x11",
        }
    }
}

/// One player's keys: parses each message against the keys held, sends the changes to the
/// sink (the game's display) and remembers the new state. Every held key is released by
/// [`PlayerInput::release_all`] and when the value is dropped.
#[derive(Debug)]
pub struct PlayerInput<S: KeySink = XtestInjector> {
    sink: S,
    held: PlayerKeys,
}

impl<S: KeySink> PlayerInput<S> {
    /// A player holding no key, whose changes go to `sink`.
    pub fn new(sink: S) -> PlayerInput<S> {
        PlayerInput {
            sink,
            held: PlayerKeys::NONE,
        }
    }

    /// Plays one message: returns the keys now held. An invalid message changes no key
    /// ([`HandleError::Input`]); when the sink fails ([`HandleError::Inject`]) the keys of the
    /// message may have been sent in part, so they are all counted as held, to be released.
    pub fn handle(&mut self, frame: Frame<'_>) -> Result<PlayerKeys, HandleError> {
        let new = parse(frame, self.held)?;
        if let Err(e) = self.sink.apply(self.held, new) {
            self.held = PlayerKeys(self.held.0 | new.0);
            return Err(e.into());
        }
        self.held = new;
        Ok(new)
    }

    /// The keys held now.
    pub fn held(&self) -> PlayerKeys {
        self.held
    }

    /// Releases every held key (best effort: when the display is gone there is nothing to
    /// release), and forgets them.
    pub fn release_all(&mut self) {
        let held = std::mem::replace(&mut self.held, PlayerKeys::NONE);
        if !held.is_empty()
            && let Err(e) = self.sink.release_all(held)
        {
            tracing::debug!(error = %e, "cannot release a player's keys");
        }
    }

    /// The sink the keys go to.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink the keys go to, mutably (to refocus the game window, for instance).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }
}

impl<S: KeySink> Drop for PlayerInput<S> {
    fn drop(&mut self) {
        self.release_all();
    }
}
