//! The bridge from host-neutral policy logic ([`edgegate_policy_core`]) to this
//! host: [`HostEnv`] implements [`Env`] over the WIT imports, and
//! [`export_logic!`](crate::export_logic) exports a [`PolicyLogic`] type.

use edgegate_policy_core as core;
use edgegate_policy_core::{Env, PolicyError};

use crate::bindings::edgegate::policy::types::{
    BodyModes, Request as WitRequest, ResponseHead as WitResponseHead,
};
use crate::host::message;
use crate::host::{clock, context, crypto, health, kv, log, metrics};
use crate::{
    BodyChunk, ChunkOutput, ChunkVerdict, ConfigError, EndReason, Error, EventOutput, EventVerdict,
    HeaderOp, RequestMutations, RequestSummary, RequestVerdict, Response, ResponseHead,
    ResponseMutations, ResponseVerdict, RouteDecision, SseEvent, StreamError, StreamEvent,
};

/// [`Env`] over the edgegate host's imports. Calls the policy was not granted
/// fail in the host (`kv` returns `denied`; clock, health and crypto trap).
pub struct HostEnv;

impl Env for HostEnv {
    fn now_millis(&self) -> u64 {
        clock::now_millis()
    }

    fn random_u64(&self) -> u64 {
        // std seeds its hash keys from WASI `random` once per fresh instance,
        // which is once per call here.
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    fn log(&self, level: core::Level, message: &str) {
        let level = match level {
            core::Level::Debug => log::Level::Debug,
            core::Level::Info => log::Level::Info,
            core::Level::Warn => log::Level::Warn,
            core::Level::Error => log::Level::Error,
        };
        log::write(level, message);
    }

    fn ctx_get(&self, key: &str) -> Option<String> {
        context::get(key)
    }

    fn ctx_set(&self, key: &str, value: &str) {
        context::set(key, value);
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, core::KvError> {
        kv::get(key).map_err(kv_error)
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), core::KvError> {
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        kv::set(key, value, ttl).map_err(kv_error)
    }

    fn kv_incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, core::KvError> {
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        kv::incr(key, delta, ttl).map_err(kv_error)
    }

    fn kv_delete(&self, key: &str) -> Result<bool, core::KvError> {
        kv::delete(key).map_err(kv_error)
    }

    fn sha256(&self, data: &[u8]) -> Vec<u8> {
        crypto::sha256(data)
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        crypto::hmac_sha256(key, data)
    }

    fn verify_signature(
        &self,
        alg: core::SignatureAlg,
        key: &core::VerifyKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        use crypto::SignatureAlg as A;
        let alg = match alg {
            core::SignatureAlg::Hs256 => A::Hs256,
            core::SignatureAlg::Hs384 => A::Hs384,
            core::SignatureAlg::Hs512 => A::Hs512,
            core::SignatureAlg::Rs256 => A::Rs256,
            core::SignatureAlg::Rs384 => A::Rs384,
            core::SignatureAlg::Rs512 => A::Rs512,
            core::SignatureAlg::Es256 => A::Es256,
            core::SignatureAlg::Es384 => A::Es384,
            core::SignatureAlg::EdDsa => A::Eddsa,
        };
        let key = match key {
            core::VerifyKey::HmacSecret(s) => crypto::VerifyKey::HmacSecret(s.clone()),
            core::VerifyKey::Rsa(n, e) => crypto::VerifyKey::Rsa((n.clone(), e.clone())),
            core::VerifyKey::Ec(x, y) => crypto::VerifyKey::Ec((x.clone(), y.clone())),
            core::VerifyKey::Ed25519(k) => crypto::VerifyKey::Ed25519(k.clone()),
        };
        crypto::verify_signature(alg, &key, message, signature).map_err(|e| match e {
            crypto::CryptoError::BadKey(why) => why,
        })
    }

    fn upstream_health(&self, name: &str) -> Vec<core::Endpoint> {
        health::upstream(name)
            .into_iter()
            .map(|e| core::Endpoint {
                address: e.address,
                healthy: e.healthy,
                circuit: match e.circuit {
                    health::CircuitState::Closed => core::Circuit::Closed,
                    health::CircuitState::Open => core::Circuit::Open,
                    health::CircuitState::HalfOpen => core::Circuit::HalfOpen,
                },
                in_flight: e.in_flight,
                ewma_latency_us: e.ewma_latency_us,
                error_rate_ppm: e.error_rate_ppm,
            })
            .collect()
    }

    fn count(&self, name: &str, label: &str, delta: u64) {
        metrics::count(name, label, delta);
    }
}

fn kv_error(e: kv::KvError) -> core::KvError {
    match e {
        kv::KvError::Denied => core::KvError::Denied,
        kv::KvError::TooLarge => core::KvError::TooLarge,
        kv::KvError::NotANumber => core::KvError::NotANumber,
    }
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Config(c) => Error::InvalidConfig(ConfigError {
                key: c.key,
                reason: c.reason,
            }),
            PolicyError::Internal(m) => Error::Internal(m),
        }
    }
}

/// The headers of the current head call, answered by the host (`message`).
struct HostHeaders;

impl core::HeaderSource for HostHeaders {
    fn get(&self, name: &str) -> Option<String> {
        message::header(name)
    }

    fn values(&self, name: &str) -> Vec<String> {
        message::header_values(name)
    }

    fn entries(&self) -> core::Headers {
        message::entries()
    }
}

static HOST_HEADERS: HostHeaders = HostHeaders;

/// The request of an `on-request` call, its headers read from the host.
pub fn request(r: WitRequest) -> core::HttpRequest {
    core::HttpRequest {
        method: r.method,
        path: r.path,
        authority: r.authority,
        headers: core::HeaderView::host(&HOST_HEADERS),
        body: r.body,
        client_ip: r.client_ip,
        route: r.route,
    }
}

/// The response of an `on-response` call, its headers read from the host.
pub fn response_head(r: WitResponseHead) -> ResponseHead {
    ResponseHead {
        status: r.status,
        headers: core::HeaderView::host(&HOST_HEADERS),
        streamed: r.streamed,
        body: r.body,
    }
}

impl From<RequestSummary> for core::RequestInfo {
    fn from(r: RequestSummary) -> Self {
        core::RequestInfo {
            method: r.method,
            path: r.path,
            authority: r.authority,
            route: r.route,
            upstream: r.upstream,
            streamed_body: false,
        }
    }
}

impl From<ResponseHead> for core::HttpResponse {
    fn from(r: ResponseHead) -> Self {
        // `streamed` goes to `RequestInfo::streamed_body`.
        core::HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// The WIT flags for a policy's declared body modes.
pub(crate) fn body_modes(m: core::BodyModes) -> BodyModes {
    let mut bits = 0;
    if m.buffer {
        bits |= BodyModes::BUFFER.bits();
    }
    if m.chunks {
        bits |= BodyModes::CHUNKS.bits();
    }
    if m.sse {
        bits |= BodyModes::SSE.bits();
    }
    BodyModes::from_bits_retain(bits)
}

fn end_reason(e: EndReason) -> core::EndReason {
    match e {
        EndReason::Complete => core::EndReason::Complete,
        EndReason::ClientGone => core::EndReason::ClientGone,
        EndReason::Broken => core::EndReason::Broken,
    }
}

impl From<BodyChunk> for core::Chunk {
    fn from(c: BodyChunk) -> Self {
        core::Chunk {
            data: c.data,
            end: c.end.map(end_reason),
        }
    }
}

impl From<SseEvent> for core::SseEvent {
    fn from(e: SseEvent) -> Self {
        core::SseEvent {
            event: e.event,
            data: e.data,
            id: e.id,
            retry: e.retry,
        }
    }
}

impl From<core::SseEvent> for SseEvent {
    fn from(e: core::SseEvent) -> Self {
        SseEvent {
            event: e.event,
            data: e.data,
            id: e.id,
            retry: e.retry,
        }
    }
}

impl From<StreamEvent> for core::StreamItem {
    fn from(e: StreamEvent) -> Self {
        match e {
            StreamEvent::Event(e) => core::StreamItem::Event(e.into()),
            StreamEvent::End(r) => core::StreamItem::End(end_reason(r)),
        }
    }
}

impl From<core::StreamError> for StreamError {
    fn from(e: core::StreamError) -> Self {
        StreamError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<core::ChunkOutcome> for ChunkVerdict {
    fn from(o: core::ChunkOutcome) -> Self {
        match o {
            core::ChunkOutcome::Pass => ChunkVerdict::Pass,
            core::ChunkOutcome::Emit { data, carry } => {
                ChunkVerdict::Emit(ChunkOutput { data, carry })
            }
            core::ChunkOutcome::Fail(e) => ChunkVerdict::Fail(e.into()),
        }
    }
}

impl From<core::EventOutcome> for EventVerdict {
    fn from(o: core::EventOutcome) -> Self {
        match o {
            core::EventOutcome::Pass => EventVerdict::Pass,
            core::EventOutcome::Emit { events, carry } => EventVerdict::Emit(EventOutput {
                events: events.into_iter().map(Into::into).collect(),
                carry,
            }),
            core::EventOutcome::Fail(e) => EventVerdict::Fail(e.into()),
        }
    }
}

impl From<Response> for core::HttpResponse {
    fn from(r: Response) -> Self {
        core::HttpResponse {
            status: r.status,
            headers: r.headers.into(),
            body: r.body,
        }
    }
}

impl From<core::HttpResponse> for Response {
    fn from(r: core::HttpResponse) -> Self {
        Response {
            status: r.status,
            headers: r.headers.into_vec(),
            body: r.body,
        }
    }
}

fn header_ops(ops: Vec<core::HeaderOp>) -> Vec<HeaderOp> {
    ops.into_iter()
        .map(|op| match op {
            core::HeaderOp::Set(n, v) => HeaderOp::Set((n, v)),
            core::HeaderOp::Append(n, v) => HeaderOp::Append((n, v)),
            core::HeaderOp::Remove(n) => HeaderOp::Remove(n),
        })
        .collect()
}

impl From<core::RequestChanges> for RequestMutations {
    fn from(c: core::RequestChanges) -> Self {
        RequestMutations {
            headers: header_ops(c.headers),
            path: c.path,
            body: c.body,
        }
    }
}

impl From<core::RequestOutcome> for RequestVerdict {
    fn from(o: core::RequestOutcome) -> Self {
        match o {
            core::RequestOutcome::Continue(c) => RequestVerdict::Continue(c.into()),
            core::RequestOutcome::Respond(r) => RequestVerdict::Respond(r.into()),
            core::RequestOutcome::Route(d, c) => RequestVerdict::Route(RouteDecision {
                upstream: d.upstream,
                fallbacks: d.fallbacks,
                retries: d.retries,
                backoff_ms: d.backoff_ms,
                mutations: c.into(),
            }),
        }
    }
}

impl From<core::ResponseOutcome> for ResponseVerdict {
    fn from(o: core::ResponseOutcome) -> Self {
        match o {
            core::ResponseOutcome::Continue(c) => ResponseVerdict::Continue(ResponseMutations {
                status: c.status,
                headers: header_ops(c.headers),
                body: c.body,
            }),
            core::ResponseOutcome::Replace(r) => ResponseVerdict::Replace(r.into()),
        }
    }
}

/// Exports a [`PolicyLogic`](edgegate_policy_core::PolicyLogic) type as this
/// component's policy, running it against [`HostEnv`]:
/// `edgegate_policy_sdk::export_logic!(edgegate_auth::Auth);`
///
/// Each body gets a fresh [`BodyState`](edgegate_policy_core::BodyState): the
/// host binds an instance to one body, and every head call starts a new one.
#[macro_export]
macro_rules! export_logic {
    ($logic:ty) => {
        const _: () = {
            struct EdgegateLogic($logic);

            ::std::thread_local! {
                static EDGEGATE_BODY: ::core::cell::RefCell<$crate::core::BodyState> =
                    ::core::cell::RefCell::new($crate::core::BodyState::default());
            }

            fn body<T>(f: impl FnOnce(&mut $crate::core::BodyState) -> T) -> T {
                EDGEGATE_BODY.with(|b| f(&mut b.borrow_mut()))
            }

            impl $crate::Policy for EdgegateLogic {
                const WANTS_RESPONSE: bool = <$logic as $crate::core::PolicyLogic>::WANTS_RESPONSE;
                const REQUEST_BODY: $crate::BodyModes =
                    <$logic as $crate::core::PolicyLogic>::REQUEST_BODY;
                const RESPONSE_BODY: $crate::BodyModes =
                    <$logic as $crate::core::PolicyLogic>::RESPONSE_BODY;

                fn init(config: &str) -> ::core::result::Result<Self, $crate::Error> {
                    <$logic as $crate::core::PolicyLogic>::from_config(config)
                        .map(EdgegateLogic)
                        .map_err($crate::Error::from)
                }

                fn on_request(
                    &self,
                    req: $crate::Request,
                ) -> ::core::result::Result<$crate::RequestVerdict, $crate::Error> {
                    body(|b| b.clear());
                    $crate::core::PolicyLogic::on_request(&self.0, &$crate::HostEnv, req)
                        .map(::core::convert::Into::into)
                        .map_err($crate::Error::from)
                }

                fn on_response(
                    &self,
                    req: $crate::RequestSummary,
                    resp: $crate::ResponseHead,
                ) -> ::core::result::Result<$crate::ResponseVerdict, $crate::Error> {
                    body(|b| b.clear());
                    let mut info: $crate::core::RequestInfo = req.into();
                    info.streamed_body = resp.streamed;
                    $crate::core::PolicyLogic::on_response(
                        &self.0,
                        &$crate::HostEnv,
                        &info,
                        resp.into(),
                    )
                    .map(::core::convert::Into::into)
                    .map_err($crate::Error::from)
                }

                fn on_request_chunk(
                    &self,
                    chunk: $crate::BodyChunk,
                ) -> ::core::result::Result<$crate::ChunkVerdict, $crate::Error> {
                    body(|b| {
                        $crate::core::PolicyLogic::on_request_chunk(
                            &self.0,
                            &$crate::HostEnv,
                            b,
                            chunk.into(),
                        )
                    })
                    .map(::core::convert::Into::into)
                    .map_err($crate::Error::from)
                }

                fn on_response_chunk(
                    &self,
                    chunk: $crate::BodyChunk,
                ) -> ::core::result::Result<$crate::ChunkVerdict, $crate::Error> {
                    body(|b| {
                        $crate::core::PolicyLogic::on_response_chunk(
                            &self.0,
                            &$crate::HostEnv,
                            b,
                            chunk.into(),
                        )
                    })
                    .map(::core::convert::Into::into)
                    .map_err($crate::Error::from)
                }

                fn on_response_event(
                    &self,
                    event: $crate::StreamEvent,
                    carry: ::std::string::String,
                ) -> ::core::result::Result<$crate::EventVerdict, $crate::Error> {
                    body(|b| {
                        $crate::core::PolicyLogic::on_response_event(
                            &self.0,
                            &$crate::HostEnv,
                            b,
                            event.into(),
                            carry,
                        )
                    })
                    .map(::core::convert::Into::into)
                    .map_err($crate::Error::from)
                }
            }

            $crate::export_policy!(EdgegateLogic);
        };
    };
}
