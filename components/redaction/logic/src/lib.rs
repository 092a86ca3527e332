//! The redaction policy's logic: finds PII and secrets in request bodies
//! (prompts), response bodies and chosen headers, and masks them, replaces
//! them with stable pseudonyms, or blocks the message. JSON bodies are
//! redacted inside string values only, so they stay valid JSON with every
//! other byte unchanged; SSE bodies line by line; anything else as text.
//! Host-neutral: hashing and metrics go through [`Env`]; matched values are
//! never logged.

mod config;
mod detect;
mod json;
mod scan;
mod stream;

pub use scan::Lexed;

use std::cell::OnceCell;

use edgegate_policy_core::{
    hex, json_error, BodyModes, BodyState, Chunk, ChunkOutcome, Env, EventOutcome, HeaderOp,
    HttpRequest, HttpResponse, PolicyError, PolicyLogic, RequestChanges, RequestInfo,
    RequestOutcome, ResponseChanges, ResponseOutcome, StreamItem,
};
use regex::Regex;

pub use config::{Mode, RedactionConfig, Rule, RuleKind};
pub use detect::Detector;

/// Largest compiled size of one custom pattern.
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// The redaction policy.
pub struct Redaction {
    config: RedactionConfig,
    rules: Vec<Rule>,
    /// Each custom rule's regex, compiled on first use: a fresh instance per
    /// call must not pay for rules the text never needs.
    compiled: Vec<OnceCell<Regex>>,
}

/// What scanning one message found: a body (`Vec<u8>`, the default) or,
/// inside the policy, a piece of text (`String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan<T = Vec<u8>> {
    /// Nothing to change.
    Clean,
    /// The redacted message.
    Changed(T),
    /// A `block` rule matched: its name.
    Blocked(String),
}

/// Redactions per rule during one call, reported as metrics at its end.
struct Counts(Vec<u64>);

impl PolicyLogic for Redaction {
    const WANTS_RESPONSE: bool = true;
    const RESPONSE_BODY: BodyModes = BodyModes::ALL;

    fn from_config(json: &str) -> Result<Self, PolicyError> {
        let (config, rules) = RedactionConfig::parse(json)?;
        let compiled = rules.iter().map(|_| OnceCell::new()).collect();
        Ok(Redaction {
            config,
            rules,
            compiled,
        })
    }

    fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
        let mut counts = Counts(vec![0; self.rules.len()]);
        let mut changes = RequestChanges::default();
        for name in &self.config.headers {
            // `Set` replaces every value of a header: when one value changes,
            // all of them are written back, in order.
            let mut values = Vec::new();
            let mut changed = false;
            for value in req.headers.values(name) {
                match self.scan_text(env, &value, &mut counts)? {
                    Scan::Clean => values.push(value),
                    Scan::Changed(v) => {
                        changed = true;
                        values.push(v);
                    }
                    Scan::Blocked(rule) => return Ok(self.block_request(env, &rule)),
                }
            }
            if changed {
                for (k, value) in values.into_iter().enumerate() {
                    changes.headers.push(match k {
                        0 => HeaderOp::Set(name.clone(), value),
                        _ => HeaderOp::Append(name.clone(), value),
                    });
                }
            }
        }
        if let (true, Some(body)) = (self.config.request, &req.body) {
            match self.scan_body(
                env,
                req.header("content-type").as_deref(),
                body,
                &mut counts,
            )? {
                Scan::Clean => {}
                Scan::Changed(b) => changes.body = Some(b),
                Scan::Blocked(rule) => return Ok(self.block_request(env, &rule)),
            }
        }
        self.report(env, &counts);
        Ok(RequestOutcome::Continue(changes))
    }

    fn on_response(
        &self,
        env: &dyn Env,
        _info: &RequestInfo,
        resp: HttpResponse,
    ) -> Result<ResponseOutcome, PolicyError> {
        let (true, Some(body)) = (self.config.response, &resp.body) else {
            return Ok(ResponseOutcome::pass());
        };
        let mut counts = Counts(vec![0; self.rules.len()]);
        let outcome = match self.scan_body(
            env,
            resp.header("content-type").as_deref(),
            body,
            &mut counts,
        )? {
            Scan::Clean => ResponseOutcome::pass(),
            Scan::Changed(b) => ResponseOutcome::Continue(ResponseChanges {
                body: Some(b),
                ..ResponseChanges::default()
            }),
            Scan::Blocked(rule) => {
                env.count("blocked", &rule, 1);
                let mut resp = json_error(
                    502,
                    "response_blocked",
                    &format!("response blocked by redaction rule `{rule}`"),
                );
                resp.body = Some(with_rule(&resp, &rule));
                return Ok(ResponseOutcome::Replace(resp));
            }
        };
        self.report(env, &counts);
        Ok(outcome)
    }

    fn on_response_chunk(
        &self,
        env: &dyn Env,
        _state: &mut BodyState,
        chunk: Chunk,
    ) -> Result<ChunkOutcome, PolicyError> {
        if !self.config.response {
            return Ok(ChunkOutcome::Pass);
        }
        self.response_chunk(env, chunk)
    }

    fn on_response_event(
        &self,
        env: &dyn Env,
        state: &mut BodyState,
        item: StreamItem,
        carry: String,
    ) -> Result<EventOutcome, PolicyError> {
        if !self.config.response {
            return Ok(EventOutcome::Pass);
        }
        self.response_event(env, state, item, carry)
    }
}

impl Redaction {
    /// Scans a body: JSON (by content type, or by shape when it parses),
    /// SSE line by line, else text. Bodies that are not UTF-8 are left alone.
    pub fn redact_body(
        &self,
        env: &dyn Env,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Scan, PolicyError> {
        let mut counts = Counts(vec![0; self.rules.len()]);
        self.scan_body(env, content_type, body, &mut counts)
    }

    fn scan_body(
        &self,
        env: &dyn Env,
        content_type: Option<&str>,
        body: &[u8],
        counts: &mut Counts,
    ) -> Result<Scan, PolicyError> {
        let Ok(text) = std::str::from_utf8(body) else {
            return Ok(Scan::Clean);
        };
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let json_type = ct.contains("json");
        let json_shape = matches!(text.trim_start().bytes().next(), Some(b'{' | b'['));
        let scanned = if ct.starts_with("text/event-stream") {
            self.scan_sse(env, text, counts)?
        } else if (json_type || json_shape) && json::is_valid(text) {
            json::redact_strings(text, |s| self.scan_text(env, s, counts))?
        } else {
            self.scan_text(env, text, counts)?
        };
        Ok(scanned.map(String::into_bytes))
    }

    fn scan_sse(
        &self,
        env: &dyn Env,
        text: &str,
        counts: &mut Counts,
    ) -> Result<Scan<String>, PolicyError> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        for line in text.split_inclusive('\n') {
            let (content, newline) = match line.strip_suffix('\n') {
                Some(c) => (c, "\n"),
                None => (line, ""),
            };
            let scanned = match content.strip_prefix("data:") {
                Some(data) if json::is_valid(data.trim()) => {
                    json::redact_strings(data, |s| self.scan_text(env, s, counts))?
                        .map(|d| format!("data:{d}"))
                }
                _ => self.scan_text(env, content, counts)?,
            };
            match scanned {
                Scan::Clean => out.push_str(content),
                Scan::Changed(c) => {
                    changed = true;
                    out.push_str(&c);
                }
                Scan::Blocked(rule) => return Ok(Scan::Blocked(rule)),
            }
            out.push_str(newline);
        }
        Ok(if changed {
            Scan::Changed(out)
        } else {
            Scan::Clean
        })
    }

    /// Finds every rule's matches in `text` and blocks when a `block` rule
    /// matched anywhere (even inside another rule's match: masking must not
    /// hide what should stop the message); otherwise resolves overlaps
    /// (earliest start wins, then the longer match) and rewrites.
    fn scan_text(
        &self,
        env: &dyn Env,
        text: &str,
        counts: &mut Counts,
    ) -> Result<Scan<String>, PolicyError> {
        let found = self.matches(text)?;
        if found.is_empty() {
            return Ok(Scan::Clean);
        }
        if let Some(&(_, _, i)) = found.iter().find(|m| self.rules[m.2].mode == Mode::Block) {
            return Ok(Scan::Blocked(self.rules[i].name.clone()));
        }
        Ok(Scan::Changed(self.rewrite(env, text, &found, counts)))
    }

    /// Every rule's matches in `text` as `(start, end, rule)`, by start and
    /// then longest first; overlapping ones included.
    fn matches(&self, text: &str) -> Result<Vec<(usize, usize, usize)>, PolicyError> {
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        let mut spans = Vec::new();
        // One pass shared by the built-in scanners, made when the first needs it.
        let lexed = OnceCell::new();
        for (i, rule) in self.rules.iter().enumerate() {
            spans.clear();
            match rule.kind {
                RuleKind::Builtin(d) => {
                    let lexed = lexed.get_or_init(|| Lexed::of(text));
                    if d.may_match(lexed) {
                        d.find(text, lexed, &mut spans);
                    }
                }
                RuleKind::Pattern(_) => {
                    spans.extend(self.regex(i)?.find_iter(text).map(|m| (m.start(), m.end())))
                }
            }
            found.extend(spans.iter().map(|&(s, e)| (s, e, i)));
        }
        found.sort_by_key(|&(start, end, i)| (start, std::cmp::Reverse(end), i));
        Ok(found)
    }

    /// `text` with `found` (sorted, non-block) rewritten; a match that
    /// overlaps one taken before it is skipped.
    fn rewrite(
        &self,
        env: &dyn Env,
        text: &str,
        found: &[(usize, usize, usize)],
        counts: &mut Counts,
    ) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for &(start, end, i) in found {
            if start < at {
                continue; // overlaps a match already taken
            }
            let rule = &self.rules[i];
            counts.0[i] += 1;
            out.push_str(&text[at..start]);
            match rule.mode {
                Mode::Hash => {
                    out.push('[');
                    out.push_str(&rule.name);
                    out.push(':');
                    out.push_str(&self.pseudonym(env, &text[start..end]));
                    out.push(']');
                }
                _ => {
                    out.push_str("[REDACTED:");
                    out.push_str(&rule.name);
                    out.push(']');
                }
            }
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    fn regex(&self, i: usize) -> Result<&Regex, PolicyError> {
        if let Some(re) = self.compiled[i].get() {
            return Ok(re);
        }
        let RuleKind::Pattern(pattern) = &self.rules[i].kind else {
            return Err(PolicyError::Internal("built-in rules have no regex".into()));
        };
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(MAX_PATTERN_BYTES)
            .build()
            .map_err(|e| {
                PolicyError::Internal(format!(
                    "rule `{}`: pattern does not compile: {e}",
                    self.rules[i].name
                ))
            })?;
        Ok(self.compiled[i].get_or_init(|| re))
    }

    /// First 12 hex digits of HMAC-SHA-256(hash_secret, value), or of SHA-256(value).
    fn pseudonym(&self, env: &dyn Env, value: &str) -> String {
        let digest = match &self.config.hash_secret {
            Some(secret) => env.hmac_sha256(secret.as_bytes(), value.as_bytes()),
            None => env.sha256(value.as_bytes()),
        };
        let mut h = hex(&digest);
        h.truncate(12);
        h
    }

    /// The 400 for a request a `block` rule matched. Redactions found
    /// before are not reported: nothing redacted was passed on.
    fn block_request(&self, env: &dyn Env, rule: &str) -> RequestOutcome {
        env.count("blocked", rule, 1);
        let mut resp = json_error(
            400,
            "redaction_blocked",
            &format!("request blocked by redaction rule `{rule}`"),
        );
        resp.body = Some(with_rule(&resp, rule));
        RequestOutcome::Respond(resp)
    }

    fn report(&self, env: &dyn Env, counts: &Counts) {
        for (rule, &n) in self.rules.iter().zip(&counts.0) {
            if n > 0 {
                env.count("redactions", &rule.name, n);
            }
        }
    }
}

impl<T> Scan<T> {
    /// The same finding with the changed message turned by `f`.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Scan<U> {
        match self {
            Scan::Clean => Scan::Clean,
            Scan::Changed(t) => Scan::Changed(f(t)),
            Scan::Blocked(rule) => Scan::Blocked(rule),
        }
    }
}

/// The JSON error body of `resp` with `"rule": rule` added.
fn with_rule(resp: &HttpResponse, rule: &str) -> Vec<u8> {
    let mut v: serde_json::Value = resp
        .body
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    v["rule"] = serde_json::Value::String(rule.to_string());
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests;
