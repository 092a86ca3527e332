//! Revocation lists: signed by a trust-store key, versioned, never rolled back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::SigningKey;
use crate::store::{TrustError, TrustStore};

/// The signed content of a revocation list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Monotonic version: a list older than the one held is refused.
    pub version: u64,
    /// Hex key ids whose signatures no longer count.
    #[serde(default)]
    pub revoked_keys: BTreeSet<String>,
    /// Content digests ([`crate::content_digest`], hex sha256 of the component
    /// without its signature sections) of components that must not run.
    #[serde(default)]
    pub revoked_digests: BTreeSet<String>,
}

/// The file: the list as JSON text, the signer's key id and an Ed25519 signature over the text.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SignedFile {
    key_id: String,
    signature: String,
    payload: String,
}

fn err(file: &Path, message: String) -> TrustError {
    TrustError::Store {
        file: file.to_path_buf(),
        message,
    }
}

impl RevocationList {
    /// Sign the list with `key` and render the file text.
    pub fn sign(&self, key: &SigningKey) -> Result<String, TrustError> {
        let payload = serde_json::to_string(self)
            .map_err(|e| TrustError::Key(format!("encoding the revocation list: {e}")))?;
        let signature = hex::encode(key.sign_message(payload.as_bytes()));
        let file = SignedFile {
            key_id: key.key_id(),
            signature,
            payload,
        };
        toml::to_string(&file)
            .map_err(|e| TrustError::Key(format!("writing the revocation list: {e}")))
    }

    /// Parse a signed list and check its signature against the trust store.
    pub fn verify(path: &Path, text: &str, trust: &TrustStore) -> Result<Self, TrustError> {
        let file: SignedFile = toml::from_str(text).map_err(|e| err(path, e.to_string()))?;
        let key = trust
            .keys
            .iter()
            .find(|k| k.id == file.key_id)
            .ok_or_else(|| {
                err(
                    path,
                    format!(
                        "signed by an unknown key ({}); it is not in the trust store",
                        file.key_id
                    ),
                )
            })?;
        let sig = hex::decode(&file.signature)
            .ok()
            .and_then(|s| ed25519_compact::Signature::from_slice(&s).ok())
            .ok_or_else(|| err(path, "key `signature`: not a hex Ed25519 signature".into()))?;
        key.public
            .pk
            .verify(file.payload.as_bytes(), &sig)
            .map_err(|_| {
                err(
                    path,
                    format!(
                        "signature does not verify (key {}): the list was changed after signing",
                        key.id
                    ),
                )
            })?;
        let mut list: Self = serde_json::from_str(&file.payload)
            .map_err(|e| err(path, format!("key `payload`: {e}")))?;
        // Digests are compared as lowercase hex, however the list spelled them.
        list.revoked_digests = list
            .revoked_digests
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        Ok(list)
    }

    /// Load, verify, and enforce monotonicity against the version held in `held_file`
    /// (updated when this list is newer).
    pub fn load(path: &Path, trust: &TrustStore, held_file: &Path) -> Result<Self, TrustError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        let list = Self::verify(path, &text, trust)?;
        let held: u64 = std::fs::read_to_string(held_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if list.version < held {
            return Err(err(
                path,
                format!(
                    "revocation list version {} is older than version {held} already held; refusing the rollback",
                    list.version
                ),
            ));
        }
        if list.version > held {
            std::fs::write(held_file, format!("{}\n", list.version))
                .map_err(|e| err(held_file, format!("cannot record the held version: {e}")))?;
        }
        Ok(list)
    }

    /// Where the highest accepted version of the list at `path` is remembered.
    pub fn held_file(path: &Path) -> PathBuf {
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".held-version");
        path.with_file_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_key, sign_component};
    use crate::verify::{verify_component, Refusal, VerifyOptions};
    use std::time::SystemTime;

    fn trust_of(keys: &[&SigningKey]) -> TrustStore {
        let mut text = String::from("version = 1\n");
        for k in keys {
            text += &format!(
                "[[keys]]\nid = \"{}\"\nkinds = [\"*\"]\npublic_key = \"\"\"\n{}\"\"\"\n",
                k.key_id(),
                k.public_pem()
            );
        }
        TrustStore::parse(Path::new("trust.toml"), &text).unwrap()
    }

    fn component() -> Vec<u8> {
        let mut c = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        c.extend_from_slice(&[0, 6, 1, b'x', 1, 2, 3, 4]);
        c
    }

    #[test]
    fn signed_list_verifies_and_tampering_or_strangers_are_refused() {
        let admin = generate_key();
        let trust = trust_of(&[&admin]);
        let list = RevocationList {
            version: 2,
            revoked_keys: ["aa".to_string()].into(),
            revoked_digests: BTreeSet::new(),
        };
        let text = list.sign(&admin).unwrap();
        assert_eq!(
            RevocationList::verify(Path::new("r.toml"), &text, &trust).unwrap(),
            list
        );

        let tampered = text.replace("\"version\":2", "\"version\":9");
        assert_ne!(tampered, text);
        let e = RevocationList::verify(Path::new("r.toml"), &tampered, &trust).unwrap_err();
        assert!(e.to_string().contains("signature does not verify"), "{e}");

        let stranger = generate_key();
        let e = RevocationList::verify(Path::new("r.toml"), &list.sign(&stranger).unwrap(), &trust)
            .unwrap_err();
        assert!(e.to_string().contains("signed by an unknown key"), "{e}");
    }

    #[test]
    fn older_list_than_the_one_held_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let admin = generate_key();
        let trust = trust_of(&[&admin]);
        let path = dir.path().join("revocations.toml");
        let held = RevocationList::held_file(&path);
        let write = |v: u64| {
            let l = RevocationList {
                version: v,
                ..Default::default()
            };
            std::fs::write(&path, l.sign(&admin).unwrap()).unwrap();
        };
        write(3);
        assert_eq!(
            RevocationList::load(&path, &trust, &held).unwrap().version,
            3
        );
        write(2);
        let e = RevocationList::load(&path, &trust, &held)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("revocation list version 2 is older than version 3 already held"),
            "{e}"
        );
        write(3);
        assert!(
            RevocationList::load(&path, &trust, &held).is_ok(),
            "same version reloads"
        );
        write(4);
        assert_eq!(
            RevocationList::load(&path, &trust, &held).unwrap().version,
            4
        );
    }

    #[test]
    fn key_rotation_revokes_the_old_key_and_keeps_the_new_one() {
        let old = generate_key();
        let new = generate_key();
        let trust = trust_of(&[&old, &new]);
        let by_old = sign_component(&component(), &old).unwrap();
        let by_new = sign_component(&component(), &new).unwrap();
        let list = RevocationList {
            version: 1,
            revoked_keys: [old.key_id()].into(),
            revoked_digests: BTreeSet::new(),
        };
        let opts = VerifyOptions {
            kind: "auth",
            required_signers: 1,
            sha256_pin: None,
            now: SystemTime::now(),
            revocations: Some(&list),
        };
        assert_eq!(
            verify_component(&by_old, &trust, &opts),
            Err(Refusal::RevokedKey(old.key_id()))
        );
        assert!(verify_component(&by_new, &trust, &opts).is_ok());

        let digest = crate::content_digest(&by_new).unwrap();
        let list = RevocationList {
            version: 2,
            revoked_keys: BTreeSet::new(),
            revoked_digests: [digest.clone()].into(),
        };
        let opts = VerifyOptions {
            revocations: Some(&list),
            ..opts
        };
        assert_eq!(
            verify_component(&by_new, &trust, &opts),
            Err(Refusal::RevokedDigest(digest))
        );
    }
}
