//! The caching policy's config table, parsed and checked in `from_config`.

use edgegate_policy_core::{parse_config, PolicyError};
use serde::Deserialize;

/// Largest `max_entry_bytes`: entries are length-prefixed with 32 bits, and
/// far above any sensible key/value budget anyway.
const MAX_ENTRY_BYTES_LIMIT: u64 = 1 << 30;

/// Everything the caching policy is told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CachingConfig {
    /// Seconds a `200` is kept when the response says nothing about freshness
    /// (no `s-maxage`, `max-age` or `Expires`); 0 caches only responses that do.
    pub ttl_s: u64,
    /// Cap on every entry's lifetime, whatever the response says.
    pub max_ttl_s: u64,
    /// Bodies larger than this are not stored (counted as `too_large`).
    pub max_entry_bytes: u64,
    /// Key entries by the context's `principal` as well, so callers never see
    /// each other's responses; also allows storing `Cache-Control: private`
    /// responses and requests that carry `Authorization`.
    pub per_user: bool,
    /// Response header saying `hit`, `miss` or `bypass`.
    pub status_header: String,
    /// Route names to cache; empty means every route the policy is attached to.
    pub routes: Vec<String>,
    /// The LLM response cache.
    pub llm: LlmCacheConfig,
}

impl Default for CachingConfig {
    fn default() -> Self {
        CachingConfig {
            ttl_s: 60,
            max_ttl_s: 86_400,
            max_entry_bytes: 1 << 20,
            per_user: false,
            status_header: "x-edgegate-cache".into(),
            routes: Vec::new(),
            llm: LlmCacheConfig::default(),
        }
    }
}

/// Exact-match caching of LLM API calls (JSON `POST`s).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmCacheConfig {
    /// Cache `POST`s to `paths` by their normalized JSON body.
    pub enabled: bool,
    /// Request paths (without query) that are LLM calls.
    pub paths: Vec<String>,
    /// Seconds an LLM answer is kept when the response says nothing about freshness.
    pub ttl_s: u64,
    /// Only cache requests whose answer does not depend on sampling:
    /// `temperature` 0 and at most one choice (`n`); embeddings always qualify.
    pub deterministic_only: bool,
}

impl Default for LlmCacheConfig {
    fn default() -> Self {
        LlmCacheConfig {
            enabled: false,
            paths: ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
                .map(String::from)
                .to_vec(),
            ttl_s: 3600,
            deterministic_only: true,
        }
    }
}

impl CachingConfig {
    /// Parses and checks the config.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let mut c: CachingConfig = parse_config(json)?;
        c.check()?;
        c.status_header.make_ascii_lowercase();
        Ok(c)
    }

    /// Whether requests on `route` are cached at all.
    pub fn covers(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }

    fn check(&self) -> Result<(), PolicyError> {
        if self.max_ttl_s == 0 {
            return Err(PolicyError::config("max_ttl_s", "must be positive"));
        }
        if self.ttl_s > self.max_ttl_s {
            return Err(PolicyError::config("ttl_s", "must be ≤ max_ttl_s"));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > MAX_ENTRY_BYTES_LIMIT {
            return Err(PolicyError::config(
                "max_entry_bytes",
                format!("must be between 1 and {MAX_ENTRY_BYTES_LIMIT}"),
            ));
        }
        if !is_token(&self.status_header) {
            return Err(PolicyError::config(
                "status_header",
                "must be a valid header name",
            ));
        }
        if let Some(i) = self.routes.iter().position(String::is_empty) {
            return Err(PolicyError::config(
                format!("routes[{i}]"),
                "route name must not be empty",
            ));
        }
        if self.llm.enabled && self.llm.ttl_s > self.max_ttl_s {
            return Err(PolicyError::config("llm.ttl_s", "must be ≤ max_ttl_s"));
        }
        if let Some(i) = self.llm.paths.iter().position(|p| !p.starts_with('/')) {
            return Err(PolicyError::config(
                format!("llm.paths[{i}]"),
                "must start with `/`",
            ));
        }
        if self.llm.enabled && self.llm.paths.is_empty() {
            return Err(PolicyError::config(
                "llm.paths",
                "no paths, yet `llm.enabled` is true",
            ));
        }
        Ok(())
    }
}

/// An RFC 9110 token: what header names and directive names are made of.
pub(crate) use edgegate_policy_core::is_header_name as is_token;
