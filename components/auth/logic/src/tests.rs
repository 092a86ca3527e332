//! Native tests of the auth logic against an in-memory host with real crypto.

#![allow(clippy::unwrap_used)]

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::{HeaderOp, RequestInfo};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::json;

const NOW_MS: u64 = 1_700_000_000_000;
const NOW_S: u64 = NOW_MS / 1000;

fn sha(text: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

fn auth(config: serde_json::Value) -> Auth {
    Auth::from_config(&config.to_string()).unwrap()
}

fn refusal(config: serde_json::Value) -> (String, String) {
    match Auth::from_config(&config.to_string()) {
        Err(PolicyError::Config(e)) => (e.key, e.reason),
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("config accepted"),
    }
}

fn key_config() -> serde_json::Value {
    json!({
        "api_keys": {
            "query": "api_key",
            "keys": [
                {"id": "team-a", "sha256": sha("secret-a"), "tenant": "acme", "roles": ["chat"]},
                {"id": "team-b", "sha256": sha("secret-b"), "roles": []},
            ]
        },
        "access": {"admin": ["admin"], "chat": ["chat"]},
    })
}

fn get(path: &str) -> HttpRequest {
    let mut r = HttpRequest::new("GET", path);
    r.route = "api".into();
    r
}

fn status(outcome: &RequestOutcome) -> Option<u16> {
    match outcome {
        RequestOutcome::Respond(r) => Some(r.status),
        _ => None,
    }
}

fn changes(outcome: RequestOutcome) -> RequestChanges {
    match outcome {
        RequestOutcome::Continue(c) => c,
        other => panic!("expected continue, got {other:?}"),
    }
}

fn body_json(outcome: &RequestOutcome) -> serde_json::Value {
    match outcome {
        RequestOutcome::Respond(r) => serde_json::from_slice(r.body.as_deref().unwrap()).unwrap(),
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn api_key_in_header_query_or_bearer_authenticates_and_names_the_principal() {
    let a = auth(key_config());
    let env = MemoryEnv::at(NOW_MS);
    for req in [
        get("/x").with_header("x-api-key", "secret-a"),
        get("/x?api_key=secret-a"),
        get("/x").with_header("authorization", "Bearer secret-a"),
    ] {
        let c = changes(a.on_request(&env, req).unwrap());
        assert!(c.headers.contains(&HeaderOp::Set(
            "x-edgegate-principal".into(),
            "team-a".into()
        )));
        assert!(c
            .headers
            .contains(&HeaderOp::Set("x-edgegate-tenant".into(), "acme".into())));
        assert_eq!(env.ctx_get("principal").as_deref(), Some("team-a"));
        assert_eq!(env.ctx_get("tenant").as_deref(), Some("acme"));
        assert_eq!(env.ctx_get("auth.method").as_deref(), Some("api_key"));
    }
    // The key in the query is stripped before the upstream sees it; other parameters stay.
    let c = changes(
        a.on_request(&env, get("/x?a=1&api_key=secret-a&b=2"))
            .unwrap(),
    );
    assert_eq!(c.path.as_deref(), Some("/x?a=1&b=2"));
    let c = changes(
        a.on_request(&env, get("/x").with_header("x-api-key", "secret-a"))
            .unwrap(),
    );
    assert!(c.headers.contains(&HeaderOp::Remove("x-api-key".into())));
}

#[test]
fn wrong_and_missing_credentials_get_the_same_401() {
    let a = auth(key_config());
    let env = MemoryEnv::at(NOW_MS);
    let wrong = a
        .on_request(&env, get("/x").with_header("x-api-key", "secret-c"))
        .unwrap();
    let missing = a.on_request(&env, get("/x")).unwrap();
    let odd_scheme = a
        .on_request(&env, get("/x").with_header("authorization", "Digest abc"))
        .unwrap();
    assert_eq!(status(&wrong), Some(401));
    assert_eq!(wrong, missing);
    assert_eq!(wrong, odd_scheme);
    assert_eq!(body_json(&wrong)["error"], "unauthorized");
    let RequestOutcome::Respond(r) = wrong else {
        unreachable!()
    };
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"edgegate\"")
    );
    assert_eq!(env.counter("auth", "unauthenticated"), 3);
}

#[test]
fn roles_decide_403_per_route() {
    let a = auth(key_config());
    let env = MemoryEnv::at(NOW_MS);
    let mut chat = get("/v1/chat").with_header("x-api-key", "secret-b");
    chat.route = "chat".into();
    let refused = a.on_request(&env, chat.clone()).unwrap();
    assert_eq!(status(&refused), Some(403));
    assert_eq!(body_json(&refused)["error"], "forbidden");
    chat.headers = vec![("x-api-key".into(), "secret-a".into())].into();
    assert_eq!(status(&a.on_request(&env, chat).unwrap()), None);
    // Routes without an access rule take any authenticated principal.
    let open = get("/x").with_header("x-api-key", "secret-b");
    assert_eq!(status(&a.on_request(&env, open).unwrap()), None);
}

#[test]
fn basic_auth_checks_user_and_password_digest() {
    let a = auth(json!({
        "basic": {"realm": "ops", "users": [{"user": "alice", "sha256": sha("pa:ss"), "roles": ["ops"]}]}
    }));
    let env = MemoryEnv::at(NOW_MS);
    let basic = |cred: &str| {
        use base64::engine::general_purpose::STANDARD;
        get("/").with_header("authorization", &format!("Basic {}", STANDARD.encode(cred)))
    };
    let ok = a.on_request(&env, basic("alice:pa:ss")).unwrap();
    assert!(changes(ok)
        .headers
        .contains(&HeaderOp::Remove("authorization".into())));
    assert_eq!(env.ctx_get("principal").as_deref(), Some("alice"));
    for bad in ["alice:wrong", "bob:pa:ss", "alice"] {
        let r = a.on_request(&env, basic(bad)).unwrap();
        assert_eq!(status(&r), Some(401), "{bad}");
        let RequestOutcome::Respond(r) = r else {
            unreachable!()
        };
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Basic realm=\"ops\", charset=\"UTF-8\"")
        );
    }
}

fn jwt(
    header: serde_json::Value,
    claims: serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let msg = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", B64.encode(sig))
}

fn claims() -> serde_json::Value {
    json!({"sub": "user-1", "iss": "https://idp", "aud": ["edgegate"], "exp": NOW_S + 60,
           "nbf": NOW_S - 10, "scope": "chat read", "org": "acme"})
}

fn jwt_config(jwk: serde_json::Value, algs: &[&str]) -> serde_json::Value {
    json!({"jwt": {"issuer": "https://idp", "audiences": ["edgegate"], "algorithms": algs,
                    "jwks": {"keys": [jwk]}, "roles_claim": "scope", "tenant_claim": "org"},
           "access": {"chat": ["chat"]}})
}

fn bearer(token: &str) -> HttpRequest {
    let mut r =
        get("/v1/chat/completions").with_header("authorization", &format!("Bearer {token}"));
    r.route = "chat".into();
    r
}

/// Every supported JWT family verifies through the env's crypto, and a token
/// signed by another key is refused.
#[test]
fn jwt_hs256_rs256_es256_and_eddsa_verify() {
    let rng = SystemRandom::new();
    let env = MemoryEnv::at(NOW_MS);

    let secret = b"0123456789abcdef0123456789abcdef";
    let hs = jwt_config(
        json!({"kty": "oct", "k": B64.encode(secret), "kid": "h1"}),
        &["HS256"],
    );
    let token = jwt(json!({"alg": "HS256", "kid": "h1"}), claims(), |m| {
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), m)
            .as_ref()
            .to_vec()
    });

    let rsa = RsaKeyPair::from_pkcs8(include_bytes!("../testdata/rsa2048.pk8")).unwrap();
    let public: signature::RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
    let rs = jwt_config(
        json!({"kty": "RSA", "n": B64.encode(&public.n), "e": B64.encode(&public.e)}),
        &["RS256"],
    );
    let rs_token = jwt(json!({"alg": "RS256"}), claims(), |m| {
        let mut sig = vec![0; rsa.public().modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
            .unwrap();
        sig
    });

    let pk8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pk8.as_ref(),
        &rng,
    )
    .unwrap();
    let point = ec.public_key().as_ref();
    let es = jwt_config(
        json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])}),
        &["ES256"],
    );
    let es_token = jwt(json!({"alg": "ES256"}), claims(), |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });

    let pk8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap();
    let okp = jwt_config(
        json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(ed.public_key().as_ref())}),
        &["EdDSA"],
    );
    let ed_token = jwt(json!({"alg": "EdDSA"}), claims(), |m| {
        ed.sign(m).as_ref().to_vec()
    });

    for (config, token) in [
        (&hs, &token),
        (&rs, &rs_token),
        (&es, &es_token),
        (&okp, &ed_token),
    ] {
        let a = auth(config.clone());
        let c = changes(a.on_request(&env, bearer(token)).unwrap());
        assert!(c.headers.contains(&HeaderOp::Set(
            "x-edgegate-principal".into(),
            "user-1".into()
        )));
        assert!(c
            .headers
            .contains(&HeaderOp::Set("x-edgegate-tenant".into(), "acme".into())));
        assert!(c
            .headers
            .contains(&HeaderOp::Remove("authorization".into())));
        assert_eq!(env.ctx_get("roles").as_deref(), Some("chat,read"));
        // A token for another family's key does not verify under this config.
        let other = if token == &ed_token {
            &es_token
        } else {
            &ed_token
        };
        assert_eq!(
            status(&a.on_request(&env, bearer(other)).unwrap()),
            Some(401)
        );
    }
}

#[test]
fn jwt_claims_are_checked() {
    let rng = SystemRandom::new();
    let pk8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap();
    let cfg = jwt_config(
        json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(ed.public_key().as_ref()), "kid": "k1"}),
        &["EdDSA"],
    );
    let a = auth(cfg);
    let env = MemoryEnv::at(NOW_MS);
    let sign = |header: serde_json::Value, c: serde_json::Value| {
        jwt(header, c, |m| ed.sign(m).as_ref().to_vec())
    };
    let ok = || claims();
    let h = || json!({"alg": "EdDSA", "kid": "k1"});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = ok();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = ok();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let cases = [
        ("valid", sign(h(), ok()), None),
        (
            "expired",
            sign(h(), with("exp", json!(NOW_S - 31))),
            Some(401),
        ),
        (
            "expired within leeway",
            sign(h(), with("exp", json!(NOW_S - 29))),
            None,
        ),
        ("no exp", sign(h(), without("exp")), Some(401)),
        (
            "not yet valid",
            sign(h(), with("nbf", json!(NOW_S + 120))),
            Some(401),
        ),
        (
            "wrong issuer",
            sign(h(), with("iss", json!("https://evil"))),
            Some(401),
        ),
        (
            "wrong audience",
            sign(h(), with("aud", json!("other"))),
            Some(401),
        ),
        (
            "audience as string",
            sign(h(), with("aud", json!("edgegate"))),
            None,
        ),
        ("no subject", sign(h(), without("sub")), Some(401)),
        (
            "missing role",
            sign(h(), with("scope", json!("read"))),
            Some(403),
        ),
        (
            "other kid",
            sign(json!({"alg": "EdDSA", "kid": "k2"}), ok()),
            Some(401),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"none"}"#),
                B64.encode(ok().to_string())
            ),
            Some(401),
        ),
        ("not a jwt", "eyJ.abc".to_string(), Some(401)),
        (
            "garbage",
            "eyJhbGciOiJFZERTQSJ9.!!!.???".to_string(),
            Some(401),
        ),
    ];
    for (name, token, expected) in cases {
        assert_eq!(
            status(&a.on_request(&env, bearer(&token)).unwrap()),
            expected,
            "{name}"
        );
    }
    // A tampered payload fails the signature check.
    let token = sign(h(), ok());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = B64.encode(with("sub", json!("admin")).to_string());
    parts[1] = &forged;
    assert_eq!(
        status(&a.on_request(&env, bearer(&parts.join("."))).unwrap()),
        Some(401)
    );
}

#[test]
fn client_cannot_spoof_the_principal_or_tenant_headers() {
    let a = auth(key_config());
    let env = MemoryEnv::at(NOW_MS);
    let req = get("/x")
        .with_header("x-api-key", "secret-b")
        .with_header("x-edgegate-principal", "root")
        .with_header("x-edgegate-tenant", "other");
    let c = changes(a.on_request(&env, req).unwrap());
    // team-b has no tenant: the client's tenant header is removed, the principal replaced.
    assert_eq!(
        c.headers[..2],
        [
            HeaderOp::Remove("x-edgegate-tenant".into()),
            HeaderOp::Set("x-edgegate-principal".into(), "team-b".into())
        ]
    );
}

#[test]
fn rate_limit_per_principal_and_route_with_retry_after() {
    let mut cfg = key_config();
    cfg["rate_limits"] = json!({"*": {"requests": 3, "window_s": 60}});
    let a = auth(cfg);
    let env = MemoryEnv::at(NOW_MS - NOW_MS % 60_000); // start of a window
    let req = |key: &str, route: &str| {
        let mut r = get("/x").with_header("x-api-key", key);
        r.route = route.into();
        r
    };
    for _ in 0..3 {
        assert_eq!(
            status(&a.on_request(&env, req("secret-a", "api")).unwrap()),
            None
        );
    }
    let refused = a.on_request(&env, req("secret-a", "api")).unwrap();
    assert_eq!(status(&refused), Some(429));
    assert_eq!(body_json(&refused)["error"], "rate_limited");
    let RequestOutcome::Respond(r) = &refused else {
        unreachable!()
    };
    assert_eq!(r.header("retry-after").as_deref(), Some("60"));
    // Other principals and other routes have their own budgets.
    assert_eq!(
        status(&a.on_request(&env, req("secret-b", "api")).unwrap()),
        None
    );
    assert_eq!(
        status(&a.on_request(&env, req("secret-a", "other")).unwrap()),
        None
    );
    // Sliding window: 30 s into the next window half of the previous 3 still counts.
    env.advance(90_000);
    let r = a.on_request(&env, req("secret-a", "api")).unwrap();
    assert_eq!(status(&r), None, "1 + 3 × 0.5 = 2.5 ≤ 3");
    let refused = a.on_request(&env, req("secret-a", "api")).unwrap();
    assert_eq!(status(&refused), Some(429), "2 + 3 × 0.5 = 3.5 > 3");
    // A whole window later everything has drained.
    env.advance(120_000);
    assert_eq!(
        status(&a.on_request(&env, req("secret-a", "api")).unwrap()),
        None
    );
}

fn chat_body(prompt: &str, max_tokens: Option<u64>) -> Vec<u8> {
    let mut v = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]});
    if let Some(m) = max_tokens {
        v["max_tokens"] = json!(m);
    }
    v.to_string().into_bytes()
}

#[test]
fn token_quota_counts_upstream_usage_and_refuses_when_spent() {
    let mut cfg = key_config();
    cfg["token_quota"] = json!({"tokens": 100, "window_s": 3600});
    let a = auth(cfg);
    let env = MemoryEnv::at(NOW_MS);
    let chat = |prompt: &str| {
        let mut r = HttpRequest::new("POST", "/v1/chat/completions")
            .with_header("authorization", "Bearer secret-a")
            .with_body(chat_body(prompt, None));
        r.route = "chat".into();
        r
    };
    let upstream = |total: u64| {
        HttpResponse {
        status: 200,
        headers: vec![].into(),
        body: Some(json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": total - 10, "total_tokens": total}}).to_string().into_bytes()),
    }
    };
    let info = RequestInfo {
        upstream: "openai".into(),
        streamed_body: false,
        ..RequestInfo::default()
    };

    assert_eq!(status(&a.on_request(&env, chat("hi")).unwrap()), None);
    let out = a.on_response(&env, &info, upstream(70)).unwrap();
    let ResponseOutcome::Continue(c) = out else {
        panic!()
    };
    assert_eq!(
        c.headers,
        [HeaderOp::Set(TOKENS_REMAINING_HEADER.into(), "30".into())]
    );
    assert_eq!(env.counter("tokens", "total"), 70);

    // 70 used; a prompt estimated at more than the 30 left is refused up front.
    let long = "word ".repeat(40); // 200 bytes ≈ 50 tokens
    let refused = a.on_request(&env, chat(&long)).unwrap();
    assert_eq!(status(&refused), Some(429));
    assert_eq!(body_json(&refused)["error"], "token_quota_exceeded");
    assert_eq!(status(&a.on_request(&env, chat("hi")).unwrap()), None);
    a.on_response(&env, &info, upstream(40)).unwrap();
    // Spent: even a tiny prompt is refused until the window ends.
    let refused = a.on_request(&env, chat("hi")).unwrap();
    let RequestOutcome::Respond(r) = &refused else {
        panic!()
    };
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    // The quota is per principal and only on LLM paths.
    let mut other = chat("hi");
    other.headers = vec![("x-api-key".into(), "secret-b".into())].into();
    other.route = "api".into();
    assert_eq!(status(&a.on_request(&env, other).unwrap()), None);
    let plain = get("/x").with_header("x-api-key", "secret-a");
    assert_eq!(status(&a.on_request(&env, plain).unwrap()), None);
    env.advance(3_600_000);
    assert_eq!(status(&a.on_request(&env, chat("hi")).unwrap()), None);

    // An answer no upstream gave (a cache hit) costs nothing: no tokens are charged.
    let before = env.counter("tokens", "total");
    let from_cache = RequestInfo::default();
    let ResponseOutcome::Continue(c) = a.on_response(&env, &from_cache, upstream(70)).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        c.headers,
        [HeaderOp::Set(TOKENS_REMAINING_HEADER.into(), "100".into())]
    );
    assert_eq!(env.counter("tokens", "total"), before);
}

#[test]
fn usage_is_read_from_json_and_sse_and_estimated_otherwise() {
    assert_eq!(
        limits::usage_of(br#"{"usage":{"total_tokens":42}}"#),
        Some(42)
    );
    assert_eq!(
        limits::usage_of(br#"{"usage":{"input_tokens":5,"output_tokens":7}}"#),
        Some(12)
    );
    let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n";
    assert_eq!(limits::usage_of(sse), Some(7));
    assert_eq!(limits::usage_of(b"data: [DONE]\n"), None);
    assert_eq!(
        limits::estimates(&chat_body(&"x".repeat(400), Some(50))).0,
        150
    );
    let parts = json!({"messages": [{"content": [{"type": "text", "text": "abcdefgh"}]}]});
    assert_eq!(limits::estimates(parts.to_string().as_bytes()).0, 2);
}

#[test]
fn kv_denied_is_an_internal_error_so_on_error_applies() {
    let mut cfg = key_config();
    cfg["rate_limits"] = json!({"*": {"requests": 3, "window_s": 60}});
    let a = auth(cfg);
    let env = MemoryEnv::at(NOW_MS);
    env.deny_kv.set(true);
    let err = a
        .on_request(&env, get("/x").with_header("x-api-key", "secret-a"))
        .unwrap_err();
    assert!(err.to_string().contains("kv"), "{err}");
}

#[test]
fn anonymous_only_when_allowed() {
    let a = auth(json!({"allow_anonymous": true, "access": {"admin": ["admin"]}}));
    let env = MemoryEnv::at(NOW_MS);
    assert_eq!(status(&a.on_request(&env, get("/")).unwrap()), None);
    assert_eq!(env.ctx_get("principal").as_deref(), Some("anonymous"));
    let mut admin = get("/");
    admin.route = "admin".into();
    assert_eq!(status(&a.on_request(&env, admin).unwrap()), Some(403));
}

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        (json!({}), ""),
        (
            json!({"api_keys": {"keys": [{"id": "a", "sha256": "plaintext-key"}]}}),
            "api_keys.keys[0].sha256",
        ),
        (
            json!({"api_keys": {"keys": [{"id": "", "sha256": sha("k")}]}}),
            "api_keys.keys[0].id",
        ),
        (
            json!({"api_keys": {"header": "bad header", "keys": []}}),
            "api_keys.header",
        ),
        (
            json!({"basic": {"users": [{"user": "a:b", "sha256": sha("p")}]}}),
            "basic.users[0].user",
        ),
        (
            json!({"jwt": {"algorithms": ["none"], "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}),
            "jwt.algorithms[0]",
        ),
        (json!({"jwt": {"jwks": {"keys": []}}}), "jwt.jwks.keys"),
        (
            json!({"jwt": {"jwks": {"keys": [{"kty": "RSA", "n": "AQAB"}]}}}),
            "jwt.jwks.keys[0].e",
        ),
        (
            json!({"jwt": {"jwks": {"keys": [{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}}}),
            "jwt.jwks.keys[0].crv",
        ),
        (
            json!({"jwt": {"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}}}),
            "jwt.jwks.keys[0].x",
        ),
        (
            json!({"allow_anonymous": true, "rate_limits": {"*": {"requests": 0, "window_s": 1}}}),
            "rate_limits.*",
        ),
        (
            json!({"allow_anonymous": true, "token_quota": {"tokens": 10, "window_s": 0}}),
            "token_quota",
        ),
        (
            json!({"allow_anonymous": true, "principal_header": ""}),
            "principal_header",
        ),
        (json!({"allow_anonymous": true, "unknown": 1}), "unknown"),
    ];
    for (cfg, key) in cases {
        let (k, reason) = refusal(cfg.clone());
        assert_eq!(k, key, "{cfg} → {reason}");
        assert!(!reason.is_empty());
    }
    let (_, reason) =
        refusal(json!({"api_keys": {"keys": [{"id": "a", "sha256": "plaintext-key"}]}}));
    assert!(reason.contains("never the secret itself"), "{reason}");
}

#[test]
fn a_listed_client_certificate_authenticates_and_an_unlisted_one_falls_through() {
    let a = auth(json!({
        "client_certs": [
            {"spiffe": "spiffe://example.org/billing", "roles": ["chat"], "tenant": "acme"},
            {"dns": "ops.internal", "principal": "ops"},
        ],
        "access": {"api": ["chat"]},
    }));
    let env = MemoryEnv::at(NOW_MS);
    // No certificate: no credentials.
    assert_eq!(status(&a.on_request(&env, get("/")).unwrap()), Some(401));
    env.ctx_set(ctx::TLS_CLIENT_SUBJECT, "CN=billing");
    env.ctx_set(ctx::TLS_CLIENT_SPIFFE, "spiffe://example.org/billing");
    let out = a.on_request(&env, get("/")).unwrap();
    assert_eq!(status(&out), None);
    assert_eq!(
        env.ctx_get(ctx::PRINCIPAL).as_deref(),
        Some("spiffe://example.org/billing")
    );
    assert_eq!(env.ctx_get(ctx::METHOD).as_deref(), Some("mtls"));
    assert_eq!(env.ctx_get(ctx::TENANT).as_deref(), Some("acme"));
    // Matched by DNS name, but without the role the route needs: 403.
    let env = MemoryEnv::at(NOW_MS);
    env.ctx_set(ctx::TLS_CLIENT_SUBJECT, "CN=ops");
    env.ctx_set(ctx::TLS_CLIENT_DNS, "x.internal,ops.internal");
    assert_eq!(status(&a.on_request(&env, get("/")).unwrap()), Some(403));
    let mut other = get("/");
    other.route = "other".into();
    assert_eq!(status(&a.on_request(&env, other).unwrap()), None);
    assert_eq!(env.ctx_get(ctx::PRINCIPAL).as_deref(), Some("ops"));
    // A certificate nobody listed is no credential.
    let env = MemoryEnv::at(NOW_MS);
    env.ctx_set(ctx::TLS_CLIENT_SUBJECT, "CN=mallory");
    env.ctx_set(ctx::TLS_CLIENT_SPIFFE, "spiffe://example.org/mallory");
    assert_eq!(status(&a.on_request(&env, get("/")).unwrap()), Some(401));
}

#[test]
fn a_client_cert_entry_names_exactly_one_identity() {
    let (key, reason) = refusal(json!({"client_certs": [{"spiffe": "spiffe://a", "dns": "b"}]}));
    assert_eq!(key, "client_certs[0]");
    assert!(reason.contains("exactly one"), "{reason}");
}

/// Runs a streamed answer through the response call and the event calls,
/// as the host does; `cut` ends it early as a client disconnect.
fn stream_answer(
    a: &Auth,
    env: &MemoryEnv,
    events: &[edgegate_policy_core::SseEvent],
    cut: Option<usize>,
) {
    let info = RequestInfo {
        upstream: "llm".into(),
        streamed_body: true,
        ..RequestInfo::default()
    };
    let head = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())].into(),
        body: None,
    };
    a.on_response(env, &info, head).unwrap();
    let mut state = BodyState::default();
    let upto = cut.unwrap_or(events.len());
    for e in &events[..upto] {
        let out = a
            .on_response_event(env, &mut state, StreamItem::Event(e.clone()), String::new())
            .unwrap();
        assert_eq!(out, EventOutcome::Pass, "auth passes events untouched");
    }
    let reason = if cut.is_some() {
        EndReason::ClientGone
    } else {
        EndReason::Complete
    };
    a.on_response_event(env, &mut state, StreamItem::End(reason), String::new())
        .unwrap();
}

fn quota_env(prompt: &str) -> (Auth, MemoryEnv) {
    let mut cfg = key_config();
    cfg["token_quota"] = json!({"tokens": 100000, "window_s": 3600});
    let a = auth(cfg);
    let env = MemoryEnv::at(NOW_MS);
    let mut r = HttpRequest::new("POST", "/v1/chat/completions")
        .with_header("authorization", "Bearer secret-a")
        .with_body(chat_body(prompt, Some(500)));
    r.route = "chat".into();
    assert_eq!(status(&a.on_request(&env, r).unwrap()), None);
    (a, env)
}

fn spent(a: &Auth, env: &MemoryEnv) -> u64 {
    let quota = a.config.token_quota.unwrap();
    limits::used(env, "team-a", quota, NOW_MS).unwrap()
}

fn openai_chunks(
    texts: &[&str],
    usage: Option<serde_json::Value>,
) -> Vec<edgegate_policy_core::SseEvent> {
    let mut events: Vec<_> = texts
        .iter()
        .map(|t| {
            edgegate_policy_core::SseEvent::data(
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}], "usage": null}).to_string(),
            )
        })
        .collect();
    if let Some(u) = usage {
        events.push(edgegate_policy_core::SseEvent::data(
            json!({"object": "chat.completion.chunk", "choices": [], "usage": u}).to_string(),
        ));
    }
    events.push(edgegate_policy_core::SseEvent::data("[DONE]"));
    events
}

#[test]
fn a_streamed_openai_answer_is_charged_its_usage_chunk_once_at_the_end() {
    let (a, env) = quota_env("hello there");
    let events = openai_chunks(
        &["Hi", " there", "!"],
        Some(json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})),
    );
    stream_answer(&a, &env, &events, None);
    assert_eq!(
        spent(&a, &env),
        15,
        "the usage chunk's total, nothing estimated on top"
    );
    assert_eq!(env.counter("stream_charges", "stated"), 1);
}

#[test]
fn a_streamed_openai_answer_without_usage_is_estimated_from_prompt_and_text() {
    // 16 bytes of prompt → 4 tokens; 40 bytes of answer → 10 tokens; the
    // 500-token reserve of max_tokens is not charged.
    let (a, env) = quota_env("sixteen bytes..!");
    let events = openai_chunks(
        &["0123456789", "0123456789", "0123456789", "0123456789"],
        None,
    );
    stream_answer(&a, &env, &events, None);
    assert_eq!(spent(&a, &env), 4 + 10);
    assert_eq!(env.counter("stream_charges", "estimated"), 1);
}

fn anthropic_events() -> Vec<edgegate_policy_core::SseEvent> {
    use edgegate_policy_core::SseEvent;
    let delta = |t: &str| {
        SseEvent::named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}).to_string(),
        )
    };
    vec![
        SseEvent::named("message_start", json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}}}).to_string()),
        SseEvent::named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()),
        delta("0123456789012345678901234567890123456789"),
        delta("0123456789012345678901234567890123456789"),
        SseEvent::named("content_block_stop", json!({"type": "content_block_stop", "index": 0}).to_string()),
        SseEvent::named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}}).to_string()),
        SseEvent::named("message_delta", json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 15}}).to_string()),
        SseEvent::named("message_stop", json!({"type": "message_stop"}).to_string()),
    ]
}

#[test]
fn a_streamed_anthropic_answer_counts_input_once_and_cumulative_output_as_the_last() {
    let (a, env) = quota_env("hello");
    stream_answer(&a, &env, &anthropic_events(), None);
    // Input 25 + 5 cache writes + 10 cache reads = 40; output is the last
    // cumulative count, 15 (not 1 + 12 + 15, and not the 20-token text estimate).
    assert_eq!(spent(&a, &env), 40 + 15);
}

#[test]
fn a_client_gone_mid_stream_is_charged_for_what_was_streamed() {
    let (a, env) = quota_env("hello");
    // Gone after the first text delta: input is known (40), output is the
    // streamed text's estimate (40 bytes → 10), not message_start's 1.
    stream_answer(&a, &env, &anthropic_events(), Some(3));
    assert_eq!(spent(&a, &env), 40 + 10);
    assert_eq!(env.counter("stream_charges", "client_gone"), 1);

    let (a, env) = quota_env("sixteen bytes..!");
    let events = openai_chunks(
        &["0123456789", "0123456789", "0123456789"],
        Some(json!({"total_tokens": 99})),
    );
    stream_answer(&a, &env, &events, Some(2));
    assert_eq!(
        spent(&a, &env),
        4 + 5,
        "prompt estimate + 20 streamed bytes"
    );
}

#[test]
fn a_streamed_answer_from_a_cache_hit_is_not_charged() {
    let (a, env) = quota_env("hello");
    let info = RequestInfo {
        upstream: String::new(),
        streamed_body: true,
        ..RequestInfo::default()
    };
    a.on_response(
        &env,
        &info,
        HttpResponse {
            status: 200,
            headers: vec![].into(),
            body: None,
        },
    )
    .unwrap();
    let mut state = BodyState::default();
    let events = openai_chunks(&["x"], Some(json!({"total_tokens": 50})));
    for e in events {
        a.on_response_event(&env, &mut state, StreamItem::Event(e), String::new())
            .unwrap();
    }
    a.on_response_event(
        &env,
        &mut state,
        StreamItem::End(EndReason::Complete),
        String::new(),
    )
    .unwrap();
    assert_eq!(spent(&a, &env), 0);
}

#[test]
fn hostile_usage_counts_saturate_instead_of_wrapping() {
    let mut usage = usage::StreamUsage::default();
    usage.observe(&edgegate_policy_core::SseEvent::named(
        "message_start",
        json!({"type": "message_start", "message": {"usage": {"input_tokens": u64::MAX, "cache_read_input_tokens": 5}}}).to_string(),
    ));
    usage.observe(&edgegate_policy_core::SseEvent::named(
        "message_delta",
        json!({"type": "message_delta", "usage": {"output_tokens": 7}}).to_string(),
    ));
    assert_eq!(usage.tokens(0), u64::MAX);
}
