//! Upstream clusters: endpoints with their circuits and outlier ejection
//! (`cluster`), active health checks (`health_check`), and names resolved
//! again while they serve (`dns`).

pub(crate) mod cluster;
pub(crate) mod dns;
pub(crate) mod health_check;
