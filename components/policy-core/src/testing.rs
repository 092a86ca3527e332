//! [`MemoryEnv`]: an in-process [`Env`] for native unit tests of policy logic,
//! with real crypto (ring, as the edgegate host uses) and a settable clock.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use ring::{digest, hmac, signature};

use crate::{Endpoint, Env, KvError, Level, SignatureAlg, VerifyKey};

/// Stored values with their expiry time (ms), by key.
type Entries = BTreeMap<String, (Vec<u8>, Option<u64>)>;

/// An in-memory environment: key/value map with TTLs, context bag, clock,
/// health view, counters and captured logs.
#[derive(Default)]
pub struct MemoryEnv {
    /// Current time in ms; tests move it.
    pub now: Cell<u64>,
    /// Stored values with their expiry time.
    pub kv: RefCell<Entries>,
    /// The context bag.
    pub ctx: RefCell<BTreeMap<String, String>>,
    /// Health view by cluster.
    pub health: RefCell<BTreeMap<String, Vec<Endpoint>>>,
    /// Counters by (name, label).
    pub counters: RefCell<BTreeMap<(String, String), u64>>,
    /// Log lines.
    pub logs: RefCell<Vec<String>>,
    /// Next value `random_u64` returns; advanced on each call.
    pub random: Cell<u64>,
    /// When true every kv call fails with `Denied`.
    pub deny_kv: Cell<bool>,
}

impl MemoryEnv {
    /// An environment at time `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        let env = Self::default();
        env.now.set(now_ms);
        env
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }

    /// A counter's value.
    pub fn counter(&self, name: &str, label: &str) -> u64 {
        self.counters
            .borrow()
            .get(&(name.to_string(), label.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn live(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.now.get();
        let mut kv = self.kv.borrow_mut();
        match kv.get(key) {
            Some((_, Some(exp))) if *exp <= now => {
                kv.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    fn check(&self) -> Result<(), KvError> {
        if self.deny_kv.get() {
            Err(KvError::Denied)
        } else {
            Ok(())
        }
    }
}

impl Env for MemoryEnv {
    fn now_millis(&self) -> u64 {
        self.now.get()
    }

    fn random_u64(&self) -> u64 {
        let r = self.random.get();
        self.random.set(r.wrapping_add(0x9e37_79b9_7f4a_7c15));
        r
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push(format!("{level:?}: {message}"));
    }

    fn ctx_get(&self, key: &str) -> Option<String> {
        self.ctx.borrow().get(key).cloned()
    }

    fn ctx_set(&self, key: &str, value: &str) {
        self.ctx
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check()?;
        Ok(self.live(key))
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.check()?;
        let exp = ttl_ms.map(|t| self.now.get() + t);
        self.kv
            .borrow_mut()
            .insert(key.to_string(), (value.to_vec(), exp));
        Ok(())
    }

    fn kv_incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        self.check()?;
        let (old, exp) = match self.live(key) {
            Some(v) => {
                let n = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(KvError::NotANumber)?;
                let exp = self.kv.borrow().get(key).and_then(|(_, e)| *e);
                (n, exp)
            }
            None => (0, ttl_ms.map(|t| self.now.get() + t)),
        };
        let new = old.saturating_add(delta);
        self.kv
            .borrow_mut()
            .insert(key.to_string(), (new.to_string().into_bytes(), exp));
        Ok(new)
    }

    fn kv_delete(&self, key: &str) -> Result<bool, KvError> {
        self.check()?;
        Ok(self.kv.borrow_mut().remove(key).is_some())
    }

    fn sha256(&self, data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    }

    fn verify_signature(
        &self,
        alg: SignatureAlg,
        key: &VerifyKey,
        message: &[u8],
        sig: &[u8],
    ) -> Result<bool, String> {
        use SignatureAlg::*;
        Ok(match (alg, key) {
            (Hs256 | Hs384 | Hs512, VerifyKey::HmacSecret(secret)) => {
                let a = match alg {
                    Hs256 => hmac::HMAC_SHA256,
                    Hs384 => hmac::HMAC_SHA384,
                    _ => hmac::HMAC_SHA512,
                };
                hmac::verify(&hmac::Key::new(a, secret), message, sig).is_ok()
            }
            (Rs256 | Rs384 | Rs512, VerifyKey::Rsa(n, e)) => {
                let params = match alg {
                    Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (Es256 | Es384, VerifyKey::Ec(x, y)) => {
                let params = match alg {
                    Es256 => &signature::ECDSA_P256_SHA256_FIXED,
                    _ => &signature::ECDSA_P384_SHA384_FIXED,
                };
                let mut point = vec![4];
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                signature::UnparsedPublicKey::new(params, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (EdDsa, VerifyKey::Ed25519(pk)) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, pk)
                    .verify(message, sig)
                    .is_ok()
            }
            (alg, _) => return Err(format!("key does not fit {alg:?}")),
        })
    }

    fn upstream_health(&self, name: &str) -> Vec<Endpoint> {
        self.health.borrow().get(name).cloned().unwrap_or_default()
    }

    fn count(&self, name: &str, label: &str, delta: u64) {
        *self
            .counters
            .borrow_mut()
            .entry((name.to_string(), label.to_string()))
            .or_default() += delta;
    }
}
