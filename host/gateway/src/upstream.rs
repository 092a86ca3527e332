//! Upstream clusters: endpoints, balancing, per-worker connection pools, passive health.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use edgegate_config::{Balance, UpstreamConfig};
use edgegate_runtime::host::{EndpointHealth, HealthSource};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::metrics::{EndpointMetrics, Metrics};

/// An HTTP/1.1 client with its own keep-alive pool.
pub(crate) type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Consecutive failed attempts that open an endpoint's circuit.
const CIRCUIT_FAILURES: u32 = 5;
/// How long an open circuit holds traffic back before a probe (half-open).
const CIRCUIT_OPEN_FOR: Duration = Duration::from_secs(10);

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
    pub(crate) in_flight: AtomicU32,
    ewma_latency_us: AtomicU64,
    error_rate_ppm: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the circuit is open; 0 when it never opened or closed again.
    open_until_ms: AtomicU64,
    /// Attempts and failed attempts since start (the health graph's rates).
    pub(crate) attempts: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// Set by a coordinator routing hint: unhealthy as seen from other sites.
    pub(crate) avoid: AtomicBool,
    pub(crate) metrics: EndpointMetrics,
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

    /// Whether picks may choose it: circuit not open, no hint against it.
    pub(crate) fn usable(&self) -> bool {
        self.circuit() != Circuit::Open && !self.avoid.load(Ordering::Relaxed)
    }

    /// Moving-average latency, µs.
    pub(crate) fn ewma_latency_us(&self) -> u64 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }

    /// Moving-average error ratio, parts per million.
    pub(crate) fn error_rate_ppm(&self) -> u32 {
        self.error_rate_ppm.load(Ordering::Relaxed)
    }

    /// Feed one attempt's outcome into the moving averages and the circuit breaker.
    pub(crate) fn observe(&self, latency: Duration, failed: bool) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            // Open after a run of failures, or again at once when a half-open probe fails.
            if n >= CIRCUIT_FAILURES || self.circuit() == Circuit::HalfOpen {
                let until = now_ms() + CIRCUIT_OPEN_FOR.as_millis() as u64;
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
        let sample = latency.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ewma_latency_us.store(new, Ordering::Relaxed);
        let old = self.error_rate_ppm.load(Ordering::Relaxed);
        let sample = if failed { 1_000_000 } else { 0 };
        self.error_rate_ppm
            .store(old - old / 16 + sample / 16, Ordering::Relaxed);
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
    /// One client (and so one connection pool) per worker thread.
    clients: Vec<OnceLock<UpstreamClient>>,
}

impl Cluster {
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        workers: usize,
        metrics: &Metrics,
    ) -> Result<Self, String> {
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        for ep in &cfg.endpoints {
            let address = ep.get_ref().clone();
            let authority: http::uri::Authority = address
                .parse()
                .map_err(|e| format!("endpoint `{address}`: {e}"))?;
            endpoints.push(Arc::new(Endpoint {
                metrics: metrics.upstream(name, &address),
                address,
                authority,
                in_flight: AtomicU32::new(0),
                ewma_latency_us: AtomicU64::new(0),
                error_rate_ppm: AtomicU32::new(0),
                consecutive_failures: AtomicU32::new(0),
                open_until_ms: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                avoid: AtomicBool::new(false),
            }));
        }
        Ok(Self {
            name: name.to_string(),
            endpoints,
            balance: cfg.balance,
            next: AtomicUsize::new(0),
            timeout: Duration::from_millis(cfg.timeout_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            max_idle: cfg.max_idle_per_endpoint,
            clients: (0..workers.max(1)).map(|_| OnceLock::new()).collect(),
        })
    }

    /// Choose an endpoint for the next attempt, skipping endpoints whose
    /// circuit is open or that a coordinator hint says to avoid. When none is
    /// usable, all endpoints are candidates again (like Envoy's panic
    /// threshold): trying beats failing.
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

    /// This worker's client for the cluster.
    pub(crate) fn client(&self, worker: usize) -> &UpstreamClient {
        let slot = &self.clients[worker % self.clients.len()];
        slot.get_or_init(|| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(self.connect_timeout));
            connector.set_nodelay(true);
            connector.enforce_http(true);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(self.max_idle)
                .pool_timer(TokioTimer::new())
                .build(connector)
        })
    }
}

/// Every cluster of a route table; also the health view policies read.
pub(crate) struct Upstreams {
    pub(crate) clusters: BTreeMap<String, Arc<Cluster>>,
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

    fn cluster(balance: &str) -> Cluster {
        let cfg: UpstreamConfig = toml::from_str(&format!(
            "endpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]\nbalance = \"{balance}\""
        ))
        .unwrap();
        Cluster::new("c", &cfg, 1, &Metrics::new()).unwrap()
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
        for _ in 0..CIRCUIT_FAILURES - 1 {
            bad.observe(Duration::from_millis(1), true);
        }
        assert_eq!(bad.circuit(), Circuit::Closed);
        bad.observe(Duration::from_millis(1), false); // a success resets the run
        for _ in 0..CIRCUIT_FAILURES {
            bad.observe(Duration::from_millis(1), true);
        }
        assert_eq!(bad.circuit(), Circuit::Open);
        for _ in 0..6 {
            assert_ne!(c.pick().address, "127.0.0.1:2");
        }
        let view = c.endpoints.iter().map(|e| e.circuit() != Circuit::Open);
        assert_eq!(view.collect::<Vec<_>>(), [true, false, true]);

        // Half-open once the period ends: one success closes it.
        bad.open_until_ms.store(1, Ordering::Relaxed);
        assert_eq!(bad.circuit(), Circuit::HalfOpen);
        bad.observe(Duration::from_millis(1), false);
        assert_eq!(bad.circuit(), Circuit::Closed);
    }

    #[test]
    fn every_circuit_open_means_every_endpoint_is_a_candidate() {
        let c = cluster("least_requests");
        for e in &c.endpoints {
            for _ in 0..CIRCUIT_FAILURES {
                e.observe(Duration::from_millis(1), true);
            }
        }
        let picked: std::collections::BTreeSet<&str> =
            (0..6).map(|_| c.pick().address.as_str()).collect();
        assert_eq!(picked.len(), 3);
    }
}
