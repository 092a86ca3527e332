//! The four policies' logic, linked in: the very crates the edgegate
//! components are built from.

use edgegate_auth::Auth;
use edgegate_caching::Caching;
use edgegate_config::PolicyKind;
use edgegate_policy_core::{
    BodyModes, BodyState, Chunk, ChunkOutcome, Env, EventOutcome, HttpRequest, HttpResponse,
    PolicyError, PolicyLogic, RequestInfo, RequestOutcome, ResponseOutcome, StreamItem,
};
use edgegate_redaction::Redaction;
use edgegate_routing::Routing;

/// A policy's logic, built from its config. Built once per config and kept
/// (a handful per gateway), so the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Policy {
    /// See [`Auth`].
    Auth(Auth),
    /// See [`Routing`].
    Routing(Routing),
    /// See [`Redaction`].
    Redaction(Redaction),
    /// See [`Caching`].
    Caching(Caching),
}

impl Policy {
    /// Builds the logic of `kind` from its config (JSON text); `None` for
    /// `custom`, whose logic is a component only the edgegate host runs.
    pub fn build(kind: PolicyKind, json: &str) -> Option<Result<Self, PolicyError>> {
        let built = match kind {
            PolicyKind::Auth => Auth::from_config(json).map(Policy::Auth),
            PolicyKind::Routing => Routing::from_config(json).map(Policy::Routing),
            PolicyKind::Redaction => Redaction::from_config(json).map(Policy::Redaction),
            PolicyKind::Caching => Caching::from_config(json).map(Policy::Caching),
            PolicyKind::Custom => return None,
        };
        Some(built)
    }

    /// Whether the response phase does anything.
    pub fn wants_response(&self) -> bool {
        match self {
            Policy::Auth(_) => Auth::WANTS_RESPONSE,
            Policy::Routing(_) => Routing::WANTS_RESPONSE,
            Policy::Redaction(_) => Redaction::WANTS_RESPONSE,
            Policy::Caching(_) => Caching::WANTS_RESPONSE,
        }
    }

    /// The request body modes it handles.
    pub fn request_modes(&self) -> BodyModes {
        match self {
            Policy::Auth(_) => Auth::REQUEST_BODY,
            Policy::Routing(_) => Routing::REQUEST_BODY,
            Policy::Redaction(_) => Redaction::REQUEST_BODY,
            Policy::Caching(_) => Caching::REQUEST_BODY,
        }
    }

    /// The response body modes it handles.
    pub fn response_modes(&self) -> BodyModes {
        match self {
            Policy::Auth(_) => Auth::RESPONSE_BODY,
            Policy::Routing(_) => Routing::RESPONSE_BODY,
            Policy::Redaction(_) => Redaction::RESPONSE_BODY,
            Policy::Caching(_) => Caching::RESPONSE_BODY,
        }
    }

    /// One chunk of a streamed response (`response_body = "stream"`).
    pub fn on_response_chunk(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        match self {
            Policy::Auth(p) => p.on_response_chunk(env, state, chunk),
            Policy::Routing(p) => p.on_response_chunk(env, state, chunk),
            Policy::Redaction(p) => p.on_response_chunk(env, state, chunk),
            Policy::Caching(p) => p.on_response_chunk(env, state, chunk),
        }
    }

    /// One server-sent event of a streamed response, or its end (`response_body = "sse"`).
    pub fn on_response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        match self {
            Policy::Auth(p) => p.on_response_event(env, state, item, carry),
            Policy::Routing(p) => p.on_response_event(env, state, item, carry),
            Policy::Redaction(p) => p.on_response_event(env, state, item, carry),
            Policy::Caching(p) => p.on_response_event(env, state, item, carry),
        }
    }

    /// The request phase.
    pub fn on_request(
        &self,
        env: &dyn Env,
        req: HttpRequest,
    ) -> Result<RequestOutcome, PolicyError> {
        match self {
            Policy::Auth(p) => p.on_request(env, req),
            Policy::Routing(p) => p.on_request(env, req),
            Policy::Redaction(p) => p.on_request(env, req),
            Policy::Caching(p) => p.on_request(env, req),
        }
    }

    /// The response phase.
    pub fn on_response(
        &self,
        env: &dyn Env,
        info: &RequestInfo,
        resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        match self {
            Policy::Auth(p) => p.on_response(env, info, resp),
            Policy::Routing(p) => p.on_response(env, info, resp),
            Policy::Redaction(p) => p.on_response(env, info, resp),
            Policy::Caching(p) => p.on_response(env, info, resp),
        }
    }
}
