//! Policy versions as the request path sees them: the serving version of each
//! policy, an optional canary, and the per-version statistics a canary is
//! judged by.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgegate_runtime::PolicyInstance;

use crate::control::quarantine::Quarantine;
use crate::observability::metrics::PolicyMetrics;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The `component` file of the config.
    Config,
    /// Pushed through the admin API (and kept in the state folder).
    Push,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Push => "push",
        }
    }
}

/// One admitted component version of a policy.
pub(crate) struct Version {
    pub(crate) instance: Arc<PolicyInstance>,
    pub(crate) metrics: PolicyMetrics,
    pub(crate) stats: VersionStats,
    /// Held after repeated sandbox failures: its `on_error` answers for it.
    pub(crate) quarantine: Quarantine,
    /// Content digest (`edgegate_trust::content_digest`): hex sha256 of the
    /// component without its signature sections, as revocations, pins and the
    /// fleet name it.
    pub(crate) digest: String,
    /// Trusted keys whose signatures verified (empty when unsigned is allowed).
    pub(crate) signers: Vec<String>,
    pub(crate) size: usize,
    pub(crate) source: Source,
    pub(crate) admitted_at: SystemTime,
    /// The signed bytes, kept for the state folder.
    pub(crate) bytes: Arc<Vec<u8>>,
}

/// The versions of one policy a route table serves with.
#[derive(Clone)]
pub(crate) struct PolicySet {
    pub(crate) serving: Arc<Version>,
    pub(crate) canary: Option<Canary>,
}

/// A canary: a share of requests run the new version.
#[derive(Clone)]
pub(crate) struct Canary {
    pub(crate) version: Arc<Version>,
    /// Percent of requests (1..=99).
    pub(crate) percent: u32,
    /// Same client (IP), same version.
    pub(crate) sticky: bool,
}

/// The dice a request rolls once, so every phase of it runs the same versions.
#[derive(Clone, Copy, Default)]
pub(crate) struct Roll {
    /// Uniform in 0..100.
    pub(crate) random: u32,
    /// A stable function of the client, in 0..100.
    pub(crate) sticky: u32,
}

impl PolicySet {
    /// The version this request runs.
    pub(crate) fn pick(&self, roll: Roll) -> &Arc<Version> {
        match &self.canary {
            Some(c) if (if c.sticky { roll.sticky } else { roll.random }) < c.percent => &c.version,
            _ => &self.serving,
        }
    }
}

/// Buckets of the call-time histogram: bucket `i` holds calls up to 2^i µs.
const BUCKETS: usize = 28;

/// Counters one version's canary judgement reads; lock-free.
#[derive(Default)]
pub(crate) struct VersionStats {
    calls: AtomicU64,
    failures: AtomicU64,
    requests: AtomicU64,
    server_errors: AtomicU64,
    durations: [AtomicU64; BUCKETS],
}

/// A snapshot of [`VersionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StatsSnapshot {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) requests: u64,
    pub(crate) server_errors: u64,
    /// 99th percentile call time (upper bucket bound), µs; 0 without calls.
    pub(crate) p99_us: u64,
}

impl StatsSnapshot {
    pub(crate) fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    pub(crate) fn server_error_rate(&self) -> f64 {
        ratio(self.server_errors, self.requests)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl VersionStats {
    /// One hook call and whether it failed.
    pub(crate) fn record_call(&self, took: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let bucket = (64 - (us - 1).leading_zeros() as usize).min(BUCKETS - 1);
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// A call the version's quarantine answered without running it: a
    /// failure, so a quarantined canary is judged by it and rolled back.
    pub(crate) fn record_skip(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The final status of a request this version took part in.
    pub(crate) fn record_request(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let counts: Vec<u64> = self
            .durations
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut p99_us = 0;
        if total > 0 {
            let target = total - total / 100;
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= target {
                    p99_us = 1u64 << i;
                    break;
                }
            }
        }
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            p99_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_and_rates() {
        let s = VersionStats::default();
        for _ in 0..99 {
            s.record_call(Duration::from_micros(100), false);
        }
        s.record_call(Duration::from_millis(50), true);
        let snap = s.snapshot();
        assert_eq!(snap.calls, 100);
        assert_eq!(
            snap.p99_us, 128,
            "99 of 100 calls are within the 128 µs bucket"
        );
        assert!((snap.failure_rate() - 0.01).abs() < 1e-9);
        s.record_call(Duration::from_millis(50), false);
        s.record_call(Duration::from_millis(50), false);
        assert_eq!(s.snapshot().p99_us, 65_536);
        s.record_request(200);
        s.record_request(503);
        assert_eq!(s.snapshot().server_error_rate(), 0.5);
        assert_eq!(VersionStats::default().snapshot().p99_us, 0);
    }
}
