//! `crypto`: native sha256, HMAC and signature checks (ring), so guests skip slow wasm crypto.

use ring::{digest, hmac, signature};

use crate::bindings::crypto::{CryptoError, Host, SignatureAlg, VerifyKey};
use crate::host::{Capability, HostState};

/// Most bytes one crypto call takes, keys and signatures included (guards host
/// CPU time; the epoch deadline does not interrupt host code).
pub const MAX_CRYPTO_INPUT: usize = 16 << 20;

/// Verify `sig` over `msg`; `Ok(false)` on a mismatch, `Err` when the key does not fit `alg`.
pub fn verify_signature(
    alg: SignatureAlg,
    key: &VerifyKey,
    msg: &[u8],
    sig: &[u8],
) -> Result<bool, CryptoError> {
    let bad_key = |what: &str| CryptoError::BadKey(format!("{what} key required for {alg:?}"));
    match alg {
        SignatureAlg::Hs256 | SignatureAlg::Hs384 | SignatureAlg::Hs512 => {
            let VerifyKey::HmacSecret(secret) = key else {
                return Err(bad_key("an hmac-secret"));
            };
            let a = match alg {
                SignatureAlg::Hs256 => hmac::HMAC_SHA256,
                SignatureAlg::Hs384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            Ok(hmac::verify(&hmac::Key::new(a, secret), msg, sig).is_ok())
        }
        SignatureAlg::Rs256 | SignatureAlg::Rs384 | SignatureAlg::Rs512 => {
            let VerifyKey::Rsa((n, e)) = key else {
                return Err(bad_key("an rsa"));
            };
            let params = match alg {
                SignatureAlg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                SignatureAlg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            let components = signature::RsaPublicKeyComponents { n, e };
            Ok(components.verify(params, msg, sig).is_ok())
        }
        SignatureAlg::Es256 | SignatureAlg::Es384 => {
            let VerifyKey::Ec((x, y)) = key else {
                return Err(bad_key("an ec"));
            };
            let (params, len) = match alg {
                SignatureAlg::Es256 => (&signature::ECDSA_P256_SHA256_FIXED, 32),
                _ => (&signature::ECDSA_P384_SHA384_FIXED, 48),
            };
            if x.len() != len || y.len() != len {
                return Err(CryptoError::BadKey(format!(
                    "{alg:?} needs {len}-byte x and y coordinates"
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            Ok(signature::UnparsedPublicKey::new(params, point)
                .verify(msg, sig)
                .is_ok())
        }
        SignatureAlg::Eddsa => {
            let VerifyKey::Ed25519(pk) = key else {
                return Err(bad_key("an ed25519"));
            };
            if pk.len() != 32 {
                return Err(CryptoError::BadKey("ed25519 keys are 32 bytes".into()));
            }
            Ok(signature::UnparsedPublicKey::new(&signature::ED25519, pk)
                .verify(msg, sig)
                .is_ok())
        }
    }
}

/// Bytes of a verification key as the guest passed it.
fn key_len(key: &VerifyKey) -> usize {
    match key {
        VerifyKey::HmacSecret(k) | VerifyKey::Ed25519(k) => k.len(),
        VerifyKey::Rsa((a, b)) | VerifyKey::Ec((a, b)) => a.len().saturating_add(b.len()),
    }
}

fn check_len(len: usize) -> wasmtime::Result<()> {
    if len > MAX_CRYPTO_INPUT {
        wasmtime::bail!("crypto input of {len} bytes exceeds the {MAX_CRYPTO_INPUT}-byte limit");
    }
    Ok(())
}

impl Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.require(Capability::Crypto)?;
        check_len(data.len())?;
        Ok(digest::digest(&digest::SHA256, &data).as_ref().to_vec())
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.require(Capability::Crypto)?;
        check_len(key.len().saturating_add(data.len()))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        Ok(hmac::sign(&key, &data).as_ref().to_vec())
    }

    fn verify_signature(
        &mut self,
        alg: SignatureAlg,
        key: VerifyKey,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, CryptoError>> {
        self.require(Capability::Crypto)?;
        check_len(
            key_len(&key)
                .saturating_add(message.len())
                .saturating_add(signature.len()),
        )?;
        Ok(verify_signature(alg, &key, &message, &signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    #[test]
    fn hmac_and_ed25519_verify_and_reject() {
        let key = VerifyKey::HmacSecret(b"secret".to_vec());
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"secret"), b"msg");
        assert_eq!(
            verify_signature(SignatureAlg::Hs256, &key, b"msg", tag.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify_signature(SignatureAlg::Hs256, &key, b"msh", tag.as_ref()),
            Ok(false)
        );

        let rng = SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let sig = pair.sign(b"header.payload");
        let pk = VerifyKey::Ed25519(pair.public_key().as_ref().to_vec());
        assert_eq!(
            verify_signature(SignatureAlg::Eddsa, &pk, b"header.payload", sig.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify_signature(SignatureAlg::Eddsa, &pk, b"header.payloaD", sig.as_ref()),
            Ok(false)
        );
        assert!(matches!(
            verify_signature(SignatureAlg::Rs256, &pk, b"x", sig.as_ref()),
            Err(CryptoError::BadKey(_))
        ));
    }

    #[test]
    fn es256_verifies_fixed_signatures() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let sig = pair.sign(&rng, b"m").unwrap();
        let point = pair.public_key().as_ref();
        let key = VerifyKey::Ec((point[1..33].to_vec(), point[33..65].to_vec()));
        assert_eq!(
            verify_signature(SignatureAlg::Es256, &key, b"m", sig.as_ref()),
            Ok(true)
        );
        assert_eq!(
            verify_signature(SignatureAlg::Es256, &key, b"n", sig.as_ref()),
            Ok(false)
        );
    }
}
