#![allow(clippy::unwrap_used, missing_docs)]
//! Redaction of the 64 KB chat fixture compiled natively: the baseline that
//! the same logic inside wasm (host/runtime/benches/policy_call.rs, group
//! `redaction`) is compared with in bench/redaction.sh. Like the wasm call,
//! each iteration builds the policy from its config first.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgegate_policy_core::testing::MemoryEnv;
use edgegate_policy_core::{HttpRequest, PolicyLogic};
use edgegate_redaction::Redaction;

fn redact_64k_json(c: &mut Criterion) {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../bench/fixtures/chat-64k.json"
    );
    let body = std::fs::read(fixture).unwrap();
    let req = HttpRequest::new("POST", "/v1/chat/completions")
        .with_header("content-type", "application/json")
        .with_body(body.clone());
    let env = MemoryEnv::default();
    let mut group = c.benchmark_group("redaction");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("native: 64 KB JSON, default rules", |b| {
        b.iter(|| {
            let policy = Redaction::from_config("{}").unwrap();
            policy.on_request(&env, req.clone()).unwrap()
        })
    });
    // The same scan with the policy (and its compiled regexes) kept: what
    // building the policy per call costs is the difference.
    let kept = Redaction::from_config("{}").unwrap();
    group.bench_function("native: 64 KB JSON, policy kept", |b| {
        b.iter(|| kept.on_request(&env, req.clone()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, redact_64k_json);
criterion_main!(benches);
