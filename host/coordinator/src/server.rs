//! The coordinator's HTTP API and its background work (expiry, snapshots).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgegate_graph::analysis::{self, Analysis, Colour, Thresholds};
use edgegate_graph::{merge, DesiredState, EdgeReport, Graph};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::{CoordinatorConfig, FleetConfig, StoreConfig};
use crate::store::{lock, EmbeddedStore, EtcdStore, HealthStore, StoredReport};

/// The live dashboard: one self-contained page (no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Largest report accepted.
const MAX_REPORT_BYTES: usize = 4 << 20;
/// The merged graph and its analysis are recomputed at most this often.
const RECOMPUTE_EVERY: Duration = Duration::from_millis(500);
/// How often expiry and snapshots run.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(500);

type Body = Full<Bytes>;

/// The merged view at one moment.
pub struct View {
    /// The meta-graph.
    pub graph: Graph,
    /// Its analysis.
    pub analysis: Analysis,
    /// Every known edge, by node id.
    pub edges: BTreeMap<String, EdgeStatus>,
    computed: Instant,
}

/// What the coordinator knows of one edge.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EdgeStatus {
    /// Its site.
    pub site: String,
    /// It reported within `edge_ttl_ms`.
    pub live: bool,
    /// Milliseconds since its last report.
    pub last_report_ms_ago: u64,
    /// Sequence number of its last report.
    pub seq: u64,
    /// How it differs from `[fleet]` (empty: in step).
    pub drift: Vec<String>,
}

/// A coordinator over a store.
pub struct Coordinator<S> {
    config: CoordinatorConfig,
    store: S,
    view: Mutex<Option<Arc<View>>>,
    /// Held by the one caller recomputing the view.
    recomputing: tokio::sync::Mutex<()>,
    /// The newest (boot, seq) taken per node, so a report overtaken by a
    /// later one of the same edge process cannot replace it.
    newest: Mutex<std::collections::HashMap<String, (String, u64)>>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl<S: HealthStore> Coordinator<S> {
    /// A coordinator keeping reports in `store`.
    pub fn new(config: CoordinatorConfig, store: S) -> Self {
        Self {
            config,
            store,
            view: Mutex::new(None),
            recomputing: tokio::sync::Mutex::new(()),
            newest: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes one report; answers the edge's desired state.
    pub async fn ingest(&self, report: EdgeReport) -> Result<DesiredState, (StatusCode, String)> {
        if !valid_name(&report.node) || !valid_name(&report.site) {
            return Err((
                StatusCode::BAD_REQUEST,
                "node and site: use 1 to 64 of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        report.check().map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("report of `{}`: {e}", report.node),
            )
        })?;
        let node = report.node.clone();
        {
            let mut newest = lock(&self.newest);
            match newest.get(&node) {
                Some((boot, seq)) if *boot == report.boot && report.seq < *seq => {
                    return Err((
                        StatusCode::CONFLICT,
                        format!(
                            "report {} of `{node}` is older than report {seq} already taken from the same boot",
                            report.seq
                        ),
                    ));
                }
                _ => {
                    newest.insert(node.clone(), (report.boot.clone(), report.seq));
                }
            }
        }
        self.store
            .put(StoredReport {
                report,
                received_at_ms: edgegate_graph::unix_ms(),
            })
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let view = self
            .view(false)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
        Ok(desired_for(&view, &node, &self.config.fleet))
    }

    /// The merged graph and analysis, recomputed when older than
    /// [`RECOMPUTE_EVERY`] (or always with `fresh`). One caller recomputes at
    /// a time, on a blocking thread; while it does, the others get the view
    /// it replaces (a burst of reports never merges the fleet twice).
    pub async fn view(&self, fresh: bool) -> Result<Arc<View>, String> {
        let current = lock(&self.view).clone();
        let _turn = match current {
            Some(v) if !fresh && v.computed.elapsed() < RECOMPUTE_EVERY => return Ok(v),
            Some(v) if !fresh => match self.recomputing.try_lock() {
                Ok(turn) => turn,
                Err(_) => return Ok(v),
            },
            _ => self.recomputing.lock().await,
        };
        let reports = self.store.all().await.map_err(|e| e.to_string())?;
        // While the store is blind, ages are overstated by as much: an edge is
        // not judged down on what this replica could not see.
        let ttl = self
            .config
            .edge_ttl_ms
            .saturating_add(self.store.blind_ms());
        let thresholds = self.config.thresholds;
        let fleet = desired_for_fleet(&self.config.fleet);
        let view =
            tokio::task::spawn_blocking(move || compute_view(reports, ttl, &thresholds, &fleet))
                .await
                .map_err(|e| format!("merging the reports failed: {e}"))?;
        let view = Arc::new(view);
        *lock(&self.view) = Some(Arc::clone(&view));
        Ok(view)
    }

    /// Removes edges silent for longer than `remove_after_ms`, writes the snapshot.
    pub async fn housekeeping(&self) {
        if let Ok(all) = self.store.all().await {
            let now = edgegate_graph::unix_ms();
            for r in all {
                if now.saturating_sub(r.received_at_ms) > self.config.remove_after_ms {
                    tracing::info!(node = %r.report.node, "edge silent too long; removed from the graph");
                    lock(&self.newest).remove(&r.report.node);
                    if let Err(e) = self.store.remove(&r.report.node).await {
                        tracing::error!(error = %e, "removing an edge failed");
                    }
                }
            }
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "store flush failed");
        }
    }

    /// Serves the API on `listener` (over TLS with `tls`) until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let keeper = Arc::clone(&self);
        let mut keeper_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => keeper.housekeeping().await,
                    _ = keeper_shutdown.changed() => {
                        keeper.housekeeping().await;
                        return;
                    }
                }
            }
        });
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let me = Arc::clone(&self);
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let me = Arc::clone(&me);
                            async move { Ok::<_, Infallible>(me.handle(req).await) }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            Some(acceptor) => {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
        // Let the housekeeper write its last snapshot.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::POST, "/v1/reports") => self.post_report(req).await,
            (Method::GET, "/v1/graph") => match self.view(false).await {
                Ok(v) => json_response(StatusCode::OK, &graph_json(&v)),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", &e),
            },
            (Method::GET, "/v1/analysis") => match self.view(false).await {
                Ok(v) => json_response(StatusCode::OK, &json!(v.analysis)),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store", &e),
            },
            (Method::GET, p) if p.starts_with("/v1/nodes/") && p.ends_with("/blast-radius") => {
                let raw = &p["/v1/nodes/".len()..p.len() - "/blast-radius".len()];
                let id = percent_decode(raw);
                let view = match self.view(false).await {
                    Ok(v) => v,
                    Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "store", &e),
                };
                match analysis::blast_radius(&view.graph, &id) {
                    Some(radius) => {
                        let failover = analysis::failover(&view.graph, &view.analysis.colours, &id);
                        json_response(
                            StatusCode::OK,
                            &json!({ "blast_radius": radius, "failover": failover }),
                        )
                    }
                    None => error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        &format!("no node `{id}` in the graph"),
                    ),
                }
            }
            (Method::GET, "/healthz") => Response::new(Body::from("ok\n")),
            (Method::GET, "/") => {
                let mut r = Response::new(Body::from(DASHBOARD));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                // Everything the page needs comes from this coordinator.
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static(
                        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                    ),
                );
                r
            }
            (method, p) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no endpoint {method} {p} (docs/operations.md)"),
            ),
        }
    }

    async fn post_report(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(token) = &self.config.token {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if given.trim() != token.trim() {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "reports need `Authorization: Bearer <token>`",
                );
            }
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_REPORT_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body",
                    &format!("reading the report failed (limit {MAX_REPORT_BYTES} bytes): {e}"),
                )
            }
        };
        let report: EdgeReport = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_report",
                    &format!("report: {e}"),
                )
            }
        };
        match self.ingest(report).await {
            Ok(desired) => json_response(StatusCode::OK, &json!(desired)),
            Err((status, message)) => error(status, "refused", &message),
        }
    }
}

/// Merges `reports` (live: received within `ttl_ms`) and analyses the result.
fn compute_view(
    reports: Vec<StoredReport>,
    ttl_ms: u64,
    thresholds: &Thresholds,
    fleet: &DesiredState,
) -> View {
    let now = edgegate_graph::unix_ms();
    let mut edges = BTreeMap::new();
    let mut input = Vec::with_capacity(reports.len());
    for r in reports {
        let age = now.saturating_sub(r.received_at_ms);
        let live = age < ttl_ms;
        edges.insert(
            r.report.node.clone(),
            EdgeStatus {
                site: r.report.site.clone(),
                live,
                last_report_ms_ago: age,
                seq: r.report.seq,
                drift: r.report.drift(fleet),
            },
        );
        input.push((r.report, live));
    }
    let graph = merge::merge(&input);
    let analysis = analysis::analyse(&graph, thresholds);
    View {
        graph,
        analysis,
        edges,
        computed: Instant::now(),
    }
}

/// The desired state for `node`: the fleet's, with the hints about the
/// endpoints its own graph links to.
fn desired_for(view: &View, node: &str, fleet: &FleetConfig) -> DesiredState {
    let prefix = format!("upstream:{node}/");
    let mine: Vec<&str> = view
        .graph
        .links
        .iter()
        .filter(|l| l.from.starts_with(&prefix))
        .filter_map(|l| l.to.strip_prefix("endpoint:"))
        .collect();
    let hints: Vec<_> = view
        .analysis
        .routing_hints
        .iter()
        .filter(|h| mine.contains(&h.endpoint.as_str()))
        .cloned()
        .collect();
    let mut desired = DesiredState {
        hints,
        ..desired_for_fleet(fleet)
    };
    desired.version = version_of(&desired);
    desired
}

/// The part of the desired state every edge gets (no hints).
fn desired_for_fleet(fleet: &FleetConfig) -> DesiredState {
    DesiredState {
        version: 0,
        hints: Vec::new(),
        revocation_list_version: fleet.revocation_list_version,
        desired_components: fleet.components.clone(),
    }
}

/// FNV-1a over the desired state's content: changes exactly when it does.
fn version_of(desired: &DesiredState) -> u64 {
    let fnv = |h: u64, bytes: &[u8]| {
        bytes
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    };
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for hint in &desired.hints {
        h = fnv(h, hint.endpoint.as_bytes());
        h = fnv(h, b"\0");
    }
    h = fnv(
        h,
        &desired.revocation_list_version.unwrap_or(0).to_le_bytes(),
    );
    for (policy, digest) in &desired.desired_components {
        h = fnv(fnv(h, policy.as_bytes()), digest.as_bytes());
    }
    h
}

fn graph_json(v: &View) -> Value {
    let nodes: Vec<Value> = v
        .graph
        .nodes
        .iter()
        .map(|n| {
            let mut j = json!(n);
            j["colour"] = json!(v
                .analysis
                .colours
                .get(&n.id)
                .copied()
                .unwrap_or(Colour::Green));
            j
        })
        .collect();
    let edges: Vec<Value> = v
        .edges
        .iter()
        .map(|(node, status)| {
            let mut j = json!(status);
            j["node"] = json!(node);
            j
        })
        .collect();
    json!({ "nodes": nodes, "links": v.graph.links, "edges": edges })
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{value}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": code, "message": message }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a coordinator on the store its config names until `shutdown`;
/// sends the bound address once it listens.
pub async fn run(
    config: CoordinatorConfig,
    shutdown: watch::Receiver<bool>,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> Result<(), String> {
    match &config.store {
        StoreConfig::Embedded { path } => {
            let store = EmbeddedStore::open(path).map_err(|e| e.to_string())?;
            serve_on(config, store, shutdown, bound).await
        }
        StoreConfig::Etcd {
            endpoints,
            prefix,
            timeout_ms,
            tls,
            user,
            password_file,
        } => {
            let access = crate::store::EtcdAccess::read(
                tls.as_ref(),
                user.as_deref(),
                password_file.as_deref(),
            )
            .map_err(|e| format!("key `store`: {e}"))?;
            let store = EtcdStore::connect(
                endpoints,
                prefix,
                Duration::from_millis(*timeout_ms),
                Duration::from_millis(config.remove_after_ms),
                access,
            )
            .await
            .map_err(|e| format!("key `store`: {e}"))?;
            serve_on(config, store, shutdown, bound).await
        }
    }
}

async fn serve_on<S: HealthStore>(
    config: CoordinatorConfig,
    store: S,
    shutdown: watch::Receiver<bool>,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> Result<(), String> {
    let tls = match &config.tls {
        Some(t) => Some(acceptor(t).map_err(|e| format!("key `tls`: {e}"))?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("key `listen`: binding {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let _ = bound.send(addr);
    Arc::new(Coordinator::new(config, store))
        .serve(listener, tls, shutdown)
        .await;
    Ok(())
}

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor of `[tls]`; the error names the file and what is wrong.
fn acceptor(tls: &crate::config::CoordinatorTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use crate::config::read_key_file;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(&read_key_file("tls.cert", &tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", tls.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", tls.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_key_file("tls.key", &tls.key)?)
        .map_err(|e| format!("{}: no usable private key: {e}", tls.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("{} with {}: {e}", tls.cert.display(), tls.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_graph::{Graph, GraphNode, NodeKind, Stats};

    fn report(node: &str) -> EdgeReport {
        EdgeReport {
            node: node.into(),
            site: "s".into(),
            seq: 1,
            boot: "b".into(),
            sent_at_ms: 0,
            graph: Graph {
                nodes: vec![GraphNode {
                    id: format!("edge:{node}"),
                    kind: NodeKind::Edge,
                    label: node.into(),
                    site: Some("s".into()),
                    stats: Stats::default(),
                }],
                links: Vec::new(),
            },
            revocation_list_version: None,
            components: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_silent_edge_is_marked_down_then_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "edge_ttl_ms = 100\nremove_after_ms = 400\n").expect("write");
        let config = CoordinatorConfig::load(&path).expect("config");
        let store = EmbeddedStore::open(&dir.path().join("state.json")).expect("store");
        let c = Coordinator::new(config, store);
        c.ingest(report("a")).await.expect("ingest");
        let live = |v: &View| v.edges.get("a").map(|e| e.live);
        assert_eq!(live(&c.view(true).await.expect("view")), Some(true));

        tokio::time::sleep(Duration::from_millis(150)).await;
        c.housekeeping().await;
        let v = c.view(true).await.expect("view");
        assert_eq!(live(&v), Some(false), "down after edge_ttl_ms");
        let node = v.graph.node("edge:a").expect("still in the graph");
        assert!(!node.stats.up);

        tokio::time::sleep(Duration::from_millis(300)).await;
        c.housekeeping().await;
        assert_eq!(
            live(&c.view(true).await.expect("view")),
            None,
            "removed after remove_after_ms"
        );
        let snapshot = std::fs::read_to_string(dir.path().join("state.json")).expect("snapshot");
        assert_eq!(snapshot.trim(), "[]", "the removal reached the snapshot");
    }

    #[tokio::test]
    async fn bad_names_and_forged_reports_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").expect("write");
        let config = CoordinatorConfig::load(&path).expect("config");
        let store = EmbeddedStore::open(&dir.path().join("state.json")).expect("store");
        let c = Coordinator::new(config, store);
        let mut bad = report("a b");
        bad.graph.nodes.clear();
        let (status, message) = c.ingest(bad).await.expect_err("refused");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(message, "node and site: use 1 to 64 of A-Z a-z 0-9 . _ -");
        let mut forged = report("a");
        forged.graph.nodes[0].id = "edge:b".into();
        let (_, message) = c.ingest(forged).await.expect_err("refused");
        assert_eq!(
            message,
            "report of `a`: graph: node `edge:b` (Edge) is not one edge `a` may report"
        );
        assert!(c.view(true).await.expect("view").edges.is_empty());

        // Reports of one boot are taken in order; a new boot starts again.
        let mut r = report("a");
        r.seq = 5;
        c.ingest(r.clone()).await.expect("seq 5");
        c.ingest(r.clone())
            .await
            .expect("the same report again (a retry)");
        r.seq = 4;
        let (status, message) = c.ingest(r.clone()).await.expect_err("overtaken");
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            message,
            "report 4 of `a` is older than report 5 already taken from the same boot"
        );
        r.boot = "restarted".into();
        r.seq = 1;
        c.ingest(r).await.expect("a new boot starts at 1");
        let v = c.view(true).await.expect("view");
        assert_eq!(v.edges.get("a").map(|e| e.seq), Some(1));
    }
}
