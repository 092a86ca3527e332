//! Upstream clusters: endpoints, balancing, per-worker connection pools, and
//! endpoint health: the passive circuit breaker, outlier ejection, and the
//! verdict of active health checks (`health_check.rs` sends them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use edgegate_config::{
    Balance, EndpointAddress, HealthCheckConfig, OutlierConfig, UpstreamConfig, UpstreamProtocol,
};
use edgegate_runtime::host::{EndpointHealth, HealthSource};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::metrics::{CheckMetrics, EndpointMetrics, Metrics};

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
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    // Starts at 1: 0 means "never opened" in `open_until_ms`.
    START.elapsed().as_millis() as u64 + 1
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Circuit {
    /// Traffic flows.
    Closed,
    /// Held back until the open period ends.
    Open,
    /// The open period ended: traffic flows again; one failure re-opens it.
    HalfOpen,
}

/// One `host:port` of a cluster with its passive health counters.
pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) authority: http::uri::Authority,
    /// The endpoint's host: the TLS server name unless `tls.server_name` says otherwise.
    host: String,
    /// One client (and so one connection pool) per worker thread.
    clients: Vec<OnceLock<UpstreamClient>>,
    pub(crate) in_flight: AtomicU32,
    ewma_latency_us: AtomicU64,
    error_rate_ppm: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the circuit is open; 0 when it never opened or closed again.
    open_until_ms: AtomicU64,
    /// The cluster's `circuit.consecutive_failures`.
    circuit_failures: u32,
    /// The cluster's `circuit.open_ms`.
    circuit_open_ms: u64,
    /// `now_ms()` until which outlier ejection holds it out; 0 when it is back.
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
    /// The circuit breaker's state now.
    pub(crate) fn circuit(&self) -> Circuit {
        match self.open_until_ms.load(Ordering::Relaxed) {
            0 => Circuit::Closed,
            until if now_ms() < until => Circuit::Open,
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
        let now = now_ms();
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
                let until = now_ms().saturating_add(self.circuit_open_ms);
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
    /// Endpoints that may be ejected at once (`max_ejected_percent`, rounded down).
    max_ejected: usize,
    /// Held while one ejection is decided, so two endpoints judged at once
    /// cannot both take the last slot.
    deciding: AtomicBool,
}

impl Outlier {
    fn new(cfg: &OutlierConfig, endpoints: usize) -> Self {
        Self {
            max_error_rate_ppm: (cfg.max_error_rate.clamp(0.0, 1.0) * 1e6) as u32,
            min_requests: cfg.min_requests.max(1),
            eject_ms: cfg.eject_ms,
            max_eject_ms: cfg.max_eject_ms.max(cfg.eject_ms),
            max_ejected: endpoints * cfg.max_ejected_percent.min(100) as usize / 100,
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

/// A named group of endpoints and how to reach them.
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    balance: Balance,
    next: AtomicUsize,
    pub(crate) timeout: Duration,
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
    /// Set once a checker runs for this cluster (`health_check.rs`).
    pub(crate) checker_started: AtomicBool,
}

impl Cluster {
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        workers: usize,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        let mut tls = false;
        for ep in &cfg.endpoints {
            let address = ep.get_ref().clone();
            let parsed = EndpointAddress::parse(&address)?;
            tls |= parsed.tls;
            let authority: http::uri::Authority = parsed
                .authority()
                .parse()
                .map_err(|e| format!("endpoint `{address}`: {e}"))?;
            endpoints.push(Arc::new(Endpoint {
                metrics: metrics.upstream(name, &address),
                check_metrics: cfg
                    .health_check
                    .as_ref()
                    .map(|_| metrics.health_check(name, &address)),
                address,
                authority,
                host: parsed.host.clone(),
                clients: (0..workers.max(1)).map(|_| OnceLock::new()).collect(),
                in_flight: AtomicU32::new(0),
                ewma_latency_us: AtomicU64::new(0),
                error_rate_ppm: AtomicU32::new(0),
                consecutive_failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                circuit_failures: cfg.circuit.consecutive_failures.max(1),
                circuit_open_ms: cfg.circuit.open_ms,
                ejected_until_ms: AtomicU64::new(0),
                ejections: AtomicU32::new(0),
                window_attempts: AtomicU64::new(0),
                check_failed: AtomicBool::new(false),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                avoid: AtomicBool::new(false),
            }));
        }
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
            scheme: if tls {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            tls: tls_config,
            server_name,
            protocol: cfg.protocol,
            host_rewrite,
            outlier: cfg
                .outlier
                .as_ref()
                .map(|o| Outlier::new(o, endpoints.len())),
            endpoints,
            balance: cfg.balance,
            next: AtomicUsize::new(0),
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            max_idle: cfg.max_idle_per_endpoint,
            health_check: cfg.health_check.clone(),
            checker_started: AtomicBool::new(false),
        })
    }

    /// Choose an endpoint for the next attempt, skipping endpoints whose
    /// circuit is open, that are ejected or failing their health checks, or
    /// that a coordinator hint says to avoid. When none is usable, all
    /// endpoints are candidates again (like Envoy's panic threshold): trying
    /// beats failing.
    pub(crate) fn pick(&self) -> &Arc<Endpoint> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let rotation = (0..n).map(|i| &self.endpoints[(start + i) % n]);
        let none_usable = !rotation.clone().any(|e| e.usable());
        let mut candidates = rotation.filter(|e| none_usable || e.usable());
        match self.balance {
            // Round robin: the first usable endpoint from the rotating start.
            Balance::RoundRobin => candidates.next().unwrap_or(&self.endpoints[0]),
            // Least requests; the rotating start spreads ties instead of piling on the first.
            Balance::LeastRequests => candidates
                .min_by_key(|e| e.in_flight.load(Ordering::Relaxed))
                .unwrap_or(&self.endpoints[0]),
        }
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
            if ejected_at(until, now_ms()) {
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
        let now = now_ms();
        let ejected_now = self
            .endpoints
            .iter()
            .filter(|x| ejected_at(x.ejected_until_ms.load(Ordering::Relaxed), now))
            .count();
        let others_usable = self
            .endpoints
            .iter()
            .any(|x| !std::ptr::eq(&**x, e) && x.usable());
        if ejected_at(e.ejected_until_ms.load(Ordering::Relaxed), now) {
            // Ejected by a concurrent attempt meanwhile.
        } else if ejected_now < o.max_ejected && others_usable {
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
        for e in &self.endpoints {
            let failing = previous
                .endpoints
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
            .authority(endpoint.authority.clone())
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
    /// See [`Cluster::inherit_check_verdicts`]: clusters are matched by name.
    pub(crate) fn inherit_check_verdicts(&self, previous: &Upstreams) {
        for (name, cluster) in &self.clusters {
            if let Some(p) = previous.clusters.get(name) {
                cluster.inherit_check_verdicts(p);
            }
        }
    }
}

impl HealthSource for Upstreams {
    fn upstream(&self, name: &str) -> Vec<EndpointHealth> {
        let Some(c) = self.clusters.get(name) else {
            return Vec::new();
        };
        c.endpoints
            .iter()
            .map(|e| EndpointHealth {
                address: e.address.clone(),
                healthy: e.usable(),
                circuit: match e.circuit() {
                    Circuit::Closed => 0,
                    Circuit::Open => 1,
                    Circuit::HalfOpen => 2,
                },
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
            c.observe(&c.endpoints[i], Duration::from_millis(1), true);
        }
    }

    fn succeed(c: &Cluster, i: usize, times: usize) {
        for _ in 0..times {
            c.observe(&c.endpoints[i], Duration::from_millis(1), false);
        }
    }

    /// Ends endpoint `i`'s ejection now, as if its time had passed.
    fn expire_ejection(c: &Cluster, i: usize) {
        c.endpoints[i].ejected_until_ms.store(1, Ordering::Relaxed);
    }

    fn is_ejected(e: &Endpoint) -> bool {
        ejected_at(e.ejected_until_ms.load(Ordering::Relaxed), now_ms())
    }

    fn ejected(c: &Cluster) -> Vec<bool> {
        c.endpoints.iter().map(|e| is_ejected(e)).collect()
    }

    /// How long endpoint `i`'s current ejection lasts, ms (±5 for the clock).
    fn ejected_for_ms(c: &Cluster, i: usize) -> u64 {
        c.endpoints[i]
            .ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms())
    }

    #[test]
    fn round_robin_takes_turns() {
        let c = cluster("round_robin");
        let picks: Vec<&str> = (0..6).map(|_| c.pick().address.as_str()).collect();
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
        c.endpoints[0].in_flight.store(5, Ordering::Relaxed);
        c.endpoints[2].in_flight.store(3, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(c.pick().address, "127.0.0.1:2");
        }
        c.endpoints[1].in_flight.store(9, Ordering::Relaxed);
        assert_eq!(c.pick().address, "127.0.0.1:3");
    }

    #[test]
    fn circuit_opens_after_consecutive_failures_and_picks_skip_it() {
        let c = cluster("round_robin");
        let bad = &c.endpoints[1];
        // The default: 5 in a row.
        fail(&c, 1, 4);
        assert_eq!(bad.circuit(), Circuit::Closed);
        succeed(&c, 1, 1); // a success resets the run
        fail(&c, 1, 5);
        assert_eq!(bad.circuit(), Circuit::Open);
        for _ in 0..6 {
            assert_ne!(c.pick().address, "127.0.0.1:2");
        }
        let view = c.endpoints.iter().map(|e| e.circuit() != Circuit::Open);
        assert_eq!(view.collect::<Vec<_>>(), [true, false, true]);
        // Open for the default 10 s.
        let open_for = bad.open_until_ms.load(Ordering::Relaxed) - now_ms();
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
        let e = &c.endpoints[0];
        fail(&c, 0, 1);
        assert_eq!(e.circuit(), Circuit::Closed);
        fail(&c, 0, 1);
        assert_eq!(e.circuit(), Circuit::Open);
        assert!(!e.usable());
        let open_for = e.open_until_ms.load(Ordering::Relaxed) - now_ms();
        assert!((240..=250).contains(&open_for), "{open_for}");

        let c = cluster_from(&format!(
            "{ENDPOINTS}\ncircuit = {{ consecutive_failures = 12 }}"
        ));
        fail(&c, 0, 11);
        assert_eq!(c.endpoints[0].circuit(), Circuit::Closed);
        fail(&c, 0, 1);
        assert_eq!(c.endpoints[0].circuit(), Circuit::Open);
    }

    #[test]
    fn every_circuit_open_means_every_endpoint_is_a_candidate() {
        let c = cluster("least_requests");
        for i in 0..c.endpoints.len() {
            fail(&c, i, 5);
        }
        let picked: std::collections::BTreeSet<&str> =
            (0..6).map(|_| c.pick().address.as_str()).collect();
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn no_outlier_table_means_no_ejection() {
        let c = cluster_from(&format!(
            "{ENDPOINTS}\ncircuit = {{ consecutive_failures = 1000000 }}"
        ));
        fail(&c, 0, 500);
        assert_eq!(ejected(&c), [false, false, false]);
        assert!(c.endpoints[0].error_rate_ppm() > 900_000);
    }

    #[test]
    fn an_endpoint_above_the_error_rate_is_ejected_after_min_requests_and_skipped() {
        let c = outlier_cluster(
            4,
            "max_error_rate = 0.5, min_requests = 20, eject_ms = 1000",
        );
        // 19 failures: the rate is far above 0.5, but the window is too small.
        fail(&c, 2, 19);
        assert!(c.endpoints[2].error_rate_ppm() > 500_000);
        assert_eq!(ejected(&c), [false, false, false, false]);
        fail(&c, 2, 1);
        assert_eq!(ejected(&c), [false, false, true, false]);
        assert!(!c.endpoints[2].usable());
        assert!(!c.endpoints[2].locally_healthy());
        assert!((995..=1000).contains(&ejected_for_ms(&c, 2)));
        for _ in 0..8 {
            assert_ne!(c.pick().address, "127.0.0.1:3");
        }
        let view = Upstreams {
            clusters: BTreeMap::from([("c".to_string(), Arc::new(c))]),
        };
        let healthy: Vec<bool> = view.upstream("c").iter().map(|h| h.healthy).collect();
        assert_eq!(healthy, [true, true, false, true]);
        assert_eq!(view.clusters["c"].endpoints[2].metrics.ejections.get(), 1);
    }

    #[test]
    fn a_rate_at_or_below_the_threshold_is_not_ejected() {
        let c = outlier_cluster(3, "max_error_rate = 0.5, min_requests = 5");
        // One failure in three keeps the moving rate below 0.5.
        for _ in 0..200 {
            fail(&c, 0, 1);
            succeed(&c, 0, 2);
        }
        assert!(c.endpoints[0].error_rate_ppm() < 500_000);
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
        assert!(c.endpoints[0].usable());

        // Two endpoints, the other already out (its circuit open): not ejected either.
        let c = outlier_cluster(2, "min_requests = 5, max_ejected_percent = 100");
        c.endpoints[1]
            .open_until_ms
            .store(now_ms() + 60_000, Ordering::Relaxed);
        fail(&c, 0, 40);
        assert_eq!(ejected(&c), [false, false]);
        assert_eq!(c.pick().address, "127.0.0.1:1");

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
        assert!(c.endpoints[1].usable());
        let picked: std::collections::BTreeSet<&str> =
            (0..3).map(|_| c.pick().address.as_str()).collect();
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
            assert!(is_ejected(&c.endpoints[0]));
            lasted.push(ejected_for_ms(&c, 0).div_ceil(1000) * 1000);
            expire_ejection(&c, 0);
        }
        assert_eq!(lasted, [1000, 2000, 4000, 5000, 5000]);

        // Successes after the return do not eject, though the old rate is
        // still high; a window of them brings it down and resets the doubling.
        succeed(&c, 0, 5);
        assert!(c.endpoints[0].error_rate_ppm() > 500_000);
        assert!(!is_ejected(&c.endpoints[0]));
        succeed(&c, 0, 55);
        assert!(c.endpoints[0].error_rate_ppm() < 500_000);
        fail(&c, 0, 30);
        assert!(is_ejected(&c.endpoints[0]));
        assert!((995..=1000).contains(&ejected_for_ms(&c, 0)));
    }

    #[test]
    fn failing_active_checks_make_an_endpoint_unusable_and_reload_keeps_the_verdict() {
        let checked = format!("{ENDPOINTS}\nhealth_check = {{ path = \"/healthz\" }}");
        let c = cluster_from(&checked);
        assert!(c.endpoints[0].check_metrics.is_some());
        c.endpoints[0].check_failed.store(true, Ordering::Relaxed);
        assert!(!c.endpoints[0].usable() && !c.endpoints[0].locally_healthy());
        for _ in 0..6 {
            assert_ne!(c.pick().address, "127.0.0.1:1");
        }
        let next = cluster_from(&checked);
        next.inherit_check_verdicts(&c);
        let failing: Vec<bool> = next
            .endpoints
            .iter()
            .map(|e| e.check_failed.load(Ordering::Relaxed))
            .collect();
        assert_eq!(failing, [true, false, false]);
        // Without checks in the new config there is no verdict to keep.
        let unchecked = cluster("round_robin");
        unchecked.inherit_check_verdicts(&c);
        assert!(unchecked.endpoints.iter().all(|e| e.usable()));
    }
}
