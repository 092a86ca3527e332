//! The HTTP response cache: freshness, what is stored, Vary, validators,
//! per-user keys, invalidation and failures.

use super::*;

#[test]
fn miss_then_hit_with_age() {
    let (c, env) = setup(json!({}));
    let up = upstream("hello", &[("cache-control", "max-age=60")]);
    let first = send(&c, &env, get("/a"), &up);
    assert!(first.upstream_called);
    assert_eq!(first.status(), Some("miss"));
    assert_eq!(env.counter("cache", "miss"), 1);
    assert_eq!(env.counter("cache", "store"), 1);

    env.advance(5_500);
    let second = send(&c, &env, get("/a"), &upstream("changed", &[]));
    assert!(!second.upstream_called);
    assert_eq!(second.resp.status, 200);
    assert_eq!(second.body(), Some("hello"));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.header("content-type"), Some("text/plain"));
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    assert_eq!(second.status(), Some("hit"));
    assert_eq!(env.counter("cache", "hit"), 1);

    // The query is part of the key.
    assert!(send(&c, &env, get("/a?x=1"), &up).upstream_called);
}

#[test]
fn head_is_served_from_the_get_entry_without_body() {
    let (c, env) = setup(json!({}));
    let up = upstream("hello", &[("content-length", "5")]);
    // A HEAD miss has nothing to store.
    let head = send(
        &c,
        &env,
        request("HEAD", "/a"),
        &HttpResponse {
            body: None,
            ..up.clone()
        },
    );
    assert_eq!(head.status(), Some("miss"));
    assert!(send(&c, &env, get("/a"), &up).upstream_called);

    let head = send(&c, &env, request("HEAD", "/a"), &up);
    assert!(!head.upstream_called);
    assert_eq!(head.resp.status, 200);
    assert_eq!(head.resp.body, None);
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(head.status(), Some("hit"));
}

#[test]
fn max_age_is_honoured_and_entries_expire() {
    let (c, env) = setup(json!({}));
    let up = upstream("v1", &[("cache-control", "public, max-age=10")]);
    send(&c, &env, get("/a"), &up);
    env.advance(9_999);
    assert!(!send(&c, &env, get("/a"), &up).upstream_called);
    env.advance(1);
    let after = send(&c, &env, get("/a"), &upstream("v2", &[]));
    assert!(after.upstream_called);
    assert_eq!(after.status(), Some("miss"));
    // Without max-age a 200 lives `ttl_s`.
    env.advance(59_999);
    assert_eq!(send(&c, &env, get("/a"), &up).body(), Some("v2"));
    env.advance(1);
    assert!(send(&c, &env, get("/a"), &up).upstream_called);
}

#[test]
fn s_maxage_is_preferred_and_max_ttl_caps() {
    let (c, env) = setup(json!({ "max_ttl_s": 100 }));
    let up = upstream("x", &[("cache-control", "max-age=5, s-maxage=30")]);
    send(&c, &env, get("/a"), &up);
    env.advance(20_000);
    assert!(!send(&c, &env, get("/a"), &up).upstream_called);

    let up = upstream("x", &[("cache-control", "max-age=1000")]);
    send(&c, &env, get("/b"), &up);
    env.advance(99_000);
    assert!(!send(&c, &env, get("/b"), &up).upstream_called);
    env.advance(1_000);
    assert!(send(&c, &env, get("/b"), &up).upstream_called);
}

#[test]
fn no_store_private_no_cache_and_set_cookie_are_not_stored() {
    let (c, env) = setup(json!({}));
    let cases = [
        ("cache-control", "no-store"),
        ("cache-control", "private, max-age=60"),
        ("cache-control", "no-cache"),
        ("set-cookie", "session=1"),
        ("vary", "*"),
        ("expires", "0"),
    ];
    for (i, (name, value)) in cases.iter().enumerate() {
        let path = format!("/{i}");
        let up = upstream("x", &[(name, value)]);
        assert_eq!(send(&c, &env, get(&path), &up).status(), Some("miss"));
        assert!(
            send(&c, &env, get(&path), &up).upstream_called,
            "{name}: {value} was stored"
        );
    }
    assert_eq!(env.counter("cache", "uncacheable"), 2 * cases.len() as u64);
    assert_eq!(env.counter("cache", "store"), 0);
}

#[test]
fn statuses_other_than_200_need_explicit_freshness() {
    let (c, env) = setup(json!({}));
    let with = |status, cc: &str| HttpResponse {
        status,
        ..upstream("x", &[("cache-control", cc)])
    };
    send(&c, &env, get("/gone"), &with(404, "max-age=30"));
    assert_eq!(
        send(&c, &env, get("/gone"), &with(200, "")).resp.status,
        404
    );
    send(&c, &env, get("/nf"), &with(404, "public"));
    assert!(send(&c, &env, get("/nf"), &with(404, "public")).upstream_called);
    for status in [206, 302, 500, 503] {
        let path = format!("/{status}");
        send(&c, &env, get(&path), &with(status, "max-age=30"));
        assert!(send(&c, &env, get(&path), &with(status, "")).upstream_called);
    }
}

#[test]
fn ttl_zero_stores_only_responses_with_max_age() {
    let (c, env) = setup(json!({ "ttl_s": 0 }));
    send(&c, &env, get("/a"), &upstream("x", &[]));
    assert!(send(&c, &env, get("/a"), &upstream("x", &[])).upstream_called);
    let up = upstream("x", &[("cache-control", "max-age=5")]);
    send(&c, &env, get("/b"), &up);
    assert!(!send(&c, &env, get("/b"), &up).upstream_called);
}

#[test]
fn private_is_stored_per_user_and_principals_are_separate() {
    let (c, env) = setup(json!({ "per_user": true }));
    let up = |who: &str| upstream(who, &[("cache-control", "private, max-age=60")]);
    env.ctx_set(ctx::PRINCIPAL, "alice");
    send(&c, &env, get("/me"), &up("alice"));
    assert_eq!(send(&c, &env, get("/me"), &up("?")).body(), Some("alice"));

    env.ctx_set(ctx::PRINCIPAL, "bob");
    let bob = send(&c, &env, get("/me"), &up("bob"));
    assert!(bob.upstream_called);
    assert_eq!(send(&c, &env, get("/me"), &up("?")).body(), Some("bob"));

    env.ctx_set(ctx::PRINCIPAL, "alice");
    assert_eq!(send(&c, &env, get("/me"), &up("?")).body(), Some("alice"));
}

#[test]
fn authorization_bypasses_a_shared_cache() {
    let (c, env) = setup(json!({}));
    let up = upstream("secret", &[("cache-control", "max-age=60")]);
    let authed = || get("/a").with_header("authorization", "Bearer t");
    let first = send(&c, &env, authed(), &up);
    assert_eq!(first.status(), Some("bypass"));
    assert!(send(&c, &env, authed(), &up).upstream_called);
    assert!(
        send(&c, &env, get("/a"), &up).upstream_called,
        "nothing stored"
    );
    assert_eq!(env.counter("cache", "bypass"), 2);

    // Per user, authorized requests are cached under the principal.
    let (c, env) = setup(json!({ "per_user": true }));
    assert_eq!(
        send(&c, &env, authed(), &up).status(),
        Some("bypass"),
        "no principal"
    );
    env.ctx_set(ctx::PRINCIPAL, "alice");
    send(&c, &env, authed(), &up);
    assert_eq!(send(&c, &env, authed(), &up).status(), Some("hit"));
}

#[test]
fn request_no_store_bypasses() {
    let (c, env) = setup(json!({}));
    let up = upstream("x", &[]);
    send(&c, &env, get("/a"), &up);
    let req = get("/a").with_header("cache-control", "no-store");
    let ex = send(&c, &env, req, &up);
    assert!(ex.upstream_called);
    assert_eq!(ex.status(), Some("bypass"));
}

#[test]
fn vary_separates_entries() {
    let (c, env) = setup(json!({}));
    let encoded = |enc: &str| {
        upstream(
            enc,
            &[("vary", "Accept-Encoding"), ("content-encoding", enc)],
        )
    };
    let asking = |enc: &str| get("/a").with_header("accept-encoding", enc);

    send(&c, &env, asking("gzip"), &encoded("gzip"));
    let br = send(&c, &env, asking("br"), &encoded("br"));
    assert!(br.upstream_called);
    assert!(send(&c, &env, get("/a"), &encoded("identity")).upstream_called);

    let gzip = send(&c, &env, asking("gzip"), &encoded("?"));
    assert_eq!((gzip.status(), gzip.body()), (Some("hit"), Some("gzip")));
    assert_eq!(gzip.header("vary"), Some("Accept-Encoding"));
    let br = send(&c, &env, asking("br"), &encoded("?"));
    assert_eq!((br.status(), br.body()), (Some("hit"), Some("br")));
    let none = send(&c, &env, get("/a"), &encoded("?"));
    assert_eq!(none.body(), Some("identity"));
}

#[test]
fn vary_on_an_uncommon_header_is_learned() {
    let (c, env) = setup(json!({}));
    let up = |t: &str| upstream(t, &[("vary", "X-Tenant")]);
    let asking = |t: &str| get("/a").with_header("x-tenant", t);
    // The first response teaches the cache to keep `x-tenant`; the second is stored.
    send(&c, &env, asking("t1"), &up("t1"));
    assert!(send(&c, &env, asking("t1"), &up("t1")).upstream_called);
    assert_eq!(send(&c, &env, asking("t1"), &up("?")).body(), Some("t1"));
    assert!(send(&c, &env, asking("t2"), &up("t2")).upstream_called);
    assert_eq!(send(&c, &env, asking("t2"), &up("?")).body(), Some("t2"));
    assert_eq!(send(&c, &env, asking("t1"), &up("?")).body(), Some("t1"));
}

#[test]
fn if_none_match_gets_304() {
    let (c, env) = setup(json!({}));
    let up = upstream(
        "x",
        &[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ],
    );
    send(&c, &env, get("/a"), &up);
    for inm in ["\"v1\"", "W/\"v1\"", "\"v0\", W/\"v1\"", "*"] {
        let ex = send(&c, &env, get("/a").with_header("if-none-match", inm), &up);
        assert!(!ex.upstream_called);
        assert_eq!(ex.resp.status, 304, "{inm}");
        assert_eq!(ex.resp.body, None);
        assert_eq!(ex.header("etag"), Some("\"v1\""));
        assert_eq!(ex.header("cache-control"), Some("max-age=60"));
        assert_eq!(ex.header("date"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert_eq!(ex.header("content-type"), None);
        assert_eq!(ex.status(), Some("hit"));
    }
    let ex = send(
        &c,
        &env,
        get("/a").with_header("if-none-match", "\"v2\""),
        &up,
    );
    assert_eq!((ex.resp.status, ex.body()), (200, Some("x")));
    let ex = send(
        &c,
        &env,
        request("HEAD", "/a").with_header("if-none-match", "\"v1\""),
        &up,
    );
    assert_eq!(ex.resp.status, 304);
}

#[test]
fn if_modified_since_gets_304_when_not_modified() {
    let (c, env) = setup(json!({}));
    let up = upstream("x", &[("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")]);
    send(&c, &env, get("/a"), &up);
    let since = |date: &str| get("/a").with_header("if-modified-since", date);
    assert_eq!(
        send(&c, &env, since("Tue, 14 Nov 2023 22:13:20 GMT"), &up)
            .resp
            .status,
        304
    );
    assert_eq!(
        send(&c, &env, since("Tue, 14 Nov 2023 22:13:19 GMT"), &up)
            .resp
            .status,
        200
    );
    assert_eq!(send(&c, &env, since("yesterday"), &up).resp.status, 200);
    // If-None-Match, when present, decides alone.
    let both = since("Tue, 14 Nov 2023 22:13:20 GMT").with_header("if-none-match", "\"v9\"");
    assert_eq!(send(&c, &env, both, &up).resp.status, 200);
}

#[test]
fn request_no_cache_skips_lookup_but_refreshes_the_entry() {
    let (c, env) = setup(json!({}));
    send(&c, &env, get("/a"), &upstream("v1", &[]));
    for refresh in [
        get("/a").with_header("cache-control", "no-cache"),
        get("/a").with_header("cache-control", "max-age=0"),
        get("/a").with_header("pragma", "no-cache"),
    ] {
        let ex = send(&c, &env, refresh, &upstream("v2", &[]));
        assert!(ex.upstream_called);
        assert_eq!(ex.status(), Some("miss"));
        assert_eq!(
            send(&c, &env, get("/a"), &upstream("?", &[])).body(),
            Some("v2")
        );
        send(
            &c,
            &env,
            get("/a").with_header("cache-control", "no-cache"),
            &upstream("v1", &[]),
        );
    }
    assert_eq!(env.counter("cache", "refresh"), 6);
    // `Pragma` counts only without `Cache-Control`.
    let ex = send(
        &c,
        &env,
        get("/a")
            .with_header("pragma", "no-cache")
            .with_header("cache-control", "max-age=60"),
        &upstream("?", &[]),
    );
    assert!(!ex.upstream_called);
}

#[test]
fn request_max_age_refuses_older_entries() {
    let (c, env) = setup(json!({}));
    send(&c, &env, get("/a"), &upstream("v1", &[]));
    env.advance(30_000);
    let young = || get("/a").with_header("cache-control", "max-age=20");
    assert!(send(&c, &env, young(), &upstream("v2", &[])).upstream_called);
    assert_eq!(
        send(&c, &env, young(), &upstream("?", &[])).body(),
        Some("v2")
    );
}

#[test]
fn successful_unsafe_requests_invalidate() {
    let (c, env) = setup(json!({}));
    send(&c, &env, get("/a"), &upstream("v1", &[]));
    let failed = HttpResponse {
        status: 500,
        ..upstream("", &[])
    };
    let post = send(&c, &env, request("POST", "/a"), &failed);
    assert_eq!(post.status(), None);
    assert!(!send(&c, &env, get("/a"), &upstream("?", &[])).upstream_called);

    send(&c, &env, request("DELETE", "/a"), &upstream("", &[]));
    assert_eq!(env.counter("cache", "invalidate"), 1);
    assert!(send(&c, &env, get("/a"), &upstream("v2", &[])).upstream_called);
}

#[test]
fn other_methods_and_responses_of_other_policies_are_left_alone() {
    let (c, env) = setup(json!({}));
    let ex = send(&c, &env, request("OPTIONS", "/a"), &upstream("x", &[]));
    assert_eq!(ex.status(), None);
    assert!(env.kv.borrow().is_empty());

    // A policy after the cache answered: the response phase sees no upstream.
    c.on_request(&env, get("/b")).unwrap();
    let info = RequestInfo {
        upstream: String::new(),
        streamed_body: false,
        ..get("/b").info("")
    };
    c.on_response(&env, &info, upstream("denied", &[])).unwrap();
    assert_eq!(env.counter("cache", "store"), 0);
}

#[test]
fn routes_switch_limits_the_cache() {
    let (c, env) = setup(json!({ "routes": ["api"], "status_header": "X-Cache" }));
    let up = upstream("x", &[]);
    let ex = send(&c, &env, get("/a"), &up);
    assert_eq!(ex.header("x-cache"), None);
    assert!(send(&c, &env, get("/a"), &up).upstream_called);

    let on_api = || HttpRequest {
        route: "api".into(),
        ..get("/a")
    };
    assert_eq!(
        send(&c, &env, on_api(), &up).header("x-cache"),
        Some("miss")
    );
    assert_eq!(send(&c, &env, on_api(), &up).header("x-cache"), Some("hit"));
}

#[test]
fn oversized_and_unbuffered_bodies_are_not_stored() {
    let (c, env) = setup(json!({ "max_entry_bytes": 4 }));
    send(&c, &env, get("/a"), &upstream("12345", &[]));
    assert!(send(&c, &env, get("/a"), &upstream("12345", &[])).upstream_called);
    assert_eq!(env.counter("cache", "too_large"), 2);
    send(&c, &env, get("/b"), &upstream("1234", &[]));
    assert!(!send(&c, &env, get("/b"), &upstream("?", &[])).upstream_called);

    let unbuffered = HttpResponse {
        body: None,
        ..upstream("", &[])
    };
    send(&c, &env, get("/c"), &unbuffered);
    assert_eq!(env.counter("cache", "uncacheable"), 1);
    assert!(env
        .logs
        .borrow()
        .iter()
        .any(|l| l.contains("response_body")));
}

#[test]
fn a_corrupt_entry_is_a_miss() {
    let (c, env) = setup(json!({}));
    send(&c, &env, get("/a"), &upstream("v1", &[]));
    for (key, (value, _)) in env.kv.borrow_mut().iter_mut() {
        if key.starts_with("e:") {
            value.truncate(value.len() / 2);
        }
    }
    let ex = send(&c, &env, get("/a"), &upstream("v2", &[]));
    assert!(ex.upstream_called);
    assert_eq!(ex.status(), Some("miss"));
    assert!(env.logs.borrow().iter().any(|l| l.contains("unreadable")));
    assert_eq!(
        send(&c, &env, get("/a"), &upstream("?", &[])).body(),
        Some("v2")
    );

    // A garbled Vary record is no record.
    for (key, (value, _)) in env.kv.borrow_mut().iter_mut() {
        if key.starts_with("v:") {
            *value = vec![0xff, b','];
        }
    }
    assert!(send(&c, &env, get("/a"), &upstream("v3", &[])).upstream_called);
}

#[test]
fn kv_denied_is_an_error_naming_the_capability() {
    let (c, env) = setup(json!({}));
    env.deny_kv.set(true);
    let err = c.on_request(&env, get("/a")).unwrap_err();
    assert_eq!(
        err,
        PolicyError::Internal(
            "cache lookup: kv: denied: the policy lacks the `kv` capability".into()
        )
    );

    env.deny_kv.set(false);
    c.on_request(&env, get("/a")).unwrap();
    env.deny_kv.set(true);
    let err = c
        .on_response(&env, &get("/a").info("app"), upstream("x", &[]))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cache store: kv: denied"),
        "{err}"
    );
}

#[test]
fn the_context_record_stays_small() {
    let (c, env) = setup(json!({}));
    let long = "x".repeat(4000);
    let req = get("/a")
        .with_header("accept", &long)
        .with_header("accept-language", &long)
        .with_header("origin", &long)
        .with_header("accept-encoding", &long);
    c.on_request(&env, req).unwrap();
    let record = env.ctx_get(ctx::REQUEST).unwrap();
    assert!(record.len() < 400, "{} bytes: {record}", record.len());
}
