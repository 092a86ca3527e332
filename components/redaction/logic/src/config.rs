//! The redaction policy's config table.

use edgegate_policy_core::{parse_config, PolicyError};
use serde::Deserialize;

use crate::detect::Detector;

/// What the redaction policy is told.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Redact request bodies (prompts).
    pub request: bool,
    /// Redact response bodies (answers).
    pub response: bool,
    /// Request headers whose values are redacted by the same rules.
    pub headers: Vec<String>,
    /// Key for hash-mode pseudonyms (HMAC-SHA-256); absent → plain SHA-256.
    pub hash_secret: Option<String>,
    /// The rules; absent → every built-in detector in mode `mask`.
    pub rules: Option<Vec<RuleConfig>>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            request: true,
            response: true,
            headers: Vec::new(),
            hash_secret: None,
            rules: None,
        }
    }
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name in outputs and metrics; defaults to the detector's name.
    #[serde(default)]
    pub name: Option<String>,
    /// A built-in detector.
    #[serde(default)]
    pub detector: Option<String>,
    /// A custom regular expression (Rust `regex` syntax).
    #[serde(default)]
    pub pattern: Option<String>,
    /// What to do with a match.
    #[serde(default)]
    pub mode: Mode,
}

/// What a rule does with a match.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Replace with `[REDACTED:<rule>]`.
    #[default]
    Mask,
    /// Replace with a stable pseudonym `[<rule>:<12 hex>]`.
    Hash,
    /// Refuse the request (400) or the response (502).
    Block,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// What finds it.
    pub kind: RuleKind,
    /// What to do.
    pub mode: Mode,
}

/// What finds a rule's matches.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// A built-in detector.
    Builtin(Detector),
    /// A custom pattern (compiled on first use).
    Pattern(String),
}

impl RedactionConfig {
    /// Parses the config and checks every rule.
    pub fn parse(json: &str) -> Result<(Self, Vec<Rule>), PolicyError> {
        let mut c: RedactionConfig = parse_config(json)?;
        for (i, h) in c.headers.iter_mut().enumerate() {
            if !edgegate_policy_core::is_header_name(h) {
                return Err(PolicyError::config(
                    format!("headers[{i}]"),
                    "not a valid header name",
                ));
            }
            *h = h.to_ascii_lowercase();
        }
        let rules = match &c.rules {
            None => Detector::ALL
                .iter()
                .map(|d| Rule {
                    name: d.name().to_string(),
                    kind: RuleKind::Builtin(*d),
                    mode: Mode::Mask,
                })
                .collect(),
            Some(list) => {
                let mut rules: Vec<Rule> = Vec::with_capacity(list.len());
                for (i, r) in list.iter().enumerate() {
                    let rule = check_rule(i, r)?;
                    if rules.iter().any(|x| x.name == rule.name) {
                        return Err(PolicyError::config(
                            format!("rules[{i}].name"),
                            format!("duplicate rule name `{}`", rule.name),
                        ));
                    }
                    rules.push(rule);
                }
                rules
            }
        };
        Ok((c, rules))
    }
}

fn check_rule(i: usize, r: &RuleConfig) -> Result<Rule, PolicyError> {
    let kind = match (&r.detector, &r.pattern) {
        (Some(d), None) => RuleKind::Builtin(Detector::from_name(d).ok_or_else(|| {
            PolicyError::config(
                format!("rules[{i}].detector"),
                format!(
                    "unknown detector `{d}` (one of: {})",
                    Detector::ALL.map(|d| d.name()).join(", ")
                ),
            )
        })?),
        (None, Some(p)) => {
            let key = format!("rules[{i}].pattern");
            let hir = regex_syntax::Parser::new()
                .parse(p)
                .map_err(|e| PolicyError::config(&key, format!("invalid regex: {e}")))?;
            if hir.properties().minimum_len() == Some(0) {
                return Err(PolicyError::config(
                    key,
                    "the pattern matches the empty string",
                ));
            }
            RuleKind::Pattern(p.clone())
        }
        _ => {
            return Err(PolicyError::config(
                format!("rules[{i}]"),
                "needs exactly one of `detector` or `pattern`",
            ))
        }
    };
    let name = match (&r.name, &kind) {
        (Some(n), _) => n.clone(),
        (None, RuleKind::Builtin(d)) => d.name().to_string(),
        (None, RuleKind::Pattern(_)) => {
            return Err(PolicyError::config(
                format!("rules[{i}].name"),
                "a pattern rule needs a name",
            ))
        }
    };
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !plain {
        return Err(PolicyError::config(
            format!("rules[{i}].name"),
            "1 to 64 of letters, digits, `_`, `-`, `.`",
        ));
    }
    Ok(Rule {
        name,
        kind,
        mode: r.mode,
    })
}
