//! The coordinator's meta-graph: every live edge's local graph, joined at the
//! nodes they share (sites, endpoints, models). Filled in by `merge`.
