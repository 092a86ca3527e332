//! The edgegate proxy: listeners, route table, policy phases, upstream pools,
//! the admin listener and metrics.

mod admin;
mod body;
mod control;
mod forwarding;
mod graph;
mod health_check;
mod metrics;
mod models;
mod phases;
mod routes;
mod server;
mod state;
mod upstream;
mod versions;

pub use control::{Control, ControlError, PushMode};
pub use edgegate_runtime as runtime;
pub use metrics::Metrics;
pub use server::{Gateway, GatewayHandle};
pub use state::{AdmitTimes, BuildError, GatewayState};
