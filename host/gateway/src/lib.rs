//! The edgegate proxy. Its parts, one folder each:
//!
//! - [`request_path`]: what happens to one request, in the order it happens
//!   (docs/phases.md): limits and route match, the request phase, the
//!   attempts upstream, the response phase, and bodies and streams through
//!   the policies;
//! - [`upstreams`]: clusters of endpoints with their circuits, outlier
//!   ejection, active health checks and name resolution;
//! - [`control`]: the policy versions that serve (admission, canaries,
//!   quarantine, the state folder) and the admin API that changes them;
//! - [`observability`]: metrics, the access log, and the health graph
//!   synced with the coordinator.
//!
//! `server` runs the listeners and workers on top of them, and `tls` the
//! certificates both sides use.

pub mod control;
mod observability;
mod request_path;
mod server;
mod tls;
mod upstreams;

/// Locks `m`; a panic elsewhere while it was held does not make it unusable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `task` to its end on a current-thread runtime on the calling thread:
/// the body of each of the gateway's own threads (workers, admin, health
/// checks, graph reporter, certificate watcher). When the runtime cannot
/// start, the error names `what`, and the thread ends with `None`.
pub(crate) fn run_on_this_thread<F: std::future::Future>(what: &str, task: F) -> Option<F::Output> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(task)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime of the {what}");
            None
        }
    }
}

pub use control::answers;
pub use control::plane::{Control, ControlError, PushMode};
pub use control::state::{AdmitTimes, BuildError, GatewayState};
pub use edgegate_runtime as runtime;
pub use observability::metrics::Metrics;
pub use server::{Gateway, GatewayHandle, GatewayOptions};
