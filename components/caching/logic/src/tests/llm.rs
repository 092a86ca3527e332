//! The LLM response cache.

use super::*;

fn llm_caching() -> (Caching, MemoryEnv) {
    setup(json!({ "llm": { "enabled": true, "ttl_s": 600 } }))
}

fn chat(body: &str) -> HttpRequest {
    request("POST", "/v1/chat/completions").with_body(body)
}

fn answer(text: &str) -> HttpResponse {
    HttpResponse {
        headers: vec![("content-type".into(), "application/json".into())].into(),
        ..upstream(text, &[])
    }
}

#[test]
fn llm_requests_hit_regardless_of_key_order_and_whitespace() {
    let (c, env) = llm_caching();
    let first = send(
        &c,
        &env,
        chat(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#),
        &answer("hello"),
    );
    assert_eq!(first.status(), Some("miss"));
    let again = send(
        &c,
        &env,
        chat(
            r#"{ "messages": [ { "content": "hi", "role": "user" } ], "temperature": 0.0, "model": "m", "user": "u2" }"#,
        ),
        &answer("other"),
    );
    assert!(!again.upstream_called);
    assert_eq!((again.status(), again.body()), (Some("hit"), Some("hello")));

    let different = send(
        &c,
        &env,
        chat(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"bye"}]}"#),
        &answer("bye"),
    );
    assert_eq!(different.status(), Some("miss"));

    // LLM entries live `llm.ttl_s`.
    env.advance(599_000);
    assert!(
        !send(
            &c,
            &env,
            chat(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"bye"}]}"#),
            &answer("?")
        )
        .upstream_called
    );
    env.advance(1_000);
    assert!(
        send(
            &c,
            &env,
            chat(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"bye"}]}"#),
            &answer("?")
        )
        .upstream_called
    );
}

#[test]
fn llm_sampling_and_non_json_bypass() {
    let (c, env) = llm_caching();
    for body in [
        r#"{"model":"m","temperature":0.7,"messages":[]}"#,
        r#"{"model":"m","messages":[]}"#,
        r#"{"model":"m","temperature":0,"n":3,"messages":[]}"#,
        "not json",
    ] {
        let ex = send(&c, &env, chat(body), &answer("x"));
        assert_eq!(ex.status(), Some("bypass"), "{body}");
        assert!(send(&c, &env, chat(body), &answer("x")).upstream_called);
    }
    assert!(env.kv.borrow().is_empty());

    // Embeddings do not sample; without deterministic_only anything goes.
    let embed = || request("POST", "/v1/embeddings").with_body(r#"{"model":"e","input":"x"}"#);
    send(&c, &env, embed(), &answer("[0.1]"));
    assert_eq!(send(&c, &env, embed(), &answer("?")).status(), Some("hit"));
    let (c, env) = setup(json!({ "llm": { "enabled": true, "deterministic_only": false } }));
    let warm = || chat(r#"{"model":"m","temperature":0.7,"messages":[]}"#);
    send(&c, &env, warm(), &answer("x"));
    assert_eq!(send(&c, &env, warm(), &answer("?")).status(), Some("hit"));
}

#[test]
fn llm_cache_off_or_other_paths_are_not_lookups() {
    let (c, env) = setup(json!({}));
    let body = r#"{"model":"m","temperature":0,"messages":[]}"#;
    send(&c, &env, chat(body), &answer("x"));
    assert_eq!(send(&c, &env, chat(body), &answer("x")).status(), None);
    let (c, env) = llm_caching();
    let other = || request("POST", "/v1/other").with_body(body);
    send(&c, &env, other(), &answer("x"));
    assert!(send(&c, &env, other(), &answer("x")).upstream_called);
}
