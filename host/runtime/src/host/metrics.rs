//! `metrics`: counters a policy reports (redactions per rule, cache hits, ...).

use crate::bindings::metrics::Host;
use crate::host::HostState;

/// Longest event name or label value kept; longer ones are dropped, not cut,
/// so a truncated label never merges two series.
pub const MAX_EVENT_TEXT: usize = 64;
/// Most `count` calls one hook call may make; the rest are dropped.
pub const MAX_EVENTS_PER_CALL: u32 = 64;

/// Where policy counters go (the gateway's Prometheus registry).
pub trait EventSink: Send + Sync {
    /// Add `delta` to `policy`'s counter `event{label}`. The sink bounds the
    /// number of distinct series and drops what is over.
    fn count(&self, policy: &str, event: &str, label: &str, delta: u64);
}

/// A sink that drops everything (tools and tests).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn count(&self, _policy: &str, _event: &str, _label: &str, _delta: u64) {}
}

fn acceptable(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_EVENT_TEXT
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

impl Host for HostState {
    fn count(&mut self, event: String, label: String, delta: u64) -> wasmtime::Result<()> {
        if self.events_left == 0 {
            return Ok(());
        }
        self.events_left -= 1;
        // Label values may be empty (an unlabelled counter); names may not.
        if acceptable(&event) && (label.is_empty() || acceptable(&label)) {
            self.services
                .events
                .count(&self.policy, &event, &label, delta);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn event_text_is_bounded_and_plain() {
        assert!(acceptable("credit_card"));
        assert!(acceptable("cache:hit"));
        assert!(!acceptable(""));
        assert!(!acceptable("a\"b"));
        assert!(!acceptable("new\nline"));
        assert!(!acceptable(&"x".repeat(65)));
    }
}
