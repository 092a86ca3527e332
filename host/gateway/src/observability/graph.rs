//! The edge node's health graph: built from the counters the
//! request path already keeps (atomics, no lock on the hot path), sampled
//! every report interval, sent to the coordinator, and the coordinator's
//! routing hints applied to the endpoints.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use edgegate_config::NodeConfig;
use edgegate_graph::{
    Circuit, DesiredState, EdgeReport, Graph, GraphLink, GraphNode, NodeKind, RoutingHint, Stats,
};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::control::state::GatewayState;
use crate::lock;

/// Longest wait between reports while the coordinator is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Deadline of one report exchange.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The client of the coordinator sync.
type CoordinatorClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Largest coordinator answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Counters at the previous sample, by node id: (count, failures).
type Previous = HashMap<String, (u64, u64)>;

/// How the last exchanges with the coordinator went.
#[derive(Default)]
struct SyncStatus {
    connected: bool,
    last_ok: Option<Instant>,
    failures_in_a_row: u32,
    last_error: Option<String>,
    desired_version: u64,
}

/// The edge's graph, its sampler and its coordinator sync.
pub(crate) struct HealthGraph {
    state: Arc<ArcSwap<GatewayState>>,
    node: NodeConfig,
    boot: String,
    seq: Mutex<u64>,
    sampled: Mutex<(Instant, Previous)>,
    latest: Mutex<Graph>,
    hints: Mutex<Vec<RoutingHint>>,
    /// How this node differs from the fleet's desired state (coordinator's `[fleet]`).
    drift: Mutex<Vec<String>>,
    sync: Mutex<SyncStatus>,
}

impl HealthGraph {
    pub(crate) fn new(state: Arc<ArcSwap<GatewayState>>, node: NodeConfig) -> Self {
        Self {
            state,
            node,
            boot: format!("{:016x}", fastrand::u64(..)),
            seq: Mutex::new(0),
            sampled: Mutex::new((Instant::now(), Previous::new())),
            latest: Mutex::new(Graph::default()),
            hints: Mutex::new(Vec::new()),
            drift: Mutex::new(Vec::new()),
            sync: Mutex::default(),
        }
    }

    /// Samples the counters into a new local graph (rates since the last sample).
    pub(crate) fn sample(&self) -> Graph {
        let state = self.state.load_full();
        let mut guard = lock(&self.sampled);
        let (at, previous) = &mut *guard;
        let elapsed = at.elapsed().as_secs_f64().max(0.001);
        *at = Instant::now();
        let mut rate = |id: &str, count: u64, failures: u64| -> (f64, f64) {
            // A node first seen now (a model's first request) counts from 0.
            let (c0, f0) = previous
                .insert(id.to_string(), (count, failures))
                .unwrap_or((0, 0));
            let dc = count.saturating_sub(c0);
            let df = failures.saturating_sub(f0);
            let error = if dc == 0 { 0.0 } else { df as f64 / dc as f64 };
            (dc as f64 / elapsed, error)
        };
        let node = &self.node;
        let edge_id = format!("edge:{}", node.id);
        let mut nodes = vec![GraphNode {
            id: edge_id.clone(),
            kind: NodeKind::Edge,
            label: node.id.clone(),
            site: Some(node.site.clone()),
            stats: Stats::default(),
        }];
        let mut links = Vec::new();
        let mut edge_rps = 0.0;
        for (name, cluster) in &state.upstreams.clusters {
            let cluster_id = format!("upstream:{}/{name}", node.id);
            let (mut rps, mut errors, mut latency, mut usable) = (0.0, 0.0, 0.0, 0);
            for e in cluster.endpoints().iter() {
                let (e_rps, _) = rate(
                    &format!("endpoint:{}", e.address),
                    e.attempts.load(Ordering::Relaxed),
                    e.failures.load(Ordering::Relaxed),
                );
                let circuit = e.circuit();
                let stats = Stats {
                    requests_per_s: e_rps,
                    error_rate: f64::from(e.error_rate_ppm()) / 1e6,
                    latency_ms: e.ewma_latency_us() as f64 / 1000.0,
                    circuit,
                    // Open circuit, ejected, or failing active checks; not the
                    // coordinator's own hints (they would feed back).
                    up: e.locally_healthy(),
                };
                rps += e_rps;
                errors += stats.error_rate * e_rps;
                latency += stats.latency_ms * e_rps;
                usable += usize::from(stats.up);
                let endpoint_id = format!("endpoint:{}", e.address);
                nodes.push(GraphNode {
                    id: endpoint_id.clone(),
                    kind: NodeKind::Endpoint,
                    label: e.address.clone(),
                    site: None,
                    stats,
                });
                links.push(GraphLink {
                    from: cluster_id.clone(),
                    to: endpoint_id,
                    stats,
                });
            }
            let weight = if rps > 0.0 { rps } else { 1.0 };
            nodes.push(GraphNode {
                id: cluster_id,
                kind: NodeKind::Upstream,
                label: name.clone(),
                site: Some(node.site.clone()),
                stats: Stats {
                    requests_per_s: rps,
                    error_rate: errors / weight,
                    latency_ms: latency / weight,
                    circuit: Circuit::Closed,
                    up: usable > 0,
                },
            });
        }
        // Policies: calls and failures of every version; a quarantined one is down.
        for (name, set) in &state.policies {
            let policy_id = format!("policy:{}/{name}", node.id);
            let versions =
                std::iter::once(&set.serving).chain(set.canary.iter().map(|c| &c.version));
            let (mut calls, mut failures, mut held) = (0, 0, false);
            for v in versions {
                let s = v.stats.snapshot();
                calls += s.calls;
                failures += s.failures;
                held |= v.quarantine.is_held();
            }
            let (rps, error_rate) = rate(&policy_id, calls, failures);
            nodes.push(GraphNode {
                id: policy_id,
                kind: NodeKind::Policy,
                label: name.clone(),
                site: Some(node.site.clone()),
                stats: Stats {
                    requests_per_s: rps,
                    error_rate,
                    circuit: if held { Circuit::Open } else { Circuit::Closed },
                    up: !held,
                    ..Stats::default()
                },
            });
        }
        // model id → (name, requests/s, Σ error rate × rps, Σ latency × rps, highest latency).
        type ModelAcc = (String, f64, f64, f64, f64);
        let mut models: BTreeMap<String, ModelAcc> = BTreeMap::new();
        for route in &state.routes.routes {
            let route_id = format!("route:{}/{}", node.id, route.name);
            let (total, server_errors) = route.metrics.totals();
            let (rps, error_rate) = rate(&route_id, total, server_errors);
            edge_rps += rps;
            let stats = Stats {
                requests_per_s: rps,
                error_rate,
                ..Stats::default()
            };
            nodes.push(GraphNode {
                id: route_id.clone(),
                kind: NodeKind::Route,
                label: route.name.clone(),
                site: Some(node.site.clone()),
                stats,
            });
            links.push(GraphLink {
                from: edge_id.clone(),
                to: route_id.clone(),
                stats,
            });
            links.push(GraphLink {
                from: route_id.clone(),
                to: format!("upstream:{}/{}", node.id, route.cluster.name),
                stats,
            });
            for entry in &route.chain {
                links.push(GraphLink {
                    from: route_id.clone(),
                    to: format!("policy:{}/{}", node.id, entry.name),
                    stats,
                });
            }
            // LLM routes: the models their requests went to (route → model).
            for m in route.models.all().iter() {
                let model_id = format!("model:{}", m.name);
                let (rps, error_rate) = rate(
                    &format!("{route_id}>{model_id}"),
                    m.requests.load(Ordering::Relaxed),
                    m.failures.load(Ordering::Relaxed),
                );
                let stats = Stats {
                    requests_per_s: rps,
                    error_rate,
                    latency_ms: m.ewma_latency_us() as f64 / 1000.0,
                    ..Stats::default()
                };
                let acc =
                    models
                        .entry(model_id.clone())
                        .or_insert((m.name.clone(), 0.0, 0.0, 0.0, 0.0));
                acc.1 += rps;
                acc.2 += error_rate * rps;
                acc.3 += stats.latency_ms * rps;
                acc.4 = acc.4.max(stats.latency_ms);
                links.push(GraphLink {
                    from: route_id.clone(),
                    to: model_id,
                    stats,
                });
            }
        }
        // A model several routes use is one node: rates summed, the rest
        // weighted by requests/s (idle: the highest latency seen).
        for (id, (name, rps, errors, latency, slowest)) in models {
            let (error_rate, latency_ms) = if rps > 0.0 {
                (errors / rps, latency / rps)
            } else {
                (0.0, slowest)
            };
            nodes.push(GraphNode {
                id,
                kind: NodeKind::Model,
                label: name,
                site: None,
                stats: Stats {
                    requests_per_s: rps,
                    error_rate,
                    latency_ms,
                    ..Stats::default()
                },
            });
        }
        nodes[0].stats.requests_per_s = edge_rps;
        // An endpoint several clusters share is one node.
        let mut unique = BTreeMap::new();
        for n in nodes {
            unique.entry(n.id.clone()).or_insert(n);
        }
        let graph = Graph {
            nodes: unique.into_values().collect(),
            links,
        };
        *lock(&self.latest) = graph.clone();
        graph
    }

    /// Sets every endpoint's `avoid` flag from the coordinator's hints.
    fn apply(&self, hints: Vec<RoutingHint>) {
        let state = self.state.load_full();
        for cluster in state.upstreams.clusters.values() {
            for e in cluster.endpoints().iter() {
                let avoid = hints.iter().any(|h| h.endpoint == e.address);
                if e.avoid.swap(avoid, Ordering::Relaxed) != avoid {
                    if avoid {
                        tracing::warn!(endpoint = %e.address, "coordinator hint: avoiding this endpoint");
                    } else {
                        tracing::info!(endpoint = %e.address, "coordinator hint lifted");
                    }
                }
            }
        }
        *lock(&self.hints) = hints;
    }

    /// Keeps how this node differs from the fleet's desired state; logs each change.
    fn note_drift(&self, drift: Vec<String>) {
        let mut held = lock(&self.drift);
        if *held != drift {
            if drift.is_empty() {
                tracing::info!("in step with the fleet's desired state again");
            }
            for d in &drift {
                tracing::warn!(drift = %d, "this node differs from the fleet's desired state");
            }
            *held = drift;
        }
    }

    /// What `GET /v1/health` shows.
    pub(crate) fn view(&self) -> Value {
        let sync = lock(&self.sync);
        json!({
            "node": self.node.id,
            "site": self.node.site,
            "coordinator": {
                "url": self.node.coordinator,
                "connected": sync.connected,
                "last_ok_ms_ago": sync.last_ok.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                "failures_in_a_row": sync.failures_in_a_row,
                "last_error": sync.last_error,
                "desired_version": sync.desired_version,
            },
            "hints": *lock(&self.hints),
            "drift": *lock(&self.drift),
            "graph": *lock(&self.latest),
        })
    }

    /// Samples and reports every interval until shutdown; keeps serving on
    /// what it has while the coordinator is away, retrying with backoff.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.node.report_interval_ms);
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "node.coordinator_ca_file: cannot reach the coordinator over TLS; the graph stays local");
                return;
            }
        };
        let mut wait = interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            let graph = self.sample();
            let Some(base) = self.node.coordinator.clone() else {
                continue;
            };
            let report = {
                let state = self.state.load();
                let mut seq = lock(&self.seq);
                *seq += 1;
                EdgeReport {
                    node: self.node.id.clone(),
                    site: self.node.site.clone(),
                    seq: *seq,
                    boot: self.boot.clone(),
                    sent_at_ms: edgegate_graph::unix_ms(),
                    graph,
                    revocation_list_version: state.trust.revocation_version(),
                    components: state
                        .policies
                        .iter()
                        .map(|(name, set)| (name.clone(), set.serving.digest.clone()))
                        .collect(),
                }
            };
            let result =
                tokio::time::timeout(REPORT_TIMEOUT, self.exchange(&client, &base, &report))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".to_string()));
            let mut sync = lock(&self.sync);
            match result {
                Ok(desired) => {
                    if !sync.connected {
                        tracing::info!(coordinator = %base, "coordinator reached; graph in sync");
                    }
                    sync.connected = true;
                    sync.last_ok = Some(Instant::now());
                    sync.failures_in_a_row = 0;
                    sync.last_error = None;
                    sync.desired_version = desired.version;
                    drop(sync);
                    self.note_drift(report.drift(&desired));
                    self.apply(desired.hints);
                    wait = interval;
                }
                Err(e) => {
                    if sync.connected || sync.failures_in_a_row == 0 {
                        tracing::warn!(coordinator = %base, error = %e, "coordinator unreachable; serving on what we have, retrying with backoff");
                    }
                    sync.connected = false;
                    sync.failures_in_a_row = sync.failures_in_a_row.saturating_add(1);
                    sync.last_error = Some(e);
                    // Exponential backoff with jitter, capped.
                    let exp = interval.saturating_mul(1 << sync.failures_in_a_row.min(6));
                    wait = exp.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64() / 2.0);
                }
            }
        }
    }

    /// The client reports go out on: TLS for an `https://` coordinator,
    /// checked against `node.coordinator_ca_file` or the system's roots.
    fn client(&self) -> Result<CoordinatorClient, String> {
        let https = self
            .node
            .coordinator
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let tls = if https {
            let cfg = edgegate_config::UpstreamTlsConfig {
                ca_file: self.node.coordinator_ca_file.clone(),
                ..Default::default()
            };
            crate::tls::upstream_client_config("(coordinator)", &cfg)?
        } else {
            crate::tls::cleartext_client_config()?
        };
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(REPORT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        )
    }

    async fn exchange(
        &self,
        client: &CoordinatorClient,
        base: &str,
        report: &EdgeReport,
    ) -> Result<DesiredState, String> {
        let body = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        let mut req = http::Request::post(format!("{}/v1/reports", base.trim_end_matches('/')))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.node.coordinator_token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| crate::tls::describe(&e))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "coordinator answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("coordinator answer: {e}"))
    }
}
