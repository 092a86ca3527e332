//! The routing policy's logic: which upstream cluster a request goes to, and
//! what the host does when it fails. Host-neutral: it reads the health view
//! and the context through [`Env`] and returns a [`RouteDecision`]; the host
//! executes retries (with backoff and jitter), fallbacks and circuit breaking.
//!
//! Order of decisions: LLM model routing (when `llm` is configured and the
//! request is an OpenAI-style JSON call) → the first matching `rules` entry →
//! the weighted `split` → the route's own upstream. Path and header rewrites
//! apply to every request.

mod config;

use std::collections::BTreeMap;

use edgegate_policy_core::{
    json_error, Circuit, Env, HttpRequest, PolicyError, PolicyLogic, RequestChanges,
    RequestOutcome, RouteDecision,
};

use config::{HashOn, LlmConfig, Target};
pub use config::{Match, RoutingConfig, Strategy};

/// Most clusters in one decision (the host caps fallbacks too).
const MAX_CANDIDATES: usize = 5;

/// Context keys this policy sets.
pub mod ctx {
    pub use edgegate_policy_core::keys::{ROUTE_MODEL as MODEL, ROUTE_UPSTREAM as UPSTREAM};
}

/// The routing policy.
pub struct Routing {
    config: RoutingConfig,
}

impl PolicyLogic for Routing {
    const WANTS_RESPONSE: bool = false;

    fn from_config(json: &str) -> Result<Self, PolicyError> {
        Ok(Routing {
            config: RoutingConfig::parse(json)?,
        })
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let changes = self.rewrites(&req);
        if let Some(llm) = &self.config.llm {
            if let Some(model) = llm_model(&req) {
                return Ok(self.route_model(env, llm, &model, changes));
            }
        }
        let chosen = self
            .config
            .rules
            .iter()
            .find(|r| r.when.matches(&req))
            .map(|r| r.upstream.clone())
            .or_else(|| self.split(env, &req));
        let Some(upstream) = chosen else {
            return Ok(RequestOutcome::Continue(changes));
        };
        env.ctx_set(ctx::UPSTREAM, &upstream);
        let decision = RouteDecision {
            upstream,
            fallbacks: self.config.fallbacks.clone(),
            retries: self.config.retries,
            backoff_ms: self.config.backoff_ms,
        };
        Ok(RequestOutcome::Route(decision, changes))
    }
}

impl Routing {
    /// Path rewrite (first matching prefix) and header changes.
    fn rewrites(&self, req: &HttpRequest) -> RequestChanges {
        let mut changes = RequestChanges::default();
        if let Some(r) = self
            .config
            .rewrite
            .iter()
            .find(|r| req.path.starts_with(&r.prefix))
        {
            let mut path = format!("{}{}", r.replace, &req.path[r.prefix.len()..]);
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            changes.path = Some(path);
        }
        for (name, value) in &self.config.request_headers.set {
            changes.set_header(name, value);
        }
        for name in &self.config.request_headers.remove {
            changes.remove_header(name);
        }
        changes
    }

    /// Weighted choice among `split`: sticky (rendezvous hashing on the
    /// configured key) or random; unhealthy clusters only when all are.
    fn split(&self, env: &dyn Env, req: &HttpRequest) -> Option<String> {
        let split = &self.config.split;
        if split.is_empty() {
            return None;
        }
        let healthy: Vec<&Target> = if self.config.health_aware {
            split.iter().filter(|t| usable(env, &t.upstream)).collect()
        } else {
            split.iter().collect()
        };
        let pool = if healthy.is_empty() {
            split.iter().collect()
        } else {
            healthy
        };
        let key = self
            .config
            .hash_on
            .as_ref()
            .and_then(|h| hash_key(env, h, req));
        let chosen = match key {
            Some(key) => rendezvous(&pool, &key),
            None => {
                let total: u64 = pool.iter().map(|t| u64::from(t.weight)).sum();
                let mut ticket = env.random_u64() % total.max(1);
                pool.iter().copied().find(|t| {
                    let w = u64::from(t.weight);
                    if ticket < w {
                        true
                    } else {
                        ticket -= w;
                        false
                    }
                })
            }
        };
        chosen.map(|t| t.upstream.clone())
    }

    /// Orders the providers of `model` by the strategy; unhealthy ones last.
    fn route_model(
        &self,
        env: &dyn Env,
        llm: &LlmConfig,
        model: &str,
        changes: RequestChanges,
    ) -> RequestOutcome {
        let Some(providers) = llm.models.get(model).or_else(|| llm.models.get("*")) else {
            let known: Vec<&str> = llm.models.keys().map(String::as_str).collect();
            return RequestOutcome::Respond(json_error(
                400,
                "unknown_model",
                &format!(
                    "model `{model}` is not served here; models: {}",
                    known.join(", ")
                ),
            ));
        };
        env.ctx_set(ctx::MODEL, model);
        let mut order: Vec<(usize, &String)> = providers.iter().enumerate().collect();
        match llm.strategy {
            Strategy::Ordered => {}
            Strategy::Cost => order.sort_by(|a, b| {
                let cost = |p: &String| llm.cost.get(p).copied().unwrap_or(f64::MAX);
                cost(a.1).total_cmp(&cost(b.1)).then(a.0.cmp(&b.0))
            }),
            Strategy::Latency => {
                let latency: BTreeMap<&String, u64> = providers
                    .iter()
                    .map(|p| (p, best_latency(env, p)))
                    .collect();
                order.sort_by_key(|(i, p)| (latency[p], *i));
            }
        }
        // Stable: within healthy and unhealthy the strategy's order stays.
        order.sort_by_key(|(_, p)| !usable(env, p));
        let mut clusters = order.into_iter().map(|(_, p)| p.clone());
        let upstream = clusters.next().unwrap_or_default();
        env.ctx_set(ctx::UPSTREAM, &upstream);
        RequestOutcome::Route(
            RouteDecision {
                upstream,
                fallbacks: clusters.take(MAX_CANDIDATES - 1).collect(),
                retries: llm.retries,
                backoff_ms: llm.backoff_ms,
            },
            changes,
        )
    }
}

/// The `model` of an OpenAI-style JSON request body.
fn llm_model(req: &HttpRequest) -> Option<String> {
    if req.method != "POST" {
        return None;
    }
    edgegate_policy_core::llm::chat_request(req.body.as_deref()?)?.model
}

/// Whether any endpoint of cluster `name` takes traffic. A cluster the health
/// view does not know (no capability, other host) counts as usable.
fn usable(env: &dyn Env, name: &str) -> bool {
    let endpoints = env.upstream_health(name);
    endpoints.is_empty()
        || endpoints
            .iter()
            .any(|e| e.healthy && e.circuit != Circuit::Open)
}

/// Lowest moving-average latency among the usable endpoints; 0 (try first)
/// when nothing was measured yet, so new providers get traffic.
fn best_latency(env: &dyn Env, name: &str) -> u64 {
    env.upstream_health(name)
        .iter()
        .filter(|e| e.healthy)
        .map(|e| e.ewma_latency_us)
        .min()
        .unwrap_or(0)
}

fn hash_key(env: &dyn Env, on: &HashOn, req: &HttpRequest) -> Option<String> {
    match on {
        HashOn::Header(name) => req.header(name),
        HashOn::Cookie(name) => cookie(req, name),
        HashOn::Principal => env.ctx_get(edgegate_policy_core::keys::PRINCIPAL),
        HashOn::ClientIp => Some(req.client_ip.clone()),
    }
}

/// The value of cookie `name` from the `Cookie` headers.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers
        .values("cookie")
        .iter()
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_string())
        })
}

/// Weighted rendezvous hashing: each target scores `-ln(u) / weight` with `u`
/// from a hash of key and target; the lowest wins. The same key keeps its
/// target, and removing one target only moves the keys that were on it.
fn rendezvous<'a>(pool: &[&'a Target], key: &str) -> Option<&'a Target> {
    pool.iter()
        .copied()
        .min_by(|a, b| score(a, key).total_cmp(&score(b, key)))
}

fn score(t: &Target, key: &str) -> f64 {
    let h = fnv1a(
        key.as_bytes(),
        fnv1a(t.upstream.as_bytes(), 0xcbf2_9ce4_8422_2325),
    );
    // 53 random bits → (0, 1]
    let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    -u.ln() / f64::from(t.weight)
}

/// FNV-1a, chained through `seed`: stable across builds and hosts, unlike std's hasher.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalize (murmur3 fmix64) so similar keys spread over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests;
