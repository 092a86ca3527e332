//! The auth policy's logic: who is calling (API key, JWT, HTTP Basic, or a
//! client certificate the gateway verified), may
//! they use this route (roles), and are they within their request rate and
//! LLM token quota. Host-neutral: everything outside goes through [`Env`].
//!
//! Every refusal is a JSON error: 401 (with `WWW-Authenticate`) when the
//! credentials are missing or wrong, without saying which part was wrong; 403
//! when the principal lacks a role; 429 with `Retry-After` over a limit.

pub mod config;
pub mod jwt;
pub mod limits;
pub mod usage;

use edgegate_policy_core::{
    base64_decode, hex, json_error, BodyModes, BodyState, EndReason, Env, EventOutcome,
    HttpRequest, HttpResponse, Level, PolicyError, PolicyLogic, RequestChanges, RequestInfo,
    RequestOutcome, ResponseChanges, ResponseOutcome, StreamItem,
};

use crate::config::{AuthConfig, VerificationKey};
use crate::limits::Decision;

/// Context keys this policy sets for the policies after it.
pub mod ctx {
    pub use edgegate_policy_core::keys::{PRINCIPAL, ROLES, TENANT};
    /// `api_key`, `jwt`, `basic`, `mtls` or `anonymous`.
    pub const METHOD: &str = "auth.method";
    /// Set when the token quota applies: the request's estimated tokens.
    pub const QUOTA_ESTIMATE: &str = "auth.quota_estimate";
    /// Set with it: the estimated prompt tokens alone (no answer reserve).
    pub const PROMPT_ESTIMATE: &str = "auth.prompt_estimate";
    /// Set in the response call when the answer streams: charge at its end.
    pub const STREAM_CHARGE: &str = "auth.stream_charge";
    /// Set by the gateway (read-only): the verified client certificate.
    pub use edgegate_policy_core::keys::tls::{
        CLIENT_DNS as TLS_CLIENT_DNS, CLIENT_SPIFFE as TLS_CLIENT_SPIFFE,
        CLIENT_SUBJECT as TLS_CLIENT_SUBJECT,
    };
}

/// Response header with the tokens left in the principal's quota window.
pub const TOKENS_REMAINING_HEADER: &str = "x-ratelimit-remaining-tokens";

/// The auth policy.
pub struct Auth {
    config: AuthConfig,
    jwt_keys: Vec<VerificationKey>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id, subject or user name.
    pub id: String,
    /// Tenant, when known.
    pub tenant: Option<String>,
    /// Roles or scopes.
    pub roles: Vec<String>,
    /// How it authenticated.
    pub method: &'static str,
}

/// Why a request is not authenticated; logged at debug, never shown to the client.
#[derive(Debug)]
enum Unauthenticated {
    Missing,
    Invalid(&'static str),
}

impl Unauthenticated {
    fn reason(&self) -> &'static str {
        match self {
            Unauthenticated::Missing => "no credentials",
            Unauthenticated::Invalid(why) => why,
        }
    }
}

impl PolicyLogic for Auth {
    const WANTS_RESPONSE: bool = true;
    const RESPONSE_BODY: BodyModes = BodyModes::BUFFER_OR_SSE;

    fn from_config(json: &str) -> Result<Self, PolicyError> {
        let config = AuthConfig::parse(json)?;
        let jwt_keys = match &config.jwt {
            Some(j) => j.keys()?,
            None => Vec::new(),
        };
        Ok(Auth { config, jwt_keys })
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let principal = match self.authenticate(env, &req) {
            Ok(p) => p,
            Err(why) => {
                env.log(
                    Level::Debug,
                    &format!("unauthenticated request: {}", why.reason()),
                );
                env.count("auth", "unauthenticated", 1);
                return Ok(RequestOutcome::Respond(self.unauthorized()));
            }
        };
        if !self.allowed(&principal, &req.route) {
            env.count("auth", "forbidden", 1);
            return Ok(RequestOutcome::Respond(json_error(
                403,
                "forbidden",
                "the caller may not use this route",
            )));
        }
        if let Some(limit) = self.rate_limit(&req.route) {
            let scope = format!("{}:{}", req.route, principal.id);
            if let Decision::Refuse { retry_after_s } =
                limits::check_rate(env, &scope, limit, env.now_millis())?
            {
                env.count("auth", "rate_limited", 1);
                return Ok(RequestOutcome::Respond(too_many(
                    "rate_limited",
                    "request rate limit reached",
                    retry_after_s,
                )));
            }
        }
        if let Some(quota) = self.config.token_quota.filter(|_| self.is_llm(&req)) {
            let (estimate, prompt) = req.body.as_deref().map_or((0, 0), limits::estimates);
            let now = env.now_millis();
            if let Decision::Refuse { retry_after_s } =
                limits::check_quota(env, &principal.id, quota, estimate, now)?
            {
                env.count("auth", "quota_exceeded", 1);
                return Ok(RequestOutcome::Respond(too_many(
                    "token_quota_exceeded",
                    "token quota for this window is used up",
                    retry_after_s,
                )));
            }
            env.ctx_set(ctx::QUOTA_ESTIMATE, &estimate.to_string());
            env.ctx_set(ctx::PROMPT_ESTIMATE, &prompt.to_string());
        }

        env.ctx_set(ctx::PRINCIPAL, &principal.id);
        env.ctx_set(ctx::METHOD, principal.method);
        env.ctx_set(ctx::ROLES, &principal.roles.join(","));
        let mut changes = RequestChanges::default();
        // Only this policy speaks for the principal: drop what the client claims.
        changes.remove_header(&self.config.tenant_header);
        changes.set_header(&self.config.principal_header, &principal.id);
        if let Some(t) = &principal.tenant {
            env.ctx_set(ctx::TENANT, t);
            changes.set_header(&self.config.tenant_header, t);
        }
        if self.config.strip_credentials {
            self.strip(&req, &principal, &mut changes);
        }
        Ok(RequestOutcome::Continue(changes))
    }

    fn on_response(
        &self,
        env: &dyn Env,
        info: &RequestInfo,
        resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        let (Some(quota), Some(estimate), Some(principal)) = (
            self.config.token_quota,
            env.ctx_get(ctx::QUOTA_ESTIMATE),
            env.ctx_get(ctx::PRINCIPAL),
        ) else {
            return Ok(ResponseOutcome::pass());
        };
        let now = env.now_millis();
        // No upstream answered (a policy after this one did: a cache hit, a
        // block): no provider was called, so nothing is charged.
        if info.upstream.is_empty() {
            let used = limits::used(env, &principal, quota, now)?;
            return Ok(remaining(quota, used));
        }
        // A streamed answer is charged when it ends (its events count the
        // tokens); the header says what was left before it.
        if info.streamed_body {
            env.ctx_set(ctx::STREAM_CHARGE, "1");
            let used = limits::used(env, &principal, quota, now)?;
            return Ok(remaining(quota, used));
        }
        // Count what the upstream says it used; without `usage` (streaming
        // without include_usage, or no body buffered), charge the estimate.
        let tokens = match resp.body.as_deref() {
            Some(body) => limits::usage_of(body).unwrap_or_else(|| {
                estimate.parse::<u64>().unwrap_or(0) + limits::estimate_tokens(body.len())
            }),
            None => estimate.parse().unwrap_or(0),
        };
        if resp.status >= 400 && tokens == 0 {
            return Ok(ResponseOutcome::pass());
        }
        let used = limits::spend(env, &principal, quota, tokens, now)?;
        env.count("tokens", "total", tokens);
        Ok(remaining(quota, used))
    }

    fn on_response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        _carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        if env.ctx_get(ctx::STREAM_CHARGE).is_none() {
            return Ok(EventOutcome::Pass);
        }
        let usage = state.get::<usage::StreamUsage>();
        let reason = match item {
            StreamItem::Event(e) => {
                usage.observe(&e);
                return Ok(EventOutcome::Pass);
            }
            StreamItem::End(reason) => reason,
        };
        let (Some(quota), Some(principal)) = (self.config.token_quota, env.ctx_get(ctx::PRINCIPAL))
        else {
            return Ok(EventOutcome::Pass);
        };
        let prompt = env
            .ctx_get(ctx::PROMPT_ESTIMATE)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let tokens = usage.tokens(prompt);
        limits::spend(env, &principal, quota, tokens, env.now_millis())?;
        env.count("tokens", "total", tokens);
        let how = match (reason, usage.stated()) {
            (EndReason::ClientGone, _) => "client_gone",
            (_, true) => "stated",
            (_, false) => "estimated",
        };
        env.count("stream_charges", how, 1);
        Ok(EventOutcome::Pass)
    }
}

/// The response change that tells the client how many tokens are left.
fn remaining(quota: config::TokenQuota, used: u64) -> ResponseOutcome {
    let mut changes = ResponseChanges::default();
    changes.headers.push(edgegate_policy_core::HeaderOp::Set(
        TOKENS_REMAINING_HEADER.into(),
        quota.tokens.saturating_sub(used).to_string(),
    ));
    ResponseOutcome::Continue(changes)
}

impl Auth {
    fn authenticate(&self, env: &dyn Env, req: &HttpRequest) -> Result<Principal, Unauthenticated> {
        // A client certificate the gateway verified outranks what the
        // request's headers claim; one not listed falls through to them.
        if let Some(p) = self.client_cert(env) {
            return Ok(p);
        }
        let authorization = req.header("authorization");
        let authorization = authorization.as_deref().map(str::trim);
        let bearer = authorization.and_then(|a| strip_scheme(a, "bearer"));
        if let Some(keys) = &self.config.api_keys {
            let presented = req
                .header(&keys.header)
                .or_else(|| keys.query.as_deref().and_then(|q| req.query_param(q)))
                .or_else(|| {
                    bearer
                        .filter(|b| {
                            keys.bearer && !(self.config.jwt.is_some() && looks_like_jwt(b))
                        })
                        .map(String::from)
                });
            if let Some(key) = presented {
                let digest = hex(&env.sha256(key.as_bytes()));
                return keys
                    .keys
                    .iter()
                    .find(|k| constant_time_eq(k.sha256.as_bytes(), digest.as_bytes()))
                    .map(|k| Principal {
                        id: k.id.clone(),
                        tenant: k.tenant.clone(),
                        roles: k.roles.clone(),
                        method: "api_key",
                    })
                    .ok_or(Unauthenticated::Invalid("unknown api key"));
            }
        }
        if let (Some(jwt), Some(token)) = (&self.config.jwt, bearer) {
            let now_s = env.now_millis() / 1000;
            return jwt::verify(env, jwt, &self.jwt_keys, token, now_s)
                .map(|c| Principal {
                    id: c.principal,
                    tenant: c.tenant,
                    roles: c.roles,
                    method: "jwt",
                })
                .map_err(|why| {
                    env.log(Level::Debug, &format!("jwt refused: {why:?}"));
                    Unauthenticated::Invalid("jwt refused")
                });
        }
        if let (Some(basic), Some(encoded)) = (
            &self.config.basic,
            authorization.and_then(|a| strip_scheme(a, "basic")),
        ) {
            let decoded = base64_decode(encoded)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Unauthenticated::Invalid(
                    "basic credentials not base64 utf-8",
                ))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or(Unauthenticated::Invalid("basic credentials without `:`"))?;
            let digest = hex(&env.sha256(password.as_bytes()));
            return basic
                .users
                .iter()
                .find(|u| {
                    u.user == user && constant_time_eq(u.sha256.as_bytes(), digest.as_bytes())
                })
                .map(|u| Principal {
                    id: u.user.clone(),
                    tenant: u.tenant.clone(),
                    roles: u.roles.clone(),
                    method: "basic",
                })
                .ok_or(Unauthenticated::Invalid("basic user or password wrong"));
        }
        if authorization.is_some() {
            return Err(Unauthenticated::Invalid("unsupported authorization scheme"));
        }
        if self.config.allow_anonymous {
            return Ok(Principal {
                id: "anonymous".into(),
                tenant: None,
                roles: Vec::new(),
                method: "anonymous",
            });
        }
        Err(Unauthenticated::Missing)
    }

    /// The principal of the connection's verified client certificate, when
    /// `client_certs` lists it (context keys the gateway sets: docs/tls.md).
    fn client_cert(&self, env: &dyn Env) -> Option<Principal> {
        if self.config.client_certs.is_empty() {
            return None;
        }
        let subject = env.ctx_get(ctx::TLS_CLIENT_SUBJECT)?;
        let spiffe = env.ctx_get(ctx::TLS_CLIENT_SPIFFE);
        let dns = env.ctx_get(ctx::TLS_CLIENT_DNS).unwrap_or_default();
        let dns: Vec<&str> = dns.split(',').filter(|d| !d.is_empty()).collect();
        self.config.client_certs.iter().find_map(|c| {
            let matched = if let Some(want) = &c.spiffe {
                (spiffe.as_deref() == Some(want.as_str())).then(|| want.clone())
            } else if let Some(want) = &c.dns {
                dns.contains(&want.as_str()).then(|| want.clone())
            } else {
                c.subject.as_ref().filter(|want| **want == subject).cloned()
            }?;
            Some(Principal {
                id: c.principal.clone().unwrap_or(matched),
                tenant: c.tenant.clone(),
                roles: c.roles.clone(),
                method: "mtls",
            })
        })
    }

    fn allowed(&self, principal: &Principal, route: &str) -> bool {
        let required = self
            .config
            .access
            .get(route)
            .or_else(|| self.config.access.get("*"));
        match required {
            None => true,
            Some(roles) => roles.iter().any(|r| principal.roles.contains(r)),
        }
    }

    fn rate_limit(&self, route: &str) -> Option<config::RateLimit> {
        self.config
            .rate_limits
            .get(route)
            .or_else(|| self.config.rate_limits.get("*"))
            .copied()
    }

    fn is_llm(&self, req: &HttpRequest) -> bool {
        let path = req.path_only();
        self.config.llm_paths.iter().any(|p| p == path)
    }

    fn unauthorized(&self) -> HttpResponse {
        let mut resp = json_error(401, "unauthorized", "missing or invalid credentials");
        if let Some(b) = &self.config.basic {
            resp.headers.push(
                "www-authenticate",
                &format!("Basic realm=\"{}\", charset=\"UTF-8\"", b.realm),
            );
        }
        if self.config.jwt.is_some() || self.config.api_keys.as_ref().is_some_and(|k| k.bearer) {
            resp.headers
                .push("www-authenticate", "Bearer realm=\"edgegate\"");
        }
        resp
    }

    /// Removes the credential the principal used, so the upstream never sees it.
    fn strip(&self, req: &HttpRequest, principal: &Principal, changes: &mut RequestChanges) {
        match principal.method {
            "api_key" => {
                if let Some(keys) = &self.config.api_keys {
                    changes.remove_header(&keys.header);
                    if keys.bearer {
                        changes.remove_header("authorization");
                    }
                    if let Some(q) = &keys.query {
                        if let Some(path) = without_query_param(&req.path, q) {
                            changes.path = Some(path);
                        }
                    }
                }
            }
            "jwt" | "basic" => {
                changes.remove_header("authorization");
            }
            _ => {}
        }
    }
}

fn too_many(code: &str, message: &str, retry_after_s: u64) -> HttpResponse {
    let mut resp = json_error(429, code, message);
    resp.headers.push("retry-after", &retry_after_s.to_string());
    resp
}

/// The credentials after `scheme ` (case-insensitive scheme).
fn strip_scheme<'a>(authorization: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = authorization.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `path` without query parameter `name`; `None` when it has none.
fn without_query_param(path: &str, name: &str) -> Option<String> {
    let (p, query) = path.split_once('?')?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    if kept.len() == query.split('&').count() {
        return None;
    }
    Some(if kept.is_empty() {
        p.to_string()
    } else {
        format!("{p}?{}", kept.join("&"))
    })
}

#[cfg(test)]
mod tests;
