//! The route table: match by host, path prefix and method; each route holds its policy chain.

use std::sync::Arc;

use edgegate_config::{BodyMode, OnError};
use http::Method;

use crate::control::versions::{PolicySet, Roll, Version};
use crate::observability::metrics::RouteMetrics;
use crate::observability::models::ModelStats;
use crate::upstreams::cluster::Cluster;

/// One policy in a route's chain.
pub(crate) struct ChainEntry {
    /// Policy name.
    pub(crate) name: String,
    /// Its serving version and canary.
    pub(crate) versions: PolicySet,
    pub(crate) on_error: OnError,
    pub(crate) request_body: BodyMode,
    pub(crate) response_body: BodyMode,
    pub(crate) body_limit: usize,
}

impl ChainEntry {
    /// The version a request with `roll` runs.
    pub(crate) fn pick(&self, roll: Roll) -> &Arc<Version> {
        self.versions.pick(roll)
    }
}

/// Which hosts a route accepts, and how a path prefix matches: the rules
/// the Spin component matches with too.
pub(crate) use edgegate_request::routes::{prefix_matches, HostMatch};

/// A route as the request path uses it.
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) host: Option<HostMatch>,
    pub(crate) path_prefix: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) chain: Vec<ChainEntry>,
    pub(crate) metrics: RouteMetrics,
    /// The LLM models its requests went to (the health graph's model nodes).
    pub(crate) models: ModelStats,
    /// Request body limit when a policy of the chain buffers it (the smallest of their limits).
    pub(crate) buffer_request: Option<usize>,
    /// Whether any policy of the chain has a canary (requests then roll the dice).
    pub(crate) has_canary: bool,
}

impl Route {
    fn matches(&self, host: &str, path: &str, method: &Method) -> bool {
        request_matches(
            self.host.as_ref(),
            &self.path_prefix,
            &self.methods,
            (host, path, method),
        )
    }
}

/// Whether a request (host, path, method) fits a route's host pattern, path
/// prefix and methods (none: any method).
fn request_matches(
    host: Option<&HostMatch>,
    prefix: &str,
    methods: &[Method],
    (req_host, path, method): (&str, &str, &Method),
) -> bool {
    host.is_none_or(|h| h.matches(req_host))
        && (methods.is_empty() || methods.contains(method))
        && prefix_matches(prefix, path)
}

/// Routes in config order; the first match wins.
pub(crate) struct RouteTable {
    pub(crate) routes: Vec<Route>,
}

impl RouteTable {
    /// The route for a request, if any. `host` is the canonical host name
    /// (`canonical::Host::match_name`): lower case, no port, no trailing dot.
    pub(crate) fn find(&self, host: &str, path: &str, method: &Method) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path, method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(prefix_matches("/api", "/api?x=1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/", "/api/x"));
    }

    /// tests/fixtures/routes.toml: the case table the Spin component is
    /// tested against too.
    #[test]
    fn the_shared_route_table_matches_and_refuses_as_written() {
        let table = edgegate_request::fixtures::routes();
        for pattern in &table.refused_hosts {
            assert!(
                edgegate_config::route_host_problem(pattern).is_some(),
                "`{pattern}` was accepted"
            );
        }
        for m in &table.refused_methods {
            assert!(
                edgegate_config::route_method_problem(m).is_some(),
                "`{m}` was accepted"
            );
        }
        for case in &table.case {
            let r = &case.route;
            if let Some(h) = &r.host {
                assert_eq!(edgegate_config::route_host_problem(h), None, "{h}");
            }
            let host = r.host.as_deref().map(HostMatch::parse);
            let prefix = r.path_prefix.as_deref().unwrap_or("/");
            let methods: Vec<Method> = r
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                .collect();
            for (want, requests) in [(true, &case.hits), (false, &case.miss)] {
                for (h, path, m) in requests {
                    let m = Method::from_bytes(m.as_bytes()).unwrap();
                    let got = request_matches(host.as_ref(), prefix, &methods, (h, path, &m));
                    assert_eq!(got, want, "{h} {m} {path} against {:?}", r.host);
                }
            }
        }
    }

    #[test]
    fn hosts_match_exact_and_wildcard() {
        assert!(HostMatch::parse("Example.com.").matches("example.com"));
        let w = HostMatch::parse("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("a.example.org"));
    }
}
