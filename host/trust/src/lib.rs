//! Component signatures and the trust store.
//!
//! Signatures use the WebAssembly tool-conventions format (a `signature` custom
//! section, Ed25519, SHA-256), read and written by the `wasmsign2` crate, so
//! components signed here verify with wasmsign2 and the other way round.

mod keys;
mod revocation;
mod store;
mod verify;

pub use keys::{generate_key, key_id_hex, sign_component, SigningKey};
pub use revocation::RevocationList;
pub use store::{TrustError, TrustKey, TrustStore};
pub use verify::{sha256_hex, verify_component, Refusal, Verified, VerifyOptions};
