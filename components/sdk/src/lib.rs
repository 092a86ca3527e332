//! Write edgegate policies in Rust.
//!
//! A policy implements [`core::PolicyLogic`] (the host-neutral vocabulary:
//! plain types, host services through [`core::Env`]) and is connected to the
//! `edgegate:policy` WIT world with [`export_logic!`]. The shipped policies,
//! `headers`, `noop` and docs/writing-a-policy.md are written so; this is its
//! example, compiled as a doctest:
//!
//! ```
//! use edgegate_policy_sdk::core::{
//!     keys, parse_config, Env, HeaderOp, HttpRequest, HttpResponse, PolicyError, PolicyLogic,
//!     RequestInfo, RequestOutcome, ResponseChanges, ResponseOutcome,
//! };
//! use edgegate_policy_sdk::export_logic;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Tenants {
//!     allowed: Vec<String>,
//! }
//!
//! impl PolicyLogic for Tenants {
//!     const WANTS_RESPONSE: bool = true;
//!
//!     fn from_config(json: &str) -> Result<Self, PolicyError> {
//!         let tenants: Tenants = parse_config(json)?;
//!         if tenants.allowed.is_empty() {
//!             return Err(PolicyError::config("allowed", "must list at least one tenant"));
//!         }
//!         Ok(tenants)
//!     }
//!
//!     fn on_request(&self, env: &dyn Env, req: HttpRequest) -> Result<RequestOutcome, PolicyError> {
//!         match req.header("x-tenant") {
//!             Some(t) if self.allowed.contains(&t) => {
//!                 env.ctx_set(keys::TENANT, &t);
//!                 Ok(RequestOutcome::pass())
//!             }
//!             _ => Ok(RequestOutcome::Respond(
//!                 HttpResponse::new(403).with_body("unknown tenant"),
//!             )),
//!         }
//!     }
//!
//!     fn on_response(
//!         &self,
//!         env: &dyn Env,
//!         _info: &RequestInfo,
//!         _resp: HttpResponse,
//!     ) -> Result<ResponseOutcome, PolicyError> {
//!         let mut changes = ResponseChanges::default();
//!         if let Some(tenant) = env.ctx_get(keys::TENANT) {
//!             changes.headers.push(HeaderOp::Set("x-tenant".into(), tenant));
//!         }
//!         Ok(ResponseOutcome::Continue(changes))
//!     }
//! }
//!
//! export_logic!(Tenants);
//! ```
//!
//! The WIT-level layer the macro is built on (`Policy`, `export_policy!`)
//! is internal: no policy needs it, and it is hidden from these docs.
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
#[doc(hidden)]
pub use policy::Policy;

#[doc(hidden)]
pub use policy::__private;
