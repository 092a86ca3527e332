//! The upstream attempts a routing decision asks for, capped: the same plan
//! on the edgegate host and on Spin (tests/fixtures/attempts.toml is the
//! case table both test suites read).

use std::time::Duration;

/// Most retries per cluster a routing decision may ask for.
pub const MAX_RETRIES: u32 = 3;
/// Most fallback clusters a routing decision may name.
pub const MAX_FALLBACKS: usize = 4;
/// Longest wait before one retry, however large the decision's backoff base.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where a request goes: clusters in order (the first, then fallbacks),
/// each tried `1 + retries` times.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptPlan<C> {
    /// The clusters, first to last.
    pub clusters: Vec<C>,
    /// Retries on each cluster after its first attempt.
    pub retries: u32,
    /// Base of the exponential backoff between retries on one cluster.
    pub backoff: Duration,
}

impl<C> AttemptPlan<C> {
    /// One attempt on one cluster: the route's own upstream.
    pub fn single(cluster: C) -> Self {
        Self {
            clusters: vec![cluster],
            retries: 0,
            backoff: Duration::ZERO,
        }
    }

    /// The plan of a routing decision: `upstream`, then at most
    /// [`MAX_FALLBACKS`] of `fallbacks`, each resolved by `resolve` (whose
    /// error, an unknown name, is the policy's failure); at most
    /// [`MAX_RETRIES`] retries.
    pub fn of_decision<'n, E>(
        upstream: &'n str,
        fallbacks: impl IntoIterator<Item = &'n str>,
        retries: u32,
        backoff_ms: u32,
        mut resolve: impl FnMut(&'n str) -> Result<C, E>,
    ) -> Result<Self, E> {
        let mut clusters = Vec::with_capacity(1 + MAX_FALLBACKS);
        for name in std::iter::once(upstream).chain(fallbacks.into_iter().take(MAX_FALLBACKS)) {
            clusters.push(resolve(name)?);
        }
        Ok(Self {
            clusters,
            retries: retries.min(MAX_RETRIES),
            backoff: Duration::from_millis(u64::from(backoff_ms)),
        })
    }

    /// How many attempts the plan allows in all.
    pub fn attempts(&self) -> usize {
        self.clusters.len() * (1 + self.retries as usize)
    }

    /// Attempt `n` (0-based): the cluster it goes to, and which try on that
    /// cluster it is (0 = first, 1 = first retry, ...).
    pub fn attempt(&self, n: usize) -> (&C, u32) {
        let per_cluster = 1 + self.retries as usize;
        let cluster = &self.clusters[(n / per_cluster).min(self.clusters.len() - 1)];
        (cluster, (n % per_cluster) as u32)
    }

    /// The window the wait before retry number `retry` (1-based) is drawn
    /// from: the base doubled per retry, at most [`MAX_BACKOFF`]; zero for a
    /// first try or without a base.
    pub fn backoff_window(&self, retry: u32) -> Duration {
        if retry == 0 || self.backoff.is_zero() {
            return Duration::ZERO;
        }
        self.backoff
            .saturating_mul(1 << (retry - 1).min(16))
            .min(MAX_BACKOFF)
    }

    /// The wait before retry `retry`: full jitter over its window, with
    /// `unit` a uniform draw from [0, 1).
    pub fn backoff_before(&self, retry: u32, unit: f64) -> Duration {
        self.backoff_window(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Whether an upstream answer counts as the provider failing, worth the
/// next attempt: a 5xx, or a 429 (a provider rate limiting us is worth a
/// fallback, but on the host does not break the circuit).
pub fn provider_failed(status: u16) -> bool {
    (500..600).contains(&status) || status == 429
}
