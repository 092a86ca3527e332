//! What the gateway tells about itself: Prometheus `metrics`, the
//! `access_log`, and the health `graph` (with the LLM `models` its routes
//! call) sampled and synced with the coordinator.

pub(crate) mod access_log;
pub(crate) mod graph;
pub(crate) mod metrics;
pub(crate) mod models;
