//! Verification time of a signed component: one SHA-256 pass over the bytes and one
//! Ed25519 check. Goal: ≤ 1 ms for a 2 MB component.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgegate_trust::{generate_key, sign_component, verify_component, TrustStore, VerifyOptions};

/// A component of about `size` bytes: the header and one custom section.
fn component(size: usize) -> Vec<u8> {
    let mut out = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let mut payload = vec![4u8];
    payload.extend_from_slice(b"blob");
    payload.extend((0..size).map(|i| (i * 7 % 256) as u8));
    out.push(0);
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn bench(c: &mut Criterion) {
    let key = generate_key();
    let trust = TrustStore::parse(
        Path::new("trust.toml"),
        &TrustStore::render_single(&key.key_id(), &key.public_pem(), &["*".into()]),
    )
    .unwrap();
    let mut group = c.benchmark_group("verify_component");
    for (label, size) in [("100KB", 100 << 10), ("2MB", 2 << 20)] {
        let signed = sign_component(&component(size), &key).unwrap();
        let opts = VerifyOptions {
            kind: "auth",
            required_signers: 1,
            sha256_pin: None,
            now: SystemTime::now(),
            revocations: None,
        };
        group.throughput(Throughput::Bytes(signed.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &signed, |b, signed| {
            b.iter(|| verify_component(signed, &trust, &opts).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
