//! Cache keys: what makes two requests the same for the cache.
//!
//! A request's *base* key is the SHA-256 of its method class, authority, path
//! and query, route, principal (per-user caches) and, for LLM calls, the
//! normalized JSON body. The key/value store holds, per base key:
//!
//! - `v:<base>`: the header names the last stored response varied on
//!   (comma-separated, possibly empty);
//! - `e:<variant>`: the stored response, where `variant` is the base key
//!   itself when nothing varies, else the SHA-256 of the base key and the
//!   request's values of those headers.

use std::collections::BTreeMap;

use edgegate_policy_core::{hex, Env};

use edgegate_policy_core::HeaderView;

/// Request headers whose values the request phase always keeps for the
/// response phase (which does not see request headers), because responses
/// commonly vary on them; others only once a stored `Vary` named them.
pub const COMMON_VARY: [&str; 4] = ["accept", "accept-encoding", "accept-language", "origin"];

/// Headers whose values never go into the context bag in clear.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// Longer header values are kept as a digest, so the context bag stays small.
const MAX_CLEAR_VALUE: usize = 64;

/// Hex digits of SHA-256 kept for a long or secret header value (128 bits).
const DIGEST_HEX: usize = 32;

/// What identifies a request to the cache, before `Vary`.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `GET` for GET, HEAD and the unsafe methods that invalidate them; `LLM` for LLM calls.
    pub class: &'static str,
    /// Host the client asked for.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Route name.
    pub route: &'a str,
    /// The caller, in per-user caches.
    pub principal: Option<&'a str>,
    /// The normalized body of an LLM call.
    pub body: Option<&'a str>,
}

impl Scope<'_> {
    /// The base key: hex SHA-256 over length-prefixed fields, so no two
    /// different scopes share an encoding.
    pub fn base(&self, env: &dyn Env) -> String {
        let authority = self.authority.to_ascii_lowercase();
        let mut buf = Vec::with_capacity(
            64 + authority.len() + self.path.len() + self.body.map_or(0, str::len),
        );
        buf.extend_from_slice(b"edgegate-cache/1");
        for field in [self.class, &authority, self.path, self.route] {
            push_field(&mut buf, Some(field));
        }
        push_field(&mut buf, self.principal);
        push_field(&mut buf, self.body);
        hex(&env.sha256(&buf))
    }
}

fn push_field(buf: &mut Vec<u8>, field: Option<&str>) {
    match field {
        None => buf.push(0),
        Some(f) => {
            buf.push(1);
            buf.extend_from_slice(&(f.len() as u64).to_be_bytes());
            buf.extend_from_slice(f.as_bytes());
        }
    }
}

/// The kv key of the `Vary` record of `base`.
pub fn vary_record(base: &str) -> String {
    format!("v:{base}")
}

/// The request's values of the headers a response may vary on: the common
/// ones and `known` (from the `Vary` record). An absent header is `""`, a short
/// one `=value`, a long or secret one `#digest`.
pub fn vary_values(
    env: &dyn Env,
    headers: &HeaderView,
    known: &[String],
) -> BTreeMap<String, String> {
    COMMON_VARY
        .iter()
        .copied()
        .chain(known.iter().map(String::as_str))
        .map(|name| (name.to_string(), fingerprint(env, headers, name)))
        .collect()
}

fn fingerprint(env: &dyn Env, headers: &HeaderView, name: &str) -> String {
    let values = headers.values(name);
    let all: Vec<&str> = values.iter().map(|v| v.trim()).collect();
    if all.is_empty() {
        return String::new();
    }
    let joined = all.join(", ");
    if joined.len() <= MAX_CLEAR_VALUE && !SECRET_HEADERS.contains(&name) {
        format!("={joined}")
    } else {
        let digest = hex(&env.sha256(joined.as_bytes()));
        format!("#{}", &digest[..DIGEST_HEX])
    }
}

/// The kv key of the entry for `base` under the `Vary` header `names`;
/// `None` when a named header's value was not kept.
pub fn entry(
    env: &dyn Env,
    base: &str,
    names: &[String],
    values: &BTreeMap<String, String>,
) -> Option<String> {
    if names.is_empty() {
        return Some(format!("e:{base}"));
    }
    let mut buf = Vec::with_capacity(base.len() + 32 * names.len());
    push_field(&mut buf, Some(base));
    for name in names {
        push_field(&mut buf, Some(name));
        push_field(&mut buf, Some(values.get(name)?));
    }
    Some(format!("e:{}", hex(&env.sha256(&buf))))
}

/// The `Vary` record's header names; `None` for bytes that are not one.
pub fn parse_vary_record(bytes: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() {
        return Some(Vec::new());
    }
    let names: Vec<String> = text.split(',').map(String::from).collect();
    let valid = names.len() <= crate::directives::MAX_VARY
        && names
            .iter()
            .all(|n| crate::config::is_token(n) && !n.bytes().any(|b| b.is_ascii_uppercase()));
    valid.then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_policy_core::testing::MemoryEnv;

    fn scope<'a>() -> Scope<'a> {
        Scope {
            class: "GET",
            authority: "Example.COM",
            path: "/a?b=1",
            route: "r",
            principal: None,
            body: None,
        }
    }

    #[test]
    fn base_keys_separate_every_field() {
        let env = MemoryEnv::default();
        let base = scope().base(&env);
        assert_eq!(base.len(), 64);
        assert_eq!(
            Scope {
                authority: "example.com",
                ..scope()
            }
            .base(&env),
            base,
            "authority is case-insensitive"
        );
        let others = [
            Scope {
                class: "LLM",
                ..scope()
            },
            Scope {
                path: "/a?b=2",
                ..scope()
            },
            Scope {
                route: "s",
                ..scope()
            },
            Scope {
                principal: Some(""),
                ..scope()
            },
            Scope {
                body: Some(""),
                ..scope()
            },
            // Moving bytes between fields changes the key.
            Scope {
                path: "/a?b=1r",
                route: "",
                ..scope()
            },
        ];
        for other in others {
            assert_ne!(other.base(&env), base, "{other:?}");
        }
    }

    #[test]
    fn vary_values_keep_secrets_and_long_values_hashed() {
        let env = MemoryEnv::default();
        let headers = vec![
            ("accept-encoding".to_string(), "gzip".to_string()),
            ("accept-encoding".to_string(), " br ".to_string()),
            ("cookie".to_string(), "session=s3cret".to_string()),
            ("user-agent".to_string(), "x".repeat(100)),
        ]
        .into();
        let known = ["cookie".to_string(), "user-agent".to_string()];
        let v = vary_values(&env, &headers, &known);
        assert_eq!(v["accept-encoding"], "=gzip, br");
        assert_eq!(v["accept"], "");
        assert!(v["cookie"].starts_with('#') && !v["cookie"].contains("s3cret"));
        assert_eq!(v["user-agent"].len(), 1 + DIGEST_HEX);
        assert_eq!(v.len(), COMMON_VARY.len() + 2);
    }

    #[test]
    fn entry_keys_follow_the_varied_values() {
        let env = MemoryEnv::default();
        let names = vec!["accept-encoding".to_string()];
        let gzip = vary_values(
            &env,
            &vec![("accept-encoding".into(), "gzip".into())].into(),
            &[],
        );
        let none = vary_values(&env, &HeaderView::default(), &[]);
        assert_eq!(entry(&env, "b", &[], &gzip).as_deref(), Some("e:b"));
        let a = entry(&env, "b", &names, &gzip);
        let b = entry(&env, "b", &names, &none);
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(entry(&env, "b", &["x-unknown".to_string()], &gzip), None);
    }

    #[test]
    fn vary_records_parse_strictly() {
        assert_eq!(parse_vary_record(b""), Some(Vec::new()));
        assert_eq!(
            parse_vary_record(b"accept,origin"),
            Some(vec!["accept".to_string(), "origin".to_string()])
        );
        assert_eq!(parse_vary_record(b"Accept"), None);
        assert_eq!(parse_vary_record(b"a,,b"), None);
        assert_eq!(parse_vary_record(&[0xff]), None);
    }
}
