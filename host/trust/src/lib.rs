//! Component signatures and the trust store.
//!
//! Signatures use the WebAssembly tool-conventions format (a `signature` custom
//! section, Ed25519, SHA-256), read and written by the `wasmsign2` crate, so
//! components signed here verify with wasmsign2 and the other way round.
//!
//! Components are named by their [`content_digest`]: the sha256 of the signed
//! content, without the signature sections (which no signature covers), so
//! revocations and pins cannot be dodged by re-encoding a signature section.

mod digest;
mod keys;
mod revocation;
mod store;
mod verify;

pub use digest::{content_digest, content_digest_or_file_sha256, LengthField, SectionError};
pub use keys::{generate_key, key_id_hex, sign_component, SigningKey};
pub use revocation::RevocationList;
pub use store::{TrustError, TrustKey, TrustStore};
pub use verify::{sha256_hex, verify_component, verify_unsigned, Refusal, Verified, VerifyOptions};
