//! Bodies as they stream: chunks, server-sent events, and what a policy
//! does with them (see `wit/types.wit`, whose shapes these mirror).

use std::any::Any;

/// The body modes a policy handles, besides not seeing the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyModes {
    /// The whole body in the head call.
    pub buffer: bool,
    /// Chunk calls.
    pub chunks: bool,
    /// One call per server-sent event.
    pub sse: bool,
}

impl BodyModes {
    /// No body at all.
    pub const NONE: BodyModes = BodyModes {
        buffer: false,
        chunks: false,
        sse: false,
    };
    /// The whole body only.
    pub const BUFFER: BodyModes = BodyModes {
        buffer: true,
        chunks: false,
        sse: false,
    };
    /// The whole body, or one server-sent event at a time.
    pub const BUFFER_OR_SSE: BodyModes = BodyModes {
        buffer: true,
        chunks: false,
        sse: true,
    };
    /// Every mode.
    pub const ALL: BodyModes = BodyModes {
        buffer: true,
        chunks: true,
        sse: true,
    };
}

/// Why a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// All of it passed.
    Complete,
    /// The client went away first (what a call returns then is dropped).
    ClientGone,
    /// The other side failed, or a policy ended the body.
    Broken,
}

/// Bytes of a body for a chunk hook: the carry held back last time, then
/// what arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// Set on the last call.
    pub end: Option<EndReason>,
}

/// Ends a body early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// A short code for programs (`pii_blocked`).
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl StreamError {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// What a chunk hook passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The data as it came.
    Pass,
    /// `data` instead, holding back `carry` (at most 64 KiB) for the next call.
    Emit {
        /// Bytes to send on now.
        data: Vec<u8>,
        /// Bytes for the front of the next call's data.
        carry: Vec<u8>,
    },
    /// End the body here.
    Fail(StreamError),
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field; `None` is the default type (`message`).
    pub event: Option<String>,
    /// The `data` field (lines joined by `\n`).
    pub data: String,
    /// The `id` field.
    pub id: Option<String>,
    /// The `retry` field, in milliseconds.
    pub retry: Option<u32>,
}

impl SseEvent {
    /// A data-only event.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// An event with a type.
    pub fn named(event: &str, data: impl Into<String>) -> Self {
        Self {
            event: Some(event.to_string()),
            data: data.into(),
            ..Self::default()
        }
    }
}

/// What an event hook is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// The next event.
    Event(SseEvent),
    /// The end of the stream: flush what was held back.
    End(EndReason),
}

/// What an event hook passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The event as it came; the carry stays.
    Pass,
    /// These events instead (at most 256), keeping `carry` (at most 64 KiB).
    Emit {
        /// Events to send on now.
        events: Vec<SseEvent>,
        /// Text for the next call.
        carry: String,
    },
    /// End the stream with an error event.
    Fail(StreamError),
}

/// A policy's state for one body, from its first chunk or event call to the
/// end call: the host binds one instance to a body, and the SDK gives each
/// body a fresh state. Holds one value of any type.
#[derive(Default)]
pub struct BodyState(Option<Box<dyn Any>>);

impl BodyState {
    /// The state, created with `Default` on first use (or when it held
    /// another type).
    pub fn get<T: Default + 'static>(&mut self) -> &mut T {
        if !self.0.as_ref().is_some_and(|b| b.is::<T>()) {
            self.0 = Some(Box::new(T::default()));
        }
        // Just made sure it holds a `T`.
        match self.0.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(t) => t,
            None => unreachable!("the state was just set to this type"),
        }
    }

    /// Forget the state (the host starts a new body).
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl std::fmt::Debug for BodyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BodyState(set)"
        } else {
            "BodyState(empty)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_state_starts_fresh_and_keeps_its_value() {
        let mut state = BodyState::default();
        *state.get::<u32>() += 2;
        *state.get::<u32>() += 3;
        assert_eq!(*state.get::<u32>(), 5);
        assert_eq!(state.get::<String>(), "", "another type starts over");
        state.clear();
        assert_eq!(*state.get::<u32>(), 0);
    }
}
