//! `verify_component`: the gateway runs nothing it cannot verify.

use std::time::SystemTime;

use wasmsign2::{CustomSection, SignatureData, SignatureForHashes};

use crate::digest::{content_digest, sections, SectionError};
use crate::revocation::RevocationList;
use crate::store::TrustStore;

/// The 8-byte header of a component (layer 1); the signature does not cover it.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Why a component is refused. The message names the exact reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a WebAssembly component.
    #[error("not a WebAssembly component")]
    NotAComponent,
    /// No signature section.
    #[error("unsigned: the component carries no signature")]
    Unsigned,
    /// The signature section cannot be read.
    #[error("malformed signature section")]
    Malformed,
    /// The sections of the binary cannot be read, so it has no content digest.
    #[error("malformed component: {0}")]
    MalformedSections(SectionError),
    /// A trusted key signed it, but the bytes changed since.
    #[error("signature does not verify: the component changed after it was signed (key {0})")]
    BadSignature(String),
    /// Signed, but by no key in the trust store.
    #[error("signed by an unknown key ({0}); it is not in the trust store")]
    UnknownKey(String),
    /// The key is in the trust store but may not sign this kind of policy.
    #[error("key {key} may not sign `{kind}` policies")]
    KindNotAllowed {
        /// Key id.
        key: String,
        /// Policy kind.
        kind: String,
    },
    /// The key's validity window has ended.
    #[error("key {0} has expired (not_after has passed)")]
    Expired(String),
    /// The key's validity window has not begun.
    #[error("key {0} is not valid yet (not_before is in the future)")]
    NotYetValid(String),
    /// The component's content digest is on the revocation list.
    #[error("digest {0} is revoked")]
    RevokedDigest(String),
    /// The only valid signer keys are revoked.
    #[error("key {0} is revoked")]
    RevokedKey(String),
    /// Fewer distinct trusted signers than required.
    #[error("needs signatures from {required} distinct trusted keys, has {found}")]
    NotEnoughSigners {
        /// Required count.
        required: usize,
        /// Valid signers found.
        found: usize,
    },
    /// The sha256 pin in the config does not match the content digest.
    #[error("digest mismatch: sha256 is {actual}, the config pins {expected}")]
    DigestMismatch {
        /// Pinned digest.
        expected: String,
        /// The component's content digest.
        actual: String,
    },
}

/// What must hold for a component to be accepted.
#[derive(Debug, Clone)]
pub struct VerifyOptions<'a> {
    /// The policy kind it will run as (`auth`, `routing`, ...).
    pub kind: &'a str,
    /// Distinct trusted signers required (k of n); at least 1.
    pub required_signers: usize,
    /// Optional sha256 pin (hex) of the signed content ([`content_digest`]).
    pub sha256_pin: Option<&'a str>,
    /// The time to check key validity at.
    pub now: SystemTime,
    /// Revoked keys and digests, when a list is loaded.
    pub revocations: Option<&'a RevocationList>,
}

/// An accepted component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Ids of the trusted keys whose signatures verified, sorted.
    pub key_ids: Vec<String>,
    /// Its content digest ([`content_digest`]): what revocations, pins and the
    /// fleet name it by.
    pub digest: String,
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Check a component against the trust store; `Err` names the exact reason.
///
/// The signature section is parsed with wasmsign2's types; hashing uses ring's
/// SHA-256 (hardware-accelerated) and each signature one Ed25519 check, so this
/// runs at memory speed: two SHA-256 passes (the signed part, and the content
/// digest that revocations and pins name). Only whole-component signatures are
/// supported (no partial signatures with delimiters): anything else fails closed.
pub fn verify_component(
    bytes: &[u8],
    trust: &TrustStore,
    opts: &VerifyOptions<'_>,
) -> Result<Verified, Refusal> {
    if bytes.len() < 8 || bytes[..8] != COMPONENT_HEADER {
        return Err(Refusal::NotAComponent);
    }
    // Revocations and pins name the content, not the file: a re-encoded
    // signature section (which no signature covers) must not get past them.
    let digest = content_digest(bytes).map_err(Refusal::MalformedSections)?;
    check_digest(&digest, bytes, opts)?;
    let (data, signed_part) = signature_section(bytes)?;
    let hash = ring::digest::digest(&ring::digest::SHA256, signed_part);
    let groups = covering_groups(&data, hash.as_ref());
    let signer_ids: Vec<String> = data
        .signed_hashes_set
        .iter()
        .flat_map(|g| g.signatures.iter())
        .filter_map(|s| s.key_id.as_ref().map(hex::encode))
        .collect();

    let mut accepted = Vec::new();
    let mut first_refusal = None;
    let mut any_valid = false;
    for key in &trust.keys {
        if !signed_by(&groups, key) {
            continue;
        }
        any_valid = true;
        let revoked = opts
            .revocations
            .is_some_and(|l| l.revoked_keys.contains(&key.id));
        let refusal = if revoked {
            Some(Refusal::RevokedKey(key.id.clone()))
        } else if !key.allows(opts.kind) {
            Some(Refusal::KindNotAllowed {
                key: key.id.clone(),
                kind: opts.kind.to_string(),
            })
        } else if key.not_after.is_some_and(|t| opts.now > t) {
            Some(Refusal::Expired(key.id.clone()))
        } else if key.not_before.is_some_and(|t| opts.now < t) {
            Some(Refusal::NotYetValid(key.id.clone()))
        } else {
            None
        };
        match refusal {
            None => {
                if !accepted.contains(&key.id) {
                    accepted.push(key.id.clone());
                }
            }
            Some(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    if !any_valid {
        // Tell a tampered component signed by a trusted key from one signed by a stranger.
        let trusted = trust.keys.iter().find(|k| signer_ids.contains(&k.id));
        return Err(match trusted {
            Some(k) => Refusal::BadSignature(k.id.clone()),
            None if signer_ids.is_empty() => Refusal::UnknownKey("no key id".into()),
            None => Refusal::UnknownKey(signer_ids.join(", ")),
        });
    }
    let required = opts.required_signers.max(1);
    if accepted.len() < required {
        return Err(match (accepted.is_empty(), first_refusal) {
            (true, Some(r)) => r,
            _ => Refusal::NotEnoughSigners {
                required,
                found: accepted.len(),
            },
        });
    }
    accepted.sort();
    Ok(Verified {
        key_ids: accepted,
        digest,
    })
}

/// Check a component that runs without a signature (`trust.allow_unsigned`):
/// its content digest must match the pin, as a signed component's must.
pub fn verify_unsigned(bytes: &[u8], sha256_pin: Option<&str>) -> Result<Verified, Refusal> {
    let digest = content_digest(bytes).map_err(Refusal::MalformedSections)?;
    if let Some(pin) = sha256_pin {
        check_pin(&digest, pin)?;
    }
    Ok(Verified {
        key_ids: Vec::new(),
        digest,
    })
}

/// Refuses a content digest that differs from the pin.
fn check_pin(digest: &str, pin: &str) -> Result<(), Refusal> {
    if pin.eq_ignore_ascii_case(digest) {
        return Ok(());
    }
    Err(Refusal::DigestMismatch {
        expected: pin.to_ascii_lowercase(),
        actual: digest.to_string(),
    })
}

/// Refuses a content digest that differs from the pin or is revoked.
///
/// A list may still name the sha256 of a whole file (lists written before
/// digests named the content did): that exact file stays refused rather than
/// coming back to life. Only the content digest catches its re-encodings.
fn check_digest(digest: &str, bytes: &[u8], opts: &VerifyOptions<'_>) -> Result<(), Refusal> {
    if let Some(pin) = opts.sha256_pin {
        check_pin(digest, pin)?;
    }
    let Some(revoked) = opts.revocations.map(|l| &l.revoked_digests) else {
        return Ok(());
    };
    if revoked.contains(digest) {
        return Err(Refusal::RevokedDigest(digest.to_string()));
    }
    if !revoked.is_empty() {
        let file = sha256_hex(bytes);
        if revoked.contains(&file) {
            return Err(Refusal::RevokedDigest(file));
        }
    }
    Ok(())
}

/// The signature data of the first section, and the bytes it covers (everything after it).
fn signature_section(bytes: &[u8]) -> Result<(SignatureData, &[u8]), Refusal> {
    let first = sections(bytes)
        .map_err(Refusal::MalformedSections)?
        .next()
        .transpose()
        .map_err(Refusal::MalformedSections)?;
    let Some(section) = first.filter(|s| s.is_signature()) else {
        return Err(Refusal::Unsigned);
    };
    let data = CustomSection::new("signature".to_string(), section.payload.to_vec())
        .signature_data()
        .map_err(|_| Refusal::Malformed)?;
    if data.hash_function != 1 {
        return Err(Refusal::Malformed);
    }
    Ok((data, &bytes[section.range.end..]))
}

/// A group of signed hashes that covers this component, with the message its signatures sign.
struct CoveringGroup<'a> {
    message: Vec<u8>,
    signatures: &'a [SignatureForHashes],
}

/// The groups whose hashes include `hash`, each with its signed message built once.
fn covering_groups<'a>(data: &'a SignatureData, hash: &[u8]) -> Vec<CoveringGroup<'a>> {
    data.signed_hashes_set
        .iter()
        .filter(|group| group.hashes.iter().any(|h| h.as_slice() == hash))
        .map(|group| {
            let mut message = Vec::with_capacity(10 + 32 * group.hashes.len());
            message.extend_from_slice(b"wasmsig");
            message.extend_from_slice(&[1, 1, 1]);
            for h in &group.hashes {
                message.extend_from_slice(h);
            }
            CoveringGroup {
                message,
                signatures: &group.signatures,
            }
        })
        .collect()
}

/// Whether `key` validly signed one of the covering groups.
fn signed_by(groups: &[CoveringGroup<'_>], key: &crate::store::TrustKey) -> bool {
    let key_id = key.public.key_id();
    groups.iter().any(|group| {
        group.signatures.iter().any(|sig| {
            if let (Some(a), Some(b)) = (&sig.key_id, key_id) {
                if a != b {
                    return false;
                }
            }
            ed25519_compact::Signature::from_slice(&sig.signature)
                .is_ok_and(|s| key.public.pk.verify(&group.message, &s).is_ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::keys::{generate_key, sign_component, SigningKey};
    use crate::store::TrustStore;

    /// A small component: the component header and two custom sections.
    fn component(size: usize) -> Vec<u8> {
        let mut out = COMPONENT_HEADER.to_vec();
        for (name, len) in [("edgegate-test", size), ("more", 64)] {
            let mut payload = vec![name.len() as u8];
            payload.extend_from_slice(name.as_bytes());
            payload.extend((0..len).map(|i| (i * 31 % 251) as u8));
            out.push(0);
            let mut n = payload.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.extend_from_slice(&payload);
        }
        out
    }

    fn store(keys: &[(&SigningKey, &str, Option<&str>, Option<&str>)]) -> TrustStore {
        let mut text = String::from("version = 1\n");
        for (k, kinds, nb, na) in keys {
            text += &format!(
                "[[keys]]\nid = \"{}\"\nkinds = [{kinds}]\npublic_key = \"\"\"\n{}\"\"\"\n",
                k.key_id(),
                k.public_pem()
            );
            if let Some(t) = nb {
                text += &format!("not_before = \"{t}\"\n");
            }
            if let Some(t) = na {
                text += &format!("not_after = \"{t}\"\n");
            }
        }
        TrustStore::parse(Path::new("trust.toml"), &text).unwrap()
    }

    fn opts(kind: &str) -> VerifyOptions<'_> {
        VerifyOptions {
            kind,
            required_signers: 1,
            sha256_pin: None,
            now: SystemTime::now(),
            revocations: None,
        }
    }

    #[test]
    fn signed_component_verifies_and_each_refusal_is_named() {
        let a = generate_key();
        let b = generate_key();
        let trust = store(&[(&a, "\"auth\"", None, None)]);
        let plain = component(2000);
        let signed = sign_component(&plain, &a).unwrap();

        let ok = verify_component(&signed, &trust, &opts("auth")).unwrap();
        assert_eq!(ok.key_ids, vec![a.key_id()]);

        assert_eq!(
            verify_component(&plain, &trust, &opts("auth")),
            Err(Refusal::Unsigned)
        );
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            verify_component(&tampered, &trust, &opts("auth")),
            Err(Refusal::BadSignature(a.key_id()))
        );
        let by_b = sign_component(&plain, &b).unwrap();
        assert_eq!(
            verify_component(&by_b, &trust, &opts("auth")),
            Err(Refusal::UnknownKey(b.key_id()))
        );
        assert_eq!(
            verify_component(&signed, &trust, &opts("routing")),
            Err(Refusal::KindNotAllowed {
                key: a.key_id(),
                kind: "routing".into()
            })
        );
        let mut core_module = signed.clone();
        core_module[4..8].copy_from_slice(&[1, 0, 0, 0]);
        assert_eq!(
            verify_component(&core_module, &trust, &opts("auth")),
            Err(Refusal::NotAComponent)
        );
        let pin = "00".repeat(32);
        let pinned = VerifyOptions {
            sha256_pin: Some(&pin),
            ..opts("auth")
        };
        assert!(matches!(
            verify_component(&signed, &trust, &pinned),
            Err(Refusal::DigestMismatch { .. })
        ));
        let good_pin = content_digest(&signed).unwrap();
        let pinned = VerifyOptions {
            sha256_pin: Some(&good_pin),
            ..opts("auth")
        };
        assert!(verify_component(&signed, &trust, &pinned).is_ok());
    }

    #[test]
    fn key_validity_window_is_enforced() {
        let a = generate_key();
        let signed = sign_component(&component(100), &a).unwrap();
        let expired = store(&[(&a, "\"*\"", None, Some("2020-01-01T00:00:00Z"))]);
        assert_eq!(
            verify_component(&signed, &expired, &opts("auth")),
            Err(Refusal::Expired(a.key_id()))
        );
        let future = store(&[(&a, "\"*\"", Some("2999-01-01T00:00:00Z"), None)]);
        assert_eq!(
            verify_component(&signed, &future, &opts("auth")),
            Err(Refusal::NotYetValid(a.key_id()))
        );
        let window = store(&[(
            &a,
            "\"*\"",
            Some("2020-01-01T00:00:00Z"),
            Some("2999-01-01T00:00:00Z"),
        )]);
        assert!(verify_component(&signed, &window, &opts("auth")).is_ok());
        let later = VerifyOptions {
            now: SystemTime::now() + Duration::from_secs(1_000 * 365 * 86_400),
            ..opts("auth")
        };
        assert_eq!(
            verify_component(&signed, &window, &later),
            Err(Refusal::Expired(a.key_id()))
        );
    }

    #[test]
    fn k_of_n_needs_distinct_trusted_signers() {
        let a = generate_key();
        let b = generate_key();
        let trust = store(&[(&a, "\"auth\"", None, None), (&b, "\"auth\"", None, None)]);
        let two = VerifyOptions {
            required_signers: 2,
            ..opts("auth")
        };
        let once = sign_component(&component(300), &a).unwrap();
        assert_eq!(
            verify_component(&once, &trust, &two),
            Err(Refusal::NotEnoughSigners {
                required: 2,
                found: 1
            })
        );
        // The same key cannot count twice: wasmsign2 refuses a duplicate signature.
        assert!(sign_component(&once, &a).is_err());
        let both = sign_component(&once, &b).unwrap();
        let ok = verify_component(&both, &trust, &two).unwrap();
        let mut ids = vec![a.key_id(), b.key_id()];
        ids.sort();
        assert_eq!(ok.key_ids, ids);
    }

    #[test]
    fn no_single_byte_change_of_a_signed_component_is_accepted() {
        let a = generate_key();
        let trust = store(&[(&a, "\"*\"", None, None)]);
        let signed = sign_component(&component(2400), &a).unwrap();
        assert!(signed.len() > 2500);
        let mut accepted = Vec::new();
        for i in 0..signed.len() {
            for flip in [0x01u8, 0x80] {
                let mut m = signed.clone();
                m[i] ^= flip;
                if verify_component(&m, &trust, &opts("auth")).is_ok() {
                    accepted.push((i, flip));
                }
            }
        }
        assert!(
            accepted.is_empty(),
            "accepted after changing bytes {accepted:?}"
        );
    }

    #[test]
    fn interoperates_with_wasmsign2_both_ways() {
        // Signed by wasmsign2 itself → accepted by verify_component.
        let kp = wasmsign2::KeyPair::generate();
        let pk = kp.pk.clone().attach_default_key_id();
        let module = wasmsign2::Module::deserialize(&mut &component(500)[..]).unwrap();
        let signed = kp.sk.sign(module, pk.key_id()).unwrap();
        let mut bytes = Vec::new();
        signed.serialize(&mut bytes).unwrap();
        let ours = SigningKey::from_pem(&kp.sk.to_pem()).unwrap();
        assert_eq!(ours.key_id(), hex::encode(pk.key_id().unwrap()));
        let trust = store(&[(&ours, "\"*\"", None, None)]);
        assert!(verify_component(&bytes, &trust, &opts("auth")).is_ok());

        // Signed by sign_component → accepted by wasmsign2's own verifier.
        let ours_signed = sign_component(&component(500), &ours).unwrap();
        pk.verify(&mut &ours_signed[..], None).unwrap();
    }
}
