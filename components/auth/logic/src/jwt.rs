//! JWT checks: structure, `alg` allow-list, signature through the host, then claims.

use edgegate_policy_core::{base64url_decode, Env, SignatureAlg};
use serde_json::Value;

use crate::config::{JwtConfig, VerificationKey};

/// Longest token accepted; larger ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The principal claim (`sub` by default).
    pub principal: String,
    /// The tenant claim, when configured and present.
    pub tenant: Option<String>,
    /// Roles or scopes.
    pub roles: Vec<String>,
}

/// Why a token was refused. Only logged (at debug); clients see one uniform 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url JSON parts.
    Malformed,
    /// `alg` not allowed (including `none`).
    Algorithm,
    /// No key fits the token's `kid`/`alg`, or the signature does not verify.
    Signature,
    /// `exp` passed (or missing when required).
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// `iss` differs.
    Issuer,
    /// `aud` names none of the accepted audiences.
    Audience,
    /// No principal claim.
    NoPrincipal,
}

/// Checks `token` against `cfg` at `now_s` (Unix seconds).
pub fn verify(
    env: &dyn Env,
    cfg: &JwtConfig,
    keys: &[VerificationKey],
    token: &str,
    now_s: u64,
) -> Result<Claims, Invalid> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Invalid::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let header: Value = decode_json(h)?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Invalid::Malformed)?;
    if !cfg.algorithms.iter().any(|a| a == alg_name) {
        return Err(Invalid::Algorithm);
    }
    let alg = SignatureAlg::from_jwt(alg_name).ok_or(Invalid::Algorithm)?;
    let signature = base64url_decode(s).ok_or(Invalid::Malformed)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];
    let verified = keys.iter().filter(|k| fits(k, alg_name, kid)).any(|k| {
        matches!(
            env.verify_signature(alg, &k.key, message, &signature),
            Ok(true)
        )
    });
    if !verified {
        return Err(Invalid::Signature);
    }

    let claims: Value = decode_json(p)?;
    let leeway = cfg.leeway_s;
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if now_s >= exp.saturating_add(leeway) => return Err(Invalid::Expired),
        None if cfg.require_exp => return Err(Invalid::Expired),
        _ => {}
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if now_s.saturating_add(leeway) < nbf {
            return Err(Invalid::NotYetValid);
        }
    }
    if let Some(iss) = &cfg.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(iss) {
            return Err(Invalid::Issuer);
        }
    }
    if !cfg.audiences.is_empty() {
        let named = |a: &str| cfg.audiences.iter().any(|x| x == a);
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => named(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(named),
            _ => false,
        };
        if !ok {
            return Err(Invalid::Audience);
        }
    }
    let principal = claims
        .get(&cfg.principal_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Invalid::NoPrincipal)?
        .to_string();
    let tenant = cfg
        .tenant_claim
        .as_deref()
        .and_then(|c| claims.get(c))
        .and_then(Value::as_str)
        .map(String::from);
    let roles = match claims.get(&cfg.roles_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        principal,
        tenant,
        roles,
    })
}

/// Whether `key` may verify a token with this `alg` and `kid`.
fn fits(key: &VerificationKey, alg: &str, kid: Option<&str>) -> bool {
    if let (Some(want), Some(have)) = (kid, key.kid.as_deref()) {
        if want != have {
            return false;
        }
    }
    if let Some(pinned) = &key.alg {
        return pinned == alg;
    }
    match key.family {
        "RS" => alg.starts_with("RS"),
        "HS" => alg.starts_with("HS"),
        family => family == alg,
    }
}

fn decode_json(part: &str) -> Result<Value, Invalid> {
    let bytes = base64url_decode(part).ok_or(Invalid::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(Invalid::Malformed),
    }
}
