//! The routing policy's config table.

use std::collections::BTreeMap;

use edgegate_policy_core::{parse_config, HttpRequest, PolicyError};
use serde::Deserialize;

/// Everything the routing policy is told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Rules tried in order; the first match picks the upstream.
    pub rules: Vec<Rule>,
    /// Weighted split when no rule matched (canary, blue/green).
    pub split: Vec<Target>,
    /// Key for sticky splits: `header:NAME`, `cookie:NAME`, `principal` or `client_ip`; random when absent.
    #[serde(deserialize_with = "hash_on")]
    pub hash_on: Option<HashOn>,
    /// Skip split targets whose endpoints are all unhealthy (capability `health`).
    pub health_aware: bool,
    /// Clusters to fall back to, in order, for rule and split decisions.
    pub fallbacks: Vec<String>,
    /// Retries per cluster.
    pub retries: u32,
    /// Backoff base between retries, ms.
    pub backoff_ms: u32,
    /// Path rewrites; the first matching prefix applies.
    pub rewrite: Vec<Rewrite>,
    /// Request header changes.
    pub request_headers: HeaderChanges,
    /// LLM model routing.
    pub llm: Option<LlmConfig>,
}

/// A routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the request must look like.
    #[serde(flatten)]
    pub when: Match,
    /// Where it goes.
    pub upstream: String,
}

/// A rule's condition: one of header, cookie or path prefix, optionally with a value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Header name.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie name.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Path prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Required value of the header or cookie; any value when absent.
    #[serde(default)]
    pub equals: Option<String>,
}

impl Match {
    /// Whether `req` meets the condition.
    pub fn matches(&self, req: &HttpRequest) -> bool {
        let value = if let Some(h) = &self.header {
            req.header(h)
        } else if let Some(c) = &self.cookie {
            crate::cookie(req, c)
        } else if let Some(p) = &self.path_prefix {
            return req.path.starts_with(p.as_str());
        } else {
            None
        };
        match (&value, &self.equals) {
            (Some(v), Some(want)) => v == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A weighted split target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Upstream cluster.
    pub upstream: String,
    /// Relative weight, > 0.
    pub weight: u32,
}

/// What a sticky split hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The `principal` from the context (set by auth).
    Principal,
    /// The client's IP address.
    ClientIp,
}

fn hash_on<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HashOn>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let parsed = match text.split_once(':') {
        Some(("header", name)) if !name.is_empty() => HashOn::Header(name.to_ascii_lowercase()),
        Some(("cookie", name)) if !name.is_empty() => HashOn::Cookie(name.to_string()),
        None if text == "principal" => HashOn::Principal,
        None if text == "client_ip" => HashOn::ClientIp,
        _ => {
            return Err(serde::de::Error::custom(format!(
                "`{text}`: expected `header:NAME`, `cookie:NAME`, `principal` or `client_ip`"
            )))
        }
    };
    Ok(Some(parsed))
}

/// A path rewrite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Prefix to replace.
    pub prefix: String,
    /// What replaces it.
    pub replace: String,
}

/// Request header changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderChanges {
    /// Headers set (replacing what was there).
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    pub remove: Vec<String>,
}

/// How providers are ordered for a model.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// As listed.
    #[default]
    Ordered,
    /// Cheapest first (`cost`).
    Cost,
    /// Lowest measured latency first (health view).
    Latency,
}

/// LLM model routing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Provider clusters per model name (`"*"` for any other model), in fallback order.
    pub models: BTreeMap<String, Vec<String>>,
    /// How providers are ordered.
    #[serde(default)]
    pub strategy: Strategy,
    /// Cost per 1k tokens by provider cluster, for `strategy = "cost"`.
    #[serde(default)]
    pub cost: BTreeMap<String, f64>,
    /// Retries per provider.
    #[serde(default)]
    pub retries: u32,
    /// Backoff base between retries, ms.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u32,
}

fn default_backoff() -> u32 {
    100
}

impl RoutingConfig {
    /// Parses and checks the config.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let mut c: RoutingConfig = parse_config(json)?;
        c.check()?;
        Ok(c)
    }

    fn check(&mut self) -> Result<(), PolicyError> {
        for (i, r) in self.rules.iter().enumerate() {
            let set = [
                r.when.header.is_some(),
                r.when.cookie.is_some(),
                r.when.path_prefix.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                return Err(PolicyError::config(
                    format!("rules[{i}]"),
                    "needs exactly one of `header`, `cookie` or `path_prefix`",
                ));
            }
            name(&format!("rules[{i}].upstream"), &r.upstream)?;
        }
        for (i, t) in self.split.iter().enumerate() {
            name(&format!("split[{i}].upstream"), &t.upstream)?;
            if t.weight == 0 {
                return Err(PolicyError::config(
                    format!("split[{i}].weight"),
                    "must be positive",
                ));
            }
        }
        if self.hash_on.is_some() && self.split.is_empty() {
            return Err(PolicyError::config("hash_on", "only applies to a `split`"));
        }
        for (i, f) in self.fallbacks.iter().enumerate() {
            name(&format!("fallbacks[{i}]"), f)?;
        }
        for (i, r) in self.rewrite.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(PolicyError::config(
                    format!("rewrite[{i}].prefix"),
                    "must start with `/`",
                ));
            }
        }
        if let Some(llm) = &self.llm {
            if llm.models.is_empty() {
                return Err(PolicyError::config("llm.models", "no models"));
            }
            for (model, providers) in &llm.models {
                if providers.is_empty() {
                    return Err(PolicyError::config(
                        format!("llm.models.{model}"),
                        "no providers",
                    ));
                }
                for (i, p) in providers.iter().enumerate() {
                    name(&format!("llm.models.{model}[{i}]"), p)?;
                }
                if llm.strategy == Strategy::Cost {
                    if let Some(p) = providers.iter().find(|p| !llm.cost.contains_key(*p)) {
                        return Err(PolicyError::config(
                            format!("llm.cost.{p}"),
                            "strategy `cost` needs a cost for every provider",
                        ));
                    }
                }
            }
            if let Some((p, _)) = llm.cost.iter().find(|(_, c)| !c.is_finite() || **c < 0.0) {
                return Err(PolicyError::config(
                    format!("llm.cost.{p}"),
                    "must be a non-negative number",
                ));
            }
        }
        Ok(())
    }
}

fn name(key: &str, upstream: &str) -> Result<(), PolicyError> {
    if upstream.is_empty() {
        return Err(PolicyError::config(key, "upstream name must not be empty"));
    }
    Ok(())
}
