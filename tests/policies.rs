//! The shipped policies (auth, routing, redaction, caching) through the real
//! gateway, with loopback upstreams that play API servers and
//! OpenAI-compatible providers (see `support::Upstream`).

#![allow(clippy::unwrap_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use support::*;

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ES256 key pair and the JWKS entry for it.
fn es256_key() -> (EcdsaKeyPair, String) {
    let rng = ring::rand::SystemRandom::new();
    let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap();
    let point = key.public_key().as_ref();
    let jwk = format!(
        r#"{{ kty = "EC", crv = "P-256", kid = "k1", x = "{}", y = "{}" }}"#,
        B64.encode(&point[1..33]),
        B64.encode(&point[33..])
    );
    (key, jwk)
}

fn es256_token(key: &EcdsaKeyPair, claims: serde_json::Value) -> String {
    let msg = format!(
        "{}.{}",
        B64.encode(json!({"alg": "ES256", "kid": "k1"}).to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key
        .sign(&ring::rand::SystemRandom::new(), msg.as_bytes())
        .unwrap();
    format!("{msg}.{}", B64.encode(sig.as_ref()))
}

fn auth_policy(jwk: &str) -> String {
    policy(
        "auth",
        "auth",
        &format!(
            r#"capabilities = ["kv", "clock", "crypto"]
request_body = "buffer"
response_body = "buffer"
[policies.auth.config]
api_keys = {{ keys = [
  {{ id = "team-a", sha256 = "{a}", tenant = "acme", roles = ["chat"] }},
  {{ id = "team-b", sha256 = "{b}" }},
] }}
jwt = {{ issuer = "https://idp.test", audiences = ["edgegate"], algorithms = ["ES256"], jwks = {{ keys = [{jwk}] }} }}
access = {{ chat = ["chat"] }}
rate_limits = {{ limited = {{ requests = 2, window_s = 60 }} }}
token_quota = {{ tokens = 40, window_s = 3600 }}
"#,
            a = sha256_hex("key-a"),
            b = sha256_hex("key-b"),
        ),
    )
}

async fn error_code(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn auth_accepts_api_keys_and_jwts_and_refuses_the_rest_alike() {
    let up = Upstream::start();
    let (key, jwk) = es256_key();
    let config = format!(
        "{}{}{}{}",
        base_config(up.addr),
        auth_policy(&jwk),
        route("chat", "/v1", &["auth"]),
        route("api", "/", &["auth"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();

    let ok = client
        .get(gw.url("/x"))
        .header("x-api-key", "key-a")
        .header("x-edgegate-principal", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-edgegate-principal"), Some("team-a"));
    assert_eq!(seen.header("x-edgegate-tenant"), Some("acme"));
    assert_eq!(seen.header("x-api-key"), None, "the credential is stripped");

    let claims = json!({"sub": "user-7", "iss": "https://idp.test", "aud": "edgegate", "exp": now_s() + 300});
    let token = es256_token(&key, claims.clone());
    let ok = client
        .get(gw.url("/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-edgegate-principal"), Some("user-7"));
    assert_eq!(seen.header("authorization"), None);

    let before = up.count();
    let mut expired = claims.clone();
    expired["exp"] = json!(now_s() - 3600);
    let mut wrong_aud = claims;
    wrong_aud["aud"] = json!("someone-else");
    let refusals = [
        client.get(gw.url("/x")).header("x-api-key", "key-z"),
        client.get(gw.url("/x")),
        client
            .get(gw.url("/x"))
            .bearer_auth(es256_token(&key, expired)),
        client
            .get(gw.url("/x"))
            .bearer_auth(es256_token(&key, wrong_aud)),
        client.get(gw.url("/x")).bearer_auth(format!("{token}x")),
    ];
    let mut bodies = Vec::new();
    for req in refusals {
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"edgegate\""
        );
        bodies.push(error_code(resp).await);
    }
    let first = bodies[0].clone();
    assert_eq!(first.0, 401);
    assert_eq!(first.1["error"], "unauthorized");
    assert!(bodies.iter().all(|b| *b == first), "{bodies:?}");
    assert_eq!(
        up.count(),
        before,
        "refused requests never reach the upstream"
    );

    // Authenticated but without the role the `chat` route requires.
    let forbidden = client
        .get(gw.url("/v1/models"))
        .header("x-api-key", "key-b")
        .send()
        .await
        .unwrap();
    let (status, body) = error_code(forbidden).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "edgegate_policy_events_total",
            &[
                ("policy", "auth"),
                ("event", "auth"),
                ("label", "unauthenticated")
            ]
        ),
        Some(5),
        "{m}"
    );
}

#[tokio::test]
async fn rate_limit_and_token_quota_answer_429_with_retry_after() {
    let up = Upstream::start();
    let (_, jwk) = es256_key();
    let config = format!(
        "{}{}{}{}",
        base_config(up.addr),
        auth_policy(&jwk),
        route("limited", "/limited", &["auth"]),
        route("chat", "/v1", &["auth"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let get = |key: &'static str| client.get(gw.url("/limited")).header("x-api-key", key);
    for _ in 0..2 {
        assert_eq!(get("key-a").send().await.unwrap().status(), 200);
    }
    let limited = get("key-a").send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(error_code(limited).await.1["error"], "rate_limited");
    assert_eq!(
        get("key-b").send().await.unwrap().status(),
        200,
        "per principal"
    );

    // Token quota: 40 tokens per hour, counted from the provider's `usage`.
    let chat = |content: String| {
        client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("key-a")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": content}]}))
    };
    let first = chat("x".repeat(20)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // usage.total_tokens = 20 + 5 → 15 left.
    assert_eq!(first.headers()["x-ratelimit-remaining-tokens"], "15");
    let calls = up.count();
    // ~25 estimated prompt tokens do not fit in the 15 left.
    let refused = chat("y".repeat(100)).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused).await.1["error"], "token_quota_exceeded");
    assert_eq!(up.count(), calls);
    let small = chat("z".repeat(4)).send().await.unwrap();
    assert_eq!(small.headers()["x-ratelimit-remaining-tokens"], "6");
}

fn routing_upstreams(primary: std::net::SocketAddr, secondary: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.primary]\nendpoints = [\"{primary}\"]\ntimeout_ms = 2000\n\
         [upstreams.secondary]\nendpoints = [\"{secondary}\"]\ntimeout_ms = 2000\n"
    )
}

#[tokio::test]
async fn llm_requests_fall_back_to_the_next_provider_on_5xx_and_429() {
    for failure in [503, 429] {
        let up = Upstream::start();
        let primary = Upstream::start_failing("primary", failure);
        let secondary = Upstream::start_named("secondary");
        let config = format!(
            "{}{}{}{}",
            base_config(up.addr),
            routing_upstreams(primary.addr, secondary.addr),
            policy(
                "routing",
                "routing",
                r#"capabilities = ["health"]
request_body = "buffer"
[policies.routing.config]
llm = { models = { "gpt-4o" = ["primary", "secondary"] }, retries = 1, backoff_ms = 10 }
"#
            ),
            route("chat", "/v1", &["routing"]),
        );
        let gw = Gateway::start(&config);
        let resp = reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "after {failure}");
        assert_eq!(resp.headers()["x-upstream"], "secondary");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "echo: hi");
        assert_eq!(primary.count(), 2, "one try and one retry on the primary");
        assert_eq!(up.count(), 0);

        let unknown = reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-2", "messages": []}))
            .send()
            .await
            .unwrap();
        let (status, body) = error_code(unknown).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unknown_model"))
        );
    }
}

#[tokio::test]
async fn open_circuits_move_a_provider_to_the_back() {
    let up = Upstream::start();
    let primary = Upstream::start_failing("primary", 502);
    let secondary = Upstream::start_named("secondary");
    let config = format!(
        "{}{}{}{}",
        base_config(up.addr),
        routing_upstreams(primary.addr, secondary.addr),
        policy(
            "routing",
            "routing",
            r#"capabilities = ["health"]
request_body = "buffer"
[policies.routing.config]
llm = { models = { "*" = ["primary", "secondary"] } }
"#
        ),
        route("chat", "/v1", &["routing"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "any", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-upstream"], "secondary");
    }
    // Five consecutive failures open the primary's circuit; the health view
    // then shows it unhealthy and the policy puts it last.
    assert_eq!(primary.count(), 5);
    assert_eq!(secondary.count(), 10);
}

#[tokio::test]
async fn routing_rules_and_rewrites_pick_the_upstream_and_path() {
    let up = Upstream::start();
    let primary = Upstream::start_named("primary");
    let secondary = Upstream::start_named("secondary");
    let config = format!(
        "{}{}{}{}",
        base_config(up.addr),
        routing_upstreams(primary.addr, secondary.addr),
        policy(
            "routing",
            "routing",
            r#"[policies.routing.config]
rules = [{ header = "x-canary", equals = "1", upstream = "secondary" }]
split = [{ upstream = "primary", weight = 1 }]
rewrite = [{ prefix = "/api/", replace = "/" }]
request_headers = { set = { "x-routed-by" = "edgegate" } }
"#
        ),
        route("api", "/", &["routing"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let r = client
        .get(gw.url("/api/users?id=1"))
        .header("x-canary", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "secondary");
    let seen = secondary.seen().pop().unwrap();
    assert_eq!(seen.path, "/users?id=1");
    assert_eq!(seen.header("x-routed-by"), Some("edgegate"));
    let r = client.get(gw.url("/api/users")).send().await.unwrap();
    assert_eq!(r.headers()["x-upstream"], "primary");
    assert_eq!(up.count(), 0);
}

#[test]
fn refused_policy_configs_name_the_policy_and_key() {
    let up = Upstream::start();
    let cases = [
        (
            "auth",
            "[policies.auth.config]\napi_keys = { keys = [{ id = \"a\", sha256 = \"my-plain-key\" }] }\n",
            "policy `auth` refused at admission: invalid config: key `api_keys.keys[0].sha256`: must be the 64-hex-digit SHA-256 of the secret, never the secret itself",
        ),
        (
            "routing",
            "[policies.routing.config]\nsplit = [{ upstream = \"a\", weight = 0 }]\n",
            "policy `routing` refused at admission: invalid config: key `split[0].weight`: must be positive",
        ),
    ];
    for (name, config, expected) in cases {
        let text = format!(
            "{}{}{}",
            base_config(up.addr),
            policy(name, name, config),
            route("r", "/", &[name])
        );
        let (ok, _, stderr) = check_config(&text);
        assert!(!ok, "{name} accepted");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

fn redaction_policy() -> String {
    policy(
        "redaction",
        "redaction",
        r#"kind = "redaction"
capabilities = ["crypto"]
request_body = "buffer"
response_body = "buffer"
[policies.redaction.config]
headers = ["x-user-email"]
rules = [
  { detector = "email", mode = "mask" },
  { detector = "credit_card", mode = "block" },
  { detector = "ip", mode = "hash" },
  { name = "ticket", pattern = "TKT-[0-9]{6}", mode = "mask" },
]
"#,
    )
}

#[tokio::test]
async fn redaction_masks_prompts_and_answers_and_blocks_by_rule() {
    let up = Upstream::start();
    let config = format!(
        "{}{}{}",
        base_config(up.addr),
        redaction_policy(),
        route("chat", "/", &["redaction"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let prompt = "mail jane.doe@example.com about TKT-123456 from 10.1.2.3";
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .header("x-user-email", "jane.doe@example.com")
        .json(&json!({"model": "m", "temperature": 0.5, "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();

    // The provider saw valid JSON with only the string values changed.
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-user-email"), Some("[REDACTED:email]"));
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["model"], "m");
    let content = sent["messages"][0]["content"].as_str().unwrap();
    assert!(!content.contains("jane.doe@example.com"), "{content}");
    assert!(!content.contains("TKT-123456"), "{content}");
    assert!(!content.contains("10.1.2.3"), "{content}");
    assert!(
        content.starts_with("mail [REDACTED:email] about [REDACTED:ticket] from [ip:"),
        "{content}"
    );

    // The answer echoes the (already redacted) prompt; a fresh secret in the
    // answer would be masked on the way back too.
    let echoed = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(echoed, format!("echo: {content}"));

    // Hash mode is a stable pseudonym: the same IP gives the same token.
    let again = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "from 10.1.2.3"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let seen = up.seen().pop().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    let pseudonym = content.rsplit("from ").next().unwrap();
    assert_eq!(sent["messages"][0]["content"], format!("from {pseudonym}"));

    // A blocking rule refuses the request and names the rule, not the value.
    let before = up.count();
    let blocked = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 400);
    let text = blocked.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "redaction_blocked");
    assert_eq!(body["rule"], "credit_card");
    assert!(!text.contains("4111"), "{text}");
    assert_eq!(up.count(), before);

    // A Luhn-invalid number is not a card: it passes unchanged.
    let ok = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "order 4111 1111 1111 1112"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let m = gw.metrics().await;
    let count = |label| {
        metric(
            &m,
            "edgegate_policy_events_total",
            &[
                ("policy", "redaction"),
                ("event", "redactions"),
                ("label", label),
            ],
        )
    };
    // email: header + prompt; the answer echoes the already masked text.
    assert_eq!(count("email"), Some(2), "{m}");
    assert_eq!(count("ticket"), Some(1), "{m}");
    assert!(
        !gw.logs().contains("jane.doe@example.com"),
        "original values never logged"
    );
}

fn caching_policy(extra_config: &str) -> String {
    policy(
        "caching",
        "caching",
        &format!(
            r#"kind = "caching"
capabilities = ["kv", "clock", "crypto"]
request_body = "buffer"
response_body = "buffer"
[policies.caching.config]
{extra_config}
"#
        ),
    )
}

#[tokio::test]
async fn cache_serves_hits_honours_etags_and_keeps_llm_answers() {
    let up = Upstream::start();
    let config = format!(
        "{}{}{}",
        base_config(up.addr),
        caching_policy("llm = { enabled = true }"),
        route("api", "/", &["caching"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();

    let first = client.get(gw.url("/cache/a")).send().await.unwrap();
    assert_eq!(first.headers()["x-edgegate-cache"], "miss");
    assert_eq!(first.text().await.unwrap(), "upstream-ok:1");
    let hit = client.get(gw.url("/cache/a")).send().await.unwrap();
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.headers()["x-edgegate-cache"], "hit");
    assert_eq!(hit.headers()["etag"], "\"v1\"");
    assert!(hit.headers().contains_key("age"));
    assert_eq!(
        hit.text().await.unwrap(),
        "upstream-ok:1",
        "served from the cache"
    );
    assert_eq!(up.count(), 1);

    let not_modified = client
        .get(gw.url("/cache/a"))
        .header("if-none-match", "W/\"v0\", \"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.text().await.unwrap(), "");

    // Other paths are other entries; plain responses without freshness are
    // cached for the default TTL only when 200 (they are: `ttl_s` default).
    let other = client.get(gw.url("/cache/b")).send().await.unwrap();
    assert_eq!(other.headers()["x-edgegate-cache"], "miss");
    assert_eq!(up.count(), 2);

    // LLM: the same deterministic request (any key order) is answered once.
    let chat = |body: &str| {
        client
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let a = chat(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(a.headers()["x-edgegate-cache"], "miss");
    let a = a.text().await.unwrap();
    let b = chat(
        r#"{ "messages": [{"content": "hi", "role": "user"}], "temperature": 0, "model": "m" }"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(b.headers()["x-edgegate-cache"], "hit");
    assert_eq!(b.text().await.unwrap(), a);
    assert_eq!(up.count(), 3);
    // Sampling (temperature > 0) is never cached.
    for _ in 0..2 {
        let r =
            chat(r#"{"model":"m","temperature":0.9,"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .unwrap();
        assert_eq!(r.headers()["x-edgegate-cache"], "bypass");
    }
    assert_eq!(up.count(), 5);

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "edgegate_policy_events_total",
            &[("policy", "caching"), ("event", "cache"), ("label", "hit")]
        ),
        Some(3),
        "{m}"
    );
}

#[tokio::test]
async fn per_user_cache_keeps_principals_apart() {
    let up = Upstream::start();
    let (_, jwk) = es256_key();
    let config = format!(
        "{}{}{}{}",
        base_config(up.addr),
        auth_policy(&jwk),
        caching_policy("per_user = true"),
        route("api", "/", &["auth", "caching"]),
    );
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let get = |key: &'static str| client.get(gw.url("/cache/me")).header("x-api-key", key);
    assert_eq!(
        get("key-a").send().await.unwrap().headers()["x-edgegate-cache"],
        "miss"
    );
    assert_eq!(
        get("key-a").send().await.unwrap().headers()["x-edgegate-cache"],
        "hit"
    );
    let b = get("key-b").send().await.unwrap();
    assert_eq!(
        b.headers()["x-edgegate-cache"],
        "miss",
        "another principal's entry"
    );
    assert_eq!(up.count(), 2);
    // Unauthenticated requests never reach the cache.
    let anon = client.get(gw.url("/cache/me")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
}

/// The shipped demo config (README) with loopback ports and a test upstream:
/// all four policies on one route.
#[tokio::test]
async fn the_demo_config_runs_all_four_policies_on_one_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&support::demo_config(up.addr));
    let client = reqwest::Client::new();

    let anonymous = client.get(gw.url("/cache/x")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // auth + caching: the second GET is a hit.
    let get = || {
        client
            .get(gw.url("/cache/x"))
            .header("x-api-key", "demo-key")
    };
    assert_eq!(
        get().send().await.unwrap().headers()["x-edgegate-cache"],
        "miss"
    );
    assert_eq!(
        get().send().await.unwrap().headers()["x-edgegate-cache"],
        "hit"
    );
    assert_eq!(up.count(), 1);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-edgegate-principal"), Some("demo-team"));

    // auth + routing + redaction + caching on an LLM call.
    let chat = json!({"model": "gpt-4o", "temperature": 0,
        "messages": [{"role": "user", "content": "write to jane.doe@example.com"}]});
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("demo-key")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-edgegate-cache"], "miss");
    let left = resp.headers()["x-ratelimit-remaining-tokens"].clone();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: write to [REDACTED:email]"
    );
    let again = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("demo-key")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["x-edgegate-cache"], "hit");
    assert_eq!(
        again.headers()["x-ratelimit-remaining-tokens"],
        left,
        "a cached answer costs no tokens"
    );
    assert_eq!(up.count(), 2);

    let blocked = client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("demo-key")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "card 4111-1111-1111-1111"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 400);
}
