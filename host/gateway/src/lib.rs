//! The edgegate proxy: listeners, route table, policy phases, upstream pools,
//! the admin listener and metrics.

mod admin;
mod body;
mod forwarding;
mod metrics;
mod phases;
mod routes;
mod server;
mod state;
mod upstream;

pub use edgegate_runtime as runtime;
pub use metrics::Metrics;
pub use server::{Gateway, GatewayHandle};
pub use state::{BuildError, GatewayState};
