//! Quarantine: a policy version whose sandbox keeps failing (traps, time-outs,
//! memory or stack exhaustion) stops being run. Its `on_error` answers for it,
//! so a version that traps on every call costs one check, not an instance and
//! a trap, per request. A push or a rollback lifts it (a new version starts
//! clean, and the version a rollback serves again is lifted), and so does the
//! cool-down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use edgegate_config::QuarantineConfig;
use edgegate_runtime::PolicyFailure;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::lock;

/// The quarantine of one policy version.
pub(crate) struct Quarantine {
    rules: QuarantineConfig,
    /// Read on every call; the lock is taken only while it is set.
    held: AtomicBool,
    inner: Mutex<Inner>,
    metrics: QuarantineMetrics,
}

/// `edgegate_policy_quarantines_total`, `edgegate_policy_quarantined` and
/// `edgegate_policy_quarantine_skips_total` of one version.
pub(crate) struct QuarantineMetrics {
    pub(crate) entered: Counter,
    pub(crate) held: Gauge,
    pub(crate) skipped: Counter,
}

#[derive(Default)]
struct Inner {
    /// Sandbox failures within the window, oldest first (at most `failures`).
    recent: VecDeque<Instant>,
    /// While quarantined: until when, since when and the failure that tipped it.
    until: Option<Instant>,
    since: Option<SystemTime>,
    reason: String,
    /// How many times this version was quarantined.
    times: u64,
}

/// What `edgegate status` shows of a quarantined version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub(crate) since: SystemTime,
    pub(crate) lifts_in: Duration,
    pub(crate) reason: String,
    pub(crate) times: u64,
}

impl Quarantine {
    pub(crate) fn new(rules: QuarantineConfig, metrics: QuarantineMetrics) -> Self {
        metrics.held.set(0);
        Self {
            rules,
            held: AtomicBool::new(false),
            inner: Mutex::default(),
            metrics,
        }
    }

    /// True when the version must not run now: the caller applies `on_error`.
    /// A quarantine whose cool-down has passed is lifted here, by the first
    /// call after it.
    pub(crate) fn holds(&self, policy: &str) -> bool {
        if !self.held.load(Ordering::Acquire) {
            return false;
        }
        let mut inner = lock(&self.inner);
        match inner.until {
            Some(until) if Instant::now() < until => {
                self.metrics.skipped.inc();
                true
            }
            _ => {
                self.clear(&mut inner);
                tracing::info!(policy, "policy quarantine lifted after its cool-down");
                false
            }
        }
    }

    /// Counts a failure of a call; a sandbox failure that makes `failures`
    /// within the window quarantines the version. True when this one did.
    pub(crate) fn record(&self, policy: &str, failure: &PolicyFailure) -> bool {
        if !self.rules.enabled || !failure.is_trap() {
            return false;
        }
        let now = Instant::now();
        let window = Duration::from_millis(self.rules.window_ms);
        let mut inner = lock(&self.inner);
        if inner.until.is_some() {
            // A stream that leased an instance before the quarantine may still fail.
            return false;
        }
        while inner
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            inner.recent.pop_front();
        }
        inner.recent.push_back(now);
        let needed = self.rules.failures.max(1) as usize;
        while inner.recent.len() > needed {
            inner.recent.pop_front();
        }
        if inner.recent.len() < needed {
            return false;
        }
        let cool_down = Duration::from_millis(self.rules.cool_down_ms);
        inner.recent.clear();
        inner.until = Some(now + cool_down);
        inner.since = Some(SystemTime::now());
        inner.reason = format!(
            "{} sandbox failures within {} ms, the last: {failure}",
            needed, self.rules.window_ms
        );
        inner.times += 1;
        self.held.store(true, Ordering::Release);
        self.metrics.entered.inc();
        self.metrics.held.set(1);
        tracing::error!(
            policy,
            failures = needed,
            window_ms = self.rules.window_ms,
            cool_down_ms = self.rules.cool_down_ms,
            %failure,
            "policy quarantined: its on_error answers for it until a push, a rollback or the cool-down"
        );
        true
    }

    /// Lifts the quarantine (a rollback serves this version again). True when it was held.
    pub(crate) fn lift(&self, policy: &str, why: &str) -> bool {
        let mut inner = lock(&self.inner);
        let was = inner.until.is_some();
        self.clear(&mut inner);
        if was {
            tracing::info!(policy, why, "policy quarantine lifted");
        }
        was
    }

    fn clear(&self, inner: &mut Inner) {
        inner.until = None;
        inner.since = None;
        inner.recent.clear();
        self.held.store(false, Ordering::Release);
        self.metrics.held.set(0);
    }

    /// The quarantine now, if the version is held.
    pub(crate) fn held(&self) -> Option<Held> {
        let inner = lock(&self.inner);
        let until = inner.until?;
        Some(Held {
            since: inner.since.unwrap_or(SystemTime::UNIX_EPOCH),
            lifts_in: until.saturating_duration_since(Instant::now()),
            reason: inner.reason.clone(),
            times: inner.times,
        })
    }

    /// True while held (the cool-down may have passed without a call yet).
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Quarantine {
    /// A version that is dropped (pushed over, reloaded) is no longer held.
    fn drop(&mut self) {
        self.metrics.held.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quarantine(failures: u32, window_ms: u64, cool_down_ms: u64) -> Quarantine {
        Quarantine::new(
            QuarantineConfig {
                enabled: true,
                failures,
                window_ms,
                cool_down_ms,
            },
            QuarantineMetrics {
                entered: Counter::default(),
                held: Gauge::default(),
                skipped: Counter::default(),
            },
        )
    }

    #[test]
    fn sandbox_failures_within_the_window_quarantine_and_guest_errors_do_not() {
        let q = quarantine(3, 60_000, 60_000);
        let trap = PolicyFailure::Trap("unreachable".into());
        for _ in 0..10 {
            assert!(!q.record("p", &PolicyFailure::Guest("no".into())));
            assert!(!q.record(
                "p",
                &PolicyFailure::InvalidConfig {
                    key: "k".into(),
                    reason: "r".into()
                }
            ));
        }
        assert!(
            !q.holds("p"),
            "returned errors are the guest's answer, not a sandbox failure"
        );
        assert!(!q.record("p", &trap));
        assert!(!q.record("p", &PolicyFailure::Timeout(50)));
        assert!(!q.holds("p"));
        assert!(q.record("p", &PolicyFailure::OutOfMemory(1 << 20)));
        assert!(q.holds("p"));
        assert_eq!(q.metrics.entered.get(), 1);
        assert_eq!(q.metrics.held.get(), 1);
        assert_eq!(q.metrics.skipped.get(), 1);
        let held = q.held().unwrap();
        assert!(
            held.reason.contains("3 sandbox failures within 60000 ms"),
            "{}",
            held.reason
        );
        assert!(held.reason.contains("ran out of memory"), "{}", held.reason);
        assert!(
            !q.record("p", &trap),
            "a held version is not quarantined again"
        );
        assert!(q.lift("p", "rollback"));
        assert!(!q.holds("p"));
        assert_eq!(q.metrics.held.get(), 0);
        assert!(!q.record("p", &trap), "the lift starts a new count");
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let q = quarantine(2, 30, 60_000);
        let trap = PolicyFailure::StackOverflow;
        assert!(!q.record("p", &trap));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!q.record("p", &trap), "the first failure left the window");
        assert!(q.record("p", &trap));
    }

    #[test]
    fn the_cool_down_lifts_it_at_the_next_call() {
        let q = quarantine(1, 1000, 20);
        assert!(q.record("p", &PolicyFailure::Trap("x".into())));
        assert!(q.holds("p"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(q.is_held(), "nothing ran since");
        assert!(!q.holds("p"), "the cool-down has passed");
        assert!(q.held().is_none());
        assert_eq!(q.metrics.entered.get(), 1);
    }

    #[test]
    fn switched_off_it_never_holds() {
        let mut q = quarantine(1, 1000, 1000);
        q.rules.enabled = false;
        assert!(!q.record("p", &PolicyFailure::Trap("x".into())));
        assert!(!q.holds("p"));
    }
}
