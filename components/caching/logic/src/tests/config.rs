//! Config defaults and refusals.

use super::*;

#[test]
fn config_refusals_name_the_key() {
    let cases = [
        (
            json!({ "ttl_s": 100, "max_ttl_s": 50 }),
            "ttl_s",
            "must be ≤ max_ttl_s",
        ),
        (
            json!({ "max_ttl_s": 0, "ttl_s": 0 }),
            "max_ttl_s",
            "must be positive",
        ),
        (
            json!({ "llm": { "enabled": true, "ttl_s": 100000 } }),
            "llm.ttl_s",
            "must be ≤ max_ttl_s",
        ),
        (
            json!({ "max_entry_bytes": 0 }),
            "max_entry_bytes",
            "must be between 1 and 1073741824",
        ),
        (
            json!({ "status_header": "x cache" }),
            "status_header",
            "must be a valid header name",
        ),
        (
            json!({ "routes": ["a", ""] }),
            "routes[1]",
            "route name must not be empty",
        ),
        (
            json!({ "llm": { "paths": ["/v1/x", "v1/y"] } }),
            "llm.paths[1]",
            "must start with `/`",
        ),
        (
            json!({ "llm": { "enabled": true, "paths": [] } }),
            "llm.paths",
            "no paths, yet `llm.enabled` is true",
        ),
    ];
    for (config, key, reason) in cases {
        let e = refused(config);
        assert_eq!((e.key.as_str(), e.reason.as_str()), (key, reason));
    }
    let e = refused(json!({ "ttl": 5 }));
    assert_eq!(e.key, "ttl");
    let e = refused(json!({ "llm": { "enable": true } }));
    assert_eq!(e.key, "llm.enable");
    let e = refused(json!({ "per_user": "yes" }));
    assert_eq!(e.key, "per_user");
}

#[test]
fn defaults_match_the_documentation() {
    let c = CachingConfig::parse("").unwrap();
    assert_eq!(c, CachingConfig::default());
    assert_eq!(
        (c.ttl_s, c.max_ttl_s, c.max_entry_bytes, c.per_user),
        (60, 86_400, 1_048_576, false)
    );
    assert_eq!(c.status_header, "x-edgegate-cache");
    assert!(c.routes.is_empty());
    assert!(!c.llm.enabled && c.llm.deterministic_only);
    assert_eq!(c.llm.ttl_s, 3600);
    assert_eq!(
        c.llm.paths,
        ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    );
}
