//! Streamed answers on Spin: the policies whose `response_body` is `stream`
//! or `sse` see the body chunk by chunk or event by event as it passes, with
//! the host's rules and bounds (docs/phases.md §7): a carry of at most
//! 64 KiB, at most 256 events and 4 MiB of output per piece, `on_error` on a
//! failure, and `fail` ending the body.
//!
//! The policies are native calls here, so a stage is plain synchronous code;
//! the request path (`crate::chain`) reads the upstream and writes the client.

use edgegate_policy_core::sse::{self, SseItem, SseParser};
use edgegate_policy_core::{
    BodyState, Chunk, ChunkOutcome, EndReason, EventOutcome, Level, StreamError, StreamItem,
};

use crate::config::{OnError, PolicyDef};
use crate::env::RequestEnv;

/// Largest carry a hook may hold back.
pub const MAX_CARRY_BYTES: usize = 64 << 10;
/// Most events one event call may emit.
pub const MAX_EVENTS_PER_CALL: usize = 256;
/// Most bytes a stage may emit for one piece it was given.
pub const MAX_OUTPUT_PER_PIECE: usize = 4 << 20;
/// Longest error code and message a policy's `fail` puts on the wire.
const MAX_ERROR_CODE: usize = 64;
const MAX_ERROR_MESSAGE: usize = 1024;

/// How a streaming policy sees the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `stream`: chunk calls.
    Chunks,
    /// `sse`: one event call per server-sent event.
    Events,
}

/// A stage ended the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The policy.
    pub policy: String,
    /// A short code (`response_blocked`, `policy_failed`).
    pub code: String,
    /// What happened.
    pub message: String,
    /// Whether the client gets an `error` event (an event stream) or a cut body.
    pub event: bool,
}

impl Stop {
    /// The error event that ends an event stream.
    pub fn error_event(&self) -> Vec<u8> {
        sse::error_event(&self.policy, &self.code, &self.message)
    }
}

/// One streaming policy on one body, after its head call.
pub struct Stage<'c> {
    def: &'c PolicyDef,
    kind: Kind,
    state: BodyState,
    parser: SseParser,
    carry: Vec<u8>,
    text_carry: String,
    /// Off after a failure its `on_error = "allow"` let pass: the body goes by.
    active: bool,
    ended: bool,
}

impl<'c> Stage<'c> {
    /// A stage for `def`, which sees the body as `kind`.
    pub fn new(def: &'c PolicyDef, kind: Kind) -> Self {
        Self {
            def,
            kind,
            state: BodyState::default(),
            parser: SseParser::default(),
            carry: Vec::new(),
            text_carry: String::new(),
            active: true,
            ended: false,
        }
    }

    /// What the stage passes on for `data`.
    pub fn process(&mut self, env: &RequestEnv<'_>, data: Vec<u8>) -> Result<Vec<u8>, Stop> {
        if !self.active || self.ended {
            return Ok(data);
        }
        match self.kind {
            Kind::Chunks => self.chunk(env, data, None),
            Kind::Events => self.events(env, data),
        }
    }

    /// The end call: what the stage flushes.
    pub fn end(&mut self, env: &RequestEnv<'_>, reason: EndReason) -> Result<Vec<u8>, Stop> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.ended = true;
        if !self.active {
            return Ok(std::mem::take(&mut self.carry));
        }
        match self.kind {
            Kind::Chunks => self.chunk(env, Vec::new(), Some(reason)),
            Kind::Events => {
                let mut out = Vec::new();
                self.event(env, StreamItem::End(reason), &mut out)
                    .map(|()| out)
            }
        }
    }

    fn chunk(
        &mut self,
        env: &RequestEnv<'_>,
        data: Vec<u8>,
        end: Option<EndReason>,
    ) -> Result<Vec<u8>, Stop> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(&data);
        let penv = env.for_policy(&self.def.name, &self.def.kv_namespace);
        let chunk = Chunk {
            data: bytes.clone(),
            end,
        };
        match self
            .def
            .policy
            .on_response_chunk(&penv, &mut self.state, chunk)
        {
            Err(e) => self.failed(env, &e.to_string(), bytes),
            Ok(ChunkOutcome::Pass) => Ok(bytes),
            Ok(ChunkOutcome::Emit { data, carry }) => {
                if data.len() > MAX_OUTPUT_PER_PIECE {
                    let why = format!(
                        "emitted {} bytes for one chunk, over the limit of {MAX_OUTPUT_PER_PIECE}",
                        data.len()
                    );
                    return self.failed(env, &why, bytes);
                }
                if carry.len() > MAX_CARRY_BYTES {
                    let why = format!(
                        "held back {} bytes, over the carry limit of {MAX_CARRY_BYTES}",
                        carry.len()
                    );
                    return self.failed(env, &why, bytes);
                }
                if end.is_none() {
                    self.carry = carry;
                }
                Ok(data)
            }
            Ok(ChunkOutcome::Fail(e)) => Err(self.fail(env, e)),
        }
    }

    fn events(&mut self, env: &RequestEnv<'_>, data: Vec<u8>) -> Result<Vec<u8>, Stop> {
        if let Err(e) = self.parser.feed(&data) {
            env.log(
                Level::Warn,
                &self.def.name,
                &format!("event stream cut: {e}"),
            );
            return Err(Stop {
                policy: self.def.name.clone(),
                code: "upstream_event_too_large".into(),
                message: e.to_string(),
                event: false,
            });
        }
        let mut out = Vec::new();
        while let Some(item) = self.parser.next_item() {
            match item {
                SseItem::Comment(c) => out.extend_from_slice(&c),
                SseItem::Event(e) if !self.active => {
                    // The parser read it, so it writes back.
                    let _ = sse::write_event(&e, &mut out);
                }
                SseItem::Event(e) => self.event(env, StreamItem::Event(e), &mut out)?,
            }
            if out.len() > MAX_OUTPUT_PER_PIECE {
                let why =
                    format!("emitted over {MAX_OUTPUT_PER_PIECE} bytes of events for one piece");
                return Err(self.stop("policy_failed", &why));
            }
        }
        Ok(out)
    }

    /// One event call; what it emits is written to `out`.
    fn event(
        &mut self,
        env: &RequestEnv<'_>,
        item: StreamItem,
        out: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        let carry = std::mem::take(&mut self.text_carry);
        let passed = match &item {
            StreamItem::Event(e) => Some(e.clone()),
            StreamItem::End(_) => None,
        };
        let pass = |out: &mut Vec<u8>| {
            if let Some(e) = &passed {
                let _ = sse::write_event(e, out);
            }
        };
        let penv = env.for_policy(&self.def.name, &self.def.kv_namespace);
        let verdict =
            self.def
                .policy
                .on_response_event(&penv, &mut self.state, item, carry.clone());
        let why = match verdict {
            Err(e) => e.to_string(),
            Ok(EventOutcome::Pass) => {
                self.text_carry = carry;
                pass(out);
                return Ok(());
            }
            Ok(EventOutcome::Fail(e)) => return Err(self.fail(env, e)),
            Ok(EventOutcome::Emit { events, carry }) => {
                if events.len() > MAX_EVENTS_PER_CALL {
                    format!(
                        "emitted {} events in one call, over the limit of {MAX_EVENTS_PER_CALL}",
                        events.len()
                    )
                } else if carry.len() > MAX_CARRY_BYTES {
                    format!(
                        "held back {} bytes, over the carry limit of {MAX_CARRY_BYTES}",
                        carry.len()
                    )
                } else {
                    let mark = out.len();
                    match events.iter().try_for_each(|e| sse::write_event(e, out)) {
                        Ok(()) => {
                            self.text_carry = carry;
                            return Ok(());
                        }
                        Err(why) => {
                            out.truncate(mark);
                            why.to_string()
                        }
                    }
                }
            }
        };
        self.failed(env, &why, Vec::new())?;
        pass(out);
        Ok(())
    }

    /// A call failed: `on_error = "deny"` ends the body; `allow` lets the
    /// rest of it (and `data`, the bytes of this call) go by unseen.
    fn failed(&mut self, env: &RequestEnv<'_>, why: &str, data: Vec<u8>) -> Result<Vec<u8>, Stop> {
        match self.def.on_error {
            OnError::Deny => {
                env.log(
                    Level::Warn,
                    &self.def.name,
                    &format!("streaming policy failed; ending the body (on_error = deny): {why}"),
                );
                // A failed policy gets no end call, as on the host.
                self.ended = true;
                let message = format!("policy `{}` failed", self.def.name);
                Err(self.stop("policy_failed", &message))
            }
            OnError::Allow => {
                env.log(
                    Level::Warn,
                    &self.def.name,
                    &format!("streaming policy failed; the rest of the body passes it (on_error = allow): {why}"),
                );
                self.active = false;
                Ok(data)
            }
        }
    }

    fn fail(&mut self, env: &RequestEnv<'_>, e: StreamError) -> Stop {
        env.log(
            Level::Info,
            &self.def.name,
            &format!(
                "the policy ended the body: {}",
                bounded(&e.code, MAX_ERROR_CODE)
            ),
        );
        self.stop(&e.code, &e.message)
    }

    fn stop(&self, code: &str, message: &str) -> Stop {
        Stop {
            policy: self.def.name.clone(),
            code: bounded(code, MAX_ERROR_CODE),
            message: bounded(message, MAX_ERROR_MESSAGE),
            event: self.kind == Kind::Events,
        }
    }
}

/// At most `max` characters of `text`.
fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `data` through every stage in order.
pub fn through(
    stages: &mut [Stage<'_>],
    env: &RequestEnv<'_>,
    mut data: Vec<u8>,
) -> Result<Vec<u8>, Stop> {
    for stage in stages.iter_mut() {
        data = stage.process(env, data)?;
    }
    Ok(data)
}

/// Ends every stage in order, each one's flush going through the stages after it.
pub fn end_all(stages: &mut [Stage<'_>], env: &RequestEnv<'_>) -> Result<Vec<u8>, Stop> {
    let mut out = Vec::new();
    for i in 0..stages.len() {
        // What the stages before flushed has passed this one already.
        let flushed = stages[i].end(env, EndReason::Complete)?;
        out.extend(through(&mut stages[i + 1..], env, flushed)?);
    }
    Ok(out)
}

/// Ends every stage that has not ended, for `reason`; what they flush is dropped.
pub fn abandon(stages: &mut [Stage<'_>], env: &RequestEnv<'_>, reason: EndReason) {
    for stage in stages {
        let _ = stage.end(env, reason);
    }
}
