//! The coordinator: edges report their health graphs here; it keeps
//! the latest report of each in a [`store::HealthStore`], merges them into the
//! meta-graph, analyses it (health colours, single points of failure, blast
//! radius, healthy paths, centrality) and answers each report with routing
//! hints. API in docs/operations.md.

pub mod config;
pub mod server;
pub mod store;

pub use config::CoordinatorConfig;
pub use server::Coordinator;
