//! The policy versions that serve and how they change.
//!
//! - `state`: the immutable route table and policy set a request runs on,
//!   and admission (verify, compile, `init`, self-tests) of a version;
//! - `versions`: a policy's serving version, canary and their counters;
//! - `quarantine`: a version whose sandbox keeps failing is not run;
//! - `plane`: pushes, canary judgement, promotion, rollback, reload and the
//!   state folder, one change at a time;
//! - `answers`: what the plane answers, as types the admin API serializes;
//! - `admin`: the admin listener and its API over the plane.

pub(crate) mod admin;
pub mod answers;
pub(crate) mod plane;
pub(crate) mod quarantine;
pub(crate) mod state;
pub(crate) mod versions;
