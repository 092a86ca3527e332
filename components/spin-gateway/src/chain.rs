//! The request path, as the edgegate host runs it (docs/phases.md): request
//! phase in chain order → upstream with the routing decision's retries and
//! fallbacks → response phase in reverse order over the policies that ran →
//! the body, streamed through the policies that read it as a stream
//! (`crate::stream`) and buffered only for those that buffer it.
//! Request bodies are buffered (within the policies' limits), so that a
//! retry or fallback can send them again.
//!
//! Generic over [`Transport`] and [`Client`] so the whole path unit-tests
//! natively; the Spin build reads and writes wasi:http streams (`crate::spin`).

use std::time::Duration;

use edgegate_policy_core::sse::is_event_stream;
use edgegate_policy_core::{
    header, is_header_name, json_error, EndReason, HeaderOp, Headers, HttpRequest, HttpResponse,
    Level, PolicyError, RequestChanges, RequestOutcome, ResponseChanges, ResponseOutcome,
};

use edgegate_policy_core::hop;
use edgegate_request::attempts::{provider_failed, AttemptPlan};

use crate::config::{BodyMode, Config, OnError, PolicyDef, Route, Upstream};
use crate::env::RequestEnv;
use crate::stream::{self, Kind, Stage, Stop};

/// Largest request body when the route has no policy.
pub const DEFAULT_REQUEST_LIMIT: usize = 1 << 20;
/// What this gateway adds to `Via`.
pub const VIA: &str = "1.1 edgegate-spin";

/// Headers a wasi:http host refuses to take from a component, besides the
/// hop-by-hop ones (`edgegate_policy_core::hop`, the host's list) and the ones
/// Spin adds to the incoming request (`spin-*`, stripped by prefix).
const NOT_FORWARDED: &[&str] = &["host", "http2-settings", "content-length"];

/// Whether a header (lower-case name) stays on this side.
fn not_forwarded(name: &str) -> bool {
    hop::is_hop_by_hop(name) || NOT_FORWARDED.contains(&name)
}

/// A request as it arrived.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// Upper-case method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Host the client asked for.
    pub authority: String,
    /// Headers, names lower-case.
    pub headers: Headers,
    /// The whole body.
    pub body: Vec<u8>,
    /// The client's IP address.
    pub client_ip: String,
}

/// Why an upstream attempt, or the reading of its body, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection (refused, DNS, TLS).
    Connect(String),
    /// No answer head within `timeout_ms`, or a body silent for `idle_timeout_ms`.
    Timeout,
    /// Anything else.
    Other(String),
}

/// An outgoing request.
pub struct Outgoing<'a> {
    /// Method.
    pub method: &'a str,
    /// Full URL.
    pub url: String,
    /// Headers to send.
    pub headers: &'a Headers,
    /// Body.
    pub body: &'a [u8],
}

/// An upstream's answer: the head now, the body as it comes.
pub struct Answer<B> {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Headers,
    /// The body, not read yet. Dropping it cancels the upstream request.
    pub body: B,
}

/// An answer body, read piece by piece.
#[allow(async_fn_in_trait)]
pub trait BodyStream {
    /// The next piece; `None` at the end.
    async fn next(&mut self) -> Option<Result<Vec<u8>, SendError>>;
}

/// Outbound HTTP and timers, as the platform offers them.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// What an answer's body is.
    type Body: BodyStream;
    /// Sends one request. The answer's head comes within `timeout`; each
    /// piece of its body within `idle` of the one before.
    async fn send(
        &self,
        req: Outgoing<'_>,
        timeout: Duration,
        idle: Duration,
    ) -> Result<Answer<Self::Body>, SendError>;
    /// Waits.
    async fn sleep(&self, duration: Duration);
}

/// The client went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientGone;

/// Where the response goes.
#[allow(async_fn_in_trait)]
pub trait Client {
    /// The response head; called once, before any write.
    fn head(&mut self, status: u16, headers: &Headers);
    /// Body bytes, written through to the client (a slow client makes it wait).
    async fn write(&mut self, data: Vec<u8>) -> Result<(), ClientGone>;
}

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Whole: the client sees a well-formed end.
    Complete,
    /// Cut short: the client must not take it for a whole body (the
    /// upstream broke, a chunk policy ended it, or the client went away).
    Cut,
}

/// Largest request body the route's policies accept (the smallest of their limits).
pub fn request_limit(config: &Config, route: &Route) -> usize {
    route
        .chain
        .iter()
        .map(|&i| config.policies[i].body_limit)
        .min()
        .unwrap_or(DEFAULT_REQUEST_LIMIT)
}

/// Where the request goes: the host's attempt plan (caps, backoff).
type Target<'c> = AttemptPlan<(&'c str, &'c Upstream)>;

/// Runs `req` through `route`'s chain and upstream, and answers `client`.
pub async fn run<T: Transport, C: Client>(
    config: &Config,
    route: &Route,
    env: &RequestEnv<'_>,
    transport: &T,
    incoming: Incoming,
    client: &mut C,
) -> Delivered {
    let mut req = HttpRequest {
        method: incoming.method,
        path: incoming.path,
        authority: incoming.authority,
        headers: incoming.headers.into(),
        body: Some(incoming.body),
        client_ip: incoming.client_ip,
        route: route.name.clone(),
    };
    let Some(default) = config.upstreams.get_key_value(&route.upstream) else {
        // Config::parse checked it; keep the process answering anyway.
        let resp = json_error(
            502,
            "upstream_error",
            "the route's upstream is not configured",
        );
        return answer(client, resp).await;
    };
    let mut target = Target::single((default.0.as_str(), default.1));

    let mut ran = Vec::with_capacity(route.chain.len());
    for &index in &route.chain {
        let def = &config.policies[index];
        let penv = env.for_policy(&def.name, &def.kv_namespace);
        // Only a policy that buffers the request body sees it.
        let seen = HttpRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            authority: req.authority.clone(),
            headers: req.headers.clone(),
            body: match def.request_body {
                BodyMode::Buffer => req.body.clone(),
                _ => None,
            },
            client_ip: req.client_ip.clone(),
            route: req.route.clone(),
        };
        let outcome = def
            .policy
            .on_request(&penv, seen)
            .and_then(|outcome| match outcome {
                RequestOutcome::Continue(changes) => {
                    apply_request(&changes, &mut req).map(|()| None)
                }
                RequestOutcome::Route(decision, changes) => {
                    apply_request(&changes, &mut req)?;
                    target = Target::of_decision(
                        &decision.upstream,
                        decision.fallbacks.iter().map(String::as_str),
                        decision.retries,
                        decision.backoff_ms,
                        |name| {
                            let (name, upstream) =
                                config.upstreams.get_key_value(name).ok_or_else(|| {
                                    PolicyError::Internal(format!(
                                        "route decision names unknown upstream `{name}`"
                                    ))
                                })?;
                            Ok::<_, PolicyError>((name.as_str(), upstream))
                        },
                    )?;
                    Ok(None)
                }
                RequestOutcome::Respond(resp) => check_response(resp).map(Some),
            });
        let early = match outcome {
            Ok(None) => {
                ran.push(def);
                continue;
            }
            Ok(Some(resp)) => resp,
            Err(e) => match policy_failed(env, def, "request", &e) {
                Some(resp) => resp,
                None => continue,
            },
        };
        let head = Head::of(&early);
        let body = Source::<T::Body>::Full(early.body);
        return response_phase(env, &req, "", &ran, head, body, client).await;
    }

    match forward(env, transport, &req, &target).await {
        Ok((answer, cluster)) => {
            let head = Head {
                status: answer.status,
                headers: answer.headers,
            };
            let body = Source::Upstream(answer.body);
            response_phase(env, &req, cluster, &ran, head, body, client).await
        }
        Err(resp) => answer(client, resp).await,
    }
}

/// Sends a whole response the gateway made.
pub async fn answer<C: Client>(client: &mut C, resp: HttpResponse) -> Delivered {
    let headers = resp.headers.into_vec();
    client.head(resp.status, &headers);
    match resp.body {
        Some(body) if !body.is_empty() => match client.write(body).await {
            Ok(()) => Delivered::Complete,
            Err(ClientGone) => Delivered::Cut,
        },
        _ => Delivered::Complete,
    }
}

/// A response's status and headers.
struct Head {
    status: u16,
    headers: Headers,
}

impl Head {
    fn of(resp: &HttpResponse) -> Self {
        Self {
            status: resp.status,
            headers: resp.headers.to_vec(),
        }
    }
}

/// Where the body comes from: the upstream, or bytes in hand.
enum Source<B> {
    Upstream(B),
    Full(Option<Vec<u8>>),
}

impl<B: BodyStream> Source<B> {
    async fn next(&mut self) -> Option<Result<Vec<u8>, SendError>> {
        match self {
            Source::Upstream(body) => body.next().await,
            Source::Full(bytes) => bytes.take().map(Ok),
        }
    }
}

/// `on_error`: `Some(503)` for deny, `None` (skip the policy) for allow.
fn policy_failed(
    env: &RequestEnv<'_>,
    def: &PolicyDef,
    phase: &str,
    e: &PolicyError,
) -> Option<HttpResponse> {
    match def.on_error {
        OnError::Deny => {
            env.log(
                Level::Warn,
                &def.name,
                &format!("{phase} phase failed; denying (on_error = deny): {e}"),
            );
            Some(json_error(
                503,
                "policy_failed",
                &format!("policy `{}` failed", def.name),
            ))
        }
        OnError::Allow => {
            env.log(
                Level::Warn,
                &def.name,
                &format!("{phase} phase failed; skipping it (on_error = allow): {e}"),
            );
            None
        }
    }
}

fn invalid(message: String) -> PolicyError {
    PolicyError::Internal(message)
}

/// Applies header operations, refusing names and values HTTP cannot carry.
fn apply_headers(ops: &[HeaderOp], headers: &mut Headers) -> Result<(), PolicyError> {
    let check = |name: &str, value: Option<&str>| {
        if !is_header_name(name) {
            return Err(invalid(format!("invalid header name `{name}`")));
        }
        if value.is_some_and(|v| v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)) {
            return Err(invalid(format!("invalid value for header `{name}`")));
        }
        Ok(name.to_ascii_lowercase())
    };
    for op in ops {
        match op {
            HeaderOp::Set(n, v) => {
                let name = check(n, Some(v))?;
                headers.retain(|(k, _)| *k != name);
                headers.push((name, v.clone()));
            }
            HeaderOp::Append(n, v) => {
                let name = check(n, Some(v))?;
                headers.push((name, v.clone()));
            }
            HeaderOp::Remove(n) => {
                let name = check(n, None)?;
                headers.retain(|(k, _)| *k != name);
            }
        }
    }
    Ok(())
}

fn apply_request(changes: &RequestChanges, req: &mut HttpRequest) -> Result<(), PolicyError> {
    apply_headers(&changes.headers, req.headers.list_mut())?;
    if let Some(path) = &changes.path {
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid(format!("invalid path `{path}`")));
        }
        req.path = path.clone();
    }
    if let Some(body) = &changes.body {
        req.body = Some(body.clone());
    }
    Ok(())
}

fn check_response(resp: HttpResponse) -> Result<HttpResponse, PolicyError> {
    if !(100..=999).contains(&resp.status) {
        return Err(invalid(format!("invalid status {}", resp.status)));
    }
    let fields = resp.headers.into_vec();
    let mut headers = Vec::with_capacity(fields.len());
    apply_headers(
        &fields
            .into_iter()
            .map(|(n, v)| HeaderOp::Append(n, v))
            .collect::<Vec<_>>(),
        &mut headers,
    )?;
    Ok(HttpResponse {
        headers: headers.into(),
        ..resp
    })
}

/// The IP of `spin-client-addr` (`ip:port` or `[v6]:port`).
pub fn client_ip(addr: &str) -> String {
    if let Some(v6) = addr.strip_prefix('[') {
        return v6.split_once(']').map_or(v6, |(ip, _)| ip).to_string();
    }
    match addr.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip.to_string(),
        _ => addr.to_string(),
    }
}

/// The headers the upstream sees: no hop-by-hop or Spin headers, plus `X-Forwarded-For` and `Via`.
fn upstream_headers(req: &HttpRequest) -> Headers {
    let named_by_connection: Vec<String> = req
        .headers
        .get("connection")
        .map(|c| hop::named_by_connection(&c).collect())
        .unwrap_or_default();
    let mut headers: Headers = req
        .headers
        .to_vec()
        .into_iter()
        .filter(|(n, _)| {
            !not_forwarded(n) && !n.starts_with("spin-") && !named_by_connection.contains(n)
        })
        .collect();
    if !req.client_ip.is_empty() {
        let xff = match header(&headers, "x-forwarded-for") {
            Some(prev) if !prev.is_empty() => format!("{prev}, {}", req.client_ip),
            _ => req.client_ip.clone(),
        };
        headers.retain(|(n, _)| n != "x-forwarded-for");
        headers.push(("x-forwarded-for".into(), xff));
    }
    headers.push(("via".into(), VIA.into()));
    if !req.authority.is_empty() {
        headers.push(("x-forwarded-host".into(), req.authority.clone()));
    }
    let body_len = req.body.as_ref().map_or(0, Vec::len);
    if body_len > 0 || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        headers.push(("content-length".into(), body_len.to_string()));
    }
    headers
}

/// The upstream phase: attempts over the target's clusters with retries,
/// backoff and fallback on 5xx, 429, timeouts and connection errors. The
/// answer's head decides; a body not taken is dropped, which cancels it.
async fn forward<'c, T: Transport>(
    env: &RequestEnv<'_>,
    transport: &T,
    req: &HttpRequest,
    target: &Target<'c>,
) -> Result<(Answer<T::Body>, &'c str), HttpResponse> {
    let headers = upstream_headers(req);
    let body = req.body.as_deref().unwrap_or_default();
    let total = target.attempts();
    let mut last_error = None;
    for attempt in 0..total {
        let (&(name, upstream), retry) = target.attempt(attempt);
        if retry > 0 && !target.backoff.is_zero() {
            transport
                .sleep(target.backoff_before(retry, fastrand::f64()))
                .await;
        }
        let endpoint = &upstream.endpoints[fastrand::usize(..upstream.endpoints.len())];
        let out = Outgoing {
            method: &req.method,
            url: format!("{endpoint}{}", req.path),
            headers: &headers,
            body,
        };
        let last = attempt + 1 == total;
        match transport
            .send(out, upstream.timeout, upstream.idle_timeout)
            .await
        {
            Ok(mut answer) => {
                if !provider_failed(answer.status) || last {
                    strip_hop_by_hop(&mut answer.headers);
                    return Ok((answer, name));
                }
                env.log(
                    Level::Info,
                    "gateway",
                    &format!(
                        "upstream `{name}` answered {}; trying the next attempt",
                        answer.status
                    ),
                );
                last_error = Some(json_error(
                    502,
                    "upstream_error",
                    &format!("upstream `{name}` answered {}", answer.status),
                ));
            }
            Err(e) => {
                env.log(
                    Level::Warn,
                    "gateway",
                    &format!("upstream `{name}` ({endpoint}): {e:?}"),
                );
                last_error = Some(match e {
                    SendError::Connect(_) => json_error(
                        502,
                        "upstream_unreachable",
                        &format!("upstream `{name}` is unreachable"),
                    ),
                    SendError::Timeout => json_error(
                        504,
                        "upstream_timeout",
                        &format!(
                            "upstream `{name}` did not answer within {} ms",
                            upstream.timeout.as_millis()
                        ),
                    ),
                    SendError::Other(_) => {
                        json_error(502, "upstream_error", &format!("upstream `{name}` failed"))
                    }
                });
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| json_error(502, "upstream_error", "no upstream attempt was possible")))
}

fn strip_hop_by_hop(headers: &mut Headers) {
    let named: Vec<String> = header(headers, "connection")
        .map(|c| hop::named_by_connection(c).collect())
        .unwrap_or_default();
    headers.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        !not_forwarded(&n) && !named.contains(&n)
    });
}

/// The response phase: `on_response` of the policies that ran, in reverse
/// order, then the body. A policy that streams the body (`stream`, or `sse`
/// on an event stream) becomes a stage the body passes through; one that
/// buffers it gets the whole body as the stages before it left it.
async fn response_phase<B: BodyStream, C: Client>(
    env: &RequestEnv<'_>,
    req: &HttpRequest,
    upstream: &str,
    ran: &[&PolicyDef],
    mut head: Head,
    mut source: Source<B>,
    client: &mut C,
) -> Delivered {
    let mut info = req.info(upstream);
    let mut stages: Vec<Stage<'_>> = Vec::new();
    for def in ran.iter().rev().filter(|d| d.policy.wants_response()) {
        // By the head as it is now: a policy may have replaced the answer.
        let events = header(&head.headers, "content-type").is_some_and(is_event_stream);
        let mode = match def.response_body {
            BodyMode::Sse if !events => BodyMode::Buffer,
            mode => mode,
        };
        let body = if mode == BodyMode::Buffer {
            match drain(env, &mut stages, &mut source, def).await {
                Ok(body) => Some(body),
                Err(resp) => return answer(client, resp).await,
            }
        } else {
            None
        };
        // Tells the policy its body calls will follow.
        info.streamed_body = matches!(mode, BodyMode::Stream | BodyMode::Sse);
        let penv = env.for_policy(&def.name, &def.kv_namespace);
        let resp = HttpResponse {
            status: head.status,
            headers: head.headers.clone().into(),
            body: body.clone(),
        };
        let applied =
            def.policy
                .on_response(&penv, &info, resp)
                .and_then(|outcome| match outcome {
                    ResponseOutcome::Continue(ResponseChanges {
                        status,
                        headers,
                        body: changed,
                    }) => {
                        if let Some(s) = status {
                            if !(100..=999).contains(&s) {
                                return Err(invalid(format!("invalid status {s}")));
                            }
                            head.status = s;
                        }
                        apply_headers(&headers, &mut head.headers)?;
                        // A body change counts only where the policy had the body.
                        Ok(changed.filter(|_| mode == BodyMode::Buffer).map(Some))
                    }
                    ResponseOutcome::Replace(r) => {
                        let r = check_response(r)?;
                        head = Head::of(&r);
                        Ok(Some(r.body))
                    }
                });
        match applied {
            Ok(Some(replaced)) => {
                // Stages so far (none after a buffering policy) saw a body
                // that no longer goes out; the upstream's is dropped.
                stream::abandon(&mut stages, env, EndReason::Broken);
                stages.clear();
                source = Source::Full(replaced);
            }
            Ok(None) => match mode {
                BodyMode::Buffer => source = Source::Full(body),
                BodyMode::Stream => stages.push(Stage::new(def, Kind::Chunks)),
                BodyMode::Sse => stages.push(Stage::new(def, Kind::Events)),
                BodyMode::None => {}
            },
            Err(e) => {
                if let Some(denied) = policy_failed(env, def, "response", &e) {
                    stream::abandon(&mut stages, env, EndReason::Broken);
                    return answer(client, denied).await;
                }
                if mode == BodyMode::Buffer {
                    source = Source::Full(body);
                }
            }
        }
    }
    client.head(head.status, &head.headers);
    pump(env, &mut stages, source, client).await
}

/// Reads the body to its end through `stages`, for `def`, which buffers it
/// (at most its `body_limit_bytes`). The stages end there.
async fn drain<B: BodyStream>(
    env: &RequestEnv<'_>,
    stages: &mut Vec<Stage<'_>>,
    source: &mut Source<B>,
    def: &PolicyDef,
) -> Result<Vec<u8>, HttpResponse> {
    let mut body = Vec::new();
    let refused = |stop: Stop| json_error(502, &stop.code, &stop.message);
    loop {
        let piece = match source.next().await {
            Some(Ok(data)) => stream::through(stages, env, data),
            Some(Err(e)) => {
                stream::abandon(stages, env, EndReason::Broken);
                return Err(body_failed(env, &e));
            }
            None => {
                let flushed = stream::end_all(stages, env);
                stages.clear();
                match flushed {
                    Ok(rest) => body.extend_from_slice(&rest),
                    Err(stop) => return Err(refused(stop)),
                }
                break;
            }
        };
        match piece {
            Ok(data) => body.extend_from_slice(&data),
            Err(stop) => {
                stream::abandon(stages, env, EndReason::Broken);
                return Err(refused(stop));
            }
        }
        if body.len() > def.body_limit {
            stream::abandon(stages, env, EndReason::Broken);
            return Err(too_large(def));
        }
    }
    if body.len() > def.body_limit {
        return Err(too_large(def));
    }
    *source = Source::Full(None);
    Ok(body)
}

fn too_large(def: &PolicyDef) -> HttpResponse {
    json_error(
        502,
        "response_too_large",
        &format!(
            "upstream response body exceeds the {}-byte buffering limit of policy `{}`",
            def.body_limit, def.name
        ),
    )
}

fn body_failed(env: &RequestEnv<'_>, e: &SendError) -> HttpResponse {
    env.log(
        Level::Warn,
        "gateway",
        &format!("reading the upstream answer failed: {e:?}"),
    );
    match e {
        SendError::Timeout => json_error(
            504,
            "upstream_timeout",
            "the upstream answer stopped mid-body (idle_timeout_ms)",
        ),
        _ => json_error(502, "upstream_error", "reading the upstream answer failed"),
    }
}

/// Pumps the body to the client through `stages`, one piece at a time: a
/// slow client stops the reading of the upstream. What is held is one
/// piece, each stage's carry and each SSE parser's unfinished event.
async fn pump<B: BodyStream, C: Client>(
    env: &RequestEnv<'_>,
    stages: &mut [Stage<'_>],
    mut source: Source<B>,
    client: &mut C,
) -> Delivered {
    loop {
        let (out, last) = match source.next().await {
            Some(Ok(data)) => (stream::through(stages, env, data), false),
            Some(Err(e)) => {
                env.log(
                    Level::Warn,
                    "gateway",
                    &format!("the upstream answer broke mid-body: {e:?}"),
                );
                stream::abandon(stages, env, EndReason::Broken);
                return Delivered::Cut;
            }
            None => (stream::end_all(stages, env), true),
        };
        match out {
            Ok(data) => {
                if !data.is_empty() && client.write(data).await.is_err() {
                    // Each policy is told (auth charges what was streamed);
                    // dropping the source cancels the upstream request.
                    stream::abandon(stages, env, EndReason::ClientGone);
                    return Delivered::Cut;
                }
            }
            Err(stop) => {
                stream::abandon(stages, env, EndReason::Broken);
                drop(source);
                if !stop.event {
                    return Delivered::Cut;
                }
                return match client.write(stop.error_event()).await {
                    Ok(()) => Delivered::Complete,
                    Err(ClientGone) => Delivered::Cut,
                };
            }
        }
        if last {
            return Delivered::Complete;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::MapStore;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// One recorded upstream request: method, URL, headers, body.
    type Sent = (String, String, Headers, Vec<u8>);

    /// A scripted answer: status, headers, body pieces.
    type Scripted = (u16, Headers, Vec<Vec<u8>>);

    /// A scripted upstream: answers by URL prefix, records every request,
    /// and counts the body pieces the gateway has read.
    #[derive(Default)]
    struct Script {
        answers: Vec<(&'static str, Result<Scripted, SendError>)>,
        sent: RefCell<Vec<Sent>>,
        slept: RefCell<Vec<Duration>>,
        pulled: Rc<Cell<usize>>,
    }

    /// A scripted body: its pieces, then (when set) an error instead of the end.
    struct ScriptBody {
        pieces: VecDeque<Vec<u8>>,
        pulled: Rc<Cell<usize>>,
    }

    impl BodyStream for ScriptBody {
        async fn next(&mut self) -> Option<Result<Vec<u8>, SendError>> {
            let piece = self.pieces.pop_front()?;
            self.pulled.set(self.pulled.get() + 1);
            Some(if piece == b"!break" {
                Err(SendError::Other("reset".into()))
            } else {
                Ok(piece)
            })
        }
    }

    impl Transport for Script {
        type Body = ScriptBody;

        async fn send(
            &self,
            req: Outgoing<'_>,
            _timeout: Duration,
            _idle: Duration,
        ) -> Result<Answer<ScriptBody>, SendError> {
            self.sent.borrow_mut().push((
                req.method.to_string(),
                req.url.clone(),
                req.headers.clone(),
                req.body.to_vec(),
            ));
            let (status, headers, pieces) = self
                .answers
                .iter()
                .find(|(prefix, _)| req.url.starts_with(prefix))
                .map_or(Err(SendError::Connect("no script".into())), |(_, a)| {
                    a.clone()
                })?;
            Ok(Answer {
                status,
                headers,
                body: ScriptBody {
                    pieces: pieces.into(),
                    pulled: Rc::clone(&self.pulled),
                },
            })
        }

        async fn sleep(&self, duration: Duration) {
            self.slept.borrow_mut().push(duration);
        }
    }

    /// The client side: what it got, and how many upstream pieces had been
    /// read when each write came (the barrier that shows a body streams).
    #[derive(Default)]
    struct Recorder {
        status: u16,
        headers: Headers,
        writes: Vec<(Vec<u8>, usize)>,
        pulled: Rc<Cell<usize>>,
        /// Goes away at this write.
        gone_at: Option<usize>,
    }

    impl Client for Recorder {
        fn head(&mut self, status: u16, headers: &Headers) {
            self.status = status;
            self.headers = headers.clone();
        }

        async fn write(&mut self, data: Vec<u8>) -> Result<(), ClientGone> {
            if self.gone_at == Some(self.writes.len()) {
                return Err(ClientGone);
            }
            self.writes.push((data, self.pulled.get()));
            Ok(())
        }
    }

    impl Recorder {
        fn body(&self) -> String {
            let bytes: Vec<u8> = self.writes.iter().flat_map(|(w, _)| w.clone()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    fn ok(status: u16, body: &str) -> Result<Scripted, SendError> {
        Ok((
            status,
            vec![
                ("content-type".into(), "application/json".into()),
                ("connection".into(), "x-secret-hop".into()),
                ("x-secret-hop".into(), "1".into()),
            ],
            vec![body.as_bytes().to_vec()],
        ))
    }

    /// An event-stream answer in these pieces.
    fn sse(pieces: &[&str]) -> Result<Scripted, SendError> {
        Ok((
            200,
            vec![("content-type".into(), "text/event-stream".into())],
            pieces.iter().map(|p| p.as_bytes().to_vec()).collect(),
        ))
    }

    fn now() -> u64 {
        1_700_000_000_000
    }

    const CONFIG: &str = r#"
        version = 1
        [upstreams.primary]
        endpoints = ["http://primary:1"]
        [upstreams.backup]
        endpoints = ["http://backup:2"]

        [policies.auth]
        kind = "auth"
        request_body = "buffer"
        response_body = "sse"
        [policies.auth.config]
        api_keys = { keys = [{ id = "team", sha256 = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c" }] }

        [policies.routing]
        kind = "routing"
        request_body = "buffer"
        [policies.routing.config]
        llm = { models = { "*" = ["primary", "backup"] }, retries = 1, backoff_ms = 100 }

        [policies.redaction]
        kind = "redaction"
        request_body = "buffer"
        response_body = "sse"
        [policies.redaction.config]
        rules = [{ detector = "email", mode = "mask" }, { detector = "credit_card", mode = "block" }]

        [policies.caching]
        kind = "caching"
        on_error = "allow"
        request_body = "buffer"
        response_body = "sse"
        [policies.caching.config]
        llm = { enabled = true }

        [[routes]]
        name = "chat"
        path_prefix = "/v1"
        upstream = "primary"
        policies = ["auth", "routing", "redaction", "caching"]
    "#;

    fn chat(key: &str, text: &str) -> Incoming {
        Incoming {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            authority: "gw.example".into(),
            headers: vec![
                ("x-api-key".into(), key.into()),
                ("content-type".into(), "application/json".into()),
                ("spin-full-url".into(), "http://gw.example/v1/chat/completions".into()),
            ],
            body: format!(
                r#"{{"model":"m","temperature":0,"messages":[{{"role":"user","content":"{text}"}}]}}"#
            )
            .into_bytes(),
            client_ip: "192.0.2.7".into(),
        }
    }

    fn run_with(
        config: &Config,
        env: &RequestEnv<'_>,
        t: &Script,
        req: Incoming,
        client: &mut Recorder,
    ) -> Delivered {
        client.pulled = Rc::clone(&t.pulled);
        let route = config
            .find_route(&req.authority, &req.path, &req.method)
            .expect("route");
        futures::executor::block_on(run(config, route, env, t, req, client))
    }

    fn run_one(config: &Config, store: &MapStore, t: &Script, req: Incoming) -> HttpResponse {
        let env = RequestEnv::new(Some(store), Level::Error, now);
        let mut client = Recorder::default();
        let delivered = run_with(config, &env, t, req, &mut client);
        assert_eq!(delivered, Delivered::Complete);
        HttpResponse {
            status: client.status,
            headers: client.headers.clone().into(),
            body: Some(client.body().into_bytes()),
        }
    }

    fn body(resp: &HttpResponse) -> String {
        String::from_utf8_lossy(resp.body.as_deref().unwrap_or_default()).into_owned()
    }

    #[test]
    fn the_chain_authenticates_redacts_falls_back_and_caches() {
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let script = Script {
            answers: vec![
                ("http://primary:1", ok(503, "{}")),
                (
                    "http://backup:2",
                    ok(
                        200,
                        r#"{"choices":[{"message":{"content":"write to a@b.example"}}],"usage":{"total_tokens":9}}"#,
                    ),
                ),
            ],
            ..Script::default()
        };

        let refused = run_one(&config, &store, &script, chat("wrong", "hi"));
        assert_eq!(refused.status, 401);
        assert!(
            script.sent.borrow().is_empty(),
            "a refused request never goes upstream"
        );

        let resp = run_one(
            &config,
            &store,
            &script,
            chat("demo-key", "mail me at jane@corp.example"),
        );
        assert_eq!(resp.status, 200, "{}", body(&resp));
        assert!(
            body(&resp).contains("write to [REDACTED:email]"),
            "response redacted: {}",
            body(&resp)
        );
        assert_eq!(resp.headers.get("x-secret-hop"), None);
        assert_eq!(resp.headers.get("connection"), None);
        {
            let sent = script.sent.borrow();
            // primary twice (one retry, with a backoff wait), then the fallback.
            let urls: Vec<&str> = sent.iter().map(|s| s.1.as_str()).collect();
            assert_eq!(
                urls,
                [
                    "http://primary:1/v1/chat/completions",
                    "http://primary:1/v1/chat/completions",
                    "http://backup:2/v1/chat/completions"
                ]
            );
            let (_, _, headers, sent_body) = &sent[2];
            let sent_body = String::from_utf8_lossy(sent_body);
            assert!(
                sent_body.contains("mail me at [REDACTED:email]"),
                "{sent_body}"
            );
            assert!(!sent_body.contains("jane@"));
            assert_eq!(
                header(headers, "x-api-key"),
                None,
                "the credential stays here"
            );
            assert_eq!(header(headers, "x-edgegate-principal"), Some("team"));
            assert_eq!(header(headers, "spin-full-url"), None);
            assert_eq!(header(headers, "x-forwarded-for"), Some("192.0.2.7"));
            assert_eq!(header(headers, "via"), Some(VIA));
            assert_eq!(
                header(headers, "content-length"),
                Some(sent_body.len().to_string().as_str())
            );
        }
        assert_eq!(script.slept.borrow().len(), 1);
        assert!(script.slept.borrow()[0] <= Duration::from_millis(100));

        // The same deterministic call again: answered from the cache in the store.
        let before = script.sent.borrow().len();
        let again = run_one(
            &config,
            &store,
            &script,
            chat("demo-key", "mail me at jane@corp.example"),
        );
        assert_eq!(again.status, 200);
        assert_eq!(again.header("x-edgegate-cache").as_deref(), Some("hit"));
        assert_eq!(
            script.sent.borrow().len(),
            before,
            "a hit does not go upstream"
        );
    }

    #[test]
    fn failures_follow_on_error_and_upstream_errors_are_named() {
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let down = Script::default();
        let resp = run_one(&config, &store, &down, chat("demo-key", "hi"));
        assert_eq!(resp.status, 502);
        assert!(
            body(&resp).contains("upstream `backup` is unreachable"),
            "{}",
            body(&resp)
        );
        assert_eq!(down.sent.borrow().len(), 4, "two tries on each cluster");

        let slow = Script {
            answers: vec![("http://", Err(SendError::Timeout))],
            ..Script::default()
        };
        let resp = run_one(&config, &store, &slow, chat("demo-key", "hi"));
        assert_eq!(resp.status, 504);
        assert!(body(&resp).contains("did not answer within 30000 ms"));

        // A store that fails: caching (on_error = allow) is skipped, auth (deny) answers 503.
        struct Broken;
        impl crate::env::KvStore for Broken {
            fn get(&self, _: &str) -> Result<Option<Vec<u8>>, String> {
                Err("backend down".into())
            }
            fn set(&self, _: &str, _: &[u8]) -> Result<(), String> {
                Err("backend down".into())
            }
            fn delete(&self, _: &str) -> Result<(), String> {
                Err("backend down".into())
            }
        }
        let limited = Config::parse(&CONFIG.replace(
            "api_keys = {",
            "rate_limits = { \"*\" = { requests = 5, window_s = 60 } }\napi_keys = {",
        ))
        .expect("config");
        let env = RequestEnv::new(Some(&Broken), Level::Error, now);
        let ok_script = Script {
            answers: vec![("http://", ok(200, "{}"))],
            ..Script::default()
        };
        let req = chat("demo-key", "hi");
        let mut client = Recorder::default();
        run_with(&limited, &env, &ok_script, req, &mut client);
        let resp = HttpResponse {
            status: client.status,
            headers: client.headers.clone().into(),
            body: Some(client.body().into_bytes()),
        };
        assert_eq!(resp.status, 503, "{}", body(&resp));
        assert!(body(&resp).contains("policy `auth` failed"));
        assert!(ok_script.sent.borrow().is_empty());
    }

    /// A streamed chat request (`"stream": true`).
    fn streamed_chat(text: &str) -> Incoming {
        let mut req = chat("demo-key", text);
        req.body = format!(
            r#"{{"model":"m","temperature":0,"stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"{text}"}}]}}"#
        )
        .into_bytes();
        req
    }

    fn delta(text: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
    }

    /// The events of an event-stream body, parsed.
    fn events(body: &str) -> Vec<edgegate_policy_core::SseEvent> {
        let mut p = edgegate_policy_core::sse::SseParser::default();
        p.feed(body.as_bytes()).expect("parses");
        std::iter::from_fn(|| p.next_item())
            .filter_map(|i| match i {
                edgegate_policy_core::sse::SseItem::Event(e) => Some(e),
                edgegate_policy_core::sse::SseItem::Comment(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_streamed_answer_flows_event_by_event_redacted_and_is_replayed_from_the_cache() {
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let pieces = [
            delta("mail jane@exa"),
            delta("mple.com today"),
            r#"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#.to_string() + "\n\n",
            "data: [DONE]\n\n".to_string(),
        ];
        let script = Script {
            answers: vec![(
                "http://primary:1",
                sse(&pieces.iter().map(String::as_str).collect::<Vec<_>>()),
            )],
            ..Script::default()
        };
        let env = RequestEnv::new(Some(&store), Level::Error, now);
        let mut client = Recorder::default();
        let delivered = run_with(&config, &env, &script, streamed_chat("hi"), &mut client);
        assert_eq!(delivered, Delivered::Complete);
        assert_eq!(client.status, 200);
        assert_eq!(
            header(&client.headers, "content-type"),
            Some("text/event-stream")
        );
        // The barrier: the client had bytes before the upstream's last piece was read.
        assert!(client.writes.len() >= 2, "{:?}", client.writes);
        assert!(
            client.writes[0].1 < pieces.len(),
            "the first write waited for the whole answer: {:?}",
            client.writes
        );
        let body = client.body();
        let text: String = events(&body)
            .iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "mail [REDACTED:email] today", "{body}");
        assert!(!body.contains("jane@"), "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

        // The same deterministic call again: a hit, replayed as an event stream.
        let sent = script.sent.borrow().len();
        let mut again = Recorder::default();
        let env = RequestEnv::new(Some(&store), Level::Debug, now);
        let delivered = run_with(&config, &env, &script, streamed_chat("hi"), &mut again);
        assert_eq!(delivered, Delivered::Complete);
        assert_eq!(
            script.sent.borrow().len(),
            sent,
            "a hit does not go upstream"
        );
        assert_eq!(header(&again.headers, "x-edgegate-cache"), Some("hit"));
        let replay = again.body();
        assert!(replay.contains("[REDACTED:email]"), "{replay}");
        assert_eq!(
            events(&replay).last().map(|e| e.data.as_str()),
            Some("[DONE]")
        );
    }

    #[test]
    fn a_block_rule_mid_stream_ends_it_with_an_error_event_and_stops_reading() {
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let pieces = [
            delta("hello"),
            delta("card 4111 1111"),
            delta(" 1111 1111 ok"),
            delta("more"),
            delta("and more"),
            "data: [DONE]\n\n".to_string(),
        ];
        let script = Script {
            answers: vec![(
                "http://primary:1",
                sse(&pieces.iter().map(String::as_str).collect::<Vec<_>>()),
            )],
            ..Script::default()
        };
        let env = RequestEnv::new(Some(&store), Level::Error, now);
        let mut client = Recorder::default();
        let delivered = run_with(&config, &env, &script, streamed_chat("hi"), &mut client);
        assert_eq!(
            delivered,
            Delivered::Complete,
            "the event stream ends well-formed"
        );
        let body = client.body();
        assert!(!body.contains("4111"), "{body}");
        let last = events(&body).pop().expect("events");
        assert_eq!(last.event.as_deref(), Some("error"), "{body}");
        let error: serde_json::Value = serde_json::from_str(&last.data).expect("json");
        assert_eq!(error["error"]["code"], "response_blocked");
        assert_eq!(error["error"]["policy"], "redaction");
        assert!(
            script.pulled.get() < pieces.len(),
            "the upstream is not read past the block"
        );
    }

    #[test]
    fn a_client_that_goes_away_or_an_upstream_that_breaks_cuts_the_body() {
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let pieces: Vec<String> = (0..8).map(|i| delta(&format!("word{i} "))).collect();
        let script = Script {
            answers: vec![(
                "http://primary:1",
                sse(&pieces.iter().map(String::as_str).collect::<Vec<_>>()),
            )],
            ..Script::default()
        };
        let env = RequestEnv::new(Some(&store), Level::Error, now);
        let mut client = Recorder {
            gone_at: Some(1),
            ..Recorder::default()
        };
        let delivered = run_with(&config, &env, &script, streamed_chat("hi"), &mut client);
        assert_eq!(delivered, Delivered::Cut);
        assert!(
            script.pulled.get() < pieces.len(),
            "the upstream is dropped when the client goes"
        );

        let broken = Script {
            answers: vec![(
                "http://primary:1",
                sse(&[&delta("partial"), "!break", &delta("never")]),
            )],
            ..Script::default()
        };
        let mut client = Recorder::default();
        let delivered = run_with(&config, &env, &broken, streamed_chat("other"), &mut client);
        assert_eq!(
            delivered,
            Delivered::Cut,
            "a broken upstream is not a whole body"
        );
        assert_eq!(client.status, 200, "the head went out before the break");
        assert!(!client.body().contains("never"));
    }

    #[test]
    fn a_policy_that_buffers_gets_the_whole_body_and_others_stream_by() {
        // An answer that is not an event stream is buffered for `sse` policies.
        let config = Config::parse(CONFIG).expect("config");
        let store = MapStore::default();
        let json = r#"{"choices":[{"message":{"content":"write to jane@corp.example"}}]}"#;
        let (a, b) = json.split_at(json.find("corp").expect("split"));
        let script = Script {
            answers: vec![(
                "http://primary:1",
                Ok((
                    200,
                    vec![("content-type".into(), "application/json".into())],
                    vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()],
                )),
            )],
            ..Script::default()
        };
        let env = RequestEnv::new(Some(&store), Level::Error, now);
        let mut client = Recorder::default();
        run_with(&config, &env, &script, chat("demo-key", "hi"), &mut client);
        assert_eq!(client.writes.len(), 1, "buffered: one write");
        assert!(
            client.body().contains("write to [REDACTED:email]"),
            "{}",
            client.body()
        );

        // With no policy reading responses, even a JSON answer streams piece by piece.
        let passing =
            Config::parse(&CONFIG.replace("response_body = \"sse\"", "response_body = \"none\""))
                .expect("config");
        let mut client = Recorder::default();
        let script = Script {
            answers: vec![(
                "http://primary:1",
                Ok((200, Vec::new(), vec![b"one ".to_vec(), b"two".to_vec()])),
            )],
            ..Script::default()
        };
        run_with(&passing, &env, &script, chat("demo-key", "x"), &mut client);
        assert_eq!(
            client.writes,
            [(b"one ".to_vec(), 1), (b"two".to_vec(), 2)],
            "each piece goes out as it is read"
        );
    }

    #[test]
    fn client_ip_drops_the_port() {
        assert_eq!(client_ip("192.0.2.1:5000"), "192.0.2.1");
        assert_eq!(client_ip("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(client_ip("2001:db8::1"), "2001:db8::1");
    }

    #[test]
    fn header_operations_are_checked() {
        let mut headers = vec![("a".to_string(), "1".to_string())];
        apply_headers(
            &[
                HeaderOp::Append("A".into(), "2".into()),
                HeaderOp::Set("b".into(), "3".into()),
                HeaderOp::Remove("a".into()),
            ],
            &mut headers,
        )
        .expect("ops");
        assert_eq!(headers, [("b".to_string(), "3".to_string())]);
        assert!(apply_headers(
            &[HeaderOp::Set("bad name".into(), "x".into())],
            &mut headers
        )
        .is_err());
        assert!(
            apply_headers(&[HeaderOp::Set("x".into(), "a\r\nb".into())], &mut headers).is_err()
        );
    }

    /// tests/fixtures/attempts.toml, the case table the edgegate host's plan
    /// is tested against too: each decision, made by the routing policy and
    /// run through this chain against upstreams that all answer 503, tries
    /// the clusters in the listed order and waits within the listed windows;
    /// the provider-failure rule and the error bodies agree too.
    #[test]
    fn the_shared_attempt_table_holds_through_the_spin_chain() {
        let table = edgegate_request::fixtures::attempts();
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        for case in &table.plan {
            let d = &case.decision;
            let mut config = String::from("version = 1\n");
            for n in names {
                config += &format!("[upstreams.{n}]\nendpoints = [\"http://{n}:1\"]\n");
            }
            config += &format!(
                "[policies.routing]\nkind = \"routing\"\n[policies.routing.config]\nrules = [{{ path_prefix = \"/\", upstream = {:?} }}]\nfallbacks = {:?}\nretries = {}\nbackoff_ms = {}\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"a\"\npolicies = [\"routing\"]\n",
                d.upstream, d.fallbacks, d.retries, d.backoff_ms
            );
            let config = Config::parse(&config).expect("config");
            let script = Script {
                answers: names
                    .iter()
                    .map(|n| {
                        let url: &'static str = Box::leak(format!("http://{n}:1").into_boxed_str());
                        (url, ok(503, "{}"))
                    })
                    .collect(),
                ..Script::default()
            };
            let store = MapStore::default();
            let resp = run_one(&config, &store, &script, chat("k", "hi"));
            assert_eq!(resp.status, 503, "the last attempt's answer");
            let tries: Vec<String> = script
                .sent
                .borrow()
                .iter()
                .map(|s| {
                    s.1.trim_start_matches("http://")
                        .split(':')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(tries, case.tries, "{:?}", d.fallbacks);
            let waits = script.slept.borrow();
            let windows: Vec<u64> = case.windows_ms.iter().copied().filter(|w| *w > 0).collect();
            let clusters = tries
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            assert_eq!(waits.len(), windows.len() * clusters, "{waits:?}");
            for (i, wait) in waits.iter().enumerate() {
                let window = Duration::from_millis(windows[i % windows.len()]);
                assert!(*wait < window, "retry wait {wait:?} within {window:?}");
            }
        }
        for s in &table.provider_failed {
            assert!(provider_failed(*s), "{s}");
        }
        for s in &table.answered {
            assert!(!provider_failed(*s), "{s}");
        }
        // Spin has no request ids: the bodies without one are its own.
        for e in table.error_body.iter().filter(|e| e.request_id.is_none()) {
            let got: serde_json::Value = serde_json::from_slice(
                json_error(502, &e.code, &e.message)
                    .body
                    .as_deref()
                    .unwrap(),
            )
            .unwrap();
            let want: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            assert_eq!(got, want);
        }
    }
}
