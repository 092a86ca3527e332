//! The auth policy's config table, parsed and checked in `from_config`.

use std::collections::BTreeMap;

use edgegate_policy_core::{base64url_decode, parse_config, PolicyError, VerifyKey};
use serde::Deserialize;

/// Paths whose requests are LLM calls (token quotas apply).
fn default_llm_paths() -> Vec<String> {
    ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
        .map(String::from)
        .to_vec()
}

/// Everything the auth policy is told.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys, looked up by their SHA-256 digest.
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// JSON Web Tokens in `Authorization: Bearer`.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// HTTP Basic users.
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    /// Client certificates (mTLS) verified by the gateway's TLS listener,
    /// matched by the identity the gateway puts in the context.
    #[serde(default)]
    pub client_certs: Vec<ClientCert>,
    /// Let requests without credentials through as principal `anonymous`.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Upstream header naming the principal (client-sent copies are removed).
    #[serde(default = "default_principal_header")]
    pub principal_header: String,
    /// Upstream header naming the tenant, when there is one.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Remove the credential (API key header or parameter, `Authorization`) before the upstream sees it.
    #[serde(default = "yes")]
    pub strip_credentials: bool,
    /// Roles required per route name (`"*"` for every route); any one listed role suffices.
    #[serde(default)]
    pub access: BTreeMap<String, Vec<String>>,
    /// Request rate limits per principal, per route name (`"*"` for every route).
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Token quota per principal for LLM calls.
    #[serde(default)]
    pub token_quota: Option<TokenQuota>,
    /// Request paths (without query) that are LLM calls.
    #[serde(default = "default_llm_paths")]
    pub llm_paths: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_principal_header() -> String {
    "x-edgegate-principal".into()
}

fn default_tenant_header() -> String {
    "x-edgegate-tenant".into()
}

/// One accepted client certificate identity. Exactly one of `spiffe`,
/// `dns` and `subject` is given; the certificate matches when that value of
/// it (its SPIFFE id, one of its DNS names, its subject DN) is equal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    /// SPIFFE id (`spiffe://example.org/ns/prod/sa/billing`).
    #[serde(default)]
    pub spiffe: Option<String>,
    /// A DNS subject alternative name.
    #[serde(default)]
    pub dns: Option<String>,
    /// The subject DN as the gateway writes it (`CN=billing,O=Example`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Principal id; default the matched value.
    #[serde(default)]
    pub principal: Option<String>,
    /// Tenant, when known.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Where API keys are read from and which keys exist.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Request header carrying the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Query parameter carrying the key (off when absent).
    #[serde(default)]
    pub query: Option<String>,
    /// Also accept `Authorization: Bearer <key>` (what OpenAI clients send).
    #[serde(default = "yes")]
    pub bearer: bool,
    /// The keys, by digest.
    pub keys: Vec<ApiKey>,
}

fn default_key_header() -> String {
    "x-api-key".into()
}

/// One API key: only its digest is stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Key id: the principal it authenticates as.
    pub id: String,
    /// Lower-case hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub sha256: String,
    /// Tenant for cost attribution.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Roles the key carries.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// How JWTs are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences: the token's `aud` must name one of them.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// Refuse tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// The verification keys, as a JWKS document (`{"keys": [...]}`).
    pub jwks: Jwks,
    /// Claim naming the principal.
    #[serde(default = "default_subject_claim")]
    pub principal_claim: String,
    /// Claim naming the tenant.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Claim with roles: an array of strings, or a space-separated string (`scope`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

fn default_leeway() -> u64 {
    30
}

fn default_subject_claim() -> String {
    "sub".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// A JWKS document.
#[derive(Debug, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One JSON Web Key (RFC 7517), public parts only.
#[derive(Debug, Deserialize)]
pub struct Jwk {
    /// Key type: RSA, EC, OKP or oct.
    pub kty: String,
    /// Key id matched against the token's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// Algorithm the key is for.
    #[serde(default)]
    pub alg: Option<String>,
    /// Curve (EC: P-256, P-384; OKP: Ed25519).
    #[serde(default)]
    pub crv: Option<String>,
    /// RSA modulus.
    #[serde(default)]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default)]
    pub e: Option<String>,
    /// EC x / OKP public key.
    #[serde(default)]
    pub x: Option<String>,
    /// EC y.
    #[serde(default)]
    pub y: Option<String>,
    /// Symmetric secret (oct).
    #[serde(default)]
    pub k: Option<String>,
}

/// HTTP Basic users.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// Realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// The users.
    pub users: Vec<BasicUser>,
}

fn default_realm() -> String {
    "edgegate".into()
}

/// One Basic user: only a digest of the password is stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// User name: the principal.
    pub user: String,
    /// Lower-case hex SHA-256 of the password.
    pub sha256: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A request rate limit.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// Window length, seconds.
    pub window_s: u32,
}

/// Tokens (prompt + completion) a principal may use per window on LLM paths.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuota {
    /// Tokens per window.
    pub tokens: u64,
    /// Window length, seconds.
    pub window_s: u32,
}

impl RateLimit {
    /// The window in milliseconds.
    pub fn window_ms(self) -> u64 {
        u64::from(self.window_s) * 1000
    }
}

impl TokenQuota {
    /// The window in milliseconds.
    pub fn window_ms(self) -> u64 {
        u64::from(self.window_s) * 1000
    }
}

/// A key from a JWKS, ready for the host's verifier.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    /// `kid`, when given.
    pub kid: Option<String>,
    /// The algorithm families this key may verify (`RS`, `ES256`, `ES384`, `EdDSA`, `HS`).
    pub family: &'static str,
    /// `alg` pinned on the key, when given.
    pub alg: Option<String>,
    /// The key material.
    pub key: VerifyKey,
}

impl AuthConfig {
    /// Parses and checks the config.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let mut c: AuthConfig = parse_config(json)?;
        c.check()?;
        Ok(c)
    }

    fn check(&mut self) -> Result<(), PolicyError> {
        if self.api_keys.is_none()
            && self.jwt.is_none()
            && self.basic.is_none()
            && self.client_certs.is_empty()
            && !self.allow_anonymous
        {
            return Err(PolicyError::config(
                "",
                "no credential method configured: set `api_keys`, `jwt`, `basic` or `client_certs` (or `allow_anonymous = true`)",
            ));
        }
        for (i, c) in self.client_certs.iter().enumerate() {
            let given = [&c.spiffe, &c.dns, &c.subject]
                .iter()
                .filter(|v| v.as_deref().is_some_and(|v| !v.is_empty()))
                .count();
            if given != 1 {
                return Err(PolicyError::config(
                    format!("client_certs[{i}]"),
                    "give exactly one of `spiffe`, `dns` or `subject` (non-empty)",
                ));
            }
        }
        header_name("principal_header", &mut self.principal_header)?;
        header_name("tenant_header", &mut self.tenant_header)?;
        if let Some(keys) = &mut self.api_keys {
            header_name("api_keys.header", &mut keys.header)?;
            for (i, k) in keys.keys.iter_mut().enumerate() {
                digest(&format!("api_keys.keys[{i}].sha256"), &mut k.sha256)?;
                if k.id.is_empty() {
                    return Err(PolicyError::config(
                        format!("api_keys.keys[{i}].id"),
                        "must not be empty",
                    ));
                }
            }
        }
        if let Some(basic) = &mut self.basic {
            for (i, u) in basic.users.iter_mut().enumerate() {
                digest(&format!("basic.users[{i}].sha256"), &mut u.sha256)?;
                if u.user.is_empty() || u.user.contains(':') {
                    return Err(PolicyError::config(
                        format!("basic.users[{i}].user"),
                        "must be non-empty and contain no `:`",
                    ));
                }
            }
        }
        if let Some(jwt) = &self.jwt {
            for (i, alg) in jwt.algorithms.iter().enumerate() {
                if edgegate_policy_core::SignatureAlg::from_jwt(alg).is_none() {
                    return Err(PolicyError::config(
                        format!("jwt.algorithms[{i}]"),
                        format!("unsupported algorithm `{alg}` (HS256/384/512, RS256/384/512, ES256/384, EdDSA)"),
                    ));
                }
            }
            if jwt.jwks.keys.is_empty() {
                return Err(PolicyError::config("jwt.jwks.keys", "no keys"));
            }
            jwt.keys()?;
        }
        for (route, limit) in &self.rate_limits {
            if limit.requests == 0 || limit.window_s == 0 {
                return Err(PolicyError::config(
                    format!("rate_limits.{route}"),
                    "`requests` and `window_s` must be positive",
                ));
            }
        }
        if let Some(q) = &self.token_quota {
            if q.tokens == 0 || q.window_s == 0 {
                return Err(PolicyError::config(
                    "token_quota",
                    "`tokens` and `window_s` must be positive",
                ));
            }
        }
        Ok(())
    }
}

impl JwtConfig {
    /// The JWKS keys converted for verification; refuses malformed keys naming them.
    pub fn keys(&self) -> Result<Vec<VerificationKey>, PolicyError> {
        self.jwks
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| jwk(i, k))
            .collect()
    }
}

fn jwk(i: usize, k: &Jwk) -> Result<VerificationKey, PolicyError> {
    let key = |field: &str| format!("jwt.jwks.keys[{i}].{field}");
    let part = |field: &str, v: &Option<String>| -> Result<Vec<u8>, PolicyError> {
        let text = v.as_deref().ok_or_else(|| {
            PolicyError::config(key(field), format!("missing for kty `{}`", k.kty))
        })?;
        base64url_decode(text)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| PolicyError::config(key(field), "not base64url"))
    };
    let (family, material) = match k.kty.as_str() {
        "RSA" => ("RS", VerifyKey::Rsa(part("n", &k.n)?, part("e", &k.e)?)),
        "EC" => {
            let (family, len) = match k.crv.as_deref() {
                Some("P-256") => ("ES256", 32),
                Some("P-384") => ("ES384", 48),
                _ => {
                    return Err(PolicyError::config(
                        key("crv"),
                        "EC keys need crv P-256 or P-384",
                    ))
                }
            };
            let (x, y) = (part("x", &k.x)?, part("y", &k.y)?);
            if x.len() != len || y.len() != len {
                return Err(PolicyError::config(
                    key("x"),
                    format!("coordinates must be {len} bytes"),
                ));
            }
            (family, VerifyKey::Ec(x, y))
        }
        "OKP" => {
            if k.crv.as_deref() != Some("Ed25519") {
                return Err(PolicyError::config(key("crv"), "OKP keys need crv Ed25519"));
            }
            let x = part("x", &k.x)?;
            if x.len() != 32 {
                return Err(PolicyError::config(key("x"), "Ed25519 keys are 32 bytes"));
            }
            ("EdDSA", VerifyKey::Ed25519(x))
        }
        "oct" => ("HS", VerifyKey::HmacSecret(part("k", &k.k)?)),
        other => {
            return Err(PolicyError::config(
                key("kty"),
                format!("unsupported key type `{other}` (RSA, EC, OKP, oct)"),
            ))
        }
    };
    Ok(VerificationKey {
        kid: k.kid.clone(),
        family,
        alg: k.alg.clone(),
        key: material,
    })
}

fn header_name(key: &str, name: &mut String) -> Result<(), PolicyError> {
    if !edgegate_policy_core::is_header_name(name) {
        return Err(PolicyError::config(key, "not a valid header name"));
    }
    *name = name.to_ascii_lowercase();
    Ok(())
}

fn digest(key: &str, hex: &mut String) -> Result<(), PolicyError> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PolicyError::config(
            key,
            "must be the 64-hex-digit SHA-256 of the secret, never the secret itself",
        ));
    }
    *hex = hex.to_ascii_lowercase();
    Ok(())
}
