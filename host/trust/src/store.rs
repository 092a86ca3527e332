//! The trust store (`trust.toml`): which keys may sign which policy kinds, and when.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use wasmsign2::PublicKey;

use crate::keys::key_id_hex;

/// Errors reading keys, trust stores and components.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A trust store file is invalid.
    #[error("{file}: {message}")]
    Store {
        /// The file.
        file: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A key file is invalid.
    #[error("{0}")]
    Key(String),
    /// The component cannot be parsed or written.
    #[error("{0}")]
    Component(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    public_key: String,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
}

/// One trusted key.
#[derive(Debug, Clone)]
pub struct TrustKey {
    /// Hex key id (derived from the public key).
    pub id: String,
    /// The public key.
    pub public: PublicKey,
    /// Policy kinds it may sign; `*` allows every kind.
    pub kinds: Vec<String>,
    /// Signatures by this key count from this time on.
    pub not_before: Option<SystemTime>,
    /// Signatures by this key count until this time.
    pub not_after: Option<SystemTime>,
}

impl TrustKey {
    /// Whether the key may sign policies of `kind`.
    pub fn allows(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == "*" || k == kind)
    }
}

/// Keys the gateway trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    /// The keys, in file order.
    pub keys: Vec<TrustKey>,
}

impl TrustStore {
    /// Load and check a trust store file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrustError::Store {
            file: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parse trust store text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TrustError> {
        let err = |message: String| TrustError::Store {
            file: path.to_path_buf(),
            message,
        };
        let file: StoreFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.version != 1 {
            return Err(err(format!(
                "key `version`: unsupported trust store version {}; this build reads version 1",
                file.version
            )));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, k) in file.keys.into_iter().enumerate() {
            let public = PublicKey::from_pem(&k.public_key).map_err(|e| {
                err(format!(
                    "key `keys[{i}].public_key`: not an Ed25519 public key in PEM: {e}"
                ))
            })?;
            let derived = key_id_hex(&public);
            if derived != k.id {
                return Err(err(format!(
                    "key `keys[{i}].id`: `{}` is not the id of this public key (it is `{derived}`)",
                    k.id
                )));
            }
            if k.kinds.is_empty() {
                return Err(err(format!(
                    "key `keys[{i}].kinds`: list the policy kinds this key may sign (or \"*\")"
                )));
            }
            let time = |field: &str, v: Option<String>| -> Result<Option<SystemTime>, TrustError> {
                v.map(|s| {
                    humantime::parse_rfc3339(&s).map_err(|e| {
                        err(format!(
                            "key `keys[{i}].{field}`: `{s}` is not an RFC 3339 UTC time: {e}"
                        ))
                    })
                })
                .transpose()
            };
            let not_before = time("not_before", k.not_before)?;
            let not_after = time("not_after", k.not_after)?;
            keys.push(TrustKey {
                id: k.id,
                public: public.attach_default_key_id(),
                kinds: k.kinds,
                not_before,
                not_after,
            });
        }
        Ok(Self { keys })
    }

    /// The trust store text holding exactly one key.
    pub fn render_single(id: &str, public_pem: &str, kinds: &[String]) -> String {
        let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
        format!(
            "# edgegate trust store: keys allowed to sign policy components.\nversion = 1\n\n[[keys]]\nid = \"{id}\"\nkinds = [{}]\n# not_before = \"2026-01-01T00:00:00Z\"\n# not_after = \"2027-01-01T00:00:00Z\"\npublic_key = \"\"\"\n{}\"\"\"\n",
            kinds.join(", "),
            public_pem.trim_end().to_string() + "\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_key;

    #[test]
    fn rendered_single_key_store_loads_and_mismatched_ids_are_refused() {
        let k = generate_key();
        let text = TrustStore::render_single(&k.key_id(), &k.public_pem(), &["auth".into()]);
        let store = TrustStore::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(store.keys.len(), 1);
        assert!(store.keys[0].allows("auth"));
        assert!(!store.keys[0].allows("routing"));

        let other = generate_key();
        let wrong = text.replace(&k.key_id(), &other.key_id());
        let e = TrustStore::parse(Path::new("t.toml"), &wrong)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml: key `keys[0].id`:"), "{e}");
        assert!(e.contains("is not the id of this public key"), "{e}");
    }
}
