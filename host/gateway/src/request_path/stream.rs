//! Bodies that pass through policies as they stream (`request_body` or
//! `response_body` = `stream` | `sse`, docs/phases.md).
//!
//! A body with streaming policies on it is pumped by a task of its own: it
//! reads a frame, runs it through each policy in turn (chunk calls, or the
//! host's SSE parser and one event call per event) and hands the result to
//! the receiving side over a one-frame channel. The channel is the
//! backpressure: a slow client stops the pump, which stops reading the
//! upstream, so what a stream holds is bounded (one frame in the channel,
//! each policy's carry, each parser's unfinished event) however slow its
//! reader. A reader that goes away closes the channel: the pump gives every
//! policy its end call (`client-gone`), then drops the upstream body, which
//! cancels the upstream request. A policy call is never cut halfway.

use std::sync::Arc;

use bytes::Bytes;
use edgegate_config::OnError;
use edgegate_runtime::bindings::types::{
    self, BodyChunk, ChunkVerdict, EndReason, EventVerdict, StreamEvent,
};
use edgegate_runtime::{Lease, PolicyFailure};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::control::versions::Version;
use crate::observability::metrics::Phase;
use crate::request_path::body::{BoxError, ProxyBody};
use crate::request_path::slow_lane;
use crate::request_path::sse;

/// Most bytes a policy may hold back between calls (its carry).
pub(crate) const MAX_CARRY_BYTES: usize = 64 << 10;
/// Most events one event call may emit.
pub(crate) const MAX_EVENTS_PER_CALL: usize = 256;
/// Most bytes one policy may emit for one frame it was given (all its calls
/// on that frame together).
pub(crate) const MAX_OUTPUT_PER_FRAME: usize = 4 << 20;
/// Longest error code and message a policy's `fail` puts in the error event.
const MAX_ERROR_CODE: usize = 64;
const MAX_ERROR_MESSAGE: usize = 1024;

/// How a streaming policy sees the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `stream`: chunk calls.
    Chunks,
    /// `sse`: one event call per server-sent event.
    Events,
}

/// One streaming policy on one body, after its head call.
pub(crate) struct Stage {
    pub(crate) lease: Lease,
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) on_error: OnError,
    pub(crate) version: Arc<Version>,
    pub(crate) phase: Phase,
}

/// A policy ended a request body early: the client gets 403 with its error
/// (found in the upstream request's error by `forward`).
#[derive(Debug, thiserror::Error)]
#[error("policy `{policy}` ended the body: {code}: {message}")]
pub(crate) struct BodyRefused {
    pub(crate) policy: String,
    pub(crate) code: String,
    pub(crate) message: String,
}

/// What one chunk or event call gave back, measured against its bound.
enum Emitted {
    /// Bytes for one chunk.
    Bytes(usize),
    /// Events from one event call.
    Events(usize),
}

impl Emitted {
    /// A policy failure naming the bound when this output, or a carry of
    /// `carry` bytes, is over it.
    fn check(self, carry: usize) -> Result<(), PolicyFailure> {
        let why = match self {
            Emitted::Bytes(n) if n > MAX_OUTPUT_PER_FRAME => {
                format!("emitted {n} bytes for one chunk, over the limit of {MAX_OUTPUT_PER_FRAME}")
            }
            Emitted::Events(n) if n > MAX_EVENTS_PER_CALL => {
                format!("emitted {n} events in one call, over the limit of {MAX_EVENTS_PER_CALL}")
            }
            _ if carry > MAX_CARRY_BYTES => {
                format!("held back {carry} bytes, over the carry limit of {MAX_CARRY_BYTES}")
            }
            _ => return Ok(()),
        };
        Err(PolicyFailure::Guest(why))
    }
}

/// `body` as it comes out of `stages`, pumped by a task of its own.
pub(crate) fn pump(body: ProxyBody, stages: Vec<Stage>) -> ProxyBody {
    let (tx, rx) = mpsc::channel(1);
    let stages = stages.into_iter().map(Running::new).collect();
    tokio::spawn(run(body, Pipe { stages, tx }));
    ChannelBody { rx }.boxed_unsync()
}

/// The receiving side of a pump.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(http_body::Frame::data)))
    }
}

async fn run(mut body: ProxyBody, mut pipe: Pipe) {
    loop {
        let frame = tokio::select! {
            biased;
            () = pipe.tx.closed() => {
                pipe.end(0, EndReason::ClientGone, false).await;
                return;
            }
            frame = body.frame() => frame,
        };
        match frame {
            None => {
                pipe.finish().await;
                return;
            }
            Some(Err(e)) => {
                pipe.end(0, EndReason::Broken, false).await;
                let _ = pipe.tx.send(Err(e)).await;
                return;
            }
            Some(Ok(frame)) => {
                // Trailers are not passed on through streaming policies.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                match pipe.through(0, data).await {
                    Ok(out) => {
                        if !out.is_empty() && pipe.tx.send(Ok(out)).await.is_err() {
                            pipe.end(0, EndReason::ClientGone, false).await;
                            return;
                        }
                    }
                    Err(stop) => {
                        pipe.stopped(stop).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Why the pipe stops before the body's end.
struct Stop {
    /// The stage that stopped it.
    at: usize,
    /// For an event stream: the error event the client gets last.
    event: Option<Bytes>,
    /// For a chunked body: the error the body ends with.
    error: BoxError,
}

struct Pipe {
    stages: Vec<Running>,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
}

impl Pipe {
    /// `data` through the stages from `from` on.
    async fn through(&mut self, from: usize, mut data: Bytes) -> Result<Bytes, Stop> {
        for at in from..self.stages.len() {
            if data.is_empty() {
                break;
            }
            data = self.stages[at].process(data).await.map_err(|mut s| {
                s.at = at;
                s
            })?;
        }
        Ok(data)
    }

    /// The body ended: each stage's end call in order, what it flushes going
    /// through the stages after it.
    async fn finish(&mut self) {
        for at in 0..self.stages.len() {
            let flushed = match self.stages[at].end(EndReason::Complete).await {
                Ok(out) => out,
                Err(mut stop) => {
                    stop.at = at;
                    self.stopped(stop).await;
                    return;
                }
            };
            match self.through(at + 1, flushed).await {
                Ok(out) => {
                    if !out.is_empty() && self.tx.send(Ok(out)).await.is_err() {
                        self.end(at + 1, EndReason::ClientGone, false).await;
                        return;
                    }
                }
                Err(stop) => {
                    self.stopped(stop).await;
                    return;
                }
            }
        }
    }

    /// End calls for the stages from `from` on; `deliver` sends what they
    /// flush on to the reader.
    async fn end(&mut self, from: usize, reason: EndReason, deliver: bool) {
        for at in from..self.stages.len() {
            let out = self.stages[at].end(reason).await;
            if deliver {
                if let Ok(out) = out {
                    if let Ok(out) = self.through(at + 1, out).await {
                        if !out.is_empty() {
                            let _ = self.tx.send(Ok(out)).await;
                        }
                    }
                }
            }
        }
    }

    /// A stage ended the body: the stages before it (the source side) are
    /// cut; for an event stream, the error event goes through the stages
    /// after it to the reader; then the rest end too.
    async fn stopped(&mut self, stop: Stop) {
        let stages = std::mem::take(&mut self.stages);
        let (mut before, after) = {
            let mut s = stages;
            let after = s.split_off(stop.at + 1);
            (s, after)
        };
        for stage in before.iter_mut() {
            let _ = stage.end(EndReason::Broken).await;
        }
        self.stages = after;
        match stop.event {
            Some(event) => {
                if let Ok(out) = self.through(0, event).await {
                    let _ = self.tx.send(Ok(out)).await;
                }
                self.end(0, EndReason::Broken, true).await;
            }
            None => {
                self.end(0, EndReason::Broken, false).await;
                let _ = self.tx.send(Err(stop.error)).await;
            }
        }
    }
}

/// A stage while its body flows.
struct Running {
    stage: Option<Stage>,
    /// Off after a failure its `on_error = "allow"` let pass: the body goes by.
    active: bool,
    ended: bool,
    parser: sse::Parser,
    carry: Vec<u8>,
    text_carry: String,
    kind: Kind,
    name: String,
}

impl Running {
    fn new(stage: Stage) -> Self {
        Self {
            kind: stage.kind,
            name: stage.name.clone(),
            stage: Some(stage),
            active: true,
            ended: false,
            parser: sse::Parser::default(),
            carry: Vec::new(),
            text_carry: String::new(),
        }
    }

    async fn process(&mut self, data: Bytes) -> Result<Bytes, Stop> {
        if !self.active {
            return Ok(data);
        }
        match self.kind {
            Kind::Chunks => self.chunk(data, None).await,
            Kind::Events => self.events(data).await,
        }
    }

    async fn end(&mut self, reason: EndReason) -> Result<Bytes, Stop> {
        if self.ended {
            return Ok(Bytes::new());
        }
        self.ended = true;
        if !self.active {
            return Ok(std::mem::take(&mut self.carry).into());
        }
        let out = match self.kind {
            Kind::Chunks => self.chunk(Bytes::new(), Some(reason)).await,
            Kind::Events => {
                let mut out = Vec::new();
                self.event(StreamEvent::End(reason), &mut out)
                    .await
                    .map(|()| Bytes::from(out))
            }
        };
        // The instance goes back now, not when the stream's task ends.
        self.stage = None;
        out
    }

    async fn chunk(&mut self, data: Bytes, end: Option<EndReason>) -> Result<Bytes, Stop> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(&data);
        let chunk = BodyChunk { data: bytes, end };
        let (chunk, result) = self
            .call(move |mut lease, phase| async move {
                let r = match phase {
                    Phase::Request => lease.on_request_chunk(&chunk).await,
                    Phase::Response => lease.on_response_chunk(&chunk).await,
                };
                (lease, (chunk, r))
            })
            .await?;
        let verdict = match result {
            Ok(v) => v,
            Err(failure) => return self.failed(&failure, chunk.data.into()),
        };
        match verdict {
            ChunkVerdict::Pass => Ok(chunk.data.into()),
            ChunkVerdict::Emit(out) => {
                let bound = Emitted::Bytes(out.data.len());
                if let Err(failure) = bound.check(out.carry.len()) {
                    return self.failed(&failure, chunk.data.into());
                }
                if end.is_none() {
                    self.carry = out.carry;
                }
                Ok(out.data.into())
            }
            ChunkVerdict::Fail(e) => Err(self.fail(e)),
        }
    }

    async fn events(&mut self, data: Bytes) -> Result<Bytes, Stop> {
        if let Err(e) = self.parser.feed(&data) {
            tracing::warn!(policy = %self.name, error = %e, "event stream cut");
            return Err(Stop {
                at: 0,
                event: None,
                error: Box::new(e),
            });
        }
        let mut out = Vec::new();
        while let Some(item) = self.parser.next() {
            match item {
                sse::Item::Comment(c) => out.extend_from_slice(&c),
                sse::Item::Event(e) => {
                    if !self.active {
                        let _ = sse::write(&e, &mut out);
                        continue;
                    }
                    self.event(StreamEvent::Event(e), &mut out).await?;
                }
            }
            if out.len() > MAX_OUTPUT_PER_FRAME {
                let why =
                    format!("emitted over {MAX_OUTPUT_PER_FRAME} bytes of events for one frame");
                return Err(self.fail_with("policy_failed", &why));
            }
        }
        Ok(Bytes::from(out))
    }

    /// One event call; what it emits is written to `out`.
    async fn event(&mut self, event: StreamEvent, out: &mut Vec<u8>) -> Result<(), Stop> {
        let carry = std::mem::take(&mut self.text_carry);
        let (event, carry, result) = self
            .call(move |mut lease, _| async move {
                let r = lease.on_response_event(&event, &carry).await;
                (lease, (event, carry, r))
            })
            .await?;
        let pass = |event: &StreamEvent, out: &mut Vec<u8>| {
            if let StreamEvent::Event(e) = event {
                // The host parsed it, so it writes back.
                let _ = sse::write(e, out);
            }
        };
        let verdict = match result {
            Ok(v) => v,
            Err(failure) => {
                self.failed(&failure, Bytes::new())?;
                pass(&event, out);
                return Ok(());
            }
        };
        match verdict {
            EventVerdict::Pass => {
                self.text_carry = carry;
                pass(&event, out);
                Ok(())
            }
            EventVerdict::Emit(emitted) => {
                let bound = Emitted::Events(emitted.events.len());
                if let Err(failure) = bound.check(emitted.carry.len()) {
                    self.failed(&failure, Bytes::new())?;
                    pass(&event, out);
                    return Ok(());
                }
                let mark = out.len();
                for e in &emitted.events {
                    if let Err(why) = sse::write(e, out) {
                        out.truncate(mark);
                        self.failed(&PolicyFailure::Guest(why.into()), Bytes::new())?;
                        pass(&event, out);
                        return Ok(());
                    }
                }
                self.text_carry = emitted.carry;
                Ok(())
            }
            EventVerdict::Fail(e) => Err(self.fail(e)),
        }
    }

    /// Runs one call on the stage's instance, on the slow lane when it is slow.
    async fn call<F, Fut, T>(&mut self, f: F) -> Result<T, Stop>
    where
        F: FnOnce(Lease, Phase) -> Fut,
        Fut: std::future::Future<Output = (Lease, T)> + Send + 'static,
        T: Send + 'static,
    {
        let Some(stage) = self.stage.take() else {
            return Err(self.fail_with("policy_failed", "the policy instance is gone"));
        };
        let Stage {
            lease,
            kind,
            name,
            on_error,
            version,
            phase,
        } = stage;
        let started = std::time::Instant::now();
        let Some((lease, out)) = slow_lane::run(f(lease, phase)).await else {
            tracing::error!(policy = %name, "a streaming policy call was lost on the slow lane");
            return Err(self.fail_with("policy_failed", "the policy call was lost"));
        };
        let took = started.elapsed();
        version.metrics.record_call(phase, took.as_secs_f64());
        version.stats.record_call(took, false);
        self.stage = Some(Stage {
            lease,
            kind,
            name,
            on_error,
            version,
            phase,
        });
        Ok(out)
    }

    /// A call failed: `on_error = "deny"` ends the body; `allow` lets the
    /// rest of it (and `data`, the bytes of this call) go by unseen.
    fn failed(&mut self, failure: &PolicyFailure, data: Bytes) -> Result<Bytes, Stop> {
        let Some(stage) = &self.stage else {
            return Err(self.fail_with("policy_failed", "the policy instance is gone"));
        };
        stage.version.metrics.record_failure(failure.kind());
        stage.version.quarantine.record(&self.name, failure);
        match stage.on_error {
            OnError::Deny => {
                tracing::warn!(policy = %self.name, %failure, "streaming policy failed; ending the body (on_error = deny)");
                // A failed policy gets no end call: its instance is not
                // trusted again (a trapped one is dropped), and the failure
                // is counted once.
                self.ended = true;
                self.stage = None;
                let message = format!("policy `{}` failed", self.name);
                Err(self.fail_with("policy_failed", &message))
            }
            OnError::Allow => {
                tracing::warn!(policy = %self.name, %failure, "streaming policy failed; the rest of the body passes it (on_error = allow)");
                self.active = false;
                Ok(data)
            }
        }
    }

    fn fail(&mut self, e: types::StreamError) -> Stop {
        tracing::info!(policy = %self.name, code = %edgegate_runtime::guest_text(&e.code, MAX_ERROR_CODE), "a policy ended the body");
        self.fail_with(&e.code, &e.message)
    }

    fn fail_with(&mut self, code: &str, message: &str) -> Stop {
        let code = edgegate_runtime::guest_text(code, MAX_ERROR_CODE);
        let message = edgegate_runtime::guest_text(message, MAX_ERROR_MESSAGE);
        let event = (self.kind == Kind::Events).then(|| error_event(&self.name, &code, &message));
        Stop {
            at: 0,
            event,
            error: Box::new(BodyRefused {
                policy: self.name.clone(),
                code,
                message,
            }),
        }
    }
}

/// The event that ends a stream a policy stopped (docs/phases.md): shaped
/// so that the OpenAI and Anthropic SDKs raise it as an API error (the one
/// the Spin gateway sends too).
pub(crate) fn error_event(policy: &str, code: &str, message: &str) -> Bytes {
    Bytes::from(edgegate_policy_core::sse::error_event(
        policy, code, message,
    ))
}
