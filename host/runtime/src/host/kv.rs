//! `kv`: a key/value store namespaced per policy, with TTLs and a byte budget (LRU eviction).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::bindings::kv::{Host, KvError as WitKvError};
use crate::host::{Capability, HostState};

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;

/// Errors of the key/value store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The entry is larger than the namespace's whole budget (or the key too long).
    #[error("entry larger than the namespace budget")]
    TooLarge,
    /// `incr` on a value that is not a decimal i64.
    #[error("value is not a number")]
    NotANumber,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

struct Inner {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

/// One policy's namespace: entries bounded by `budget` bytes (keys + values).
pub struct KvNamespace {
    budget: usize,
    inner: Mutex<Inner>,
}

impl KvNamespace {
    /// An empty namespace with a byte budget.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent in a way
        // that matters more than losing cache entries, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read a live value.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                remove(&mut inner, key);
                None
            }
            None => None,
        }
    }

    /// Store a value, evicting least recently used entries to stay within budget.
    pub fn set(&self, key: String, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let size = key.len() + value.len();
        if size > self.budget || key.len() > MAX_KEY_BYTES {
            return Err(KvError::TooLarge);
        }
        let expires = ttl.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        remove(&mut inner, &key);
        while inner.bytes + size > self.budget {
            match inner.entries.pop_lru() {
                Some((k, e)) => inner.bytes -= k.len() + e.value.len(),
                None => break,
            }
        }
        inner.bytes += size;
        inner.entries.put(key, Entry { value, expires });
        Ok(())
    }

    /// Remove a value; true when a live one was there.
    pub fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        remove(&mut inner, key).is_some_and(|e| e.live(now))
    }

    /// Add to a decimal counter, creating it (with `ttl`) when absent or expired.
    pub fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(key) {
            if e.live(now) {
                let current: i64 = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(KvError::NotANumber)?;
                let next = current.saturating_add(delta);
                let old_len = e.value.len();
                e.value = next.to_string().into_bytes();
                let new_len = e.value.len();
                inner.bytes = inner.bytes - old_len + new_len;
                return Ok(next);
            }
        }
        drop(inner);
        self.set(key.to_string(), delta.to_string().into_bytes(), ttl)?;
        Ok(delta)
    }

    /// Bytes in use (keys + values).
    pub fn used_bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn remove(inner: &mut Inner, key: &str) -> Option<Entry> {
    let e = inner.entries.pop(key)?;
    inner.bytes -= key.len() + e.value.len();
    Some(e)
}

/// All namespaces of the process, so a policy keeps its data across calls and versions.
#[derive(Default)]
pub struct KvStore {
    namespaces: Mutex<HashMap<String, Arc<KvNamespace>>>,
}

impl KvStore {
    /// The namespace `name`, created with `budget` bytes when new.
    pub fn namespace(&self, name: &str, budget: usize) -> Arc<KvNamespace> {
        let mut map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(KvNamespace::new(budget)))
            .clone()
    }
}

impl HostState {
    fn kv_namespace(&self) -> Result<&KvNamespace, WitKvError> {
        if !self.caps.has(Capability::Kv) {
            return Err(WitKvError::Denied);
        }
        self.kv.as_deref().ok_or(WitKvError::Denied)
    }
}

fn to_wit(e: KvError) -> WitKvError {
    match e {
        KvError::TooLarge => WitKvError::TooLarge,
        KvError::NotANumber => WitKvError::NotANumber,
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitKvError>> {
        Ok(self.kv_namespace().map(|ns| ns.get(&key)))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), WitKvError>> {
        Ok(self.kv_namespace().and_then(|ns| {
            ns.set(key, value, ttl_ms.map(Duration::from_millis))
                .map_err(to_wit)
        }))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, WitKvError>> {
        Ok(self.kv_namespace().map(|ns| ns.delete(&key)))
    }

    fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, WitKvError>> {
        Ok(self.kv_namespace().and_then(|ns| {
            ns.incr(&key, delta, ttl_ms.map(Duration::from_millis))
                .map_err(to_wit)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_evicts_least_recently_used() {
        let ns = KvNamespace::new(20);
        ns.set("a".into(), vec![0; 9], None).unwrap();
        ns.set("b".into(), vec![0; 9], None).unwrap();
        assert!(ns.get("a").is_some()); // a is now most recent
        ns.set("c".into(), vec![0; 9], None).unwrap();
        assert!(ns.get("b").is_none(), "b was least recently used");
        assert!(ns.get("a").is_some());
        assert!(ns.used_bytes() <= 20);
        assert_eq!(
            ns.set("d".into(), vec![0; 20], None),
            Err(KvError::TooLarge)
        );
    }

    #[test]
    fn ttl_expires_and_incr_counts() {
        let ns = KvNamespace::new(1000);
        ns.set("t".into(), b"x".to_vec(), Some(Duration::from_millis(0)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(ns.get("t").is_none());
        assert_eq!(ns.incr("n", 2, None), Ok(2));
        assert_eq!(ns.incr("n", 3, None), Ok(5));
        ns.set("s".into(), b"abc".to_vec(), None).unwrap();
        assert_eq!(ns.incr("s", 1, None), Err(KvError::NotANumber));
    }
}
