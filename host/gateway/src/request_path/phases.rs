//! The request path, one function per phase (see docs/phases.md):
//! limits → route match → request phase → upstream → response phase. The
//! WIT side of each policy call is in `wit`, the upstream attempts in
//! `attempts`.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgegate_config::{BodyMode, OnError};
use edgegate_runtime::bindings::types;
use edgegate_runtime::{ContextBag, Lease, PolicyFailure, PolicyInstance};

use crate::tls::TlsSession;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::control::state::GatewayState;
use crate::control::versions::{Roll, Version as PolicyVersion};
use crate::observability::access_log::{
    self, Counted, Entry, Logged, Trail, Verdict, X_REQUEST_ID,
};
use crate::observability::metrics::Phase;
use crate::observability::models::MODEL_CONTEXT_KEY;
use crate::request_path::body::{
    self, find_cause, BufferError, ClientBodyError, ProxyBody, WatchedBody,
};
use crate::request_path::forwarding;
use crate::request_path::routes::{ChainEntry, Route};
use crate::request_path::slow_lane;
use crate::request_path::{sse, stream};
use edgegate_policy_core::keys;
use edgegate_request::canonical::{self, Host, Malformed, PathRules};

use super::attempts::{forward, prepare_upstream_request, provider_failed, Target};
use super::wit::{
    apply_header_ops, apply_request_mutations, build_response, check_body, policy_status,
};

/// Limits on what a client sends, and how its request is put in canonical form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientLimits {
    /// Largest total size of request headers.
    pub(crate) max_header_bytes: usize,
    /// How paths are normalised.
    pub(crate) path_rules: PathRules,
    /// Longest gap between two pieces of a request body.
    pub(crate) body_idle_timeout: std::time::Duration,
    /// Time to receive a whole body that a policy buffers.
    pub(crate) body_timeout: std::time::Duration,
}

impl ClientLimits {
    /// The limits a server config sets.
    pub(crate) fn of(server: &edgegate_config::ServerConfig) -> Self {
        Self {
            max_header_bytes: server.max_header_bytes,
            path_rules: PathRules::of(server),
            body_idle_timeout: std::time::Duration::from_millis(server.body_idle_timeout_ms),
            body_timeout: std::time::Duration::from_millis(server.body_timeout_ms),
        }
    }
}

/// Facts about the connection a request arrived on.
#[derive(Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) ip: IpAddr,
    pub(crate) worker: usize,
}

/// What the gateway said in an error answer it made, kept beside the body:
/// on the request path the body is made again with the request's id in it,
/// and the code goes to the access log.
#[derive(Clone)]
pub(crate) struct GatewayError {
    code: Box<str>,
    message: Box<str>,
}

/// `{"error": code, "message": ..., "request_id": ...}`.
use edgegate_request::errors::error_body;

/// A JSON error response: `{"error": code, "message": ...}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(error_body(code, message, None)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.extensions_mut().insert(GatewayError {
        code: code.into(),
        message: message.into(),
    });
    resp
}

/// One request as it goes through the phases: what they all read, the
/// context its policies share, and what it leaves for the access log.
struct Exchange<'s> {
    state: &'s GatewayState,
    route: &'s Route,
    peer: Peer,
    roll: Roll,
    /// The request's host (and port), as policies see it.
    authority: String,
    ctx: ContextBag,
    trail: Trail,
}

/// Counts a request in flight for as long as it is alive (also when the client goes away).
struct InFlight<'a>(&'a Route);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Entry point of the request path: the request gets its id, is served,
/// and its answer carries the id (in the error body too, when the gateway
/// made the answer) and is logged when its body ends.
pub(crate) async fn handle(
    state: Arc<GatewayState>,
    peer: Peer,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let id = access_log::request_id(state.request_id, req.headers());
    // Boxed: the request's future stays small when the log is off.
    let mut entry = state.access_log.as_ref().map(|_| {
        Box::new(Entry {
            time: SystemTime::now(),
            started,
            request_id: id.clone(),
            route: None,
            method: req.method().clone(),
            path: Entry::path_of(req.uri()),
            status: 0,
            error: None,
            trail: Trail::new(true),
            model: None,
            principal: None,
            tenant: None,
        })
    });
    let mut resp = serve(&state, peer, &id, req, started, entry.as_deref_mut()).await;
    if let Some(e) = resp.extensions_mut().remove::<GatewayError>() {
        *resp.body_mut() = body::full(error_body(&e.code, &e.message, id.to_str().ok()));
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        if let Some(entry) = entry.as_mut() {
            entry.error = Some(e.code.into());
        }
    }
    resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
    let (Some(log), Some(mut entry)) = (&state.access_log, entry) else {
        return resp;
    };
    entry.status = resp.status().as_u16();
    if !log.samples(entry.status) {
        return resp;
    }
    let log = Arc::clone(log);
    resp.map(|b| Logged::wrap(b, log, entry))
}

/// The request path proper: limits → route match → [`proxy`].
async fn serve(
    state: &GatewayState,
    peer: Peer,
    id: &HeaderValue,
    mut req: Request<Incoming>,
    started: Instant,
    entry: Option<&mut Entry>,
) -> Response<ProxyBody> {
    if let Some(resp) = check_limits(state, &req) {
        return resp;
    }
    let host = match canonicalize(&state.limits, &mut req) {
        Ok(host) => host,
        Err(resp) => return *resp,
    };
    if state.redirect_to_https {
        if let Some(crate::server::HttpsPort(port)) = req.extensions().get().copied() {
            return redirect_to_https(host.as_ref(), port, &req);
        }
    }
    let Some(route) = state.routes.find(
        host.as_ref().map_or("", Host::match_name),
        req.uri().path(),
        req.method(),
    ) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no_route",
            "no route matches this request",
        );
    };
    if req.method() == http::Method::TRACE && !route.methods.contains(&http::Method::TRACE) {
        // TRACE echoes the request, credentials included (cross-site tracing):
        // served only where a route lists it.
        return method_refused("TRACE is not allowed on this route");
    }
    // Policies read it, and the upstream gets it.
    req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
    route.metrics.in_flight.inc();
    let _guard = InFlight(route);
    let roll = if route.has_canary {
        Roll {
            random: fastrand::u32(..100),
            sticky: sticky_roll(peer.ip),
        }
    } else {
        Roll::default()
    };
    let mut x = Exchange {
        state,
        route,
        peer,
        roll,
        authority: host.as_ref().map(Host::authority).unwrap_or_default(),
        ctx: ContextBag::default(),
        trail: Trail::new(entry.is_some()),
    };
    let mut resp = proxy(&mut x, req).await;
    resp.headers_mut().append(header::VIA, state.via.clone());
    let status = resp.status().as_u16();
    if route.has_canary {
        // Both versions of a policy under canary count the requests they
        // took part in, so their 5xx rates compare.
        for entry in route.chain.iter().filter(|e| e.versions.canary.is_some()) {
            entry.pick(roll).stats.record_request(status);
        }
    }
    route
        .metrics
        .record(status, started.elapsed().as_secs_f64());
    if let Some(entry) = entry {
        let fact = |key: &str| x.ctx.get(key).map(str::to_string);
        entry.route = Some(route.name.clone());
        entry.model = fact(MODEL_CONTEXT_KEY);
        entry.principal = fact(keys::PRINCIPAL);
        entry.tenant = fact(keys::TENANT);
        entry.trail = x.trail;
    }
    resp
}

/// `server.redirect_to_https`: a 308 to the same path and query on the TLS
/// listener (308 keeps the method and body, unlike 301).
fn redirect_to_https(
    host: Option<&Host>,
    port: u16,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(host) = host else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "missing_host",
            "a redirect to HTTPS needs a Host header",
        );
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{}{path}", host.name)
    } else {
        format!("https://{}:{port}{path}", host.name)
    };
    let mut resp = error_response(
        StatusCode::PERMANENT_REDIRECT,
        "use_https",
        "this listener redirects to HTTPS",
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Context keys the host sets from a TLS connection before any policy runs
/// (docs/tls.md); policies may read them but not change them.
pub(crate) fn seed_tls_context(ctx: &mut ContextBag, session: &TlsSession) {
    use edgegate_runtime::tls_keys as k;
    let mut put = |key: &str, value: String| {
        // Bounded by the bag: a value that would pass its limits is dropped.
        let _ = ctx.set(key.to_string(), value);
    };
    put(k::TLS, "1".into());
    if let Some(sni) = &session.sni {
        put(k::SNI, sni.clone());
    }
    if let Some(id) = &session.client {
        put(k::CLIENT_SUBJECT, id.subject.clone());
        if !id.dns.is_empty() {
            put(k::CLIENT_DNS, id.dns.join(","));
        }
        if !id.uris.is_empty() {
            put(k::CLIENT_URI, id.uris.join(","));
        }
        if let Some(s) = &id.spiffe {
            put(k::CLIENT_SPIFFE, s.clone());
        }
    }
}

/// A client's place in 0..100 for sticky canaries: a hash of its IP.
fn sticky_roll(ip: IpAddr) -> u32 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same client lands on the same side on every node and restart.
    let mut h = std::hash::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % 100) as u32
}

/// Limits checked before anything else: header size.
fn check_limits(state: &GatewayState, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let max = state.limits.max_header_bytes;
    (header_bytes > max).then(|| {
        error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("request headers exceed {max} bytes"),
        )
    })
}

/// 405 with the methods the gateway serves.
fn method_refused(message: &str) -> Response<ProxyBody> {
    let mut resp = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    resp.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    resp
}

fn malformed(e: Malformed) -> Response<ProxyBody> {
    let code = match e {
        Malformed::MissingHost
        | Malformed::DuplicateHost
        | Malformed::InvalidHost
        | Malformed::AuthorityMismatch => "bad_host",
        _ => "bad_path",
    };
    error_response(StatusCode::BAD_REQUEST, code, &e.to_string())
}

/// The canonical request (see `canonical`): CONNECT refused, the host checked
/// and put in one form (and sent upstream as `Host`), the path normalised in
/// place, the client's hop-by-hop headers removed before any policy runs.
/// `None` is a request without a host (HTTP/1.0); an `Err` is the answer.
fn canonicalize(
    limits: &ClientLimits,
    req: &mut Request<Incoming>,
) -> Result<Option<Host>, Box<Response<ProxyBody>>> {
    if req.method() == http::Method::CONNECT {
        return Err(Box::new(method_refused(
            "CONNECT (tunnelling) is not served: no route allows it",
        )));
    }
    let host = request_host(req).map_err(|e| Box::new(malformed(e)))?;
    if req.method() == http::Method::OPTIONS && req.uri().path() == "*" {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Err(Box::new(resp));
    }
    let raw = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
    if let std::borrow::Cow::Owned(normal) =
        canonical::normalize_path(raw, limits.path_rules).map_err(|e| Box::new(malformed(e)))?
    {
        let pq = PathAndQuery::try_from(normal)
            .map_err(|_| Box::new(malformed(Malformed::BadEscape)))?;
        *req.uri_mut() = Uri::from(pq);
    }
    forwarding::strip_hop_by_hop(req.headers_mut());
    if let Some(h) = &host {
        let value = HeaderValue::try_from(h.authority())
            .map_err(|_| Box::new(malformed(Malformed::InvalidHost)))?;
        req.headers_mut().insert(header::HOST, value);
    }
    Ok(host)
}

/// The host a request names (RFC 9112 §3.2, RFC 9113 §8.3.1): one `Host`
/// field at most; HTTP/1.1 must send it; an absolute-form target's authority
/// replaces it; HTTP/2's `:authority` must agree with it.
fn request_host(req: &Request<Incoming>) -> Result<Option<Host>, Malformed> {
    let mut fields = req.headers().get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(Malformed::DuplicateHost);
    }
    let parse_field = |v: &HeaderValue| {
        v.to_str()
            .map_err(|_| Malformed::InvalidHost)
            .and_then(canonical::parse_host)
    };
    let target = req
        .uri()
        .authority()
        .map(|a| canonical::parse_host(a.as_str()))
        .transpose()?;
    match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => match (target, field) {
            (Some(a), Some(h)) => {
                if parse_field(h)? != a {
                    return Err(Malformed::AuthorityMismatch);
                }
                Ok(Some(a))
            }
            (Some(a), None) => Ok(Some(a)),
            (None, Some(h)) => parse_field(h).map(Some),
            (None, None) => Err(Malformed::MissingHost),
        },
        Version::HTTP_11 => {
            let field = field.ok_or(Malformed::MissingHost)?;
            match target {
                Some(a) => Ok(Some(a)),
                None => parse_field(field).map(Some),
            }
        }
        _ => match (target, field) {
            (Some(a), _) => Ok(Some(a)),
            (None, Some(h)) => parse_field(h).map(Some),
            (None, None) => Ok(None),
        },
    }
}

/// The request body as it travels: untouched stream, or buffered for policies.
pub(super) enum RequestBody {
    Stream(ProxyBody),
    Buffered(Bytes),
}

impl RequestBody {
    pub(super) fn replayable(&self) -> Option<Bytes> {
        match self {
            RequestBody::Buffered(b) => Some(b.clone()),
            RequestBody::Stream(_) => None,
        }
    }
}

/// The request line, kept for the response phase after the request went upstream.
struct RequestLine {
    method: http::Method,
    uri: Uri,
}

impl RequestLine {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        }
    }
}

async fn proxy(x: &mut Exchange<'_>, req: Request<Incoming>) -> Response<ProxyBody> {
    let (state, route, peer) = (x.state, x.route, x.peer);
    let (mut parts, incoming) = req.into_parts();
    let mut incoming = WatchedBody::client(incoming, state.limits.body_idle_timeout).boxed();
    if x.trail.on {
        let read = Arc::new(AtomicU64::new(0));
        x.trail.bytes_in = Some(Arc::clone(&read));
        incoming = Counted::wrap(incoming, read);
    }
    let mut body = match route.buffer_request {
        None => RequestBody::Stream(incoming),
        Some(limit) => {
            match buffer_request(&parts, incoming, limit, state.limits.body_timeout).await {
                Ok(b) => RequestBody::Buffered(b),
                Err(resp) => return resp,
            }
        }
    };

    if let Some(session) = parts.extensions.get::<Arc<TlsSession>>() {
        seed_tls_context(&mut x.ctx, session);
    }
    let mut target = Target::single(&route.cluster);
    let mut stages = Vec::new();
    let ran = if route.chain.is_empty() {
        0
    } else {
        match request_phase(x, &mut parts, &mut body, &mut target, &mut stages).await {
            RequestOutcome::Forward(ran) => ran,
            RequestOutcome::Respond(resp, ran) => {
                return response_phase(x, &RequestLine::of(&parts), "", ran, resp).await;
            }
        }
    };

    if !stages.is_empty() {
        // Streaming policies may change the body's length.
        parts.headers.remove(header::CONTENT_LENGTH);
        let source = match body {
            RequestBody::Stream(s) => s,
            RequestBody::Buffered(b) => body::full(b),
        };
        body = RequestBody::Stream(stream::pump(source, stages));
    }
    prepare_upstream_request(state, peer, &mut parts);
    // Only what the response phase needs is kept; the parts move to the upstream.
    let line = (ran > 0).then(|| RequestLine::of(&parts));
    let sent = Instant::now();
    let forwarded = forward(peer, &target, parts, body, &mut x.trail).await;
    if let Some(model) = x.ctx.get(MODEL_CONTEXT_KEY) {
        let failed = match &forwarded {
            Ok((resp, _)) => provider_failed(resp.status()),
            Err(_) => true,
        };
        route.models.record(model, sent.elapsed(), failed);
    }
    let upstream = match forwarded {
        Ok((resp, cluster)) => (
            resp.map(|b| WatchedBody::upstream(b, cluster.idle_timeout).boxed()),
            cluster,
        ),
        Err(resp) => return resp,
    };
    let (mut resp, cluster) = upstream;
    forwarding::strip_hop_by_hop(resp.headers_mut());
    // Our answer's version is ours (an HTTP/1.0 upstream must not turn the
    // client's keep-alive connection into HTTP/1.0).
    *resp.version_mut() = Version::HTTP_11;
    let Some(line) = line else {
        return resp;
    };
    response_phase(x, &line, &cluster.name, ran, resp).await
}

async fn buffer_request(
    parts: &Parts,
    incoming: ProxyBody,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Response<ProxyBody>> {
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, body::buffer(incoming, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(BufferError::TooLarge)) => Err(too_large()),
        Ok(Err(BufferError::Read(e))) => Err(client_body_failed(&*e)),
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            &format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// The answer to a request whose body the client broke: 408 when it stopped
/// sending, 400 otherwise. Never the upstream's fault.
pub(super) fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> Response<ProxyBody> {
    match find_cause::<ClientBodyError>(e) {
        Some(ClientBodyError::Idle(_)) => {
            error_response(StatusCode::REQUEST_TIMEOUT, "body_timeout", &e.to_string())
        }
        _ => error_response(
            StatusCode::BAD_REQUEST,
            "bad_body",
            &format!("reading the request body failed: {e}"),
        ),
    }
}

enum RequestOutcome {
    /// Go to the upstream; the first `n` policies ran their request phase.
    Forward(usize),
    /// A policy answered; the policies before it (the first `n`) get the response phase.
    Respond(Response<ProxyBody>, usize),
}

/// Request phase: each policy's `on-request`, in config order.
async fn request_phase<'s>(
    x: &mut Exchange<'s>,
    parts: &mut Parts,
    body: &mut RequestBody,
    target: &mut Target<'s>,
    stages: &mut Vec<stream::Stage>,
) -> RequestOutcome {
    let (state, route, peer, roll) = (x.state, x.route, x.peer, x.roll);
    let mut wit = types::Request {
        method: parts.method.as_str().to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        authority: x.authority.clone(),
        body: None,
        client_ip: peer.ip.to_string(),
        route: route.name.clone(),
    };
    let rules = state.limits.path_rules;
    let mut ran = 0;
    for entry in &route.chain {
        wit.body = match (entry.request_body, &*body) {
            (BodyMode::Buffer, RequestBody::Buffered(b)) => Some(b.to_vec()),
            _ => None,
        };
        let version = entry.pick(roll);
        match skip_quarantined(x, entry, version, Phase::Request) {
            Quarantine::Run => {}
            Quarantine::Skip => continue,
            Quarantine::Answer(resp) => return RequestOutcome::Respond(resp, ran),
        }
        // The instance stays with the request for its body's chunk calls.
        let streams = entry.request_body == BodyMode::Stream;
        let call = head_call(
            x,
            entry,
            version,
            Phase::Request,
            wit,
            &mut parts.headers,
            streams,
        );
        let HeadCall {
            result,
            lease,
            view,
            took,
        } = match call.await {
            Ok(c) => c,
            Err(lost) => return RequestOutcome::Respond(lost, ran),
        };
        wit = view;
        let verdict = match &result {
            Ok(types::RequestVerdict::Route(_)) => Verdict::Route,
            Ok(types::RequestVerdict::Respond(_)) => Verdict::Respond,
            _ => Verdict::Continue,
        };
        let result = result.and_then(|verdict| match verdict {
            types::RequestVerdict::Continue(m) => {
                apply_request_mutations(&m, entry, rules, &mut wit, parts, body).map(|()| None)
            }
            types::RequestVerdict::Route(d) => {
                apply_request_mutations(&d.mutations, entry, rules, &mut wit, parts, body)?;
                *target = Target::of_decision(
                    &d.upstream,
                    d.fallbacks.iter().map(String::as_str),
                    d.retries,
                    d.backoff_ms,
                    |name| {
                        state.upstreams.clusters.get(name).ok_or_else(|| {
                            PolicyFailure::Guest(format!(
                                "route decision names unknown upstream `{name}`"
                            ))
                        })
                    },
                )?;
                Ok(None)
            }
            types::RequestVerdict::Respond(r) => build_response(r, entry.body_limit).map(Some),
        });
        match result {
            Ok(None) => {
                x.trail.mark(&entry.name, Phase::Request, verdict, took);
                ran += 1;
                if let Some(lease) = lease {
                    stages.push(stage(
                        entry,
                        version,
                        lease,
                        stream::Kind::Chunks,
                        Phase::Request,
                    ));
                }
            }
            Ok(Some(resp)) => {
                x.trail.mark(&entry.name, Phase::Request, verdict, took);
                return RequestOutcome::Respond(resp, ran);
            }
            Err(failure) => {
                let failed = policy_failed(entry, version, Phase::Request, &failure);
                if let Some(resp) = failed.answer(&mut x.trail, took) {
                    return RequestOutcome::Respond(resp, ran);
                }
            }
        }
    }
    RequestOutcome::Forward(ran)
}

/// What a head call hands its policy, and the call itself: the request's
/// WIT view in the request phase, [`ResponseView`] in the response phase.
trait HeadView: Send + 'static {
    type Verdict: Send + 'static;

    /// The call on an instance for this one call.
    fn once<'a>(
        &'a self,
        instance: &'a PolicyInstance,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a;

    /// The call on an instance kept for the body's calls after it.
    fn leased<'a>(
        &'a self,
        lease: &'a mut Lease,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a;
}

impl HeadView for types::Request {
    type Verdict = types::RequestVerdict;

    fn once<'a>(
        &'a self,
        instance: &'a PolicyInstance,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a {
        instance.on_request(self, headers, ctx)
    }

    fn leased<'a>(
        &'a self,
        lease: &'a mut Lease,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a {
        lease.on_request(self, headers, ctx)
    }
}

/// The response phase's WIT view: the request it answers and the response
/// head (with the body, once a policy buffered it). Its headers are read on
/// demand from the response's parts.
struct ResponseView {
    summary: types::RequestSummary,
    head: types::ResponseHead,
}

impl HeadView for ResponseView {
    type Verdict = types::ResponseVerdict;

    fn once<'a>(
        &'a self,
        instance: &'a PolicyInstance,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a {
        instance.on_response(&self.summary, &self.head, headers, ctx)
    }

    fn leased<'a>(
        &'a self,
        lease: &'a mut Lease,
        headers: &'a mut http::HeaderMap,
        ctx: &'a mut ContextBag,
    ) -> impl std::future::Future<Output = Result<Self::Verdict, PolicyFailure>> + Send + 'a {
        lease.on_response(&self.summary, &self.head, headers, ctx)
    }
}

/// A head call's outcome, with what went into it handed back.
struct HeadCall<V: HeadView> {
    result: Result<V::Verdict, PolicyFailure>,
    /// The instance, kept for the body's calls when the policy streams it.
    lease: Option<Lease>,
    view: V,
    took: Duration,
}

/// One policy's head call, the same in both phases. The request's context
/// and the message's headers (which the policy reads on demand) move into
/// the call, which runs on the slow lane when it is slow, and come back
/// after it; the call is counted in the version's metrics and stats.
/// `streams` keeps the instance for the body's calls. `Err` is the answer
/// when the slow lane lost the call.
async fn head_call<V: HeadView>(
    x: &mut Exchange<'_>,
    entry: &ChainEntry,
    version: &PolicyVersion,
    phase: Phase,
    view: V,
    headers: &mut http::HeaderMap,
    streams: bool,
) -> Result<HeadCall<V>, Response<ProxyBody>> {
    let started = Instant::now();
    let instance = Arc::clone(&version.instance);
    let mut ctx = std::mem::take(&mut x.ctx);
    let mut moved = std::mem::take(headers);
    let call = async move {
        if !streams {
            let result = view.once(&instance, &mut moved, &mut ctx).await;
            return (result, None, view, moved, ctx);
        }
        match instance.lease().await {
            Ok(mut lease) => {
                let result = view.leased(&mut lease, &mut moved, &mut ctx).await;
                (result, Some(lease), view, moved, ctx)
            }
            Err(e) => (Err(e), None, view, moved, ctx),
        }
    };
    let Some((result, lease, view, back_headers, back_ctx)) = slow_lane::run(call).await else {
        x.trail
            .mark(&entry.name, phase, Verdict::FailedDeny, started.elapsed());
        return Err(lost_call(entry));
    };
    *headers = back_headers;
    x.ctx = back_ctx;
    let took = started.elapsed();
    version.metrics.record_call(phase, took.as_secs_f64());
    version.stats.record_call(took, result.is_err());
    Ok(HeadCall {
        result,
        lease,
        view,
        took,
    })
}

/// Whether a policy runs, given its version's quarantine.
enum Quarantine {
    Run,
    /// Quarantined under `on_error = "allow"`: the policy is skipped.
    Skip,
    /// Quarantined under `on_error = "deny"`: this is the answer.
    Answer(Response<ProxyBody>),
}

/// A quarantined version is not run: it is skipped, or answers 503, as its
/// `on_error` says, and counted as a skip.
fn skip_quarantined(
    x: &mut Exchange<'_>,
    entry: &ChainEntry,
    version: &PolicyVersion,
    phase: Phase,
) -> Quarantine {
    if !version.quarantine.holds(&entry.name) {
        return Quarantine::Run;
    }
    version.stats.record_skip();
    match quarantined(entry, phase).answer(&mut x.trail, Duration::ZERO) {
        Some(resp) => Quarantine::Answer(resp),
        None => Quarantine::Skip,
    }
}

/// The streaming stage of a policy whose head call kept its instance.
fn stage(
    entry: &ChainEntry,
    version: &Arc<PolicyVersion>,
    lease: Lease,
    kind: stream::Kind,
    phase: Phase,
) -> stream::Stage {
    stream::Stage {
        lease,
        kind,
        name: entry.name.clone(),
        on_error: entry.on_error,
        version: Arc::clone(version),
        phase,
    }
}

/// The answer when the slow lane lost a policy call (it panicked): 503 whatever
/// the `on_error`, since the request's state went with the call.
fn lost_call(entry: &ChainEntry) -> Response<ProxyBody> {
    tracing::error!(policy = %entry.name, "a policy call was lost on the slow lane; answering 503");
    policy_failed_response(&entry.name)
}

/// What `on_error` made of a policy's failure, or of its quarantine.
struct Failed<'e> {
    entry: &'e ChainEntry,
    phase: Phase,
    /// Not run: the version is quarantined.
    quarantined: bool,
    /// `Some(503)` for deny, `None` (skip the policy) for allow.
    answer: Option<Response<ProxyBody>>,
}

impl Failed<'_> {
    /// The answer, with the call marked in the trail as denied or allowed.
    fn answer(self, trail: &mut Trail, took: std::time::Duration) -> Option<Response<ProxyBody>> {
        let verdict = match (self.quarantined, self.answer.is_some()) {
            (false, true) => Verdict::FailedDeny,
            (false, false) => Verdict::FailedAllow,
            (true, true) => Verdict::QuarantinedDeny,
            (true, false) => Verdict::QuarantinedAllow,
        };
        trail.mark(&self.entry.name, self.phase, verdict, took);
        self.answer
    }
}

/// Apply `on_error`: a 503 for deny, nothing (skip) for allow. A sandbox
/// failure also counts towards the version's quarantine.
fn policy_failed<'e>(
    entry: &'e ChainEntry,
    version: &PolicyVersion,
    phase: Phase,
    failure: &PolicyFailure,
) -> Failed<'e> {
    version.metrics.record_failure(failure.kind());
    version.quarantine.record(&entry.name, failure);
    let policy = entry.name.as_str();
    let phase_name = phase.as_str();
    let answer = match entry.on_error {
        OnError::Deny => {
            tracing::warn!(policy, phase = phase_name, %failure, "policy failed; denying (on_error = deny)");
            Some(policy_failed_response(policy))
        }
        OnError::Allow => {
            tracing::warn!(policy, phase = phase_name, %failure, "policy failed; skipping it (on_error = allow)");
            None
        }
    };
    Failed {
        entry,
        phase,
        quarantined: false,
        answer,
    }
}

/// Apply `on_error` for a quarantined version, which is not run. Not logged
/// per request: the quarantine was logged once, and metrics count the skips.
fn quarantined(entry: &ChainEntry, phase: Phase) -> Failed<'_> {
    let answer = match entry.on_error {
        OnError::Deny => Some(policy_failed_response(&entry.name)),
        OnError::Allow => None,
    };
    Failed {
        entry,
        phase,
        quarantined: true,
        answer,
    }
}

/// The 503 of a policy that failed (or is quarantined) under `on_error = "deny"`.
fn policy_failed_response(policy: &str) -> Response<ProxyBody> {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "policy_failed",
        &format!("policy `{policy}` failed"),
    )
}

/// The body while the response phase works on it: streaming (the upstream's,
/// maybe through streaming policies already) or whole.
struct ResponseBody {
    /// The body as it streams, when it is not whole.
    stream: Option<ProxyBody>,
    /// Streaming policies the stream still has to go through, in order.
    stages: Vec<stream::Stage>,
}

impl ResponseBody {
    /// The stream, through its stages.
    fn take(&mut self) -> ProxyBody {
        let s = self.stream.take().unwrap_or_else(body::empty);
        if self.stages.is_empty() {
            s
        } else {
            stream::pump(s, std::mem::take(&mut self.stages))
        }
    }
}

/// A response body that could not be buffered for a policy: 502 naming why.
fn response_buffer_failed(e: BufferError, limit: usize) -> Response<ProxyBody> {
    match e {
        BufferError::TooLarge => error_response(
            StatusCode::BAD_GATEWAY,
            "response_too_large",
            &format!("upstream response body exceeds the {limit}-byte buffering limit"),
        ),
        BufferError::Read(e) => match find_cause::<stream::BodyRefused>(&*e) {
            Some(refused) => {
                error_response(StatusCode::BAD_GATEWAY, &refused.code, &refused.message)
            }
            None => error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                &format!("reading the upstream response failed: {e}"),
            ),
        },
    }
}

/// Response phase: `on-response` of the policies that ran, in reverse order.
/// A policy that buffers sees the body as the policies before it left it
/// (they run to the body's end first); one that streams gets its head call
/// now and the body's chunks or events as they pass.
async fn response_phase(
    x: &mut Exchange<'_>,
    line: &RequestLine,
    upstream: &str,
    ran: usize,
    resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let (route, roll) = (x.route, x.roll);
    let chain = &route.chain[..ran];
    if !chain
        .iter()
        .any(|e| e.response_body != BodyMode::None || e.pick(roll).instance.wants_response())
    {
        return resp;
    }
    let (mut rparts, rbody) = resp.into_parts();
    let events = sse::is_event_stream(&rparts.headers);
    let mut body = ResponseBody {
        stream: Some(rbody),
        stages: Vec::new(),
    };
    let summary = types::RequestSummary {
        method: line.method.as_str().to_string(),
        path: line
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        authority: x.authority.clone(),
        route: route.name.clone(),
        upstream: upstream.to_string(),
    };
    // One WIT view of the response for every policy; its headers are read on
    // demand from `rparts`. Its body is the whole body, once a policy buffered it.
    let mut view = ResponseView {
        summary,
        head: types::ResponseHead {
            status: rparts.status.as_u16(),
            streamed: false,
            body: None,
        },
    };
    for entry in chain.iter().rev() {
        let version = entry.pick(roll);
        let mode = match entry.response_body {
            BodyMode::Sse if !events => BodyMode::Buffer,
            m => m,
        };
        let kind = match mode {
            BodyMode::Stream => Some(stream::Kind::Chunks),
            BodyMode::Sse => Some(stream::Kind::Events),
            BodyMode::None | BodyMode::Buffer => None,
        };
        if mode == BodyMode::None && !version.instance.wants_response() {
            continue;
        }
        match skip_quarantined(x, entry, version, Phase::Response) {
            Quarantine::Run => {}
            Quarantine::Skip => continue,
            Quarantine::Answer(resp) => return resp,
        }
        let head = &mut view.head;
        if mode == BodyMode::Buffer && head.body.is_none() {
            match body::buffer(body.take(), entry.body_limit).await {
                Ok(bytes) => head.body = Some(Vec::from(bytes)),
                Err(e) => return response_buffer_failed(e, entry.body_limit),
            }
        }
        head.status = rparts.status.as_u16();
        head.streamed = kind.is_some();
        // Only a policy that buffers sees the body.
        let hidden = match mode {
            BodyMode::Buffer => None,
            _ => head.body.take(),
        };
        // One that streams keeps its instance for the body's chunks or events.
        let call = head_call(
            x,
            entry,
            version,
            Phase::Response,
            view,
            &mut rparts.headers,
            kind.is_some(),
        );
        let HeadCall {
            result,
            lease,
            view: back,
            took,
        } = match call.await {
            Ok(c) => c,
            Err(lost) => return lost,
        };
        view = back;
        let head = &mut view.head;
        if hidden.is_some() {
            head.body = hidden;
        }
        let mut replaced = false;
        let applied = result.and_then(|verdict| match verdict {
            types::ResponseVerdict::Continue(m) => {
                if let Some(s) = m.status {
                    rparts.status = policy_status(s)?;
                }
                apply_header_ops(&m.headers, &mut rparts.headers)?;
                if let Some(b) = m.body {
                    check_body(b.len(), entry.body_limit)?;
                    if mode != BodyMode::Buffer {
                        return Err(PolicyFailure::Guest(
                            "policy replaced the response body, but it does not buffer it (response_body = \"buffer\")".into(),
                        ));
                    }
                    rparts.headers.remove(header::CONTENT_LENGTH);
                    // Not the gateway's error body any more: it stays as the policy left it.
                    rparts.extensions.remove::<GatewayError>();
                    head.body = Some(b);
                }
                Ok(())
            }
            types::ResponseVerdict::Replace(r) => {
                let types::Response {
                    status,
                    headers,
                    body: new_body,
                } = r;
                let new_body = new_body.unwrap_or_default();
                check_body(new_body.len(), entry.body_limit)?;
                let (p, _) = build_response(
                    types::Response {
                        status,
                        headers,
                        body: None,
                    },
                    entry.body_limit,
                )?
                .into_parts();
                rparts = p;
                head.body = Some(new_body);
                replaced = true;
                Ok(())
            }
        });
        match applied {
            Err(failure) => {
                let failed = policy_failed(entry, version, Phase::Response, &failure);
                if let Some(resp) = failed.answer(&mut x.trail, took) {
                    return resp;
                }
            }
            Ok(()) if replaced => {
                x.trail
                    .mark(&entry.name, Phase::Response, Verdict::Replace, took);
                // The policy's own answer replaces the upstream's: the body
                // so far, and the streaming policies on it, are dropped.
                body.stream = None;
                body.stages.clear();
            }
            Ok(()) => {
                x.trail
                    .mark(&entry.name, Phase::Response, Verdict::Continue, took);
                if let (Some(kind), Some(lease)) = (kind, lease) {
                    if let Some(whole) = head.body.take() {
                        body.stream = Some(body::full(whole));
                    }
                    body.stages
                        .push(stage(entry, version, lease, kind, Phase::Response));
                }
            }
        }
    }
    let out = match view.head.body {
        Some(b) => {
            rparts.headers.remove(header::TRANSFER_ENCODING);
            rparts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
            body::full(b)
        }
        None => {
            if !body.stages.is_empty() {
                // Streaming policies may change the length.
                rparts.headers.remove(header::CONTENT_LENGTH);
            }
            body.take()
        }
    };
    Response::from_parts(rparts, out)
}
