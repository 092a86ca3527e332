//! What happens to one request, in the order it happens (docs/phases.md).
//!
//! - `phases`: the orchestration: limits → route match → request phase →
//!   upstream → response phase, and the request's id and access log line;
//! - `wit`: the adapter between http types and the WIT contract: a policy's
//!   header operations, mutations and answers, bounded and checked;
//! - `attempts`: the upstream attempts: retries with backoff, fallbacks,
//!   and what counts as the provider failing;
//! - `routes`: the route table and its matching;
//! - `body`, `stream`, `sse`: bodies, and their chunks and events through
//!   the streaming policies;
//! - `forwarding`: the headers the upstream is told about the client;
//! - `slow_lane`: where policy calls run off the worker threads.

pub(crate) mod attempts;
pub(crate) mod body;
pub(crate) mod forwarding;
pub(crate) mod phases;
pub(crate) mod routes;
pub(crate) mod slow_lane;
pub(crate) mod sse;
pub(crate) mod stream;
pub(crate) mod wit;
