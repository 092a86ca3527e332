//! edgegate on Fermyon Spin: one Spin HTTP component that runs the auth →
//! routing → redaction → caching chain with the very logic crates the
//! edgegate policy components are built from, and proxies with Spin's
//! outbound HTTP. Config comes from Spin variables (docs/spin.md).
//!
//! Everything but [`spin`] (the Spin glue, wasm only) is plain Rust and
//! unit-tests natively.

pub mod chain;
pub mod config;
pub mod crypto;
pub mod env;
pub mod policies;
pub mod stream;
// The export glue `#[http_component]` generates is unsafe code.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod spin;
