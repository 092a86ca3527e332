//! Thin typed wrappers over the host imports.
//!
//! `message`, `log`, `context` and `metrics` are always granted; `clock`, `kv`, `health` and `crypto`
//! only when the policy's config lists them in `capabilities` (`kv` reports
//! [`KvError::Denied`](kv::KvError::Denied); the others trap when not granted).
//! None of these work in native unit tests: keep them out of the logic you test.

use crate::bindings::edgegate::policy as wit;

/// The headers of the message the current head call is about, read on
/// demand: the request's in `on_request`, the response's in `on_response`.
/// [`Request::headers`](crate::Request) and [`ResponseHead::headers`](crate::ResponseHead)
/// read through these.
pub mod message {
    use super::wit::message as imp;

    /// The first value of header `name` (case-insensitive).
    pub fn header(name: &str) -> Option<String> {
        imp::header(name)
    }

    /// Every value of header `name`, in order.
    pub fn header_values(name: &str) -> Vec<String> {
        imp::header_values(name)
    }

    /// Every header field, in order; names lower-case.
    pub fn entries() -> crate::Headers {
        imp::entries()
    }
}

/// Structured logging into the gateway's log, tagged with the policy name.
pub mod log {
    use super::wit::log as imp;
    pub use imp::Level;

    /// Writes one log line at `level`. Never log secrets or personal data.
    pub fn write(level: Level, message: &str) {
        imp::log(level, message);
    }

    /// Writes a trace line.
    pub fn trace(message: &str) {
        write(Level::Trace, message);
    }

    /// Writes a debug line.
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    /// Writes an info line.
    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    /// Writes a warning line.
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    /// Writes an error line.
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// The per-request bag of facts shared between phases and policies.
pub mod context {
    use super::wit::context as imp;

    /// A value set earlier in this request, by this policy or one before it.
    pub fn get(key: &str) -> Option<String> {
        imp::get(key)
    }

    /// Sets a value for the rest of this request (the host bounds count and size).
    pub fn set(key: &str, value: &str) {
        imp::set(key, value);
    }
}

/// Counters in the gateway's metrics (`edgegate_policy_events_total`). Always granted.
pub mod metrics {
    use super::wit::metrics as imp;

    /// Adds `delta` to this policy's counter `event{label}`. Names and labels:
    /// up to 64 of `[A-Za-z0-9_.:/-]`; the host drops others, and bounds the
    /// number of distinct series per policy.
    pub fn count(event: &str, label: &str, delta: u64) {
        imp::count(event, label, delta);
    }
}

/// Wall-clock and monotonic time. Capability `clock`.
pub mod clock {
    use super::wit::clock as imp;

    /// Milliseconds since the Unix epoch.
    pub fn now_millis() -> u64 {
        imp::now_millis()
    }

    /// Nanoseconds from an arbitrary fixed point; only differences mean anything.
    pub fn monotonic_nanos() -> u64 {
        imp::monotonic_nanos()
    }
}

/// The policy's own key/value namespace, with TTLs and a byte budget. Capability `kv`.
pub mod kv {
    use super::wit::kv as imp;
    pub use imp::KvError;
    use std::time::Duration;

    fn millis(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads a value; `None` when absent or expired.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        imp::get(key)
    }

    /// Stores a value, optionally expiring after `ttl`.
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        imp::set(key, value, millis(ttl))
    }

    /// Removes a value; true when it was there.
    pub fn delete(key: &str) -> Result<bool, KvError> {
        imp::delete(key)
    }

    /// Adds `delta` to a counter (absent counts as 0) and returns the new value;
    /// `ttl` applies only when this call creates the counter.
    pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        imp::incr(key, delta, millis(ttl))
    }
}

/// A read-only view of upstream health. Capability `health`.
pub mod health {
    use super::wit::health as imp;
    pub use imp::{CircuitState, EndpointHealth};

    /// Endpoints of upstream cluster `name`; empty when the cluster is unknown.
    pub fn upstream(name: &str) -> Vec<EndpointHealth> {
        imp::upstream(name)
    }

    /// Names of every upstream cluster the gateway knows.
    pub fn upstreams() -> Vec<String> {
        imp::upstreams()
    }
}

/// Hashes, HMACs and signature checks computed natively by the host. Capability `crypto`.
pub mod crypto {
    use super::wit::crypto as imp;
    pub use imp::{CryptoError, SignatureAlg, VerifyKey};

    /// SHA-256 digest of `data` (32 bytes).
    pub fn sha256(data: &[u8]) -> Vec<u8> {
        imp::sha256(data)
    }

    /// HMAC-SHA-256 of `data` under `key` (32 bytes).
    pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
        imp::hmac_sha256(key, data)
    }

    /// Checks `signature` over `message`; for a JWT the message is `header.payload`.
    pub fn verify_signature(
        alg: SignatureAlg,
        key: &VerifyKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, CryptoError> {
        imp::verify_signature(alg, key, message, signature)
    }
}

impl From<kv::KvError> for crate::Error {
    /// A key/value failure the policy does not handle itself.
    fn from(err: kv::KvError) -> Self {
        let what = match err {
            kv::KvError::Denied => "denied: the policy lacks the `kv` capability",
            kv::KvError::TooLarge => "entry larger than the namespace's budget",
            kv::KvError::NotANumber => "stored value is not an integer",
        };
        crate::Error::Internal(format!("kv: {what}"))
    }
}

impl From<crypto::CryptoError> for crate::Error {
    /// A crypto failure the policy does not handle itself.
    fn from(err: crypto::CryptoError) -> Self {
        match err {
            crypto::CryptoError::BadKey(why) => {
                crate::Error::Internal(format!("crypto: bad key: {why}"))
            }
        }
    }
}
