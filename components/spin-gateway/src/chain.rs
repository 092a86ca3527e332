//! The request path, as the edgegate host runs it (docs/phases.md): request
//! phase in chain order → upstream with the routing decision's retries and
//! fallbacks → response phase in reverse order over the policies that ran.
//! Bodies are always buffered here (within the policies' limits).
//!
//! Generic over [`Transport`] so the whole path unit-tests natively; the Spin
//! build sends through Spin's outbound HTTP (`crate::spin`).

use std::time::Duration;

use edgegate_policy_core::{
    header, is_header_name, json_error, HeaderOp, Headers, HttpRequest, HttpResponse, Level,
    PolicyError, RequestChanges, RequestOutcome, ResponseChanges, ResponseOutcome,
};

use crate::config::{Config, OnError, PolicyDef, Route, Upstream};
use crate::env::RequestEnv;

/// Most attempts per cluster a routing decision may ask for (as the host).
const MAX_RETRIES: u32 = 3;
/// Most fallback clusters a routing decision may name (as the host).
const MAX_FALLBACKS: usize = 4;
/// Longest delay before one retry (as the host).
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Largest upstream answer buffered when no policy of the route reads it.
pub const PASS_THROUGH_LIMIT: usize = 64 << 20;
/// Largest request body when the route has no policy.
pub const DEFAULT_REQUEST_LIMIT: usize = 1 << 20;
/// What this gateway adds to `Via`.
pub const VIA: &str = "1.1 edgegate-spin";

/// Headers that describe one connection (RFC 9110 §7.6.1), plus those a
/// wasi:http host refuses to take from a component, plus the ones Spin adds
/// to the incoming request (`spin-*`, stripped by prefix).
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
    "content-length",
];

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

/// Why an upstream attempt produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection (refused, DNS, TLS).
    Connect(String),
    /// No complete answer within the deadline.
    Timeout,
    /// The answer's body is larger than the limit.
    TooLarge,
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

/// Outbound HTTP and timers, as the platform offers them.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Sends one request and reads the whole answer, within `timeout` and `body_limit`.
    async fn send(
        &self,
        req: Outgoing<'_>,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<HttpResponse, SendError>;
    /// Waits.
    async fn sleep(&self, duration: Duration);
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

/// Largest upstream answer buffered: the smallest limit of the policies that read
/// responses, else [`PASS_THROUGH_LIMIT`].
pub fn response_limit(config: &Config, route: &Route) -> usize {
    route
        .chain
        .iter()
        .map(|&i| &config.policies[i])
        .filter(|p| p.policy.wants_response())
        .map(|p| p.body_limit)
        .min()
        .unwrap_or(PASS_THROUGH_LIMIT)
}

/// Where the request goes.
struct Target<'c> {
    clusters: Vec<(&'c str, &'c Upstream)>,
    retries: u32,
    backoff: Duration,
}

/// Runs `req` through `route`'s chain and upstream; always returns a response.
pub async fn run<T: Transport>(
    config: &Config,
    route: &Route,
    env: &RequestEnv<'_>,
    transport: &T,
    incoming: Incoming,
) -> HttpResponse {
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
        return json_error(
            502,
            "upstream_error",
            "the route's upstream is not configured",
        );
    };
    let mut target = Target {
        clusters: vec![(default.0.as_str(), default.1)],
        retries: 0,
        backoff: Duration::ZERO,
    };

    let mut ran = Vec::with_capacity(route.chain.len());
    for &index in &route.chain {
        let def = &config.policies[index];
        let penv = env.for_policy(&def.name, &def.kv_namespace);
        let outcome = def
            .policy
            .on_request(&penv, req.clone())
            .and_then(|outcome| match outcome {
                RequestOutcome::Continue(changes) => {
                    apply_request(&changes, &mut req).map(|()| None)
                }
                RequestOutcome::Route(decision, changes) => {
                    apply_request(&changes, &mut req)?;
                    let mut clusters = Vec::new();
                    for name in std::iter::once(&decision.upstream)
                        .chain(decision.fallbacks.iter().take(MAX_FALLBACKS))
                    {
                        let (name, upstream) =
                            config.upstreams.get_key_value(name).ok_or_else(|| {
                                PolicyError::Internal(format!(
                                    "route decision names unknown upstream `{name}`"
                                ))
                            })?;
                        clusters.push((name.as_str(), upstream));
                    }
                    target = Target {
                        clusters,
                        retries: decision.retries.min(MAX_RETRIES),
                        backoff: Duration::from_millis(u64::from(decision.backoff_ms)),
                    };
                    Ok(None)
                }
                RequestOutcome::Respond(resp) => check_response(resp).map(Some),
            });
        match outcome {
            Ok(None) => ran.push(def),
            Ok(Some(resp)) => return response_phase(env, &req, "", &ran, resp),
            Err(e) => {
                if let Some(resp) = policy_failed(env, def, "request", &e) {
                    return response_phase(env, &req, "", &ran, resp);
                }
            }
        }
    }

    let limit = response_limit(config, route);
    match forward(env, transport, &req, &target, limit).await {
        Ok((resp, cluster)) => response_phase(env, &req, cluster, &ran, resp),
        Err(resp) => resp,
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
        .map(|c| {
            c.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let mut headers: Headers = req
        .headers
        .to_vec()
        .into_iter()
        .filter(|(n, _)| {
            !NOT_FORWARDED.contains(&n.as_str())
                && !n.starts_with("spin-")
                && !named_by_connection.contains(n)
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
/// backoff and fallback on 5xx, 429, timeouts and connection errors.
async fn forward<'c, T: Transport>(
    env: &RequestEnv<'_>,
    transport: &T,
    req: &HttpRequest,
    target: &Target<'c>,
    limit: usize,
) -> Result<(HttpResponse, &'c str), HttpResponse> {
    let headers = upstream_headers(req);
    let body = req.body.as_deref().unwrap_or_default();
    let per_cluster = 1 + target.retries as usize;
    let total = target.clusters.len() * per_cluster;
    let mut last_error = None;
    for attempt in 0..total {
        let (name, upstream) = target.clusters[attempt / per_cluster];
        let retry = (attempt % per_cluster) as u32;
        if retry > 0 && !target.backoff.is_zero() {
            let window = target
                .backoff
                .saturating_mul(1 << (retry - 1).min(16))
                .min(MAX_BACKOFF);
            transport.sleep(window.mul_f64(fastrand::f64())).await;
        }
        let endpoint = &upstream.endpoints[fastrand::usize(..upstream.endpoints.len())];
        let out = Outgoing {
            method: &req.method,
            url: format!("{endpoint}{}", req.path),
            headers: &headers,
            body,
        };
        let last = attempt + 1 == total;
        match transport.send(out, upstream.timeout, limit).await {
            Ok(mut resp) => {
                if !(resp.status >= 500 || resp.status == 429) || last {
                    strip_hop_by_hop(resp.headers.list_mut());
                    return Ok((resp, name));
                }
                env.log(
                    Level::Info,
                    "gateway",
                    &format!(
                        "upstream `{name}` answered {}; trying the next attempt",
                        resp.status
                    ),
                );
                last_error = Some(json_error(
                    502,
                    "upstream_error",
                    &format!("upstream `{name}` answered {}", resp.status),
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
                    SendError::TooLarge => {
                        // Asking again would not make it smaller.
                        return Err(json_error(
                            502,
                            "response_too_large",
                            &format!(
                                "upstream response body exceeds the {limit}-byte buffering limit"
                            ),
                        ));
                    }
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
        .map(|c| {
            c.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    headers.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        !NOT_FORWARDED.contains(&n.as_str()) && !named.contains(&n)
    });
}

/// The response phase: `on_response` of the policies that ran, in reverse order.
fn response_phase(
    env: &RequestEnv<'_>,
    req: &HttpRequest,
    upstream: &str,
    ran: &[&PolicyDef],
    mut resp: HttpResponse,
) -> HttpResponse {
    let info = req.info(upstream);
    for def in ran.iter().rev().filter(|d| d.policy.wants_response()) {
        let penv = env.for_policy(&def.name, &def.kv_namespace);
        let applied = def
            .policy
            .on_response(&penv, &info, resp.clone())
            .and_then(|outcome| match outcome {
                ResponseOutcome::Continue(ResponseChanges {
                    status,
                    headers,
                    body,
                }) => {
                    if let Some(s) = status {
                        if !(100..=999).contains(&s) {
                            return Err(invalid(format!("invalid status {s}")));
                        }
                        resp.status = s;
                    }
                    apply_headers(&headers, resp.headers.list_mut())?;
                    if let Some(b) = body {
                        resp.body = Some(b);
                    }
                    Ok(())
                }
                ResponseOutcome::Replace(r) => {
                    resp = check_response(r)?;
                    Ok(())
                }
            });
        if let Err(e) = applied {
            if let Some(denied) = policy_failed(env, def, "response", &e) {
                return denied;
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tests::MapStore;
    use std::cell::RefCell;

    /// One recorded upstream request: method, URL, headers, body.
    type Sent = (String, String, Headers, Vec<u8>);

    /// A scripted upstream: answers by URL prefix, records every request.
    #[derive(Default)]
    struct Script {
        answers: Vec<(&'static str, Result<HttpResponse, SendError>)>,
        sent: RefCell<Vec<Sent>>,
        slept: RefCell<Vec<Duration>>,
    }

    impl Transport for Script {
        async fn send(
            &self,
            req: Outgoing<'_>,
            _timeout: Duration,
            _limit: usize,
        ) -> Result<HttpResponse, SendError> {
            self.sent.borrow_mut().push((
                req.method.to_string(),
                req.url.clone(),
                req.headers.clone(),
                req.body.to_vec(),
            ));
            self.answers
                .iter()
                .find(|(prefix, _)| req.url.starts_with(prefix))
                .map_or(Err(SendError::Connect("no script".into())), |(_, a)| {
                    a.clone()
                })
        }

        async fn sleep(&self, duration: Duration) {
            self.slept.borrow_mut().push(duration);
        }
    }

    fn ok(status: u16, body: &str) -> Result<HttpResponse, SendError> {
        Ok(HttpResponse {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("connection".into(), "x-secret-hop".into()),
                ("x-secret-hop".into(), "1".into()),
            ]
            .into(),
            body: Some(body.as_bytes().to_vec()),
        })
    }

    fn now() -> u64 {
        1_700_000_000_000
    }

    const CONFIG: &str = r#"
        [upstreams.primary]
        endpoints = ["http://primary:1"]
        [upstreams.backup]
        endpoints = ["http://backup:2"]

        [policies.auth.config]
        api_keys = { keys = [{ id = "team", sha256 = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c" }] }

        [policies.routing.config]
        llm = { models = { "*" = ["primary", "backup"] }, retries = 1, backoff_ms = 100 }

        [policies.redaction.config]
        rules = [{ detector = "email", mode = "mask" }]

        [policies.caching]
        on_error = "allow"
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

    fn run_one(config: &Config, store: &MapStore, t: &Script, req: Incoming) -> HttpResponse {
        let env = RequestEnv::new(Some(store), Level::Error, now);
        let route = config
            .find_route(&req.authority, &req.path, &req.method)
            .expect("route");
        futures::executor::block_on(run(config, route, &env, t, req))
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
        let route = limited
            .find_route(&req.authority, &req.path, &req.method)
            .expect("route");
        let resp = futures::executor::block_on(run(&limited, route, &env, &ok_script, req));
        assert_eq!(resp.status, 503, "{}", body(&resp));
        assert!(body(&resp).contains("policy `auth` failed"));
        assert!(ok_script.sent.borrow().is_empty());
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
}
