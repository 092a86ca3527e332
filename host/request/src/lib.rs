//! The rules of the request path that do not depend on where it runs: the
//! gateway uses them, and they are what the fuzzers exercise (fuzz/).

pub mod canonical;
