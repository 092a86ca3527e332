//! Per-route counters of the LLM models a route's requests went to, for the
//! health graph's `model:{name}` nodes. A policy names the model of a request
//! by setting the context key [`MODEL_CONTEXT_KEY`] (the shipped routing
//! policy does, for the model it routed); the host counts the upstream
//! outcome of each such request under that name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::lock;
use crate::upstreams::cluster::observe_latency;

/// The context key a policy sets to the model name of an LLM request.
pub(crate) const MODEL_CONTEXT_KEY: &str = edgegate_policy_core::keys::ROUTE_MODEL;
/// Models counted per route; names past it are not counted (the name comes
/// from the client's request, so it must not grow memory without bound).
const MAX_MODELS: usize = 32;
/// Longest model name counted.
const MAX_NAME_BYTES: usize = 128;

/// One model's counters on one route.
pub(crate) struct ModelCounters {
    pub(crate) name: String,
    /// Requests that reached the upstream step, and those that failed there
    /// (no answer, 5xx or 429), since start.
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    ewma_latency_us: AtomicU64,
}

impl ModelCounters {
    /// Moving-average upstream time, µs.
    pub(crate) fn ewma_latency_us(&self) -> u64 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }
}

/// The models of one route: read without a lock; a new name takes a short
/// lock once, to publish a copy of the list with it added.
#[derive(Default)]
pub(crate) struct ModelStats {
    models: ArcSwap<Vec<Arc<ModelCounters>>>,
    adding: Mutex<()>,
}

impl ModelStats {
    /// Counts one request to `model` that took `latency` upstream.
    pub(crate) fn record(&self, model: &str, latency: Duration, failed: bool) {
        let Some(counters) = self.find_or_add(model) else {
            return;
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        observe_latency(&counters.ewma_latency_us, latency);
    }

    /// Every model counted so far.
    pub(crate) fn all(&self) -> Arc<Vec<Arc<ModelCounters>>> {
        self.models.load_full()
    }

    fn find_or_add(&self, model: &str) -> Option<Arc<ModelCounters>> {
        let find = |list: &Vec<Arc<ModelCounters>>| list.iter().find(|m| m.name == model).cloned();
        if let Some(found) = find(&self.models.load()) {
            return Some(found);
        }
        if model.is_empty() || model.len() > MAX_NAME_BYTES {
            return None;
        }
        let _adding = lock(&self.adding);
        let current = self.models.load_full();
        if let Some(found) = find(&current) {
            return Some(found);
        }
        if current.len() >= MAX_MODELS {
            return None;
        }
        let added = Arc::new(ModelCounters {
            name: model.to_string(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_latency_us: AtomicU64::new(0),
        });
        let mut next = Vec::clone(&current);
        next.push(Arc::clone(&added));
        self.models.store(Arc::new(next));
        Some(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_counted_by_name_and_bounded() {
        let stats = ModelStats::default();
        stats.record("gpt-4o", Duration::from_millis(10), false);
        stats.record("gpt-4o", Duration::from_millis(20), true);
        stats.record("claude", Duration::from_millis(5), false);
        let all = stats.all();
        assert_eq!(all.len(), 2);
        let gpt = all.iter().find(|m| m.name == "gpt-4o").expect("gpt-4o");
        assert_eq!(gpt.requests.load(Ordering::Relaxed), 2);
        assert_eq!(gpt.failures.load(Ordering::Relaxed), 1);
        assert!((10_000..=20_000).contains(&gpt.ewma_latency_us()));

        for i in 0..100 {
            stats.record(&format!("m{i}"), Duration::ZERO, false);
        }
        stats.record(&"x".repeat(MAX_NAME_BYTES + 1), Duration::ZERO, false);
        stats.record("", Duration::ZERO, false);
        assert_eq!(stats.all().len(), MAX_MODELS);
        stats.record("gpt-4o", Duration::ZERO, false);
        assert_eq!(
            gpt.requests.load(Ordering::Relaxed),
            3,
            "known models are still counted past the bound"
        );
    }
}
