//! [`Env`] on Spin: the services the policies ask their host for, from what
//! Spin offers. What Spin lacks degrades explicitly (docs/spin.md):
//!
//! - key/value: Spin's store (`key_value_stores` in spin.toml) has no expiry
//!   and no atomic increment. Values carry their expiry time in front and
//!   expired ones read as absent (and are deleted); a counter is read, added
//!   to and written back, so concurrent requests on several instances may lose
//!   increments (rate limits and quotas become approximate under contention).
//! - health view: Spin has none; [`Env::upstream_health`] is empty, which the
//!   routing policy treats as "every cluster usable".
//! - metrics: Spin has no metrics interface; policy counters are written to
//!   the log at `debug`.
//! - crypto runs in the component ([`crate::crypto`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use edgegate_policy_core::{Endpoint, Env, KvError, Level, SignatureAlg, VerifyKey};

/// Bytes in front of every stored value: its expiry time, ms since the epoch, big-endian (0: none).
const EXPIRY_BYTES: usize = 8;

/// A key/value store as Spin offers it: no expiry, no atomic operations.
pub trait KvStore {
    /// The value of `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Stores `value` under `key`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key`.
    fn delete(&self, key: &str) -> Result<(), String>;
}

/// What lives for one request: the context bag, the store and the log level.
pub struct RequestEnv<'s> {
    ctx: RefCell<BTreeMap<String, String>>,
    store: Option<&'s dyn KvStore>,
    log_level: Level,
    now: fn() -> u64,
}

impl<'s> RequestEnv<'s> {
    /// An environment over `store` (`None`: no store granted), logging at `log_level` and above.
    pub fn new(store: Option<&'s dyn KvStore>, log_level: Level, now: fn() -> u64) -> Self {
        Self {
            ctx: RefCell::default(),
            store,
            log_level,
            now,
        }
    }

    /// The environment one policy sees: its key namespace, its name in logs and counters.
    pub fn for_policy<'a>(&'a self, policy: &'a str, namespace: &'a str) -> PolicyEnv<'a, 's> {
        PolicyEnv {
            req: self,
            policy,
            namespace,
        }
    }

    /// Writes a log line to stderr (Spin keeps a component's stderr as its log).
    pub fn log(&self, level: Level, source: &str, message: &str) {
        if rank(level) >= rank(self.log_level) {
            eprintln!("{} {source}: {message}", level_name(level));
        }
    }
}

fn rank(level: Level) -> u8 {
    match level {
        Level::Debug => 0,
        Level::Info => 1,
        Level::Warn => 2,
        Level::Error => 3,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// A log level by name (`debug`, `info`, `warn`, `error`).
pub fn parse_level(name: &str) -> Option<Level> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "debug" => Level::Debug,
        "info" => Level::Info,
        "warn" | "warning" => Level::Warn,
        "error" => Level::Error,
        _ => return None,
    })
}

/// One policy's view of a [`RequestEnv`].
pub struct PolicyEnv<'a, 's> {
    req: &'a RequestEnv<'s>,
    policy: &'a str,
    namespace: &'a str,
}

impl PolicyEnv<'_, '_> {
    fn store(&self) -> Result<&dyn KvStore, KvError> {
        self.req.store.ok_or(KvError::Denied)
    }

    fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.namespace)
    }

    fn failed(&self, op: &str, e: &str) -> KvError {
        self.req.log(
            Level::Error,
            self.policy,
            &format!("key-value {op} failed: {e}"),
        );
        KvError::Denied
    }

    /// The live value and its expiry; an expired one is deleted.
    fn live(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, KvError> {
        let store = self.store()?;
        let Some(mut stored) = store.get(key).map_err(|e| self.failed("get", &e))? else {
            return Ok(None);
        };
        if stored.len() < EXPIRY_BYTES {
            // Not written by us: treat as absent rather than misread it.
            return Ok(None);
        }
        let mut expiry = [0; EXPIRY_BYTES];
        expiry.copy_from_slice(&stored[..EXPIRY_BYTES]);
        let expiry = u64::from_be_bytes(expiry);
        if expiry != 0 && expiry <= (self.req.now)() {
            store.delete(key).map_err(|e| self.failed("delete", &e))?;
            return Ok(None);
        }
        stored.drain(..EXPIRY_BYTES);
        Ok(Some((stored, expiry)))
    }

    fn write(&self, key: &str, value: &[u8], expiry: u64) -> Result<(), KvError> {
        let mut stored = Vec::with_capacity(EXPIRY_BYTES + value.len());
        stored.extend_from_slice(&expiry.to_be_bytes());
        stored.extend_from_slice(value);
        self.store()?
            .set(key, &stored)
            .map_err(|e| self.failed("set", &e))
    }

    fn expiry(&self, ttl_ms: Option<u64>) -> u64 {
        ttl_ms.map_or(0, |t| (self.req.now)().saturating_add(t.max(1)))
    }
}

impl Env for PolicyEnv<'_, '_> {
    fn now_millis(&self) -> u64 {
        (self.req.now)()
    }

    fn random_u64(&self) -> u64 {
        fastrand::u64(..)
    }

    fn log(&self, level: Level, message: &str) {
        self.req.log(level, self.policy, message);
    }

    fn ctx_get(&self, key: &str) -> Option<String> {
        self.req.ctx.borrow().get(key).cloned()
    }

    fn ctx_set(&self, key: &str, value: &str) {
        self.req
            .ctx
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.live(&self.key(key))?.map(|(v, _)| v))
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.write(&self.key(key), value, self.expiry(ttl_ms))
    }

    fn kv_incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        let key = self.key(key);
        let (old, expiry) = match self.live(&key)? {
            Some((v, expiry)) => {
                let n = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(KvError::NotANumber)?;
                (n, expiry)
            }
            None => (0, self.expiry(ttl_ms)),
        };
        let new = old.saturating_add(delta);
        self.write(&key, new.to_string().as_bytes(), expiry)?;
        Ok(new)
    }

    fn kv_delete(&self, key: &str) -> Result<bool, KvError> {
        let key = self.key(key);
        let existed = self.live(&key)?.is_some();
        self.store()?
            .delete(&key)
            .map_err(|e| self.failed("delete", &e))?;
        Ok(existed)
    }

    fn sha256(&self, data: &[u8]) -> Vec<u8> {
        crate::crypto::sha256(data)
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        crate::crypto::hmac_sha256(key, data)
    }

    fn verify_signature(
        &self,
        alg: SignatureAlg,
        key: &VerifyKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        crate::crypto::verify(alg, key, message, signature)
    }

    fn upstream_health(&self, _name: &str) -> Vec<Endpoint> {
        Vec::new()
    }

    fn count(&self, name: &str, label: &str, delta: u64) {
        if self.req.log_level == Level::Debug {
            self.req.log(
                Level::Debug,
                self.policy,
                &format!("edgegate_policy_events_total{{policy=\"{}\",event=\"{name}\",label=\"{label}\"}} +{delta}", self.policy),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    /// An in-memory [`KvStore`].
    #[derive(Default)]
    pub(crate) struct MapStore(pub RefCell<BTreeMap<String, Vec<u8>>>);

    impl KvStore for MapStore {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
    }

    thread_local! {
        static NOW: Cell<u64> = const { Cell::new(1_000_000) };
    }

    fn now() -> u64 {
        NOW.with(Cell::get)
    }

    #[test]
    fn values_expire_counters_count_and_namespaces_separate() {
        let store = MapStore::default();
        let env = RequestEnv::new(Some(&store), Level::Warn, now);
        let auth = env.for_policy("auth", "auth");
        let cache = env.for_policy("caching", "caching");

        auth.kv_set("k", b"v", Some(1_000)).expect("set");
        assert_eq!(auth.kv_get("k"), Ok(Some(b"v".to_vec())));
        assert_eq!(cache.kv_get("k"), Ok(None), "namespaces are separate");
        assert!(store.0.borrow().contains_key("auth/k"));

        assert_eq!(auth.kv_incr("n", 2, Some(500)), Ok(2));
        assert_eq!(
            auth.kv_incr("n", 3, Some(10_000)),
            Ok(5),
            "the first TTL stays"
        );
        assert_eq!(auth.kv_incr("k", 1, None), Err(KvError::NotANumber));

        NOW.with(|n| n.set(n.get() + 600));
        assert_eq!(auth.kv_get("n"), Ok(None), "the counter expired");
        assert!(!store.0.borrow().contains_key("auth/n"), "and was deleted");
        assert_eq!(auth.kv_incr("n", 1, None), Ok(1));
        assert_eq!(auth.kv_get("k"), Ok(Some(b"v".to_vec())));
        NOW.with(|n| n.set(n.get() + 1_000));
        assert_eq!(auth.kv_get("k"), Ok(None));
        assert_eq!(auth.kv_get("n"), Ok(Some(b"1".to_vec())), "no TTL: stays");
        assert_eq!(auth.kv_delete("n"), Ok(true));
        assert_eq!(auth.kv_delete("n"), Ok(false));

        // A value someone else wrote (shorter than the expiry prefix) reads as absent.
        store
            .0
            .borrow_mut()
            .insert("auth/raw".into(), b"x".to_vec());
        assert_eq!(auth.kv_get("raw"), Ok(None));

        let denied = RequestEnv::new(None, Level::Warn, now);
        assert_eq!(
            denied.for_policy("a", "a").kv_get("k"),
            Err(KvError::Denied)
        );
    }

    #[test]
    fn the_context_bag_is_shared_by_the_policies_of_a_request() {
        let env = RequestEnv::new(None, Level::Warn, now);
        env.for_policy("auth", "auth").ctx_set("principal", "p");
        assert_eq!(
            env.for_policy("routing", "routing")
                .ctx_get("principal")
                .as_deref(),
            Some("p")
        );
        assert_eq!(parse_level(" Debug"), Some(Level::Debug));
        assert_eq!(parse_level("loud"), None);
    }
}
