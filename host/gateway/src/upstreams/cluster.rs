//! Upstream clusters: endpoints, balancing, per-worker connection pools, and
//! endpoint health: the passive circuit breaker, outlier ejection, and the
//! verdict of active health checks (`health_check.rs` sends them).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use edgegate_config::{
    Balance, EndpointAddress, HealthCheckConfig, OutlierConfig, UpstreamConfig, UpstreamProtocol,
};
use edgegate_runtime::host::{EndpointHealth, HealthSource};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::observability::metrics::{CheckMetrics, EndpointMetrics, Metrics, UpstreamMetrics};
use crate::request_path::body::ProxyBody;

/// The connector of every endpoint: TCP to the endpoint, then TLS for
/// `https://` clusters.
pub(crate) type Connector = HttpsConnector<Pinned>;

/// TCP to one endpoint, whatever the request's URI names. Requests carry
/// the `Host` they are for in their URI (HTTP/2's `:authority` must equal
/// `Host`, and hyper derives both from it), so the address to connect to
/// comes from here.
#[derive(Clone)]
pub(crate) struct Pinned {
    http: HttpConnector,
    to: http::Uri,
}

impl tower_service::Service<http::Uri> for Pinned {
    type Response = <HttpConnector as tower_service::Service<http::Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<http::Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _dst: http::Uri) -> Self::Future {
        self.http.call(self.to.clone())
    }
}

/// An HTTP/1.1 or HTTP/2 client with its own pool.
pub(crate) type UpstreamClient = Client<Connector, ProxyBody>;

/// Milliseconds since the process started: a monotonic clock that fits an atomic.
fn monotonic_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    // Starts at 1: 0 means "never opened" in `open_until_ms`.
    START.elapsed().as_millis() as u64 + 1
}

/// A circuit breaker's state: the type the policies' health view shows.
/// Open holds traffic back until the open period ends; half-open lets it
/// flow again, and one failure re-opens it.
pub(crate) use edgegate_policy_core::Circuit;

/// Most addresses one endpoint name becomes: endpoints, their pools and
/// their metric series stay bounded whatever a resolver answers.
pub(crate) const MAX_ADDRESSES_PER_NAME: usize = 16;
/// Time one resolution of one name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One address of a cluster with its passive health counters: an endpoint
/// the config gives as an IP, or one address its name resolved to.
pub(crate) struct Endpoint {
    /// What metrics, logs, the health graph and hints call it: the config's
    /// text for an IP endpoint, `text@ip:port` for a resolved one.
    pub(crate) address: String,
    /// `host:port` the requests are for (their `Host`).
    pub(crate) authority: http::uri::Authority,
    /// The IP and port connections go to.
    dial: http::uri::Authority,
    /// Set once the health checker runs a loop for it (`health_check.rs`).
    pub(crate) checker_started: AtomicBool,
    /// The endpoint's host: the TLS server name unless `tls.server_name` says otherwise.
    host: String,
    /// One client (and so one connection pool) per worker thread.
    clients: Vec<OnceLock<UpstreamClient>>,
    pub(crate) in_flight: AtomicU32,
    ewma_latency_us: AtomicU64,
    error_rate_ppm: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `monotonic_ms()` until which the circuit is open; 0 when it never opened or closed again.
    open_until_ms: AtomicU64,
    /// The cluster's `circuit.consecutive_failures`.
    circuit_failures: u32,
    /// The cluster's `circuit.open_ms`.
    circuit_open_ms: u64,
    /// `monotonic_ms()` until which outlier ejection holds it out; 0 when it is back.
    ejected_until_ms: AtomicU64,
    /// Ejections without a clean window between them: each doubles the next.
    ejections: AtomicU32,
    /// Attempts in the current outlier window (since the cluster was built or
    /// its last ejection).
    window_attempts: AtomicU64,
    /// Failing its active health checks (set by its checker only).
    pub(crate) check_failed: AtomicBool,
    /// Attempts and failed attempts since start (the health graph's rates).
    pub(crate) attempts: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Set by a coordinator routing hint: unhealthy as seen from other sites.
    pub(crate) avoid: AtomicBool,
    pub(crate) metrics: EndpointMetrics,
    /// Active health check metrics, when the cluster has checks.
    pub(crate) check_metrics: Option<CheckMetrics>,
}

impl Endpoint {
    fn new(cluster: &str, target: &Target, at: SocketAddr, settings: &EndpointSettings) -> Self {
        let address = target.label(at);
        let dial = http::uri::Authority::try_from(at.to_string())
            .unwrap_or_else(|_| target.authority.clone());
        Self {
            metrics: settings.metrics.endpoint(cluster, &address),
            check_metrics: settings
                .checked
                .then(|| settings.metrics.health_check(cluster, &address)),
            address,
            authority: target.authority.clone(),
            dial,
            checker_started: AtomicBool::new(false),
            host: target.host.clone(),
            clients: (0..settings.workers).map(|_| OnceLock::new()).collect(),
            in_flight: AtomicU32::new(0),
            ewma_latency_us: AtomicU64::new(0),
            error_rate_ppm: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            circuit_failures: settings.circuit_failures,
            circuit_open_ms: settings.circuit_open_ms,
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            window_attempts: AtomicU64::new(0),
            check_failed: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            avoid: AtomicBool::new(false),
        }
    }

    /// The circuit breaker's state now.
    pub(crate) fn circuit(&self) -> Circuit {
        match self.open_until_ms.load(Ordering::Relaxed) {
            0 => Circuit::Closed,
            until if monotonic_ms() < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }

    /// Healthy as this gateway sees it: circuit not open, not ejected, not
    /// failing its active checks. The health graph reports this; coordinator
    /// hints stay out of it, or an `avoid` would feed back into the reports
    /// that caused it.
    pub(crate) fn locally_healthy(&self) -> bool {
        if self.check_failed.load(Ordering::Relaxed) {
            return false;
        }
        let open_until = self.open_until_ms.load(Ordering::Relaxed);
        let ejected_until = self.ejected_until_ms.load(Ordering::Relaxed);
        // Both 0 is the common case: no clock read on the pick path.
        if open_until == 0 && ejected_until == 0 {
            return true;
        }
        let now = monotonic_ms();
        now >= open_until && now >= ejected_until
    }

    /// Whether picks may choose it: locally healthy and no hint against it.
    pub(crate) fn usable(&self) -> bool {
        self.locally_healthy() && !self.avoid.load(Ordering::Relaxed)
    }

    /// Moving-average latency, µs.
    pub(crate) fn ewma_latency_us(&self) -> u64 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }

    /// Moving-average error ratio, parts per million.
    pub(crate) fn error_rate_ppm(&self) -> u32 {
        self.error_rate_ppm.load(Ordering::Relaxed)
    }

    /// Feed one attempt's outcome into the moving averages and the circuit
    /// breaker (through [`Cluster::observe`], which also judges outliers).
    fn observe(&self, latency: Duration, failed: bool) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            // Open after a run of failures, or again at once when a half-open probe fails.
            if n >= self.circuit_failures || self.circuit() == Circuit::HalfOpen {
                let until = monotonic_ms().saturating_add(self.circuit_open_ms);
                if self.open_until_ms.swap(until, Ordering::Relaxed) == 0 {
                    tracing::warn!(endpoint = %self.address, failures = n, "circuit opened");
                }
            }
        } else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            if self.open_until_ms.swap(0, Ordering::Relaxed) != 0 {
                tracing::info!(endpoint = %self.address, "circuit closed");
            }
        }
        observe_latency(&self.ewma_latency_us, latency);
        let old = self.error_rate_ppm.load(Ordering::Relaxed);
        let sample = if failed { 1_000_000 } else { 0 };
        self.error_rate_ppm
            .store(old - old / 16 + sample / 16, Ordering::Relaxed);
    }
}

/// Folds `latency` into the moving average in `ewma_us` (µs, weight 1/8;
/// the first sample is taken as it is).
pub(crate) fn observe_latency(ewma_us: &AtomicU64, latency: Duration) {
    let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let old = ewma_us.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        old - old / 8 + sample / 8
    };
    ewma_us.store(new, Ordering::Relaxed);
}

/// Whether an ejection lasting until `until` (0: none) holds at `now`.
fn ejected_at(until: u64, now: u64) -> bool {
    until != 0 && now < until
}

/// A cluster's outlier ejection settings, resolved once.
struct Outlier {
    /// `max_error_rate` in parts per million, like `error_rate_ppm`.
    max_error_rate_ppm: u32,
    min_requests: u64,
    eject_ms: u64,
    max_eject_ms: u64,
    /// Share of the endpoints that may be ejected at once (`max_ejected_percent`).
    max_ejected_percent: usize,
    /// Held while one ejection is decided, so two endpoints judged at once
    /// cannot both take the last slot.
    deciding: AtomicBool,
}

impl Outlier {
    fn new(cfg: &OutlierConfig) -> Self {
        Self {
            max_error_rate_ppm: (cfg.max_error_rate.clamp(0.0, 1.0) * 1e6) as u32,
            min_requests: cfg.min_requests.max(1),
            eject_ms: cfg.eject_ms,
            max_eject_ms: cfg.max_eject_ms.max(cfg.eject_ms),
            max_ejected_percent: cfg.max_ejected_percent.min(100) as usize,
            deciding: AtomicBool::new(false),
        }
    }

    /// How long ejection number `n` (1 = the first in a row) lasts.
    fn eject_for_ms(&self, n: u32) -> u64 {
        let doublings = n.saturating_sub(1).min(32);
        self.eject_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_eject_ms)
    }
}

/// One endpoint as the config writes it: an IP address, or a name that DNS
/// turns into addresses.
struct Target {
    /// The config's text (`https://api.openai.com`).
    configured: String,
    host: String,
    port: u16,
    authority: http::uri::Authority,
    /// The address, when the config gives an IP.
    literal: Option<SocketAddr>,
}

impl Target {
    /// The `address` of its endpoint at `at`.
    fn label(&self, at: SocketAddr) -> String {
        match self.literal {
            Some(_) => self.configured.clone(),
            None => format!("{}@{at}", self.configured),
        }
    }
}

/// What every endpoint of a cluster is built with, also by DNS refreshes.
struct EndpointSettings {
    workers: usize,
    circuit_failures: u32,
    circuit_open_ms: u64,
    /// Active health checks configured: endpoints get check metrics.
    checked: bool,
    metrics: UpstreamMetrics,
}

/// The answer of one resolution: addresses, or why there are none.
pub(crate) type Resolution = Result<Vec<SocketAddr>, String>;

/// Resolves `host` with the system resolver (getaddrinfo: `/etc/hosts`,
/// then DNS), within [`RESOLVE_TIMEOUT`].
pub(crate) async fn system_resolve(host: String, port: u16) -> Resolution {
    match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms",
            RESOLVE_TIMEOUT.as_millis()
        )),
    }
}

/// What one refresh of a cluster's names did.
pub(crate) struct Refreshed {
    /// Why a name has no new answer, one line per name.
    pub(crate) errors: Vec<String>,
    /// The `address` of each endpoint the new answers removed.
    pub(crate) gone: Vec<String>,
}

/// A named group of endpoints and how to reach them.
pub(crate) struct Cluster {
    pub(crate) name: String,
    /// The configured endpoints, in config order.
    targets: Vec<Target>,
    /// What each name of `targets` resolved to at its last answer (empty for
    /// IP targets, and for names that never answered).
    resolved: Mutex<Vec<Vec<SocketAddr>>>,
    /// The endpoints picks choose from: every IP target and every address
    /// of every name, in config order. Replaced whole by a DNS refresh that
    /// changes it; an endpoint whose address stays keeps its counters and pools.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    settings: EndpointSettings,
    /// `dns_refresh_ms`.
    pub(crate) dns_refresh: Duration,
    /// Set once a refresh loop runs for this cluster (`dns.rs`).
    pub(crate) resolver_started: AtomicBool,
    balance: Balance,
    next: AtomicUsize,
    pub(crate) timeout: Duration,
    /// `idle_timeout_ms`: the longest silence inside a response body.
    pub(crate) idle_timeout: Duration,
    connect_timeout: Duration,
    max_idle: usize,
    /// `https` for TLS clusters, else `http`; a TLS cluster never falls back.
    pub(crate) scheme: http::uri::Scheme,
    /// The TLS client config (trust, client certificate); a cleartext
    /// cluster's trusts nothing and is never used (its requests are `http://`).
    tls: Arc<rustls::ClientConfig>,
    /// SNI and the name checked against the certificate, when not the endpoint's host.
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    protocol: UpstreamProtocol,
    /// `host_rewrite`: the `Host` sent upstream.
    pub(crate) host_rewrite: Option<http::HeaderValue>,
    outlier: Option<Outlier>,
    /// Active health checks, when configured.
    pub(crate) health_check: Option<HealthCheckConfig>,
}

impl Cluster {
    /// The cluster of `cfg`, with the endpoints its IP addresses give; names
    /// have none until [`Cluster::refresh`] resolves them.
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        workers: usize,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut targets = Vec::with_capacity(cfg.endpoints.len());
        let mut tls = false;
        for ep in &cfg.endpoints {
            let configured = ep.get_ref().clone();
            let parsed = EndpointAddress::parse(&configured)?;
            tls |= parsed.tls;
            let authority: http::uri::Authority = parsed
                .authority()
                .parse()
                .map_err(|e| format!("endpoint `{configured}`: {e}"))?;
            let literal = parsed
                .host
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, parsed.port));
            targets.push(Target {
                configured,
                host: parsed.host,
                port: parsed.port,
                authority,
                literal,
            });
        }
        let settings = EndpointSettings {
            workers: workers.max(1),
            circuit_failures: cfg.circuit.consecutive_failures.max(1),
            circuit_open_ms: cfg.circuit.open_ms,
            checked: cfg.health_check.is_some(),
            metrics: metrics.upstreams.clone(),
        };
        let endpoints = targets
            .iter()
            .filter_map(|t| Some(Arc::new(Endpoint::new(name, t, t.literal?, &settings))))
            .collect();
        let tls_config = Arc::new(if tls {
            crate::tls::upstream_client_config(name, &cfg.tls)?
        } else {
            crate::tls::cleartext_client_config()?
        });
        let server_name = match &cfg.tls.server_name {
            Some(n) => Some(
                rustls_pki_types::ServerName::try_from(n.clone())
                    .map_err(|e| format!("tls.server_name `{n}`: {e}"))?,
            ),
            None => None,
        };
        let host_rewrite = match &cfg.host_rewrite {
            Some(h) => Some(
                http::HeaderValue::from_str(h).map_err(|e| format!("host_rewrite `{h}`: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            name: name.to_string(),
            resolved: Mutex::new(vec![Vec::new(); targets.len()]),
            targets,
            endpoints: ArcSwap::from_pointee(endpoints),
            settings,
            dns_refresh: Duration::from_millis(cfg.dns_refresh_ms),
            resolver_started: AtomicBool::new(false),
            scheme: if tls {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            tls: tls_config,
            server_name,
            protocol: cfg.protocol,
            host_rewrite,
            outlier: cfg.outlier.as_ref().map(Outlier::new),
            balance: cfg.balance,
            next: AtomicUsize::new(0),
            timeout: Duration::from_millis(cfg.timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            max_idle: cfg.max_idle_per_endpoint,
            health_check: cfg.health_check.clone(),
        })
    }

    /// The endpoints now (a DNS refresh may replace the list after this).
    pub(crate) fn endpoints(&self) -> Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    /// Whether any endpoint is a name to resolve.
    pub(crate) fn has_names(&self) -> bool {
        self.targets.iter().any(|t| t.literal.is_none())
    }

    /// Resolves every name with `resolve`, all at once, and takes in each
    /// answer. A name that fails keeps the addresses it had (DNS trouble
    /// does not empty a cluster). Returns the errors, one per name, and the
    /// addresses that went (see [`Cluster::forget`]).
    pub(crate) async fn refresh<F, Fut>(&self, resolve: F) -> Refreshed
    where
        F: Fn(String, u16) -> Fut,
        Fut: std::future::Future<Output = Resolution>,
    {
        let names: Vec<usize> = (0..self.targets.len())
            .filter(|&i| self.targets[i].literal.is_none())
            .collect();
        let answers = futures_util::future::join_all(names.iter().map(|&i| {
            let t = &self.targets[i];
            resolve(t.host.clone(), t.port)
        }))
        .await;
        let mut errors = Vec::new();
        let mut resolved = crate::lock(&self.resolved);
        let mut changed = false;
        for (&i, answer) in names.iter().zip(answers) {
            let t = &self.targets[i];
            match answer {
                Ok(mut addrs) => {
                    addrs.sort_unstable();
                    addrs.dedup();
                    addrs.truncate(MAX_ADDRESSES_PER_NAME);
                    if addrs.is_empty() {
                        errors.push(format!("`{}`: no address", t.configured));
                    } else if addrs != resolved[i] {
                        tracing::info!(upstream = %self.name, endpoint = %t.configured, addresses = ?addrs, was = ?resolved[i], "endpoint name resolved");
                        resolved[i] = addrs;
                        changed = true;
                    }
                }
                Err(e) => errors.push(format!("`{}`: {e}", t.configured)),
            }
        }
        let gone = if changed {
            self.rebuild(&resolved)
        } else {
            Vec::new()
        };
        Refreshed { errors, gone }
    }

    /// Takes what `previous` (the generation a reload replaces) resolved for
    /// the names this cluster has not resolved, so a reload during DNS
    /// trouble keeps its endpoints.
    fn inherit_resolved(&self, previous: &Cluster) {
        let old = crate::lock(&previous.resolved).clone();
        let mut resolved = crate::lock(&self.resolved);
        let mut changed = false;
        for (i, t) in self.targets.iter().enumerate() {
            if t.literal.is_some() || !resolved[i].is_empty() {
                continue;
            }
            let same = previous
                .targets
                .iter()
                .position(|p| p.configured == t.configured);
            if let Some(addrs) = same.and_then(|j| old.get(j)).filter(|a| !a.is_empty()) {
                resolved[i] = addrs.clone();
                changed = true;
            }
        }
        if changed {
            // A new generation: nothing of it has gone anywhere yet.
            self.rebuild(&resolved);
        }
    }

    /// Stores the endpoint list `resolved` gives, keeping the endpoints whose
    /// address stays; the addresses that went are returned.
    fn rebuild(&self, resolved: &[Vec<SocketAddr>]) -> Vec<String> {
        let old = self.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint>> = Vec::new();
        for (t, addrs) in self.targets.iter().zip(resolved) {
            let addrs = match t.literal {
                Some(a) => vec![a],
                None => addrs.clone(),
            };
            for at in addrs {
                let address = t.label(at);
                let kept = old.iter().find(|e| e.address == address).cloned();
                next.push(
                    kept.unwrap_or_else(|| {
                        Arc::new(Endpoint::new(&self.name, t, at, &self.settings))
                    }),
                );
            }
        }
        let gone = old
            .iter()
            .filter(|e| !next.iter().any(|n| n.address == e.address))
            .map(|e| e.address.clone())
            .collect();
        self.endpoints.store(Arc::new(next));
        gone
    }

    /// Drops the metric series of addresses a refresh removed, except those
    /// `serving` (the cluster of this name that serves now, which a reload
    /// may have made another) still has: a series is shared by every
    /// generation's endpoint of that address.
    pub(crate) fn forget(&self, gone: &[String], serving: &Cluster) {
        let live = serving.endpoints();
        for address in gone {
            if !live.iter().any(|e| &e.address == address) {
                self.settings.metrics.forget(&self.name, address);
            }
        }
    }

    /// Choose an endpoint for the next attempt, skipping endpoints whose
    /// circuit is open, that are ejected or failing their health checks, or
    /// that a coordinator hint says to avoid. When none is usable, all
    /// endpoints are candidates again (like Envoy's panic threshold): trying
    /// beats failing. None when no name has resolved yet.
    pub(crate) fn pick(&self) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints.load();
        let n = endpoints.len();
        let first = endpoints.first()?;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let rotation = (0..n).map(|i| &endpoints[(start + i) % n]);
        let none_usable = !rotation.clone().any(|e| e.usable());
        let mut candidates = rotation.filter(|e| none_usable || e.usable());
        let picked = match self.balance {
            // Round robin: the first usable endpoint from the rotating start.
            Balance::RoundRobin => candidates.next(),
            // Least requests; the rotating start spreads ties instead of piling on the first.
            Balance::LeastRequests => {
                candidates.min_by_key(|e| e.in_flight.load(Ordering::Relaxed))
            }
        };
        Some(picked.unwrap_or(first).clone())
    }

    /// Feed one attempt's outcome on `endpoint` (one of this cluster's) into
    /// its moving averages and circuit breaker, and judge it as an outlier.
    pub(crate) fn observe(&self, endpoint: &Endpoint, latency: Duration, failed: bool) {
        endpoint.observe(latency, failed);
        if let Some(outlier) = &self.outlier {
            self.judge_outlier(endpoint, outlier, failed);
        }
    }

    /// Ejects `e` when an attempt failed and its error rate is above the
    /// threshold after enough attempts in its window. Only failures eject: an
    /// endpoint back from ejection still carries its old rate, and its
    /// successes should bring that down, not eject it again. Atomics only; the
    /// endpoint scan happens only when an ejection is due.
    fn judge_outlier(&self, e: &Endpoint, o: &Outlier, failed: bool) {
        let until = e.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 {
            if ejected_at(until, monotonic_ms()) {
                return; // an attempt while ejected (every endpoint unusable): not judged
            }
            // The first attempt since the ejection ended opens a new window.
            if e.ejected_until_ms
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                e.window_attempts.store(0, Ordering::Relaxed);
                tracing::info!(upstream = %self.name, endpoint = %e.address, "outlier ejection ended");
            }
        }
        let attempts = e.window_attempts.fetch_add(1, Ordering::Relaxed) + 1;
        if attempts < o.min_requests {
            return;
        }
        let rate = e.error_rate_ppm();
        if rate <= o.max_error_rate_ppm {
            // A full window below the threshold: the next ejection starts short again.
            if e.ejections.load(Ordering::Relaxed) != 0 {
                e.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        if !failed {
            return;
        }
        if o.deciding
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return; // another ejection is being decided; this one is judged on the next attempt
        }
        let now = monotonic_ms();
        let endpoints = self.endpoints.load();
        let max_ejected = endpoints.len() * o.max_ejected_percent / 100;
        let ejected_now = endpoints
            .iter()
            .filter(|x| ejected_at(x.ejected_until_ms.load(Ordering::Relaxed), now))
            .count();
        let others_usable = endpoints
            .iter()
            .any(|x| !std::ptr::eq(&**x, e) && x.usable());
        if ejected_at(e.ejected_until_ms.load(Ordering::Relaxed), now) {
            // Ejected by a concurrent attempt meanwhile.
        } else if ejected_now < max_ejected && others_usable {
            let n = e
                .ejections
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            let eject_ms = o.eject_for_ms(n);
            e.ejected_until_ms
                .store(now.saturating_add(eject_ms), Ordering::Relaxed);
            e.window_attempts.store(0, Ordering::Relaxed);
            e.metrics.ejections.inc();
            tracing::warn!(
                upstream = %self.name,
                endpoint = %e.address,
                error_rate = f64::from(rate) / 1e6,
                ejected_for_ms = eject_ms,
                ejections_in_a_row = n,
                "outlier ejected"
            );
        } else {
            // No slot (or it is the last usable endpoint): judged again after
            // another window, so a refused ejection costs no scan per attempt.
            e.window_attempts.store(0, Ordering::Relaxed);
        }
        o.deciding.store(false, Ordering::Release);
    }

    /// Takes over the active health check verdicts of `previous` (the
    /// generation a reload replaces) for endpoints both check, so a reload
    /// does not send traffic to an endpoint known to fail its checks.
    pub(crate) fn inherit_check_verdicts(&self, previous: &Cluster) {
        if self.health_check.is_none() || previous.health_check.is_none() {
            return;
        }
        let before = previous.endpoints();
        for e in self.endpoints().iter() {
            let failing = before
                .iter()
                .any(|p| p.address == e.address && p.check_failed.load(Ordering::Relaxed));
            if failing {
                e.check_failed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// This worker's client for `endpoint` (one of this cluster's).
    pub(crate) fn client<'e>(&self, endpoint: &'e Endpoint, worker: usize) -> &'e UpstreamClient {
        let slot = &endpoint.clients[worker % endpoint.clients.len()];
        slot.get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(self.max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                // `http2` on cleartext is h2c with prior knowledge; over TLS
                // ALPN offers only `h2`. `auto` takes what ALPN picks.
                .http2_only(self.protocol == UpstreamProtocol::Http2)
                .build(self.connector(endpoint, self.connect_timeout))
        })
    }

    /// A connector to `endpoint` (the health checker builds its own).
    pub(crate) fn connector(&self, endpoint: &Endpoint, connect_timeout: Duration) -> Connector {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let to = http::Uri::builder()
            .scheme("http")
            .authority(endpoint.dial.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let pinned = Pinned { http, to };
        let name = self
            .server_name
            .clone()
            .or_else(|| rustls_pki_types::ServerName::try_from(endpoint.host.clone()).ok());
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http();
        let builder = match name {
            Some(n) => builder.with_server_name_resolver(FixedServerNameResolver::new(n)),
            None => builder,
        };
        match self.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(pinned),
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(pinned),
            UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(pinned),
        }
    }
}

/// Every cluster of a route table; also the health view policies read.
pub(crate) struct Upstreams {
    pub(crate) clusters: BTreeMap<String, Arc<Cluster>>,
}

impl Upstreams {
    /// What a reload keeps of `previous`, matching clusters by name: the
    /// addresses of names this generation could not resolve, then the
    /// active check verdicts ([`Cluster::inherit_check_verdicts`]).
    pub(crate) fn inherit(&self, previous: &Upstreams) {
        for (name, cluster) in &self.clusters {
            if let Some(p) = previous.clusters.get(name) {
                cluster.inherit_resolved(p);
                cluster.inherit_check_verdicts(p);
            }
        }
    }

    /// Resolves the names of every cluster (a generation being built); what
    /// fails is logged, and retried by the refresh loops once it serves.
    pub(crate) async fn resolve(&self) {
        let all = self
            .clusters
            .values()
            .filter(|c| c.has_names())
            .map(|c| async move { (c, c.refresh(system_resolve).await) });
        for (c, refreshed) in futures_util::future::join_all(all).await {
            for e in refreshed.errors {
                tracing::error!(upstream = %c.name, error = %e, "cannot resolve an endpoint name; retrying");
            }
        }
    }
}

impl HealthSource for Upstreams {
    fn upstream(&self, name: &str) -> Vec<EndpointHealth> {
        let Some(c) = self.clusters.get(name) else {
            return Vec::new();
        };
        c.endpoints()
            .iter()
            .map(|e| EndpointHealth {
                address: e.address.clone(),
                healthy: e.usable(),
                circuit: e.circuit(),
                in_flight: e.in_flight.load(Ordering::Relaxed),
                ewma_latency_us: e.ewma_latency_us.load(Ordering::Relaxed),
                error_rate_ppm: e.error_rate_ppm.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn upstreams(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINTS: &str = "endpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]";

    fn cluster_from(toml_text: &str) -> Cluster {
        let cfg: UpstreamConfig = toml::from_str(toml_text).unwrap();
        Cluster::new("c", &cfg, 1, &Metrics::new()).unwrap()
    }

    fn cluster(balance: &str) -> Cluster {
        cluster_from(&format!("{ENDPOINTS}\nbalance = \"{balance}\""))
    }

    /// A cluster of `n` endpoints (`127.0.0.1:1` ..) with outlier settings `outlier`.
    fn outlier_cluster(n: usize, outlier: &str) -> Cluster {
        let list: Vec<String> = (1..=n).map(|i| format!("\"127.0.0.1:{i}\"")).collect();
        cluster_from(&format!(
            "endpoints = [{}]\n\
             # circuits out of the way: these tests are about ejection\n\
             circuit = {{ consecutive_failures = 1000000 }}\n\
             outlier = {{ {outlier} }}",
            list.join(", ")
        ))
    }

    fn fail(c: &Cluster, i: usize, times: usize) {
        for _ in 0..times {
            c.observe(&c.endpoints()[i], Duration::from_millis(1), true);
        }
    }

    fn succeed(c: &Cluster, i: usize, times: usize) {
        for _ in 0..times {
            c.observe(&c.endpoints()[i], Duration::from_millis(1), false);
        }
    }

    /// Ends endpoint `i`'s ejection now, as if its time had passed.
    fn expire_ejection(c: &Cluster, i: usize) {
        c.endpoints()[i]
            .ejected_until_ms
            .store(1, Ordering::Relaxed);
    }

    fn picked(c: &Cluster) -> String {
        c.pick().expect("an endpoint").address.clone()
    }

    fn is_ejected(e: &Endpoint) -> bool {
        ejected_at(e.ejected_until_ms.load(Ordering::Relaxed), monotonic_ms())
    }

    fn ejected(c: &Cluster) -> Vec<bool> {
        c.endpoints().iter().map(|e| is_ejected(e)).collect()
    }

    /// How long endpoint `i`'s current ejection lasts, ms (±5 for the clock).
    fn ejected_for_ms(c: &Cluster, i: usize) -> u64 {
        c.endpoints()[i]
            .ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(monotonic_ms())
    }

    #[test]
    fn round_robin_takes_turns() {
        let c = cluster("round_robin");
        let picks: Vec<String> = (0..6).map(|_| picked(&c)).collect();
        assert_eq!(
            picks,
            [
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:3",
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:3"
            ]
        );
    }

    #[test]
    fn least_requests_avoids_busy_endpoints() {
        let c = cluster("least_requests");
        c.endpoints()[0].in_flight.store(5, Ordering::Relaxed);
        c.endpoints()[2].in_flight.store(3, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(picked(&c), "127.0.0.1:2");
        }
        c.endpoints()[1].in_flight.store(9, Ordering::Relaxed);
        assert_eq!(picked(&c), "127.0.0.1:3");
    }

    #[test]
    fn circuit_opens_after_consecutive_failures_and_picks_skip_it() {
        let c = cluster("round_robin");
        let bad = c.endpoints()[1].clone();
        // The default: 5 in a row.
        fail(&c, 1, 4);
        assert_eq!(bad.circuit(), Circuit::Closed);
        succeed(&c, 1, 1); // a success resets the run
        fail(&c, 1, 5);
        assert_eq!(bad.circuit(), Circuit::Open);
        for _ in 0..6 {
            assert_ne!(picked(&c), "127.0.0.1:2");
        }
        let view: Vec<bool> = c
            .endpoints()
            .iter()
            .map(|e| e.circuit() != Circuit::Open)
            .collect();
        assert_eq!(view, [true, false, true]);
        // Open for the default 10 s.
        let open_for = bad.open_until_ms.load(Ordering::Relaxed) - monotonic_ms();
        assert!((9_990..=10_000).contains(&open_for), "{open_for}");

        // Half-open once the period ends: one success closes it.
        bad.open_until_ms.store(1, Ordering::Relaxed);
        assert_eq!(bad.circuit(), Circuit::HalfOpen);
        succeed(&c, 1, 1);
        assert_eq!(bad.circuit(), Circuit::Closed);
    }

    #[test]
    fn configured_circuit_thresholds_open_at_n_for_the_configured_time() {
        let c = cluster_from(&format!(
            "{ENDPOINTS}\ncircuit = {{ consecutive_failures = 2, open_ms = 250 }}"
        ));
        let e = c.endpoints()[0].clone();
        fail(&c, 0, 1);
        assert_eq!(e.circuit(), Circuit::Closed);
        fail(&c, 0, 1);
        assert_eq!(e.circuit(), Circuit::Open);
        assert!(!e.usable());
        let open_for = e.open_until_ms.load(Ordering::Relaxed) - monotonic_ms();
        assert!((240..=250).contains(&open_for), "{open_for}");

        let c = cluster_from(&format!(
            "{ENDPOINTS}\ncircuit = {{ consecutive_failures = 12 }}"
        ));
        fail(&c, 0, 11);
        assert_eq!(c.endpoints()[0].circuit(), Circuit::Closed);
        fail(&c, 0, 1);
        assert_eq!(c.endpoints()[0].circuit(), Circuit::Open);
    }

    #[test]
    fn every_circuit_open_means_every_endpoint_is_a_candidate() {
        let c = cluster("least_requests");
        for i in 0..c.endpoints().len() {
            fail(&c, i, 5);
        }
        let picked: std::collections::BTreeSet<String> = (0..6).map(|_| picked(&c)).collect();
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn no_outlier_table_means_no_ejection() {
        let c = cluster_from(&format!(
            "{ENDPOINTS}\ncircuit = {{ consecutive_failures = 1000000 }}"
        ));
        fail(&c, 0, 500);
        assert_eq!(ejected(&c), [false, false, false]);
        assert!(c.endpoints()[0].error_rate_ppm() > 900_000);
    }

    #[test]
    fn an_endpoint_above_the_error_rate_is_ejected_after_min_requests_and_skipped() {
        let c = outlier_cluster(
            4,
            "max_error_rate = 0.5, min_requests = 20, eject_ms = 1000",
        );
        // 19 failures: the rate is far above 0.5, but the window is too small.
        fail(&c, 2, 19);
        assert!(c.endpoints()[2].error_rate_ppm() > 500_000);
        assert_eq!(ejected(&c), [false, false, false, false]);
        fail(&c, 2, 1);
        assert_eq!(ejected(&c), [false, false, true, false]);
        assert!(!c.endpoints()[2].usable());
        assert!(!c.endpoints()[2].locally_healthy());
        assert!((995..=1000).contains(&ejected_for_ms(&c, 2)));
        for _ in 0..8 {
            assert_ne!(picked(&c), "127.0.0.1:3");
        }
        let view = Upstreams {
            clusters: BTreeMap::from([("c".to_string(), Arc::new(c))]),
        };
        let healthy: Vec<bool> = view.upstream("c").iter().map(|h| h.healthy).collect();
        assert_eq!(healthy, [true, true, false, true]);
        assert_eq!(view.clusters["c"].endpoints()[2].metrics.ejections.get(), 1);
    }

    #[test]
    fn a_rate_at_or_below_the_threshold_is_not_ejected() {
        let c = outlier_cluster(3, "max_error_rate = 0.5, min_requests = 5");
        // One failure in three keeps the moving rate below 0.5.
        for _ in 0..200 {
            fail(&c, 0, 1);
            succeed(&c, 0, 2);
        }
        assert!(c.endpoints()[0].error_rate_ppm() < 500_000);
        assert_eq!(ejected(&c), [false, false, false]);
    }

    #[test]
    fn ejection_respects_max_ejected_percent() {
        // 50% of 4: two at once, the third bad endpoint stays in. (From a
        // clean start the moving rate passes 0.5 on the 11th failure.)
        let c = outlier_cluster(4, "min_requests = 10");
        for i in 0..3 {
            fail(&c, i, 20);
        }
        assert_eq!(ejected(&c), [true, true, false, false]);
        // A slot frees when an ejection ends; the third is judged again after another window.
        expire_ejection(&c, 0);
        fail(&c, 2, 10);
        assert_eq!(ejected(&c), [false, true, true, false]);

        // 25% of 3 rounds down to none.
        let c = outlier_cluster(3, "min_requests = 10, max_ejected_percent = 25");
        fail(&c, 0, 50);
        assert_eq!(ejected(&c), [false, false, false]);
    }

    #[test]
    fn ejection_never_takes_the_last_usable_endpoint() {
        // One endpoint: even 100% may not eject it.
        let c = outlier_cluster(1, "min_requests = 5, max_ejected_percent = 100");
        fail(&c, 0, 100);
        assert_eq!(ejected(&c), [false]);
        assert!(c.endpoints()[0].usable());

        // Two endpoints, the other already out (its circuit open): not ejected either.
        let c = outlier_cluster(2, "min_requests = 5, max_ejected_percent = 100");
        c.endpoints()[1]
            .open_until_ms
            .store(monotonic_ms() + 60_000, Ordering::Relaxed);
        fail(&c, 0, 40);
        assert_eq!(ejected(&c), [false, false]);
        assert_eq!(picked(&c), "127.0.0.1:1");

        // Both bad, 100% allowed: the first goes, the second is the last one left.
        let c = outlier_cluster(2, "min_requests = 5, max_ejected_percent = 100");
        fail(&c, 0, 20);
        fail(&c, 1, 20);
        assert_eq!(ejected(&c), [true, false]);
    }

    #[test]
    fn ejection_expires_and_the_endpoint_takes_traffic_again() {
        let c = outlier_cluster(3, "min_requests = 5, eject_ms = 60000");
        fail(&c, 1, 20);
        assert_eq!(ejected(&c), [false, true, false]);
        expire_ejection(&c, 1);
        assert_eq!(ejected(&c), [false, false, false]);
        assert!(c.endpoints()[1].usable());
        let picked: std::collections::BTreeSet<String> = (0..3).map(|_| picked(&c)).collect();
        assert!(picked.contains("127.0.0.1:2"));
        // Back with a new window: its next attempts are judged afresh, not at once.
        fail(&c, 1, 4);
        assert_eq!(ejected(&c), [false, false, false]);
    }

    #[test]
    fn consecutive_ejections_double_up_to_the_cap_and_a_clean_window_resets() {
        let c = outlier_cluster(3, "min_requests = 5, eject_ms = 1000, max_eject_ms = 5000");
        let mut lasted = Vec::new();
        for _ in 0..5 {
            fail(&c, 0, 20);
            assert!(is_ejected(&c.endpoints()[0]));
            lasted.push(ejected_for_ms(&c, 0).div_ceil(1000) * 1000);
            expire_ejection(&c, 0);
        }
        assert_eq!(lasted, [1000, 2000, 4000, 5000, 5000]);

        // Successes after the return do not eject, though the old rate is
        // still high; a window of them brings it down and resets the doubling.
        succeed(&c, 0, 5);
        assert!(c.endpoints()[0].error_rate_ppm() > 500_000);
        assert!(!is_ejected(&c.endpoints()[0]));
        succeed(&c, 0, 55);
        assert!(c.endpoints()[0].error_rate_ppm() < 500_000);
        fail(&c, 0, 30);
        assert!(is_ejected(&c.endpoints()[0]));
        assert!((995..=1000).contains(&ejected_for_ms(&c, 0)));
    }

    #[test]
    fn failing_active_checks_make_an_endpoint_unusable_and_reload_keeps_the_verdict() {
        let checked = format!("{ENDPOINTS}\nhealth_check = {{ path = \"/healthz\" }}");
        let c = cluster_from(&checked);
        assert!(c.endpoints()[0].check_metrics.is_some());
        c.endpoints()[0].check_failed.store(true, Ordering::Relaxed);
        assert!(!c.endpoints()[0].usable() && !c.endpoints()[0].locally_healthy());
        for _ in 0..6 {
            assert_ne!(picked(&c), "127.0.0.1:1");
        }
        let next = cluster_from(&checked);
        next.inherit_check_verdicts(&c);
        let failing: Vec<bool> = next
            .endpoints()
            .iter()
            .map(|e| e.check_failed.load(Ordering::Relaxed))
            .collect();
        assert_eq!(failing, [true, false, false]);
        // Without checks in the new config there is no verdict to keep.
        let unchecked = cluster("round_robin");
        unchecked.inherit_check_verdicts(&c);
        assert!(unchecked.endpoints().iter().all(|e| e.usable()));
    }

    /// A resolver that answers from `answers` (name → addresses, or an error).
    fn fake(
        answers: &[(&str, Result<Vec<&str>, &str>)],
    ) -> impl Fn(String, u16) -> std::future::Ready<Resolution> {
        let answers: BTreeMap<String, Result<Vec<IpAddr>, String>> = answers
            .iter()
            .map(|(name, a)| {
                let a = match a {
                    Ok(ips) => Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect()),
                    Err(e) => Err(e.to_string()),
                };
                (name.to_string(), a)
            })
            .collect();
        move |host, port| {
            std::future::ready(match answers.get(&host) {
                Some(Ok(ips)) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
                Some(Err(e)) => Err(e.clone()),
                None => Err(format!("{host}: no such name")),
            })
        }
    }

    fn addresses(c: &Cluster) -> Vec<String> {
        c.endpoints().iter().map(|e| e.address.clone()).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_address_of_a_name_is_an_endpoint_and_an_address_that_stays_keeps_its_state() {
        let c = cluster_from("endpoints = [\"api.test:8080\", \"127.0.0.1:9\"]");
        // Before the first answer only the IP endpoint exists.
        assert_eq!(addresses(&c), ["127.0.0.1:9"]);
        let errors = c
            .refresh(fake(&[(
                "api.test",
                Ok(vec!["10.0.0.2", "10.0.0.1", "10.0.0.2"]),
            )]))
            .await
            .errors;
        assert!(errors.is_empty(), "{errors:?}");
        // Sorted, without duplicates, in config order.
        assert_eq!(
            addresses(&c),
            [
                "api.test:8080@10.0.0.1:8080",
                "api.test:8080@10.0.0.2:8080",
                "127.0.0.1:9"
            ]
        );
        let kept = c.endpoints()[1].clone();
        assert_eq!(kept.authority.as_str(), "api.test:8080");
        assert_eq!(kept.dial.as_str(), "10.0.0.2:8080");
        fail(&c, 1, 1);
        // The next answer drops .1 and adds .3; .2 is the same endpoint, with its failure.
        c.refresh(fake(&[("api.test", Ok(vec!["10.0.0.3", "10.0.0.2"]))]))
            .await;
        assert_eq!(
            addresses(&c),
            [
                "api.test:8080@10.0.0.2:8080",
                "api.test:8080@10.0.0.3:8080",
                "127.0.0.1:9"
            ]
        );
        assert!(Arc::ptr_eq(&c.endpoints()[0], &kept));
        assert_eq!(kept.failures.load(Ordering::Relaxed), 1);
        // Picks rotate over all three.
        let picked: std::collections::BTreeSet<String> = (0..6).map(|_| picked(&c)).collect();
        assert_eq!(picked.len(), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_name_keeps_its_addresses_and_one_never_resolved_has_no_endpoint() {
        let c = cluster_from("endpoints = [\"api.test:80\"]");
        assert!(c.pick().is_none());
        let errors = c
            .refresh(fake(&[("api.test", Err("timed out"))]))
            .await
            .errors;
        assert_eq!(errors, ["`api.test:80`: timed out"]);
        assert!(c.pick().is_none());
        let errors = c.refresh(fake(&[("api.test", Ok(vec![]))])).await.errors;
        assert_eq!(errors, ["`api.test:80`: no address"]);
        c.refresh(fake(&[("api.test", Ok(vec!["::1"]))])).await;
        assert_eq!(picked(&c), "api.test:80@[::1]:80");
        // DNS trouble later does not empty the cluster.
        let errors = c.refresh(fake(&[])).await.errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(picked(&c), "api.test:80@[::1]:80");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_name_becomes_at_most_the_bound_of_endpoints() {
        let c = cluster_from("endpoints = [\"wide.test:80\"]");
        let many: Vec<String> = (1..=100).map(|i| format!("10.0.1.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        c.refresh(fake(&[("wide.test", Ok(many))])).await;
        assert_eq!(c.endpoints().len(), MAX_ADDRESSES_PER_NAME);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_keeps_the_addresses_of_names_it_cannot_resolve() {
        let old = cluster_from("endpoints = [\"api.test:80\", \"other.test:80\"]");
        old.refresh(fake(&[
            ("api.test", Ok(vec!["10.0.0.1"])),
            ("other.test", Ok(vec!["10.0.0.9"])),
        ]))
        .await;
        let new = cluster_from("endpoints = [\"api.test:80\", \"other.test:80\"]");
        // The new generation resolves one name itself; the other fails and is inherited.
        new.refresh(fake(&[("api.test", Ok(vec!["10.0.0.2"]))]))
            .await;
        new.inherit_resolved(&old);
        assert_eq!(
            addresses(&new),
            ["api.test:80@10.0.0.2:80", "other.test:80@10.0.0.9:80"]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_series_of_an_address_that_went_leave_the_scrape() {
        let metrics = Metrics::new();
        let cfg: UpstreamConfig = toml::from_str("endpoints = [\"api.test:80\"]").unwrap();
        let c = Cluster::new("c", &cfg, 1, &metrics).unwrap();
        c.refresh(fake(&[("api.test", Ok(vec!["10.0.0.1"]))])).await;
        c.endpoints()[0].metrics.ok.inc();
        assert!(metrics.encode().contains("api.test:80@10.0.0.1:80"));
        let next = Cluster::new("c", &cfg, 1, &metrics).unwrap();
        next.refresh(fake(&[("api.test", Ok(vec!["10.0.0.1"]))]))
            .await;
        let refreshed = c.refresh(fake(&[("api.test", Ok(vec!["10.0.0.2"]))])).await;
        assert_eq!(refreshed.gone, ["api.test:80@10.0.0.1:80"]);
        // A generation that serves the address keeps its series.
        c.forget(&refreshed.gone, &next);
        assert!(metrics.encode().contains("api.test:80@10.0.0.1:80"));
        // Once nothing serving has it, it leaves the scrape.
        c.forget(&refreshed.gone, &c);
        c.endpoints()[0].metrics.ok.inc();
        let scrape = metrics.encode();
        assert!(!scrape.contains("api.test:80@10.0.0.1:80"), "{scrape}");
        assert!(scrape.contains("api.test:80@10.0.0.2:80"), "{scrape}");
    }
}
