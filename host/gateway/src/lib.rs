//! The edgegate proxy: listeners, route table, policy phases, upstream pools,
//! the admin listener and metrics.

mod access_log;
mod admin;
mod body;
mod control;
mod dns;
mod forwarding;
mod graph;
mod health_check;
mod metrics;
mod models;
mod phases;
mod quarantine;
mod routes;
mod server;
mod slow_lane;
mod sse;
mod state;
mod stream;
mod tls;
mod upstream;
mod versions;

/// Locks `m`; a panic elsewhere while it was held does not make it unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use control::{Control, ControlError, PushMode};
pub use edgegate_runtime as runtime;
pub use metrics::Metrics;
pub use server::{Gateway, GatewayHandle, GatewayOptions};
pub use state::{AdmitTimes, BuildError, GatewayState};
