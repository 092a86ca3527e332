//! The crypto the policies ask their host for. The edgegate host does it
//! natively (ring); Spin offers no crypto interface, so here it runs inside
//! the component on pure-Rust implementations (RustCrypto, ed25519-compact).

use edgegate_policy_core::{SignatureAlg, VerifyKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_verify<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8], sig: &[u8]) -> bool {
    match <M as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message);
            mac.verify_slice(sig).is_ok()
        }
        Err(_) => false,
    }
}

/// Checks `sig` over `message`; `Err` names why the key does not fit `alg`.
pub fn verify(
    alg: SignatureAlg,
    key: &VerifyKey,
    message: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    use SignatureAlg::*;
    Ok(match (alg, key) {
        (Hs256, VerifyKey::HmacSecret(s)) => hmac_verify::<Hmac<Sha256>>(s, message, sig),
        (Hs384, VerifyKey::HmacSecret(s)) => hmac_verify::<Hmac<Sha384>>(s, message, sig),
        (Hs512, VerifyKey::HmacSecret(s)) => hmac_verify::<Hmac<Sha512>>(s, message, sig),
        (Rs256 | Rs384 | Rs512, VerifyKey::Rsa(n, e)) => {
            use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
            let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                .map_err(|e| format!("RSA key refused: {e}"))?;
            // The same floor the host (ring) keeps.
            if n.iter().skip_while(|b| **b == 0).count() < 256 {
                return Err("RSA keys below 2048 bits are refused".into());
            }
            let (scheme, digest) = match alg {
                Rs256 => (
                    Pkcs1v15Sign::new::<Sha256>(),
                    Sha256::digest(message).to_vec(),
                ),
                Rs384 => (
                    Pkcs1v15Sign::new::<Sha384>(),
                    Sha384::digest(message).to_vec(),
                ),
                _ => (
                    Pkcs1v15Sign::new::<Sha512>(),
                    Sha512::digest(message).to_vec(),
                ),
            };
            key.verify(scheme, &digest, sig).is_ok()
        }
        (Es256, VerifyKey::Ec(x, y)) => {
            use p256::ecdsa::signature::Verifier;
            use p256::ecdsa::{Signature, VerifyingKey};
            let point = p256::EncodedPoint::from_affine_coordinates(
                fixed::<32>(x, "x")?.as_slice().into(),
                fixed::<32>(y, "y")?.as_slice().into(),
                false,
            );
            let Ok(key) = VerifyingKey::from_encoded_point(&point) else {
                return Err("EC point is not on P-256".into());
            };
            Signature::from_slice(sig).is_ok_and(|s| key.verify(message, &s).is_ok())
        }
        (Es384, VerifyKey::Ec(x, y)) => {
            use p384::ecdsa::signature::Verifier;
            use p384::ecdsa::{Signature, VerifyingKey};
            let point = p384::EncodedPoint::from_affine_coordinates(
                fixed::<48>(x, "x")?.as_slice().into(),
                fixed::<48>(y, "y")?.as_slice().into(),
                false,
            );
            let Ok(key) = VerifyingKey::from_encoded_point(&point) else {
                return Err("EC point is not on P-384".into());
            };
            Signature::from_slice(sig).is_ok_and(|s| key.verify(message, &s).is_ok())
        }
        (EdDsa, VerifyKey::Ed25519(pk)) => {
            let Ok(pk) = ed25519_compact::PublicKey::from_slice(pk) else {
                return Err("Ed25519 keys are 32 bytes".into());
            };
            ed25519_compact::Signature::from_slice(sig)
                .is_ok_and(|s| pk.verify(message, &s).is_ok())
        }
        (alg, _) => return Err(format!("key does not fit {alg:?}")),
    })
}

/// A coordinate as exactly `N` big-endian bytes (JWKs may drop leading zeros).
fn fixed<const N: usize>(bytes: &[u8], name: &str) -> Result<[u8; N], String> {
    let trimmed = &bytes[bytes
        .iter()
        .take_while(|b| **b == 0)
        .count()
        .min(bytes.len())..];
    if trimmed.len() > N {
        return Err(format!("EC coordinate `{name}` is longer than {N} bytes"));
    }
    let mut out = [0; N];
    out[N - trimmed.len()..].copy_from_slice(trimmed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_policy_core::testing::MemoryEnv;
    use edgegate_policy_core::Env;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    /// Every algorithm agrees with the host's crypto (ring, through `MemoryEnv`):
    /// a good signature verifies, a flipped bit or another message does not.
    #[test]
    fn agrees_with_ring_on_every_algorithm() {
        let rng = SystemRandom::new();
        let ring_env = MemoryEnv::default();
        let msg = b"header.payload";
        let mut cases: Vec<(SignatureAlg, VerifyKey, Vec<u8>)> = Vec::new();

        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        for (alg, h) in [
            (SignatureAlg::Hs256, ring::hmac::HMAC_SHA256),
            (SignatureAlg::Hs384, ring::hmac::HMAC_SHA384),
            (SignatureAlg::Hs512, ring::hmac::HMAC_SHA512),
        ] {
            let sig = ring::hmac::sign(&ring::hmac::Key::new(h, &secret), msg);
            cases.push((
                alg,
                VerifyKey::HmacSecret(secret.clone()),
                sig.as_ref().to_vec(),
            ));
        }

        let rsa = RsaKeyPair::from_pkcs8(include_bytes!("../../auth/logic/testdata/rsa2048.pk8"))
            .expect("rsa fixture");
        let public: signature::RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
        for (alg, enc) in [
            (SignatureAlg::Rs256, &signature::RSA_PKCS1_SHA256),
            (SignatureAlg::Rs384, &signature::RSA_PKCS1_SHA384),
            (SignatureAlg::Rs512, &signature::RSA_PKCS1_SHA512),
        ] {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(enc, &rng, msg, &mut sig).expect("rsa sign");
            cases.push((alg, VerifyKey::Rsa(public.n.clone(), public.e.clone()), sig));
        }

        for (alg, signing, len) in [
            (
                SignatureAlg::Es256,
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                32,
            ),
            (
                SignatureAlg::Es384,
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                48,
            ),
        ] {
            let pk8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("ec key");
            let ec = EcdsaKeyPair::from_pkcs8(signing, pk8.as_ref(), &rng).expect("ec key");
            let point = ec.public_key().as_ref();
            let key = VerifyKey::Ec(point[1..=len].to_vec(), point[len + 1..].to_vec());
            cases.push((
                alg,
                key,
                ec.sign(&rng, msg).expect("ec sign").as_ref().to_vec(),
            ));
        }

        let pk8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed key");
        let ed = Ed25519KeyPair::from_pkcs8(pk8.as_ref()).expect("ed key");
        cases.push((
            SignatureAlg::EdDsa,
            VerifyKey::Ed25519(ed.public_key().as_ref().to_vec()),
            ed.sign(msg).as_ref().to_vec(),
        ));

        for (alg, key, sig) in &cases {
            assert_eq!(verify(*alg, key, msg, sig), Ok(true), "{alg:?}");
            assert_eq!(ring_env.verify_signature(*alg, key, msg, sig), Ok(true));
            let mut flipped = sig.clone();
            flipped[0] ^= 1;
            assert_eq!(
                verify(*alg, key, msg, &flipped),
                Ok(false),
                "{alg:?} flipped"
            );
            assert_eq!(
                verify(*alg, key, b"other", sig),
                Ok(false),
                "{alg:?} message"
            );
            assert_eq!(verify(*alg, key, msg, &[]), Ok(false), "{alg:?} empty");
        }
        assert!(verify(
            SignatureAlg::Es256,
            &VerifyKey::Ed25519(vec![0; 32]),
            msg,
            &[]
        )
        .is_err());
        assert!(verify(
            SignatureAlg::Es256,
            &VerifyKey::Ec(vec![1; 32], vec![2; 32]),
            msg,
            &[]
        )
        .is_err());
        assert!(verify(
            SignatureAlg::Rs256,
            &VerifyKey::Rsa(vec![0xc1; 128], vec![1, 0, 1]),
            msg,
            &[]
        )
        .is_err());

        assert_eq!(sha256(b"abc"), ring_env.sha256(b"abc"));
        assert_eq!(
            hmac_sha256(b"k", b"abc"),
            ring_env.hmac_sha256(b"k", b"abc")
        );
    }
}
