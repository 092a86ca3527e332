//! The caching policy's logic: a shared HTTP response cache for `GET`/`HEAD`
//! (`Cache-Control`, `Vary`, `ETag`/`If-None-Match` → 304) and an exact-match
//! cache for deterministic LLM calls, both kept in the host's key/value store,
//! which enforces the byte budget (LRU eviction) and the entries' TTLs.
//!
//! Request phase: a fresh stored response answers the request (`hit`);
//! otherwise the request goes on (`miss`) and what the response phase needs
//! (the key, the request header values a `Vary` may name) goes into the
//! context bag, because the response phase does not see request headers.
//! Response phase: the upstream's response is stored when it may be, and
//! every response the cache handled gets the status header. `CONFIG.md` has
//! the rules in full.

mod config;
mod directives;
mod entry;
mod http_date;
mod key;
mod llm;
mod store;

use std::collections::BTreeMap;

use edgegate_policy_core::{
    header, BodyModes, BodyState, EndReason, Env, EventOutcome, HeaderOp, HttpRequest,
    HttpResponse, KvError, Level, PolicyError, PolicyLogic, RequestInfo, RequestOutcome,
    ResponseChanges, ResponseOutcome, SseEvent, StreamItem,
};
use serde::{Deserialize, Serialize};

pub use config::{CachingConfig, LlmCacheConfig};

use directives::{none_match, pragma_no_cache, CacheControl};
use entry::Entry;
use key::Scope;
use store::Refusal;

/// Context keys this policy reads and sets.
pub mod ctx {
    /// The authenticated principal, set by the auth policy (read).
    pub use edgegate_policy_core::keys::PRINCIPAL;
    /// What the request phase decided, for the response phase (set).
    pub const REQUEST: &str = "cache.request";
    /// Set in the response call of a streamed answer that may be stored:
    /// its status and headers, for the entry its events make.
    pub const STREAM: &str = "cache.stream";
}

/// Headers a 304 carries over from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [&str; 6] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
];

/// The caching policy.
pub struct Caching {
    config: CachingConfig,
}

/// How the request phase classed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Get,
    Head,
    Llm,
    /// `POST`, `PUT`, `PATCH`, `DELETE`: success invalidates the stored `GET`.
    Unsafe,
}

/// What the request phase leaves the response phase, in the context bag.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    #[serde(rename = "p")]
    plan: Plan,
    /// Base key (see `key`).
    #[serde(rename = "k", default, skip_serializing_if = "String::is_empty")]
    base: String,
    /// An LLM call (its default TTL is `llm.ttl_s`).
    #[serde(rename = "l", default, skip_serializing_if = "std::ops::Not::not")]
    llm: bool,
    /// Request header values a `Vary` may name.
    #[serde(rename = "v", default, skip_serializing_if = "BTreeMap::is_empty")]
    vary: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Plan {
    /// Not answered from the cache; store the response if it may be.
    Store,
    /// Not answered from the cache, nothing to store (`HEAD`).
    Miss,
    /// The request refused the cache.
    Bypass,
    /// An unsafe method: a successful response drops the stored `GET`.
    Invalidate,
}

impl PolicyLogic for Caching {
    const WANTS_RESPONSE: bool = true;
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER_OR_SSE;

    fn from_config(json: &str) -> Result<Self, PolicyError> {
        Ok(Caching {
            config: CachingConfig::parse(json)?,
        })
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        if !self.config.covers(&req.route) {
            return Ok(RequestOutcome::pass());
        }
        let class = match req.method.as_str() {
            "GET" => Class::Get,
            "HEAD" => Class::Head,
            "POST" if self.is_llm(&req) => Class::Llm,
            "POST" | "PUT" | "PATCH" | "DELETE" => Class::Unsafe,
            _ => return Ok(RequestOutcome::pass()),
        };
        if class == Class::Unsafe {
            let principal = self
                .config
                .per_user
                .then(|| env.ctx_get(ctx::PRINCIPAL).unwrap_or_default());
            let base = scope(&req, "GET", principal.as_deref(), None).base(env);
            remember(env, Plan::Invalidate, base, false, BTreeMap::new())?;
            return Ok(RequestOutcome::pass());
        }
        self.lookup(env, &req, class)
    }

    fn on_response(
        &self,
        env: &dyn Env,
        info: &RequestInfo,
        resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        let Some(pending) = env
            .ctx_get(ctx::REQUEST)
            .and_then(|text| serde_json::from_str::<Pending>(&text).ok())
        else {
            return Ok(ResponseOutcome::pass());
        };
        let status = match pending.plan {
            Plan::Invalidate => {
                invalidate(env, info, &resp, &pending.base)?;
                return Ok(ResponseOutcome::pass());
            }
            Plan::Bypass => "bypass",
            Plan::Miss => "miss",
            Plan::Store => {
                // A response a later policy made up is not the upstream's to keep.
                if !info.upstream.is_empty() {
                    if info.streamed_body {
                        self.will_store_stream(env, resp, &pending, env.now_millis());
                    } else {
                        self.store(env, resp, &pending)?;
                    }
                }
                "miss"
            }
        };
        Ok(ResponseOutcome::Continue(ResponseChanges {
            headers: vec![HeaderOp::Set(
                self.config.status_header.clone(),
                status.into(),
            )],
            ..ResponseChanges::default()
        }))
    }

    fn on_response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        _carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        let Some(head) = env.ctx_get(ctx::STREAM) else {
            return Ok(EventOutcome::Pass);
        };
        let capture = state.get::<Capture>();
        match item {
            StreamItem::Event(e) => {
                if !capture.over {
                    write_event(&e, &mut capture.bytes);
                    if capture.bytes.len() as u64 > self.config.max_entry_bytes {
                        capture.over = true;
                        capture.bytes = Vec::new();
                    }
                }
            }
            StreamItem::End(EndReason::Complete) if capture.over => {
                env.count("cache", "too_large", 1);
            }
            StreamItem::End(EndReason::Complete) => {
                let pending = env
                    .ctx_get(ctx::REQUEST)
                    .and_then(|text| serde_json::from_str::<Pending>(&text).ok());
                let head = serde_json::from_str::<StreamHead>(&head).ok();
                if let (Some(pending), Some(head)) = (pending, head) {
                    let resp = HttpResponse {
                        status: head.status,
                        headers: head.headers.into(),
                        body: Some(std::mem::take(&mut capture.bytes)),
                    };
                    self.store(env, resp, &pending)?;
                }
            }
            // A stream cut short is not the answer.
            StreamItem::End(_) => env.count("cache", "stream_cut", 1),
        }
        Ok(EventOutcome::Pass)
    }
}

/// A streamed answer's status and headers, kept in the context from its
/// response call for the entry its events make.
#[derive(Serialize, Deserialize)]
struct StreamHead {
    status: u16,
    headers: Vec<(String, String)>,
}

/// A streamed answer's events as they passed, while they fit an entry.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    over: bool,
}

/// An event in `text/event-stream` form, as a hit replays it.
fn write_event(e: &SseEvent, out: &mut Vec<u8>) {
    if let Some(name) = &e.event {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    if let Some(id) = &e.id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    if let Some(ms) = e.retry {
        out.extend_from_slice(format!("retry: {ms}\n").as_bytes());
    }
    for line in e.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl Caching {
    /// Whether `req` (a `POST`) is a call to the LLM cache.
    fn is_llm(&self, req: &HttpRequest) -> bool {
        let llm = &self.config.llm;
        llm.enabled && llm.paths.iter().any(|p| p == req.path_only())
    }

    /// The request phase of a `GET`, `HEAD` or LLM call.
    fn lookup(
        &self,
        env: &dyn Env,
        req: &HttpRequest,
        class: Class,
    ) -> Result<RequestOutcome, PolicyError> {
        let cc = CacheControl::of(&req.headers);
        if cc.no_store {
            return self.bypass(env, "request says no-store");
        }
        // A shared cache must not answer authorized requests (RFC 9111 §3.5);
        // a per-user cache may, keyed by who is asking.
        let authorized = req.header("authorization").is_some();
        let principal = match (self.config.per_user, env.ctx_get(ctx::PRINCIPAL)) {
            (false, _) if authorized => {
                return self.bypass(env, "request carries Authorization and per_user is off")
            }
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) if authorized => {
                return self.bypass(env, "request carries Authorization but has no principal")
            }
            (true, None) => Some(String::new()),
        };
        let body = if class == Class::Llm {
            let embeddings = req.path_only().ends_with("/embeddings");
            match llm::canonical_body(
                req.body.as_deref(),
                self.config.llm.deterministic_only,
                embeddings,
            ) {
                Ok(body) => Some(body),
                Err(why) => return self.bypass(env, why.reason()),
            }
        } else {
            None
        };
        let class_name = if class == Class::Llm { "LLM" } else { "GET" };
        let base = scope(req, class_name, principal.as_deref(), body.as_deref()).base(env);
        let known = self.vary_record(env, &base)?;
        let vary = key::vary_values(env, &req.headers, known.as_deref().unwrap_or_default());

        // `no-cache` or `max-age=0`: the client wants a fresh answer, which is then stored.
        let has_cache_control = req.headers.get("cache-control").is_some();
        let refresh = cc.no_cache
            || cc.max_age == Some(0)
            || (!has_cache_control && pragma_no_cache(&req.headers));
        if !refresh {
            if let Some(names) = &known {
                if let Some(entry_key) = key::entry(env, &base, names, &vary) {
                    if let Some(outcome) = self.serve(env, req, &entry_key, cc.max_age)? {
                        return Ok(outcome);
                    }
                }
            }
        }
        env.count("cache", if refresh { "refresh" } else { "miss" }, 1);
        if class == Class::Head {
            // A HEAD response has no body to store.
            remember(env, Plan::Miss, String::new(), false, BTreeMap::new())?;
        } else {
            remember(env, Plan::Store, base, class == Class::Llm, vary)?;
        }
        Ok(RequestOutcome::pass())
    }

    /// The header names of `base`'s `Vary` record; `None` when there is none.
    fn vary_record(&self, env: &dyn Env, base: &str) -> Result<Option<Vec<String>>, PolicyError> {
        let bytes = env
            .kv_get(&key::vary_record(base))
            .map_err(|e| kv_failure("lookup", e))?;
        Ok(bytes.and_then(|b| key::parse_vary_record(&b)))
    }

    /// Answers from the entry at `entry_key` when it is there, fresh, and not
    /// older than the request's `max-age`.
    fn serve(
        &self,
        env: &dyn Env,
        req: &HttpRequest,
        entry_key: &str,
        max_age: Option<u64>,
    ) -> Result<Option<RequestOutcome>, PolicyError> {
        let Some(bytes) = env.kv_get(entry_key).map_err(|e| kv_failure("lookup", e))? else {
            return Ok(None);
        };
        let Some(entry) = Entry::decode(&bytes) else {
            env.log(Level::Warn, "cache entry unreadable; treated as a miss");
            return Ok(None);
        };
        let now = env.now_millis();
        let age_s = now.saturating_sub(entry.stored_at_ms) / 1000;
        if now >= entry.expires_at_ms || max_age.is_some_and(|m| age_s > m) {
            return Ok(None);
        }
        env.count("cache", "hit", 1);
        let mut resp = if not_modified(req, &entry) {
            HttpResponse {
                status: 304,
                headers: entry
                    .headers
                    .into_iter()
                    .filter(|(n, _)| {
                        NOT_MODIFIED_HEADERS.contains(&n.to_ascii_lowercase().as_str())
                    })
                    .collect::<Vec<_>>()
                    .into(),
                body: None,
            }
        } else {
            HttpResponse {
                status: entry.status,
                headers: entry.headers.into(),
                body: (req.method != "HEAD").then_some(entry.body),
            }
        };
        resp.headers.push("age", &age_s.to_string());
        resp.headers.push(&self.config.status_header, "hit");
        Ok(Some(RequestOutcome::Respond(resp)))
    }

    /// Stores the upstream's response when it may be stored.
    fn store(&self, env: &dyn Env, resp: HttpResponse, p: &Pending) -> Result<(), PolicyError> {
        let now = env.now_millis();
        let (entry, names) = match store::admit(&self.config, p.llm, resp, now) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                env.count("cache", refusal.label(), 1);
                match refusal {
                    Refusal::Unbuffered => env.log(
                        Level::Warn,
                        "response not stored: its body was not buffered; \
                         set response_body = \"buffer\" for the caching policy",
                    ),
                    Refusal::Uncacheable(why) => {
                        env.log(Level::Debug, &format!("response not stored: {why}"));
                    }
                    Refusal::TooLarge => {}
                }
                return Ok(());
            }
        };
        let record = names.join(",");
        let record_ttl = Some(self.config.max_ttl_s.saturating_mul(1000));
        let Some(entry_key) = key::entry(env, &p.base, &names, &p.vary) else {
            // The request phase did not keep a header this response varies on;
            // the record makes the next request keep it, and that one stores.
            env.kv_set(&key::vary_record(&p.base), record.as_bytes(), record_ttl)
                .map_err(|e| kv_failure("store", e))?;
            env.log(
                Level::Debug,
                "response not stored: it varies on a header this request did not keep",
            );
            return Ok(());
        };
        let Some(bytes) = entry.encode() else {
            env.count("cache", "uncacheable", 1);
            return Ok(());
        };
        let ttl_ms = entry.expires_at_ms.saturating_sub(now);
        match env.kv_set(&entry_key, &bytes, Some(ttl_ms)) {
            Ok(()) => {}
            Err(KvError::TooLarge) => {
                env.count("cache", "too_large", 1);
                return Ok(());
            }
            Err(e) => return Err(kv_failure("store", e)),
        }
        env.kv_set(&key::vary_record(&p.base), record.as_bytes(), record_ttl)
            .map_err(|e| kv_failure("store", e))?;
        env.count("cache", "store", 1);
        Ok(())
    }

    /// A streamed answer that may be stored once whole: its status and
    /// headers go into the context for the event calls (the checks on them
    /// are made now, with the body still to come).
    fn will_store_stream(&self, env: &dyn Env, resp: HttpResponse, p: &Pending, now: u64) {
        let probe = HttpResponse {
            body: Some(Vec::new()),
            ..resp.clone()
        };
        if let Err(refusal) = store::admit(&self.config, p.llm, probe, now) {
            env.count("cache", refusal.label(), 1);
            return;
        }
        let head = StreamHead {
            status: resp.status,
            headers: resp.headers.to_vec(),
        };
        if let Ok(text) = serde_json::to_string(&head) {
            env.ctx_set(ctx::STREAM, &text);
        }
    }

    /// Remembers a bypass for the response phase and counts it.
    fn bypass(&self, env: &dyn Env, why: &str) -> Result<RequestOutcome, PolicyError> {
        env.log(Level::Debug, &format!("cache bypassed: {why}"));
        env.count("cache", "bypass", 1);
        remember(env, Plan::Bypass, String::new(), false, BTreeMap::new())?;
        Ok(RequestOutcome::pass())
    }
}

/// What identifies `req` to the cache.
fn scope<'a>(
    req: &'a HttpRequest,
    class: &'static str,
    principal: Option<&'a str>,
    body: Option<&'a str>,
) -> Scope<'a> {
    Scope {
        class,
        authority: &req.authority,
        path: &req.path,
        route: &req.route,
        principal,
        body,
    }
}

fn remember(
    env: &dyn Env,
    plan: Plan,
    base: String,
    llm: bool,
    vary: BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    let pending = Pending {
        plan,
        base,
        llm,
        vary,
    };
    let text = serde_json::to_string(&pending)
        .map_err(|e| PolicyError::Internal(format!("cache: encoding the request's plan: {e}")))?;
    env.ctx_set(ctx::REQUEST, &text);
    Ok(())
}

/// Whether the request's validators match the stored response, so a 304
/// answers it: `If-None-Match` (weak comparison), or when absent
/// `If-Modified-Since` against the stored `Last-Modified`. Only successful
/// stored responses are validated (RFC 9110 §13.2.1).
fn not_modified(req: &HttpRequest, entry: &Entry) -> bool {
    if !(200..300).contains(&entry.status) {
        return false;
    }
    let values = req.headers.values("if-none-match");
    let if_none_match: Vec<&str> = values.iter().map(String::as_str).collect();
    if !if_none_match.is_empty() {
        return none_match(&if_none_match, header(&entry.headers, "etag"));
    }
    let since = req
        .header("if-modified-since")
        .as_deref()
        .and_then(http_date::parse);
    let modified = header(&entry.headers, "last-modified").and_then(http_date::parse);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// A successful unsafe request makes the stored responses for its URL stale
/// (RFC 9111 §4.4): dropping the `Vary` record makes them unreachable.
fn invalidate(
    env: &dyn Env,
    info: &RequestInfo,
    resp: &HttpResponse,
    base: &str,
) -> Result<(), PolicyError> {
    if info.upstream.is_empty() || !(200..400).contains(&resp.status) {
        return Ok(());
    }
    if env
        .kv_delete(&key::vary_record(base))
        .map_err(|e| kv_failure("invalidation", e))?
    {
        env.count("cache", "invalidate", 1);
    }
    Ok(())
}

/// A key/value failure: most likely the `kv` capability is not granted. An
/// error (not a silent bypass) so `on_error` applies and the failure shows in
/// `edgegate_policy_failures_total`.
fn kv_failure(doing: &str, e: KvError) -> PolicyError {
    PolicyError::Internal(format!("cache {doing}: {e}"))
}

#[cfg(test)]
mod tests;
