//! Request rate limits (sliding window) and LLM token quotas, kept in the host's kv store.

use edgegate_policy_core::{Env, KvError};
use serde_json::Value;

use crate::config::{RateLimit, TokenQuota};

/// What a rate-limit check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` requests (or tokens) are left in the window.
    Allow {
        /// Left in the window after this request.
        remaining: u64,
    },
    /// Refused; try again after this many seconds.
    Refuse {
        /// `Retry-After` seconds (at least 1).
        retry_after_s: u64,
    },
}

impl Decision {
    /// Refused for `wait_ms`, as whole `Retry-After` seconds (at least 1).
    fn refuse_for(wait_ms: u64) -> Self {
        Decision::Refuse {
            retry_after_s: wait_ms.div_ceil(1000).max(1),
        }
    }
}

/// Counts one request against `limit` for `scope` (route and principal) with a
/// sliding window: this window's count plus the previous window's, weighted
/// by how much of it still overlaps the last `window_s` seconds.
pub fn check_rate(
    env: &dyn Env,
    scope: &str,
    limit: RateLimit,
    now_ms: u64,
) -> Result<Decision, KvError> {
    let window = limit.window_ms();
    let index = now_ms / window;
    let into = now_ms % window;
    let current_key = format!("rl:{scope}:{index}");
    let previous_key = format!("rl:{scope}:{}", index.wrapping_sub(1));
    let previous = read_count(env, &previous_key)?;
    // Two windows' life: the counter is still read as "previous" in the next window.
    let count = env.kv_incr(&current_key, 1, Some(2 * window))?.max(0) as u64;
    let weight = (window - into) as f64 / window as f64;
    let estimate = count as f64 + previous as f64 * weight;
    let allowed = u64::from(limit.requests);
    if estimate <= allowed as f64 {
        return Ok(Decision::Allow {
            remaining: allowed.saturating_sub(estimate.ceil() as u64),
        });
    }
    // A refused request does not count: a client that keeps retrying gets in
    // as soon as the window allows, not never.
    env.kv_incr(&current_key, -1, None)?;
    let current = count.saturating_sub(1);
    let wait_ms = if current >= allowed || previous == 0 {
        window - into
    } else {
        // When does previous * (window - into - t) / window + current + 1 fall to `allowed`?
        let room = (allowed - current).saturating_sub(1) as f64;
        let t = (window - into) as f64 - room * window as f64 / previous as f64;
        t.clamp(1.0, (window - into) as f64) as u64
    };
    Ok(Decision::refuse_for(wait_ms))
}

fn read_count(env: &dyn Env, key: &str) -> Result<u64, KvError> {
    Ok(env
        .kv_get(key)?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok())
        .map_or(0, |n| n.max(0) as u64))
}

/// The kv key of a principal's token counter for the window containing `now_ms`.
pub fn quota_key(principal: &str, quota: TokenQuota, now_ms: u64) -> String {
    format!("tq:{principal}:{}", now_ms / quota.window_ms())
}

/// Tokens `principal` has used in the window of `now_ms`.
pub fn used(
    env: &dyn Env,
    principal: &str,
    quota: TokenQuota,
    now_ms: u64,
) -> Result<u64, KvError> {
    read_count(env, &quota_key(principal, quota, now_ms))
}

/// Checks that `principal` may spend about `estimate` more tokens.
pub fn check_quota(
    env: &dyn Env,
    principal: &str,
    quota: TokenQuota,
    estimate: u64,
    now_ms: u64,
) -> Result<Decision, KvError> {
    let used = used(env, principal, quota, now_ms)?;
    if used >= quota.tokens || used.saturating_add(estimate) > quota.tokens {
        let window = quota.window_ms();
        return Ok(Decision::refuse_for(window - now_ms % window));
    }
    Ok(Decision::Allow {
        remaining: quota.tokens - used,
    })
}

/// Adds `tokens` to the principal's counter in the window of `now_ms`.
pub fn spend(
    env: &dyn Env,
    principal: &str,
    quota: TokenQuota,
    tokens: u64,
    now_ms: u64,
) -> Result<u64, KvError> {
    let delta = i64::try_from(tokens).unwrap_or(i64::MAX);
    let key = quota_key(principal, quota, now_ms);
    let total = env.kv_incr(&key, delta, Some(quota.window_ms()))?;
    Ok(total.max(0) as u64)
}

/// Rough token count of text: about four bytes per token for English, the
/// usual rule of thumb when no tokenizer is at hand.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The estimated tokens of an OpenAI-style request body, from one read of
/// it: (with the answer reserve, of the prompt alone). The prompt is the
/// text of `messages[].content` (or `prompt`, or `input`); the reserve is
/// `max_completion_tokens` or `max_tokens` when the client sets one. A
/// body that is not JSON is estimated from its length. The prompt estimate
/// is what a streamed answer without `usage` is charged for its prompt.
pub fn estimates(body: &[u8]) -> (u64, u64) {
    match edgegate_policy_core::llm::chat_request(body) {
        Some(r) => {
            let prompt = estimate_tokens(r.prompt_bytes);
            (prompt.saturating_add(r.reserve), prompt)
        }
        None => {
            let all = estimate_tokens(body.len());
            (all, all)
        }
    }
}

/// Tokens an upstream answer used: `usage.total_tokens` (or prompt +
/// completion) from a JSON body, or from the last SSE chunk that carries
/// `usage`; `None` when the answer does not say.
pub fn usage_of(body: &[u8]) -> Option<u64> {
    use edgegate_policy_core::llm::{usage_from_value, usage_tokens};
    if let Ok(tokens) = usage_tokens(body) {
        return tokens;
    }
    // Streaming (text/event-stream): `data: {...}` lines; usage comes last when asked for.
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find_map(|v| usage_from_value(&v))
}
