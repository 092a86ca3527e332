//! The gateway's TOML config: the model (whose doc comments document each key),
//! loading with errors that name file, line and key, and validation.

mod error;
mod model;
mod validate;

pub use error::ConfigError;
pub use model::*;
pub use validate::{load, parse, parse_embedded, route_host_problem, route_method_problem};
