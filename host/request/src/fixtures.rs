//! The case tables in `tests/fixtures/` that the gateway's tests and the
//! Spin component's tests both read, typed once (feature `fixtures`, for
//! tests only): a rule both sides follow is checked against one table.

use serde::Deserialize;

/// `tests/fixtures/routes.toml`: route patterns and the requests they take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// `host` patterns a config must refuse.
    pub refused_hosts: Vec<String>,
    /// `methods` entries a config must refuse.
    pub refused_methods: Vec<String>,
    /// Routes and the requests they match and miss.
    pub case: Vec<RouteCase>,
}

/// One route and what it takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCase {
    /// The route's matching keys.
    pub route: RouteSpec,
    /// `(host, path, method)` requests it takes.
    #[serde(rename = "match")]
    pub hits: Vec<(String, String, String)>,
    /// `(host, path, method)` requests it does not take.
    pub miss: Vec<(String, String, String)>,
}

/// A route's `host`, `path_prefix` and `methods`, as a config writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `host`, absent for any.
    pub host: Option<String>,
    /// `path_prefix`, absent for `/`.
    pub path_prefix: Option<String>,
    /// `methods`, empty for any.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// `tests/fixtures/attempts.toml`: attempt plans, the provider-failure rule
/// and error bodies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptTable {
    /// Routing decisions and the attempts they make.
    pub plan: Vec<PlanCase>,
    /// Statuses that count as the provider failing (the next cluster is tried).
    pub provider_failed: Vec<u16>,
    /// Statuses that are an answer.
    pub answered: Vec<u16>,
    /// Error bodies, byte for byte.
    pub error_body: Vec<ErrorBodyCase>,
}

/// One routing decision and its plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanCase {
    /// What the routing policy decided.
    pub decision: Decision,
    /// The clusters tried, in order.
    pub tries: Vec<String>,
    /// The upper end of each wait before a retry, in ms.
    pub windows_ms: Vec<u64>,
}

/// A routing decision's cluster, fallbacks, retries and backoff.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The first cluster.
    pub upstream: String,
    /// Clusters tried after it, in order.
    pub fallbacks: Vec<String>,
    /// Retries per cluster.
    pub retries: u32,
    /// Base backoff.
    pub backoff_ms: u32,
}

/// An error and the JSON body it must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBodyCase {
    /// The error code.
    pub code: String,
    /// Its message.
    pub message: String,
    /// The request id, if any.
    pub request_id: Option<String>,
    /// The body, exactly.
    pub json: String,
}

/// The route table.
pub fn routes() -> RouteTable {
    parse(
        "routes.toml",
        include_str!("../../../tests/fixtures/routes.toml"),
    )
}

/// The attempt table.
pub fn attempts() -> AttemptTable {
    parse(
        "attempts.toml",
        include_str!("../../../tests/fixtures/attempts.toml"),
    )
}

/// A table, or a panic naming the file and the fault: a broken fixture
/// must fail the test that reads it.
fn parse<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> T {
    toml::from_str(text).unwrap_or_else(|e| panic!("tests/fixtures/{name}: {e}"))
}
