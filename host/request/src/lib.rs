//! The rules of the request path that do not depend on where it runs: the
//! edgegate gateway and the Spin component both use them, and they are what
//! the fuzzers exercise (fuzz/).

pub mod attempts;
pub mod canonical;
pub mod errors;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod routes;
