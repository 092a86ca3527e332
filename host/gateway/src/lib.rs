//! The edgegate proxy: listeners, route table, policy phases, upstream pools,
//! the admin listener and metrics.

mod admin;
mod body;
mod state;
mod forwarding;
mod metrics;
mod phases;
mod routes;
mod server;
mod upstream;

pub use state::{BuildError, GatewayState};
pub use metrics::Metrics;
pub use server::{Gateway, GatewayHandle};
pub use edgegate_runtime as runtime;
