//! Upstream clusters: endpoints, balancing, per-worker connection pools, passive health.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edgegate_config::{Balance, UpstreamConfig};
use edgegate_runtime::host::{EndpointHealth, HealthSource};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::ProxyBody;
use crate::metrics::{EndpointMetrics, Metrics};

/// An HTTP/1.1 client with its own keep-alive pool.
pub(crate) type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// One `host:port` of a cluster with its passive health counters.
pub(crate) struct Endpoint {
    pub(crate) address: String,
    pub(crate) authority: http::uri::Authority,
    pub(crate) in_flight: AtomicU32,
    ewma_latency_us: AtomicU64,
    error_rate_ppm: AtomicU32,
    pub(crate) metrics: EndpointMetrics,
}

impl Endpoint {
    /// Feed one attempt's outcome into the moving averages.
    pub(crate) fn observe(&self, latency: Duration, failed: bool) {
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

    /// Choose an endpoint for the next attempt.
    pub(crate) fn pick(&self) -> &Arc<Endpoint> {
        let n = self.endpoints.len();
        match self.balance {
            Balance::RoundRobin => &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n],
            Balance::LeastRequests => {
                // Start at a rotating offset so ties spread instead of piling on the first.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &self.endpoints[(start + i) % n])
                    .min_by_key(|e| e.in_flight.load(Ordering::Relaxed))
                    .unwrap_or(&self.endpoints[0])
            }
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
                healthy: true,
                circuit: 0,
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
}
