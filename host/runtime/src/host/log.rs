//! `log`: guest log lines into the host's `tracing` output, tagged with the policy,
//! cut and escaped, and bounded per call and per second.
//!
//! A line cap alone let one call write 21 MiB of log (many capped lines), so
//! there are three bounds: each line ([`MAX_GUEST_LOG_LINE`]), each call
//! ([`MAX_LOG_LINES_PER_CALL`], [`MAX_LOG_BYTES_PER_CALL`]) and each policy
//! over time (a token bucket of [`LOG_LINES_PER_SECOND`], shared by every
//! store, instance and version of the policy). What is over is dropped,
//! counted ([`LogLimits::dropped`], for a metric) and reported as one
//! summary line, `policy X: N log lines dropped`, at most every
//! [`LOG_SUMMARY_INTERVAL`], instead of silence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::bindings::log::{Host, Level};
use crate::guest_text::{guest_text, MAX_GUEST_LOG_LINE};
use crate::host::HostState;

/// Most log lines one policy call may write.
pub const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Most log bytes (after cutting and escaping) one policy call may write.
pub const MAX_LOG_BYTES_PER_CALL: usize = 16 << 10;
/// Lines per second one policy may write over time, across all its calls.
pub const LOG_LINES_PER_SECOND: u32 = 100;
/// Lines one policy may write in a burst above [`LOG_LINES_PER_SECOND`].
pub const LOG_BURST_LINES: u32 = 1000;
/// Shortest time between two `N log lines dropped` summaries of one policy.
pub const LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// What one call may still write; reset when a call starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLogAllowance {
    lines: u32,
    bytes: usize,
}

impl Default for CallLogAllowance {
    fn default() -> Self {
        Self {
            lines: MAX_LOG_LINES_PER_CALL,
            bytes: MAX_LOG_BYTES_PER_CALL,
        }
    }
}

impl CallLogAllowance {
    /// Spend the allowance for a line of `len` bytes; false when it is over.
    fn take(&mut self, len: usize) -> bool {
        if self.lines == 0 || len > self.bytes {
            return false;
        }
        self.lines -= 1;
        self.bytes -= len;
        true
    }
}

/// The log rate state of one policy, shared by all its stores.
#[derive(Debug)]
pub(crate) struct PolicyLog {
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Drops not yet named in a summary line.
    unreported: u64,
    summarised: Option<Instant>,
}

impl PolicyLog {
    fn new(now: Instant) -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: f64::from(LOG_BURST_LINES),
                refilled: now,
                unreported: 0,
                summarised: None,
            }),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // The bucket holds counters only; a panic elsewhere leaves them usable.
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take a token for one line: whether it may be written, and the count
    /// of dropped lines a summary should name now, if one is due.
    fn admit(&self, now: Instant) -> (bool, Option<u64>) {
        let mut b = self.lock();
        let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
        b.tokens =
            (b.tokens + elapsed * f64::from(LOG_LINES_PER_SECOND)).min(f64::from(LOG_BURST_LINES));
        b.refilled = now;
        let admitted = b.tokens >= 1.0;
        if admitted {
            b.tokens -= 1.0;
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            b.unreported += 1;
        }
        (admitted, b.summary_due(now))
    }

    /// Count a line dropped by the per-call bounds; the summary count if one is due.
    fn drop_line(&self, now: Instant) -> Option<u64> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let mut b = self.lock();
        b.unreported += 1;
        b.summary_due(now)
    }
}

impl Bucket {
    fn summary_due(&mut self, now: Instant) -> Option<u64> {
        if self.unreported == 0
            || self
                .summarised
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_SUMMARY_INTERVAL)
        {
            return None;
        }
        self.summarised = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// Log rate state of every policy of the process, keyed by policy name, so
/// the per-second bound holds across stores, instances, versions and reloads.
#[derive(Debug, Default)]
pub struct LogLimits {
    policies: Mutex<HashMap<Arc<str>, Arc<PolicyLog>>>,
}

impl LogLimits {
    /// The process's log limits (what the `log` host function uses).
    pub fn global() -> &'static LogLimits {
        static GLOBAL: OnceLock<LogLimits> = OnceLock::new();
        GLOBAL.get_or_init(LogLimits::default)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<PolicyLog>>> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of `policy`, created on its first line. Policy names come
    /// from the config, so the map is as large as the set of names configured.
    pub(crate) fn policy(&self, policy: &Arc<str>) -> Arc<PolicyLog> {
        self.map()
            .entry(policy.clone())
            .or_insert_with(|| Arc::new(PolicyLog::new(Instant::now())))
            .clone()
    }

    /// Log lines of `policy` dropped so far (over a per-call or per-second bound).
    pub fn dropped(&self, policy: &str) -> u64 {
        self.map()
            .get(policy)
            .map_or(0, |p| p.dropped.load(Ordering::Relaxed))
    }

    /// Dropped log lines of every policy that has logged, by policy name (for a metrics scrape).
    pub fn dropped_by_policy(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .map()
            .iter()
            .map(|(name, p)| (name.to_string(), p.dropped.load(Ordering::Relaxed)))
            .collect();
        all.sort();
        all
    }
}

/// Whether `tracing` would write a policy line at `level`: a disabled level
/// costs no allowance and counts no drop.
fn enabled(level: Level) -> bool {
    match level {
        Level::Trace => tracing::enabled!(target: "edgegate::policy", tracing::Level::TRACE),
        Level::Debug => tracing::enabled!(target: "edgegate::policy", tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(target: "edgegate::policy", tracing::Level::INFO),
        Level::Warn => tracing::enabled!(target: "edgegate::policy", tracing::Level::WARN),
        Level::Error => tracing::enabled!(target: "edgegate::policy", tracing::Level::ERROR),
    }
}

impl HostState {
    /// Whether a treated line of `len` bytes may be written now; names the
    /// drops in a summary line when one is due.
    pub(super) fn admit_log_line(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let policy_log = self
            .log
            .get_or_insert_with(|| LogLimits::global().policy(&self.policy))
            .clone();
        let (admitted, summary) = if self.log_allowance.take(len) {
            policy_log.admit(now)
        } else {
            (false, policy_log.drop_line(now))
        };
        if let Some(n) = summary {
            let policy = &*self.policy;
            tracing::warn!(
                target: "edgegate::policy",
                policy,
                dropped = n,
                "policy {policy}: {n} log lines dropped"
            );
        }
        admitted
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !enabled(level) {
            return Ok(());
        }
        let message = guest_text(&message, MAX_GUEST_LOG_LINE);
        if !self.admit_log_line(message.len()) {
            return Ok(());
        }
        let policy = &*self.policy;
        match level {
            Level::Trace => tracing::trace!(target: "edgegate::policy", policy, "{message}"),
            Level::Debug => tracing::debug!(target: "edgegate::policy", policy, "{message}"),
            Level::Info => tracing::info!(target: "edgegate::policy", policy, "{message}"),
            Level::Warn => tracing::warn!(target: "edgegate::policy", policy, "{message}"),
            Level::Error => tracing::error!(target: "edgegate::policy", policy, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_writes_at_most_its_lines_and_bytes() {
        let mut call = CallLogAllowance::default();
        for _ in 0..MAX_LOG_LINES_PER_CALL {
            assert!(call.take(10));
        }
        assert!(!call.take(0), "line 65 of one call");

        let mut call = CallLogAllowance::default();
        let full = MAX_GUEST_LOG_LINE;
        let fits = MAX_LOG_BYTES_PER_CALL / full;
        for _ in 0..fits {
            assert!(call.take(full));
        }
        assert!(!call.take(full), "past {MAX_LOG_BYTES_PER_CALL} bytes");
        assert!(call.take(0), "an empty line still fits");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let log = PolicyLog::new(t0);
        let admitted = (0..LOG_BURST_LINES + 500)
            .filter(|_| log.admit(t0).0)
            .count();
        assert_eq!(admitted, LOG_BURST_LINES as usize);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 500);
        // One second later, one second's worth of lines more.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..LOG_BURST_LINES).filter(|_| log.admit(t1).0).count();
        assert_eq!(admitted, LOG_LINES_PER_SECOND as usize);
    }

    #[test]
    fn drops_are_summarised_at_most_once_per_interval() {
        let t0 = Instant::now();
        let log = PolicyLog::new(t0);
        let mut summaries = Vec::new();
        for _ in 0..LOG_BURST_LINES {
            assert_eq!(log.admit(t0), (true, None), "no drops, no summary");
        }
        // The first drop is named at once, so the operator hears of it.
        for _ in 0..100 {
            let (admitted, summary) = log.admit(t0);
            assert!(!admitted);
            summaries.extend(summary);
        }
        assert_eq!(summaries, [1]);
        // The per-call drops count too, and the next summary holds them all.
        let later = t0 + LOG_SUMMARY_INTERVAL;
        assert_eq!(log.drop_line(t0 + Duration::from_secs(1)), None);
        assert_eq!(log.drop_line(later), Some(99 + 2));
        assert_eq!(log.drop_line(later), None);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 103);
    }

    #[test]
    fn drops_are_counted_per_policy_for_metrics() {
        let limits = LogLimits::default();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let t0 = Instant::now();
        let log_a = limits.policy(&a);
        for _ in 0..LOG_BURST_LINES + 3 {
            log_a.admit(t0);
        }
        assert!(limits.policy(&b).drop_line(t0).is_some());
        assert!(
            Arc::ptr_eq(&log_a, &limits.policy(&a)),
            "one state per policy"
        );
        assert_eq!(limits.dropped("a"), 3);
        assert_eq!(limits.dropped("b"), 1);
        assert_eq!(limits.dropped("never-logged"), 0);
        assert_eq!(
            limits.dropped_by_policy(),
            [("a".to_string(), 3), ("b".to_string(), 1)]
        );
    }
}
