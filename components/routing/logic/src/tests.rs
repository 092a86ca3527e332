//! Native tests of the routing logic against an in-memory health view.

#![allow(clippy::unwrap_used)]

use super::*;
use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::Endpoint;
use serde_json::json;

fn routing(config: serde_json::Value) -> Routing {
    Routing::from_config(&config.to_string()).unwrap()
}

fn decision(outcome: RequestOutcome) -> (RouteDecision, RequestChanges) {
    match outcome {
        RequestOutcome::Route(d, c) => (d, c),
        other => panic!("expected a route decision, got {other:?}"),
    }
}

fn endpoint(healthy: bool, latency_us: u64) -> Endpoint {
    Endpoint {
        address: "127.0.0.1:1".into(),
        healthy,
        circuit: if healthy {
            Circuit::Closed
        } else {
            Circuit::Open
        },
        in_flight: 0,
        ewma_latency_us: latency_us,
        error_rate_ppm: 0,
    }
}

fn chat(model: &str) -> HttpRequest {
    HttpRequest::new("POST", "/v1/chat/completions")
        .with_body(json!({"model": model, "messages": []}).to_string())
}

#[test]
fn rules_match_header_cookie_and_path_in_order() {
    let r = routing(json!({
        "rules": [
            {"header": "x-canary", "equals": "1", "upstream": "canary"},
            {"cookie": "beta", "upstream": "beta"},
            {"path_prefix": "/v2/", "upstream": "v2"},
        ],
        "fallbacks": ["backup"], "retries": 2, "backoff_ms": 25,
    }));
    let env = MemoryEnv::default();
    let (d, _) = decision(
        r.on_request(
            &env,
            HttpRequest::new("GET", "/").with_header("x-canary", "1"),
        )
        .unwrap(),
    );
    assert_eq!(
        d,
        RouteDecision {
            upstream: "canary".into(),
            fallbacks: vec!["backup".into()],
            retries: 2,
            backoff_ms: 25
        }
    );
    assert_eq!(env.ctx_get(ctx::UPSTREAM).as_deref(), Some("canary"));
    let (d, _) = decision(
        r.on_request(
            &env,
            HttpRequest::new("GET", "/").with_header("cookie", "a=1; beta=yes"),
        )
        .unwrap(),
    );
    assert_eq!(d.upstream, "beta");
    let (d, _) = decision(
        r.on_request(
            &env,
            HttpRequest::new("GET", "/v2/x").with_header("x-canary", "0"),
        )
        .unwrap(),
    );
    assert_eq!(d.upstream, "v2");
    // Nothing matched and no split: the route's own upstream, no decision.
    let out = r
        .on_request(&env, HttpRequest::new("GET", "/v1/x"))
        .unwrap();
    assert_eq!(out, RequestOutcome::pass());
}

#[test]
fn weighted_split_follows_the_weights() {
    let r = routing(
        json!({"split": [{"upstream": "blue", "weight": 90}, {"upstream": "green", "weight": 10}]}),
    );
    let env = MemoryEnv::default();
    let mut green = 0;
    let mut x: u64 = 1;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        env.random.set(x);
        let (d, _) = decision(r.on_request(&env, HttpRequest::new("GET", "/")).unwrap());
        green += usize::from(d.upstream == "green");
    }
    assert!((800..1200).contains(&green), "green got {green} of 10000");
}

#[test]
fn sticky_split_keeps_a_key_on_its_target_and_spreads_keys() {
    let r = routing(json!({
        "split": [{"upstream": "a", "weight": 1}, {"upstream": "b", "weight": 1}, {"upstream": "c", "weight": 2}],
        "hash_on": "header:x-user",
    }));
    let env = MemoryEnv::default();
    let pick = |user: &str| {
        decision(
            r.on_request(
                &env,
                HttpRequest::new("GET", "/").with_header("x-user", user),
            )
            .unwrap(),
        )
        .0
        .upstream
    };
    let mut counts = BTreeMap::new();
    for i in 0..4000 {
        let user = format!("user-{i}");
        let first = pick(&user);
        assert_eq!(pick(&user), first, "sticky");
        *counts.entry(first).or_insert(0) += 1;
    }
    assert!((800..1200).contains(&counts["a"]), "{counts:?}");
    assert!((1700..2300).contains(&counts["c"]), "{counts:?}");

    // Removing a target only moves the keys that were on it (consistency).
    let without_c = routing(json!({
        "split": [{"upstream": "a", "weight": 1}, {"upstream": "b", "weight": 1}],
        "hash_on": "header:x-user",
    }));
    for i in 0..500 {
        let user = format!("user-{i}");
        let before = pick(&user);
        let after = decision(
            without_c
                .on_request(
                    &env,
                    HttpRequest::new("GET", "/").with_header("x-user", &user),
                )
                .unwrap(),
        )
        .0
        .upstream;
        if before != "c" {
            assert_eq!(before, after, "{user}");
        }
    }
}

#[test]
fn health_aware_split_skips_clusters_with_every_circuit_open() {
    let r = routing(json!({
        "split": [{"upstream": "a", "weight": 1}, {"upstream": "b", "weight": 1}],
        "hash_on": "client_ip", "health_aware": true,
    }));
    let env = MemoryEnv::default();
    env.health
        .borrow_mut()
        .insert("a".into(), vec![endpoint(false, 0), endpoint(false, 0)]);
    env.health
        .borrow_mut()
        .insert("b".into(), vec![endpoint(true, 0)]);
    for i in 0..50 {
        let mut req = HttpRequest::new("GET", "/");
        req.client_ip = format!("10.0.0.{i}");
        assert_eq!(decision(r.on_request(&env, req).unwrap()).0.upstream, "b");
    }
    // When every target is down, the split still picks one: trying beats failing.
    env.health
        .borrow_mut()
        .insert("b".into(), vec![endpoint(false, 0)]);
    let (d, _) = decision(r.on_request(&env, HttpRequest::new("GET", "/")).unwrap());
    assert!(["a", "b"].contains(&d.upstream.as_str()));
}

#[test]
fn llm_routes_by_model_with_ordered_fallbacks() {
    let r = routing(json!({"llm": {
        "models": {"gpt-4o": ["openai", "azure"], "*": ["local"]},
        "retries": 1, "backoff_ms": 200,
    }}));
    let env = MemoryEnv::default();
    let (d, _) = decision(r.on_request(&env, chat("gpt-4o")).unwrap());
    assert_eq!(
        d,
        RouteDecision {
            upstream: "openai".into(),
            fallbacks: vec!["azure".into()],
            retries: 1,
            backoff_ms: 200
        }
    );
    assert_eq!(env.ctx_get(ctx::MODEL).as_deref(), Some("gpt-4o"));
    let (d, _) = decision(r.on_request(&env, chat("llama-3")).unwrap());
    assert_eq!(d.upstream, "local");
    // An unhealthy provider goes last.
    env.health
        .borrow_mut()
        .insert("openai".into(), vec![endpoint(false, 0)]);
    let (d, _) = decision(r.on_request(&env, chat("gpt-4o")).unwrap());
    assert_eq!(
        (d.upstream.as_str(), d.fallbacks.as_slice()),
        ("azure", &["openai".to_string()][..])
    );
}

#[test]
fn unknown_model_is_a_400_naming_the_models() {
    let r = routing(json!({"llm": {"models": {"gpt-4o": ["openai"]}}}));
    let env = MemoryEnv::default();
    match r.on_request(&env, chat("gpt-5")).unwrap() {
        RequestOutcome::Respond(resp) => {
            assert_eq!(resp.status, 400);
            let body: serde_json::Value = serde_json::from_slice(&resp.body.unwrap()).unwrap();
            assert_eq!(body["error"], "unknown_model");
            assert!(body["message"].as_str().unwrap().contains("gpt-4o"));
        }
        other => panic!("{other:?}"),
    }
    // Not an LLM call (GET, or no JSON model): ordinary routing applies.
    assert_eq!(
        r.on_request(&env, HttpRequest::new("GET", "/v1/models"))
            .unwrap(),
        RequestOutcome::pass()
    );
}

#[test]
fn llm_cost_and_latency_strategies() {
    let env = MemoryEnv::default();
    let by_cost = routing(json!({"llm": {"strategy": "cost",
        "models": {"m": ["a", "b", "c"]}, "cost": {"a": 3.0, "b": 1.0, "c": 2.0}}}));
    let (d, _) = decision(by_cost.on_request(&env, chat("m")).unwrap());
    assert_eq!(
        (d.upstream.as_str(), d.fallbacks.as_slice()),
        ("b", &["c".to_string(), "a".to_string()][..])
    );

    let by_latency =
        routing(json!({"llm": {"strategy": "latency", "models": {"m": ["a", "b", "c"]}}}));
    env.health
        .borrow_mut()
        .insert("a".into(), vec![endpoint(true, 900)]);
    env.health
        .borrow_mut()
        .insert("b".into(), vec![endpoint(true, 300), endpoint(false, 10)]);
    env.health
        .borrow_mut()
        .insert("c".into(), vec![endpoint(true, 500)]);
    let (d, _) = decision(by_latency.on_request(&env, chat("m")).unwrap());
    assert_eq!(
        (d.upstream.as_str(), d.fallbacks.as_slice()),
        ("b", &["c".to_string(), "a".to_string()][..])
    );
}

#[test]
fn path_and_header_rewrites_apply_to_every_request() {
    let r = routing(json!({
        "rewrite": [{"prefix": "/api/", "replace": "/"}, {"prefix": "/old", "replace": "/new"}],
        "request_headers": {"set": {"x-routed": "yes"}, "remove": ["x-debug"]},
        "rules": [{"header": "x-canary", "upstream": "canary"}],
    }));
    let env = MemoryEnv::default();
    let RequestOutcome::Continue(c) = r
        .on_request(&env, HttpRequest::new("GET", "/api/users?x=1"))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.path.as_deref(), Some("/users?x=1"));
    assert_eq!(
        c.headers,
        [
            edgegate_policy_core::HeaderOp::Set("x-routed".into(), "yes".into()),
            edgegate_policy_core::HeaderOp::Remove("x-debug".into()),
        ]
    );
    let (_, c) = decision(
        r.on_request(
            &env,
            HttpRequest::new("GET", "/old/a").with_header("x-canary", ""),
        )
        .unwrap(),
    );
    assert_eq!(c.path.as_deref(), Some("/new/a"));
    let RequestOutcome::Continue(c) = r
        .on_request(&env, HttpRequest::new("GET", "/other"))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.path, None);
}

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        (json!({"rules": [{"upstream": "a"}]}), "rules[0]"),
        (
            json!({"rules": [{"header": "h", "cookie": "c", "upstream": "a"}]}),
            "rules[0]",
        ),
        (
            json!({"split": [{"upstream": "a", "weight": 0}]}),
            "split[0].weight",
        ),
        (
            json!({"split": [{"upstream": "", "weight": 1}]}),
            "split[0].upstream",
        ),
        (json!({"hash_on": "principal"}), "hash_on"),
        (
            json!({"split": [{"upstream": "a", "weight": 1}], "hash_on": "header:"}),
            "hash_on",
        ),
        (
            json!({"rewrite": [{"prefix": "api", "replace": "/"}]}),
            "rewrite[0].prefix",
        ),
        (json!({"llm": {"models": {}}}), "llm.models"),
        (json!({"llm": {"models": {"m": []}}}), "llm.models.m"),
        (
            json!({"llm": {"strategy": "cost", "models": {"m": ["a"]}}}),
            "llm.cost.a",
        ),
        (
            json!({"llm": {"strategy": "fastest", "models": {"m": ["a"]}}}),
            "llm.strategy",
        ),
        (json!({"retries": "x"}), "retries"),
    ];
    for (cfg, key) in cases {
        match Routing::from_config(&cfg.to_string()) {
            Err(PolicyError::Config(e)) => assert_eq!(e.key, key, "{cfg}: {}", e.reason),
            Err(other) => panic!("{cfg}: {other:?}"),
            Ok(_) => panic!("{cfg} accepted"),
        }
    }
}
