//! The health graph.
//!
//! - [`model`]: what an edge node observes and reports (its local graph).
//! - [`merge`]: the coordinator's meta-graph of all sites.
//! - [`analysis`]: health colours, single points of failure, blast radius,
//!   healthy paths, centrality.

pub mod analysis;
pub mod merge;
pub mod model;

pub use model::*;
