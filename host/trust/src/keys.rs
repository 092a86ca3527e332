//! Key generation and signing.

use wasmsign2::{KeyPair, Module, PublicKey, SecretKey};

use crate::store::TrustError;

/// A secret key ready to sign, with its public half and key id.
pub struct SigningKey {
    secret: SecretKey,
    public: PublicKey,
}

impl SigningKey {
    /// Read a secret key from its PEM text (as written by `edgegate keygen`).
    pub fn from_pem(pem: &str) -> Result<Self, TrustError> {
        let secret = SecretKey::from_pem(pem)
            .map_err(|e| TrustError::Key(format!("not an Ed25519 secret key in PEM: {e}")))?;
        let public = PublicKey {
            pk: secret.sk.public_key(),
            key_id: None,
        }
        .attach_default_key_id();
        Ok(Self { secret, public })
    }

    /// The secret key as PEM.
    pub fn secret_pem(&self) -> String {
        self.secret.to_pem()
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> String {
        self.public.to_pem()
    }

    /// A detached Ed25519 signature over `msg` (revocation lists).
    pub fn sign_message(&self, msg: &[u8]) -> Vec<u8> {
        self.secret.sk.sign(msg, None).to_vec()
    }

    /// Hex key id: the first 12 bytes of HMAC-SHA256("key_id", public key), as wasmsign2 derives it.
    pub fn key_id(&self) -> String {
        key_id_hex(&self.public)
    }
}

/// Hex of a public key's default key id.
pub fn key_id_hex(pk: &PublicKey) -> String {
    let with_id = pk.clone().attach_default_key_id();
    with_id.key_id().map(hex::encode).unwrap_or_default()
}

/// A new random Ed25519 key.
pub fn generate_key() -> SigningKey {
    let kp = KeyPair::generate();
    let public = kp.pk.attach_default_key_id();
    SigningKey {
        secret: kp.sk,
        public,
    }
}

/// Add `key`'s signature to a component and return the signed bytes. Existing
/// signatures are kept, so several keys can sign one component (k-of-n).
pub fn sign_component(bytes: &[u8], key: &SigningKey) -> Result<Vec<u8>, TrustError> {
    let module = Module::deserialize(&mut &bytes[..])
        .map_err(|e| TrustError::Component(format!("cannot parse the component: {e}")))?;
    let (signed, _) = key
        .secret
        .sign_multi(module, key.public.key_id(), false, false)
        .map_err(|e| TrustError::Component(format!("signing failed: {e}")))?;
    let mut out = Vec::with_capacity(bytes.len() + 256);
    signed
        .serialize(&mut out)
        .map_err(|e| TrustError::Component(format!("writing the signed component: {e}")))?;
    Ok(out)
}
