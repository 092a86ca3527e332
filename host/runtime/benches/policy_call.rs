#![allow(clippy::unwrap_used, missing_docs)]
//! What one policy call costs: a fresh instance from the pool, `init`, `on-request`.
//! Goal: ≤ 10 µs median for the no-op policy.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use edgegate_runtime::bindings::types;
use edgegate_runtime::{
    Capabilities, ContextBag, PolicyInstance, PolicySettings, Runtime, RuntimeConfig,
};

fn component(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("bash")
        .arg(root.join("scripts/build-components.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(root.join(format!("target/components/{name}.wasm"))).unwrap()
}

fn request() -> types::Request {
    types::Request {
        method: "GET".into(),
        path: "/v1/items?id=7".into(),
        authority: "api.example.com".into(),
        body: None,
        client_ip: "127.0.0.1".into(),
        route: "api".into(),
    }
}

/// The request's headers, which a policy reads on demand (`message`).
fn request_headers() -> http::HeaderMap {
    [
        ("accept", "application/json"),
        ("user-agent", "bench"),
        ("x-api-key", "k-123"),
    ]
    .into_iter()
    .map(|(n, v)| {
        (
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        )
    })
    .collect()
}

fn policy(runtime: &Runtime, name: &str, config_json: &str) -> PolicyInstance {
    policy_with(runtime, name, config_json, Capabilities::NONE)
}

fn policy_with(
    runtime: &Runtime,
    name: &str,
    config_json: &str,
    capabilities: Capabilities,
) -> PolicyInstance {
    build(runtime, name, config_json, capabilities, false)
}

fn build(
    runtime: &Runtime,
    name: &str,
    config_json: &str,
    capabilities: Capabilities,
    reuse_instances: bool,
) -> PolicyInstance {
    // The digest only labels the version (the gateway passes the content digest).
    let compiled = runtime
        .compile(name, format!("bench-{name}"), &component(name))
        .unwrap();
    PolicyInstance::new(
        compiled,
        PolicySettings {
            name: name.into(),
            config_json: config_json.into(),
            capabilities,
            memory_limit_bytes: 64 << 20,
            timeout: Duration::from_millis(100),
            reuse_instances,
        },
        None,
        edgegate_runtime::HostServices::none(),
    )
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new(&RuntimeConfig::default()).unwrap();
    let req = request();
    let mut fields = request_headers();
    let noop = policy(&runtime, "noop", "{}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("noop: instantiate + init + on-request", |b| {
        b.iter(|| {
            let mut ctx = ContextBag::default();
            rt.block_on(noop.on_request(&req, &mut fields, &mut ctx))
                .unwrap()
        })
    });
    // The same call on a kept, initialised instance (`reuse_instances = true`).
    let reused = build(&runtime, "noop", "{}", Capabilities::NONE, true);
    c.bench_function("noop: reused instance, on-request", |b| {
        b.iter(|| {
            let mut ctx = ContextBag::default();
            rt.block_on(reused.on_request(&req, &mut fields, &mut ctx))
                .unwrap()
        })
    });
    let headers = policy(
        &runtime,
        "headers",
        r#"{"request_set":{"x-a":"1"},"response_set":{"x-b":"2"},"deny":[{"path_prefix":"/admin","status":403,"body":"no"}]}"#,
    );
    c.bench_function("headers: instantiate + init + on-request", |b| {
        b.iter(|| {
            let mut ctx = ContextBag::default();
            rt.block_on(headers.on_request(&req, &mut fields, &mut ctx))
                .unwrap()
        })
    });

    // Redaction of a 64 KB JSON chat request inside wasm: the whole call
    // (fresh instance, init with the default rules, on-request with the
    // body). bench/redaction.sh compares it with the same logic compiled
    // natively (components/redaction/logic/benches/redact.rs, same fixture).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/fixtures/chat-64k.json");
    let body = std::fs::read(fixture).unwrap();
    let mut big = request();
    big.method = "POST".into();
    big.path = "/v1/chat/completions".into();
    let mut big_fields = request_headers();
    big_fields.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    big.body = Some(body.clone());
    let redaction = policy_with(
        &runtime,
        "redaction",
        "{}",
        Capabilities::NONE.with(edgegate_runtime::Capability::Crypto),
    );
    let mut group = c.benchmark_group("redaction");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("wasm: 64 KB JSON, default rules", |b| {
        b.iter(|| {
            let mut ctx = ContextBag::default();
            rt.block_on(redaction.on_request(&big, &mut big_fields, &mut ctx))
                .unwrap()
        })
    });
    // As the demo and bench configs run it (`reuse_instances = true`): a kept
    // instance, compared with the native "policy kept" case.
    let kept = build(
        &runtime,
        "redaction",
        "{}",
        Capabilities::NONE.with(edgegate_runtime::Capability::Crypto),
        true,
    );
    group.bench_function("wasm: 64 KB JSON, policy kept", |b| {
        b.iter(|| {
            let mut ctx = ContextBag::default();
            rt.block_on(kept.on_request(&big, &mut big_fields, &mut ctx))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
