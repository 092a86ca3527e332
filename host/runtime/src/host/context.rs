//! `context`: the per-request key/value bag shared by the policies of one request.

use crate::bindings::context::Host;
use crate::host::HostState;

/// Most entries one request's context may hold.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Most bytes (keys + values) one request's context may hold.
pub const MAX_CONTEXT_BYTES: usize = 16 << 10;

/// Context keys the gateway sets from a TLS connection before the first
/// policy runs (the policies' own definition): a policy's `set` of `tls` or
/// of a key under `tls.` is dropped (and logged once per call).
pub use edgegate_policy_core::keys::tls as tls_keys;

/// Facts policies pass along one request; bounded in entries and bytes.
///
/// Every policy call works on a copy (a failed call's writes are dropped), so
/// the entries are shared and copied only when a call writes: most calls
/// only read, and a deep copy per call was a measurable share of host time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextBag {
    entries: std::sync::Arc<Vec<(String, String)>>,
    bytes: usize,
}

impl ContextBag {
    /// Read a value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set a value; refused (false) when the bag would pass its bounds.
    pub fn set(&mut self, key: String, value: String) -> bool {
        let entries = std::sync::Arc::make_mut(&mut self.entries);
        if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
            let new_bytes = self.bytes - slot.1.len() + value.len();
            if new_bytes > MAX_CONTEXT_BYTES {
                return false;
            }
            self.bytes = new_bytes;
            slot.1 = value;
            return true;
        }
        let new_bytes = self.bytes + key.len() + value.len();
        if entries.len() >= MAX_CONTEXT_ENTRIES || new_bytes > MAX_CONTEXT_BYTES {
            return false;
        }
        self.bytes = new_bytes;
        entries.push((key, value));
        true
    }

    /// All entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when nothing was set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

const CONTEXT_FULL: &str = "request context full; value dropped";
const CONTEXT_RESERVED: &str =
    "context keys `tls` and `tls.*` are set by the gateway; value dropped";

impl HostState {
    /// Say once per call that writes were dropped: a guest setting in a loop
    /// must not write a line per attempt. The line counts against the
    /// policy's log bounds like its own lines.
    fn warn_context_full(&mut self, why: &'static str) {
        if self.context_full_warned {
            return;
        }
        self.context_full_warned = true;
        if self.admit_log_line(why.len()) {
            tracing::warn!(policy = &*self.policy, "{why}");
        }
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.get(&key).map(str::to_string))
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        if tls_keys::reserved(&key) {
            self.warn_context_full(CONTEXT_RESERVED);
        } else if !self.ctx.set(key, value) {
            self.warn_context_full(CONTEXT_FULL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bag_replaces_and_bounds() {
        let mut bag = ContextBag::default();
        assert!(bag.set("a".into(), "1".into()));
        // A copy is independent of the original once either writes.
        let copy = bag.clone();
        assert!(bag.set("b".into(), "x".into()));
        assert_eq!(copy.get("b"), None);
        assert_eq!(bag.get("b"), Some("x"));
        assert!(bag.set("a".into(), "2".into()));
        assert_eq!(bag.get("a"), Some("2"));
        assert!(!bag.set("big".into(), "x".repeat(MAX_CONTEXT_BYTES)));
        for i in 2..MAX_CONTEXT_ENTRIES {
            assert!(bag.set(format!("k{i}"), String::new()));
        }
        assert!(!bag.set("one-too-many".into(), String::new()));
    }
}
