//! DNS refreshes of endpoint names (`dns_refresh_ms`). A generation is built
//! with its names resolved once (`Upstreams::resolve`); once it serves, one
//! loop per cluster with names resolves them again every interval, on the
//! thread that runs the health checks. Every address a name gives is an
//! endpoint of its own, with its own circuit, ejection, checks and graph node;
//! an address that stays keeps them across refreshes.
//!
//! A name that fails to resolve keeps its last addresses and is tried again
//! sooner ([`RETRY_AFTER`]); a name that never resolved has no endpoint, and
//! requests to a cluster with none get a 503 `no_endpoint`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::control::state::GatewayState;
use crate::upstreams::cluster::{system_resolve, Cluster};
use crate::upstreams::health_check::serving;

/// Wait before resolving again after a failure, when shorter than the interval.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts a refresh loop for each serving cluster that has names and none yet.
pub(crate) fn adopt(state: &Arc<ArcSwap<GatewayState>>) {
    let current = state.load();
    for cluster in current.upstreams.clusters.values() {
        if cluster.has_names() && !cluster.resolver_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(refresh_loop(state.clone(), Arc::downgrade(cluster)));
        }
    }
}

/// Resolves the cluster's names every `dns_refresh_ms` while it serves.
async fn refresh_loop(state: Arc<ArcSwap<GatewayState>>, weak: Weak<Cluster>) {
    let Some(interval) = serving(&state, &weak).map(|c| c.dns_refresh) else {
        return;
    };
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        let Some(cluster) = serving(&state, &weak) else {
            return;
        };
        let refreshed = cluster.refresh(system_resolve).await;
        for e in &refreshed.errors {
            tracing::warn!(upstream = %cluster.name, error = %e, "cannot resolve an endpoint name; keeping its last addresses");
        }
        if !refreshed.gone.is_empty() {
            let current = state.load();
            if let Some(serving) = current.upstreams.clusters.get(&cluster.name) {
                cluster.forget(&refreshed.gone, serving);
            }
        }
        wait = if refreshed.errors.is_empty() {
            interval
        } else {
            interval.min(RETRY_AFTER)
        };
    }
}
