//! Active health checks (`[upstreams.NAME.health_check]`): a GET to every
//! endpoint of a cluster at an interval. `unhealthy_threshold` failed checks
//! in a row take an endpoint out of picks, `healthy_threshold` passed ones
//! bring it back.
//!
//! One thread runs them all, off the request workers, beside the DNS
//! refreshes (`dns.rs`). It looks at the serving generation every
//! [`ADOPT_EVERY`] and starts the checks of endpoints that have none yet. A
//! check loop holds only `Weak`s to its cluster and endpoint and stops once
//! the cluster is dropped, a reload replaced it (it is no longer the serving
//! generation's cluster of that name), or a DNS refresh removed the
//! endpoint; a policy push keeps the clusters, so their checks go on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use edgegate_config::HealthCheckConfig;
use http::header::USER_AGENT;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use crate::control::state::GatewayState;
use crate::upstreams::cluster::{Cluster, Endpoint};

/// How often the serving generation is looked at for clusters to check.
const ADOPT_EVERY: Duration = Duration::from_millis(250);
/// Most of a check's answer body read; it is discarded.
const MAX_CHECK_BODY: usize = 64 << 10;

type CheckClient = Client<crate::upstreams::cluster::Connector, Empty<Bytes>>;

/// Runs the health checks and the DNS refreshes of whatever generation
/// serves, until shutdown (the body of the `edgegate-upstreams` thread).
pub(crate) fn run(state: Arc<ArcSwap<GatewayState>>, mut shutdown: watch::Receiver<bool>) {
    crate::run_on_this_thread("health checks and DNS refreshes", async move {
        loop {
            adopt(&state);
            crate::upstreams::dns::adopt(&state);
            tokio::select! {
                _ = tokio::time::sleep(ADOPT_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    // Dropping the runtime ends every check and refresh loop.
}

/// Starts one check loop per endpoint of each serving cluster that has
/// checks, for the endpoints that have none yet (new clusters, and
/// addresses a DNS refresh added).
fn adopt(state: &Arc<ArcSwap<GatewayState>>) {
    let current = state.load();
    for cluster in current.upstreams.clusters.values() {
        if cluster.health_check.is_none() {
            continue;
        }
        for e in cluster.endpoints().iter() {
            if e.checker_started.swap(true, Ordering::Relaxed) {
                continue;
            }
            // A verdict inherited over a reload shows from the start.
            if let Some(m) = &e.check_metrics {
                m.healthy
                    .set(i64::from(!e.check_failed.load(Ordering::Relaxed)));
            }
            tokio::spawn(check_loop(
                state.clone(),
                Arc::downgrade(cluster),
                Arc::downgrade(e),
            ));
        }
    }
}

/// The cluster behind `weak` while it is the serving generation's.
pub(crate) fn serving(state: &ArcSwap<GatewayState>, weak: &Weak<Cluster>) -> Option<Arc<Cluster>> {
    let cluster = weak.upgrade()?;
    let current = state.load();
    let same = current
        .upstreams
        .clusters
        .get(&cluster.name)
        .is_some_and(|c| Arc::ptr_eq(c, &cluster));
    same.then_some(cluster)
}

/// The endpoint behind `weak` while it is one of the serving cluster's (a
/// DNS refresh may have removed it).
fn serving_endpoint(
    state: &ArcSwap<GatewayState>,
    cluster: &Weak<Cluster>,
    endpoint: &Weak<Endpoint>,
) -> Option<(Arc<Cluster>, Arc<Endpoint>)> {
    let cluster = serving(state, cluster)?;
    let endpoint = endpoint.upgrade()?;
    let member = cluster
        .endpoints()
        .iter()
        .any(|e| Arc::ptr_eq(e, &endpoint));
    member.then_some((cluster, endpoint))
}

/// What one endpoint's checks need, fixed for the endpoint's life.
struct Target {
    upstream: String,
    endpoint: String,
    uri: Uri,
    cfg: HealthCheckConfig,
}

impl Target {
    fn new(cluster: &Cluster, ep: &Endpoint) -> Result<Self, String> {
        let cfg = cluster
            .health_check
            .clone()
            .ok_or_else(|| "no health check configured".to_string())?;
        let endpoint = ep.address.clone();
        // The URI names the Host sent (hyper writes it; the endpoint's
        // connector decides where the check goes).
        let host = match (cfg.host.as_deref(), &cluster.host_rewrite) {
            (Some(h), _) => h.to_string(),
            (None, Some(h)) => h.to_str().unwrap_or_default().to_string(),
            (None, None) => ep.authority.to_string(),
        };
        let uri: Uri = format!("{}://{host}{}", cluster.scheme, cfg.path)
            .parse()
            .map_err(|e| format!("health_check.host `{host}` or path `{}`: {e}", cfg.path))?;
        Ok(Self {
            upstream: cluster.name.clone(),
            endpoint,
            uri,
            cfg,
        })
    }
}

/// Checks one endpoint every interval while it serves.
async fn check_loop(
    state: Arc<ArcSwap<GatewayState>>,
    weak: Weak<Cluster>,
    weak_endpoint: Weak<Endpoint>,
) {
    let Some((cluster, e)) = serving_endpoint(&state, &weak, &weak_endpoint) else {
        return;
    };
    let target = match Target::new(&cluster, &e) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot health-check endpoint");
            return;
        }
    };
    let interval = Duration::from_millis(target.cfg.interval_ms);
    let timeout = Duration::from_millis(target.cfg.timeout_ms);
    let connector = cluster.connector(&e, timeout);
    drop((cluster, e));
    // Its own pool of one: checks reuse a connection, like Envoy's.
    let client: CheckClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(interval.saturating_mul(2))
        .pool_timer(TokioTimer::new())
        .build(connector);
    // The first check at a random point of the first interval, then every
    // interval ±10%, so endpoints (and gateways) are not hit in lockstep.
    let mut wait = interval.mul_f64(fastrand::f64());
    let (mut passed, mut failed) = (0u32, 0u32);
    loop {
        tokio::time::sleep(wait).await;
        wait = interval.mul_f64(0.9 + fastrand::f64() / 5.0);
        if serving_endpoint(&state, &weak, &weak_endpoint).is_none() {
            return;
        }
        let outcome = probe(&client, &target, timeout).await;
        // The cluster may have been replaced, or the endpoint resolved away,
        // while the check ran: its verdict then belongs to nobody.
        let Some((_cluster, e)) = serving_endpoint(&state, &weak, &weak_endpoint) else {
            return;
        };
        let was_failing = e.check_failed.load(Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                passed = passed.saturating_add(1);
                failed = 0;
                if let Some(m) = &e.check_metrics {
                    m.passed.inc();
                }
                if was_failing && passed >= target.cfg.healthy_threshold {
                    e.check_failed.store(false, Ordering::Relaxed);
                    if let Some(m) = &e.check_metrics {
                        m.healthy.set(1);
                    }
                    tracing::info!(upstream = %target.upstream, endpoint = %target.endpoint, passed, "health check passing: endpoint healthy again");
                }
            }
            Err(reason) => {
                failed = failed.saturating_add(1);
                passed = 0;
                if let Some(m) = &e.check_metrics {
                    m.failed.inc();
                }
                tracing::debug!(upstream = %target.upstream, endpoint = %target.endpoint, %reason, "health check failed");
                if !was_failing && failed >= target.cfg.unhealthy_threshold {
                    e.check_failed.store(true, Ordering::Relaxed);
                    if let Some(m) = &e.check_metrics {
                        m.healthy.set(0);
                    }
                    tracing::warn!(upstream = %target.upstream, endpoint = %target.endpoint, failed, %reason, "health check failing: endpoint unhealthy");
                }
            }
        }
    }
}

/// One check: GET the path with the Host header; the status must be one of
/// `expect_status`, and the answer (headers and at most [`MAX_CHECK_BODY`] of
/// body, read so the connection can be reused) must come within `timeout`.
async fn probe(client: &CheckClient, target: &Target, timeout: Duration) -> Result<(), String> {
    let req = Request::get(target.uri.clone())
        .header(USER_AGENT, "edgegate-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| crate::tls::describe(&e))?;
        let status = resp.status();
        // What the body says does not matter; a larger one just ends the connection.
        let _ = Limited::new(resp.into_body(), MAX_CHECK_BODY)
            .collect()
            .await;
        Ok::<_, String>(status)
    };
    let status = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))??;
    if target.cfg.expect_status.accepts(status.as_u16()) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_are_reported_with_their_causes() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(
            crate::tls::describe(&e),
            "client error (Connect): connection refused"
        );
    }
}
