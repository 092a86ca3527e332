//! Coordinator ingest: reports per second from 1,000 simulated edges posting
//! over HTTP on 32 connections (goal: ≥ 1,000 reports/s), with the embedded
//! store and, when the `etcd` binary is on PATH, with a real etcd the bench
//! starts on loopback ports. The load generator runs in this process and
//! shares the machine with the coordinator, so the figure is a floor.

#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgegate_coordinator::{server, CoordinatorConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

const EDGES: usize = 1_000;
const CONNECTIONS: usize = 32;

/// An edge's report: 4 routes, 2 upstream clusters of 3 endpoints each (out
/// of a fleet-wide pool of 60, so sites share endpoints), about 6 KB.
fn report(i: usize) -> Bytes {
    let node = format!("edge-{i}");
    let site = format!("site-{}", i % 20);
    let stats = json!({"requests_per_s": 120.5, "error_rate": 0.001, "latency_ms": 3.2, "circuit": "closed", "up": true});
    let mut nodes = vec![
        json!({"id": format!("edge:{node}"), "kind": "edge", "label": node, "site": site, "stats": stats}),
    ];
    let mut links = Vec::new();
    for u in 0..2 {
        let up = format!("upstream:{node}/u{u}");
        nodes.push(json!({"id": up, "kind": "upstream", "label": format!("u{u}"), "site": site, "stats": stats}));
        for e in 0..3 {
            let ep = format!("endpoint:10.0.{}.{}:8080", u, (i + e) % 30);
            nodes.push(json!({"id": ep, "kind": "endpoint", "label": &ep[9..], "stats": stats}));
            links.push(json!({"from": up, "to": ep, "stats": stats}));
        }
    }
    for r in 0..4 {
        let route = format!("route:{node}/r{r}");
        nodes.push(json!({"id": route, "kind": "route", "label": format!("r{r}"), "site": site, "stats": stats}));
        links.push(json!({"from": format!("edge:{node}"), "to": route, "stats": stats}));
        links.push(
            json!({"from": route, "to": format!("upstream:{node}/u{}", r % 2), "stats": stats}),
        );
    }
    let body = json!({"node": node, "site": site, "seq": 1, "boot": "bench", "sent_at_ms": 0, "graph": {"nodes": nodes, "links": links}});
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Posts every body once, `CONNECTIONS` at a time; panics on a refused report.
async fn post_all(client: &HttpClient, addr: SocketAddr, bodies: &Arc<Vec<Bytes>>) {
    let url: http::Uri = format!("http://{addr}/v1/reports").parse().unwrap();
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for worker in 0..CONNECTIONS {
        let (client, bodies, url) = (client.clone(), Arc::clone(bodies), url.clone());
        tasks.push(tokio::spawn(async move {
            for body in bodies.iter().skip(worker).step_by(CONNECTIONS) {
                let req = http::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let status = resp.status();
                let answer = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(status.is_success(), "{status}: {answer:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A coordinator in this process on `store` (TOML of its `[store]` table).
fn start(rt: &tokio::runtime::Runtime, dir: &std::path::Path, store: &str) -> SocketAddr {
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\nremove_after_ms = 600000\n[store]\n{store}\n"),
    )
    .unwrap();
    let config = CoordinatorConfig::load(&path).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::forget(stop); // runs until the bench process ends
    let (bound, addr) = tokio::sync::oneshot::channel();
    rt.spawn(async move {
        if let Err(e) = server::run(config, stopped, bound).await {
            eprintln!("coordinator: {e}");
        }
    });
    rt.block_on(addr).expect("the coordinator did not start")
}

/// The etcd process and its data dir (removed on drop).
struct Etcd {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd on loopback ports, or `None` when there is no `etcd` binary.
fn etcd() -> Option<(Etcd, String)> {
    let data = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--name=bench")
        .arg(format!("--data-dir={}", data.path().display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .arg("--log-level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let etcd = Etcd { child, _data: data };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Some((etcd, url));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bodies = Arc::new((0..EDGES).map(report).collect::<Vec<_>>());
    println!(
        "{EDGES} edges, reports of {} bytes on average",
        bodies.iter().map(Bytes::len).sum::<usize>() / EDGES
    );
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONNECTIONS)
        .build_http();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("coordinator ingest");
    group.throughput(Throughput::Elements(EDGES as u64));
    group.sample_size(10);

    let embedded = start(&rt, dir.path(), "backend = \"embedded\"");
    rt.block_on(post_all(&client, embedded, &bodies));
    group.bench_function("1000 reports, embedded store", |b| {
        b.iter(|| rt.block_on(post_all(&client, embedded, &bodies)))
    });

    match etcd() {
        Some((_etcd, url)) => {
            let sub = tempfile::tempdir().unwrap();
            let addr = start(
                &rt,
                sub.path(),
                &format!("backend = \"etcd\"\nendpoints = [\"{url}\"]"),
            );
            rt.block_on(post_all(&client, addr, &bodies));
            group.bench_function("1000 reports, etcd store", |b| {
                b.iter(|| rt.block_on(post_all(&client, addr, &bodies)))
            });
        }
        None => println!("no etcd binary on PATH: the etcd store is not measured"),
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
