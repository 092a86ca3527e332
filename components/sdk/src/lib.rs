//! Write edgegate policies in Rust.
//!
//! A policy is a type implementing [`Policy`], connected to the
//! `edgegate:policy` WIT world with [`export_policy!`]:
//!
//! ```
//! use edgegate_policy_sdk::{export_policy, Error, Policy, Request, RequestVerdict};
//!
//! struct AddHeader;
//!
//! impl Policy for AddHeader {
//!     fn init(_config: &str) -> Result<Self, Error> {
//!         Ok(AddHeader)
//!     }
//!
//!     fn on_request(&self, _req: Request) -> Result<RequestVerdict, Error> {
//!         let mut changes = edgegate_policy_sdk::RequestMutations::default();
//!         changes.set_header("x-seen-by", "add-header");
//!         Ok(RequestVerdict::continue_with(changes))
//!     }
//! }
//!
//! export_policy!(AddHeader);
//! ```
//!
//! Logic written against the host-neutral [`core`] crate (the shipped auth,
//! routing, redaction and caching policies are) exports with
//! [`export_logic!`] instead.
//!
//! Everything here also compiles natively, so policy logic unit-tests with a
//! plain `cargo test`; only the host imports ([`message`], [`log`], [`context`],
//! [`kv`], [`clock`], [`health`], [`crypto`]) must not be called outside the gateway.

// Lets the generated `export!` macro name this crate by its external path even
// when it expands inside this crate's own tests.
extern crate self as edgegate_policy_sdk;

mod config;
mod host;
mod logic;
mod policy;
mod verdicts;

/// The code `wit_bindgen` generates for the `policy` world; nothing else in the
/// SDK or in policies should need to name these paths.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "edgegate_policy_sdk::bindings",
        export_macro_name: "export",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::edgegate::policy::types::{
    BodyChunk, ChunkOutput, ChunkVerdict, ConfigError, EndReason, Error, EventOutput, EventVerdict,
    HeaderOp, Headers, PolicyInfo, RequestMutations, RequestSummary, RequestVerdict, Response,
    ResponseMutations, ResponseVerdict, RouteDecision, SseEvent, StreamError, StreamEvent,
};
pub use config::config;
pub use edgegate_policy_core::BodyModes;
/// The request a policy sees: its headers are a [`HeaderView`] the host
/// answers on demand.
pub use edgegate_policy_core::HttpRequest as Request;
pub use edgegate_policy_core::{header, header_values, HeaderView};
pub use host::{clock, context, crypto, health, kv, log, message, metrics};
pub use logic::HostEnv;
pub use verdicts::ResponseHead;

/// The plain-Rust policy vocabulary ([`PolicyLogic`](edgegate_policy_core::PolicyLogic),
/// [`Env`](edgegate_policy_core::Env)) for logic that also runs outside this host.
pub use edgegate_policy_core as core;
pub use policy::Policy;

#[doc(hidden)]
pub use policy::__private;
