//! The header grammar the cache reads: `Cache-Control`, `Pragma`, `Vary`,
//! `Age` and entity tags. Parsing is lenient where leniency is safe and
//! conservative where it is not: a directive the cache cannot read never
//! makes a response more cacheable.

use crate::config::is_token;

/// Most header names a response may vary on and still be stored.
pub const MAX_VARY: usize = 8;

/// RFC 9111 §1.2.2: larger delta-seconds count as this.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

use edgegate_policy_core::HeaderView;

/// The items of comma-separated header lists, trimmed, empty ones skipped.
fn items(headers: &HeaderView, name: &str) -> Vec<String> {
    headers
        .values(name)
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `Cache-Control` directives the cache acts on, from all of a message's
/// `Cache-Control` headers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names).
    pub no_cache: bool,
    /// `private` (with or without field names).
    pub private: bool,
    /// `max-age`, seconds; a value that is not a number counts as 0 (stale).
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds, same rule.
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// The directives of `headers`; for repeated directives the first counts.
    pub fn of(headers: &HeaderView) -> Self {
        let mut cc = CacheControl::default();
        for directive in &items(headers, "cache-control") {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.as_str(), None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "max-age" => cc.max_age = cc.max_age.or(Some(delta_seconds(arg))),
                "s-maxage" => cc.s_maxage = cc.s_maxage.or(Some(delta_seconds(arg))),
                _ => {}
            }
        }
        cc
    }
}

/// A delta-seconds argument; missing or malformed counts as 0.
fn delta_seconds(arg: Option<&str>) -> u64 {
    match arg {
        Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => a
            .parse()
            .unwrap_or(MAX_DELTA_SECONDS)
            .min(MAX_DELTA_SECONDS),
        _ => 0,
    }
}

/// `Pragma: no-cache`, which HTTP/1.0 clients send instead of `Cache-Control`.
pub fn pragma_no_cache(headers: &HeaderView) -> bool {
    items(headers, "pragma")
        .iter()
        .any(|i| i.eq_ignore_ascii_case("no-cache"))
}

/// The `Age` a response arrived with (set by caches before this one), seconds.
pub fn age(headers: &HeaderView) -> u64 {
    delta_seconds(headers.get("age").as_deref().map(str::trim))
}

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// The header names, lower-case, sorted, without repeats; empty for no `Vary`.
    Names(Vec<String>),
    /// `Vary: *`, or something the cache cannot key on: never served from a cache.
    Any,
}

impl Vary {
    /// The `Vary` of `headers`.
    pub fn of(headers: &HeaderView) -> Self {
        let mut names = Vec::new();
        for item in items(headers, "vary") {
            if item == "*" || !is_token(&item) {
                return Vary::Any;
            }
            names.push(item.to_ascii_lowercase());
        }
        names.sort();
        names.dedup();
        if names.len() > MAX_VARY {
            return Vary::Any;
        }
        Vary::Names(names)
    }
}

/// Whether `If-None-Match` (all its values) matches the stored `etag` by weak
/// comparison (RFC 9110 §13.1.2): `*` matches any stored response, a list
/// matches when one of its tags equals the stored one, ignoring `W/`.
pub fn none_match(if_none_match: &[&str], etag: Option<&str>) -> bool {
    if if_none_match.iter().any(|v| v.trim() == "*") {
        return true;
    }
    let Some(stored) = etag.and_then(|e| entity_tags(e).into_iter().next()) else {
        return false;
    };
    if_none_match
        .iter()
        .flat_map(|v| entity_tags(v))
        .any(|tag| tag == stored)
}

/// The opaque tags of an entity-tag list, without `W/` and quotes; reading
/// stops at the first malformed tag.
fn entity_tags(list: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return tags;
        }
        let unweak = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(quoted) = unweak.strip_prefix('"') else {
            return tags;
        };
        let Some(end) = quoted.find('"') else {
            return tags;
        };
        tags.push(&quoted[..end]);
        rest = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderView {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cache_control_directives() {
        let cc = CacheControl::of(&h(&[
            (
                "cache-control",
                "Public, MAX-AGE=\"30\", private=\"set-cookie, x\"",
            ),
            ("Cache-Control", "max-age=99, s-maxage=5000000000, no-cache"),
        ]));
        assert_eq!(
            cc,
            CacheControl {
                no_store: false,
                no_cache: true,
                private: true,
                max_age: Some(30),
                s_maxage: Some(1 << 31),
            }
        );
        let cc = CacheControl::of(&h(&[("cache-control", "max-age=abc,no-store")]));
        assert_eq!(cc.max_age, Some(0));
        assert!(cc.no_store);
        assert_eq!(
            CacheControl::of(&HeaderView::default()),
            CacheControl::default()
        );
    }

    #[test]
    fn pragma_and_age() {
        assert!(pragma_no_cache(&h(&[("pragma", "x, No-Cache")])));
        assert!(!pragma_no_cache(&h(&[("pragma", "nocache")])));
        assert_eq!(age(&h(&[("age", " 12 ")])), 12);
        assert_eq!(age(&h(&[("age", "-1")])), 0);
        assert_eq!(age(&HeaderView::default()), 0);
    }

    #[test]
    fn vary_names_are_normalized() {
        assert_eq!(
            Vary::of(&h(&[
                ("vary", "Accept-Encoding, origin"),
                ("vary", "accept-encoding")
            ])),
            Vary::Names(vec!["accept-encoding".into(), "origin".into()])
        );
        assert_eq!(Vary::of(&HeaderView::default()), Vary::Names(Vec::new()));
        assert_eq!(Vary::of(&h(&[("vary", "accept, *")])), Vary::Any);
        assert_eq!(Vary::of(&h(&[("vary", "a b")])), Vary::Any);
        let many = (0..=MAX_VARY)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(Vary::of(&h(&[("vary", &many)])), Vary::Any);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let etag = Some("\"v1\"");
        assert!(none_match(&["\"v1\""], etag));
        assert!(none_match(&["W/\"v1\""], etag));
        assert!(none_match(&["\"v1\""], Some("W/\"v1\"")));
        assert!(none_match(&["\"a\", W/\"v1\""], etag));
        assert!(none_match(&["\"a\"", "\"v1\""], etag));
        assert!(none_match(&["\"a,b\", \"v1\""], etag));
        assert!(none_match(&[" * "], None));
        assert!(!none_match(&["\"v2\""], etag));
        assert!(!none_match(&["v1"], etag));
        assert!(!none_match(&["\"v1\""], None));
        assert!(!none_match(&["\"v1\""], Some("v1")));
        assert!(!none_match(&["\"unterminated"], etag));
    }
}
