//! The coordinator's analytics on a generated fleet graph of 10,000 nodes and
//! 50,000 links (goal: the full analysis in ≤ 100 ms), and merging 100 edge
//! reports into the meta-graph.

#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use edgegate_graph::analysis::{analyse, generate, Thresholds};
use edgegate_graph::merge::merge;
use edgegate_graph::{EdgeReport, Graph};

fn analysis(c: &mut Criterion) {
    let g = generate(10_000, 50_000, 1);
    println!("graph: {} nodes, {} links", g.nodes.len(), g.links.len());
    let t = Thresholds::default();
    c.bench_function("analyse 10k nodes / 50k links", |b| {
        b.iter(|| analyse(&g, &t))
    });
}

fn merging(c: &mut Criterion) {
    // 100 edges, each reporting its slice of a fleet graph (100 nodes, 250 links).
    let reports: Vec<(EdgeReport, bool)> = (0..100)
        .map(|i| {
            let part = generate(100, 250, i + 1);
            let graph = Graph {
                nodes: part.nodes,
                links: part.links,
            };
            (
                EdgeReport {
                    node: format!("e{i}"),
                    site: format!("s{}", i % 5),
                    seq: 1,
                    boot: "b".into(),
                    sent_at_ms: 0,
                    graph,
                    revocation_list_version: None,
                    components: Default::default(),
                },
                true,
            )
        })
        .collect();
    c.bench_function("merge 100 edge reports", |b| b.iter(|| merge(&reports)));
}

criterion_group!(benches, analysis, merging);
criterion_main!(benches);
