//! The one place the WIT contract turns into Rust: everything else uses these re-exports.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy",
    imports: { default: trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
});

pub use edgegate::policy::{clock, context, crypto, health, kv, log, message, metrics, types};
pub use exports::edgegate::policy::hooks;
