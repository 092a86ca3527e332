//! The headers policy's config table, parsed and checked once in `init`.

use edgegate_policy_sdk::core::{parse_config, PolicyError as Error};
use serde::Deserialize;
use std::collections::BTreeMap;

/// What the headers policy does, as written in the gateway config.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Request headers to set, replacing what the client sent.
    pub request_set: BTreeMap<String, String>,
    /// Request headers to remove before the upstream sees them.
    pub request_remove: Vec<String>,
    /// Response headers to set, replacing what the upstream sent.
    pub response_set: BTreeMap<String, String>,
    /// Response headers to remove before the client sees them.
    pub response_remove: Vec<String>,
    /// Paths answered by the gateway itself; the first matching rule wins.
    pub deny: Vec<DenyRule>,
    /// A request header that must be present and non-empty, else 401.
    pub require_header: Option<String>,
    /// Context values set for later policies when the request goes on.
    pub context_set: BTreeMap<String, String>,
    /// Context keys copied into response headers `x-ctx-<key>` when present.
    pub echo_context: Vec<String>,
}

/// Answer requests under a path prefix without contacting the upstream.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// Matches this path and everything below it (`/admin` matches `/admin/x`, not `/administrator`).
    pub path_prefix: String,
    /// Status of the answer, 200–599.
    #[serde(default = "default_deny_status")]
    pub status: u16,
    /// Text body of the answer.
    #[serde(default)]
    pub body: String,
}

fn default_deny_status() -> u16 {
    403
}

/// Headers whose values the gateway owns: changing them would break message framing.
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

impl HeadersConfig {
    /// Parses and checks the JSON config; header names come out lower-case.
    pub fn parse(json: &str) -> Result<Self, Error> {
        let mut config: HeadersConfig = parse_config(json)?;
        config.normalize_and_check()?;
        Ok(config)
    }

    fn normalize_and_check(&mut self) -> Result<(), Error> {
        self.request_set = checked_set("request_set", &self.request_set)?;
        self.response_set = checked_set("response_set", &self.response_set)?;
        checked_names("request_remove", &mut self.request_remove)?;
        checked_names("response_remove", &mut self.response_remove)?;
        if let Some(name) = &mut self.require_header {
            *name = checked_name("require_header", name)?;
        }
        for (i, rule) in self.deny.iter().enumerate() {
            if !rule.path_prefix.starts_with('/') {
                return Err(Error::config(
                    format!("deny[{i}].path_prefix"),
                    "must start with `/`",
                ));
            }
            if !(200..=599).contains(&rule.status) {
                return Err(Error::config(
                    format!("deny[{i}].status"),
                    "must be between 200 and 599",
                ));
            }
        }
        if self.context_set.keys().any(String::is_empty) {
            return Err(Error::config("context_set", "keys must not be empty"));
        }
        for (i, key) in self.echo_context.iter().enumerate() {
            if !edgegate_policy_sdk::core::is_header_name(key) {
                return Err(Error::config(
                    format!("echo_context[{i}]"),
                    "must be usable in a header name (letters, digits, `-`, `_`, ...)",
                ));
            }
        }
        Ok(())
    }
}

fn checked_set(
    table: &str,
    set: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Error> {
    let mut checked = BTreeMap::new();
    for (name, value) in set {
        let key = format!("{table}.{name}");
        if !is_header_value(value) {
            return Err(Error::config(
                key,
                "header values must not contain control characters",
            ));
        }
        checked.insert(checked_name(&key, name)?, value.clone());
    }
    Ok(checked)
}

fn checked_names(list: &str, names: &mut [String]) -> Result<(), Error> {
    for (i, name) in names.iter_mut().enumerate() {
        *name = checked_name(&format!("{list}[{i}]"), name)?;
    }
    Ok(())
}

fn checked_name(key: &str, name: &str) -> Result<String, Error> {
    if !edgegate_policy_sdk::core::is_header_name(name) {
        return Err(Error::config(key, "not a valid header name"));
    }
    let name = name.to_ascii_lowercase();
    if FRAMING_HEADERS.contains(&name.as_str()) {
        return Err(Error::config(
            key,
            "the gateway owns this header; it cannot be set or removed",
        ));
    }
    Ok(name)
}

/// A header value: visible characters, spaces and tabs, no CR, LF or NUL.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_policy_sdk::core::ConfigError;

    fn refused(json: &str) -> ConfigError {
        match HeadersConfig::parse(json) {
            Err(Error::Config(e)) => e,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_full_example() {
        let config = HeadersConfig::parse(
            r#"{"request_set": {"X-A": "1"}, "request_remove": ["X-Secret"],
                "response_set": {"x-served-by": "edgegate"}, "response_remove": ["server"],
                "deny": [{"path_prefix": "/admin", "status": 403, "body": "forbidden"}],
                "require_header": "X-Api-Key", "context_set": {"k": "v"},
                "echo_context": ["principal"]}"#,
        )
        .expect("valid config");
        assert_eq!(config.request_set["x-a"], "1");
        assert_eq!(config.request_remove, ["x-secret"]);
        assert_eq!(config.require_header.as_deref(), Some("x-api-key"));
        assert_eq!(config.deny[0].body, "forbidden");
    }

    #[test]
    fn empty_config_does_nothing() {
        assert_eq!(
            HeadersConfig::parse("{}").expect("valid"),
            HeadersConfig::default()
        );
    }

    #[test]
    fn deny_status_defaults_to_403() {
        let config = HeadersConfig::parse(r#"{"deny": [{"path_prefix": "/x"}]}"#).expect("valid");
        assert_eq!(config.deny[0].status, 403);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (r#"{"request_sett": {}}"#, "request_sett"),
            (
                r#"{"deny": [{"path_prefix": "/a", "stat": 1}]}"#,
                "deny[0].stat",
            ),
            (r#"{"deny": [{"status": 403}]}"#, "deny[0].path_prefix"),
            (
                r#"{"deny": [{"path_prefix": "/a", "status": 700}]}"#,
                "deny[0].status",
            ),
            (
                r#"{"deny": [{"path_prefix": "/a", "status": "x"}]}"#,
                "deny[0].status",
            ),
            (
                r#"{"deny": [{"path_prefix": "admin"}]}"#,
                "deny[0].path_prefix",
            ),
            (
                r#"{"request_set": {"bad name": "1"}}"#,
                "request_set.bad name",
            ),
            (
                r#"{"response_set": {"x-a": "1\r\nx-b: 2"}}"#,
                "response_set.x-a",
            ),
            (r#"{"request_remove": ["ok", ""]}"#, "request_remove[1]"),
            (
                r#"{"response_remove": ["Content-Length"]}"#,
                "response_remove[0]",
            ),
            (r#"{"require_header": "a:b"}"#, "require_header"),
            (r#"{"echo_context": ["a b"]}"#, "echo_context[0]"),
            (r#"{"context_set": {"": "v"}}"#, "context_set"),
        ];
        for (json, key) in cases {
            assert_eq!(refused(json).key, key, "{json}");
        }
    }
}
