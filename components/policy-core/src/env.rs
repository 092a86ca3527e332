//! [`Env`]: the host services a policy's logic may use.

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Why a key/value call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The policy may not use the store (capability `kv` not granted).
    Denied,
    /// The entry is larger than the whole budget.
    TooLarge,
    /// The stored value is not an integer (`incr`).
    NotANumber,
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvError::Denied => "kv: denied: the policy lacks the `kv` capability",
            KvError::TooLarge => "kv: entry larger than the namespace's budget",
            KvError::NotANumber => "kv: stored value is not an integer",
        })
    }
}

impl From<KvError> for crate::PolicyError {
    fn from(e: KvError) -> Self {
        crate::PolicyError::Internal(e.to_string())
    }
}

/// Signature algorithms (the JWT `alg` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlg {
    /// HMAC-SHA-256.
    Hs256,
    /// HMAC-SHA-384.
    Hs384,
    /// HMAC-SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

impl SignatureAlg {
    /// The algorithm named by a JWT header's `alg`.
    pub fn from_jwt(alg: &str) -> Option<Self> {
        Some(match alg {
            "HS256" => SignatureAlg::Hs256,
            "HS384" => SignatureAlg::Hs384,
            "HS512" => SignatureAlg::Hs512,
            "RS256" => SignatureAlg::Rs256,
            "RS384" => SignatureAlg::Rs384,
            "RS512" => SignatureAlg::Rs512,
            "ES256" => SignatureAlg::Es256,
            "ES384" => SignatureAlg::Es384,
            "EdDSA" => SignatureAlg::EdDsa,
            _ => return None,
        })
    }
}

/// A signature verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyKey {
    /// Shared secret (HS*).
    HmacSecret(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa(Vec<u8>, Vec<u8>),
    /// EC point coordinates x and y, big-endian.
    Ec(Vec<u8>, Vec<u8>),
    /// Ed25519 public key (32 bytes).
    Ed25519(Vec<u8>),
}

/// Circuit breaker state of an endpoint: one type from the gateway's
/// clusters through the policies' health view to the health graph's reports
/// (serialized `closed`, `open`, `half_open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Traffic flows.
    #[default]
    Closed,
    /// Traffic is held back.
    Open,
    /// A probe is allowed.
    HalfOpen,
}

/// One upstream endpoint as the host's health view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// Whether the host would send traffic to it now.
    pub healthy: bool,
    /// Circuit breaker state.
    pub circuit: Circuit,
    /// Requests in flight.
    pub in_flight: u32,
    /// Moving-average latency, microseconds.
    pub ewma_latency_us: u64,
    /// Moving-average error ratio, parts per million.
    pub error_rate_ppm: u32,
}

/// The host services policy logic may call. The edgegate host grants them per
/// policy (capabilities); a call the host did not grant fails there, not here.
pub trait Env {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
    /// A random number (not for keys or secrets).
    fn random_u64(&self) -> u64;
    /// Writes a log line (never secrets or personal data).
    fn log(&self, level: Level, message: &str);

    /// A value from this request's context bag.
    fn ctx_get(&self, key: &str) -> Option<String>;
    /// Sets a value in this request's context bag.
    fn ctx_set(&self, key: &str, value: &str);

    /// Reads a stored value.
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores a value with an optional time to live.
    fn kv_set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError>;
    /// Adds to a counter and returns the new value; the TTL applies when it is created.
    fn kv_incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError>;
    /// Removes a value; true when it was there.
    fn kv_delete(&self, key: &str) -> Result<bool, KvError>;

    /// SHA-256 of `data`.
    fn sha256(&self, data: &[u8]) -> Vec<u8>;
    /// HMAC-SHA-256 of `data` under `key`.
    fn hmac_sha256(&self, key: &[u8], data: &[u8]) -> Vec<u8>;
    /// Checks a signature; `Err` names why the key does not fit the algorithm.
    fn verify_signature(
        &self,
        alg: SignatureAlg,
        key: &VerifyKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, String>;

    /// Endpoints of an upstream cluster with their health; empty when unknown.
    fn upstream_health(&self, name: &str) -> Vec<Endpoint>;

    /// Adds `delta` to the policy's counter `name{label}` in the host's metrics.
    fn count(&self, name: &str, label: &str, delta: u64);
}
