//! The graph model shared by edge nodes (who report) and the coordinator
//! (who merges). Node ids are global strings:
//!
//! | kind | id | shared across edges |
//! |---|---|---|
//! | site | `site:{site}` | yes |
//! | edge node | `edge:{node}` | no |
//! | route | `route:{node}/{route}` | no |
//! | upstream cluster | `upstream:{node}/{name}` | no |
//! | endpoint | `endpoint:{host:port}` | yes: sites that call the same address meet here |
//! | model (LLM) | `model:{name}` | yes |
//! | policy | `policy:{node}/{name}` | no |
//!
//! Links point from a dependent to what it depends on: edge → route →
//! upstream → endpoint, route → model, route → policy. A quarantined policy
//! is reported with an open circuit and down, so it shows red.

use serde::{Deserialize, Serialize};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A site (region, PoP).
    Site,
    /// An edge node (one gateway process).
    Edge,
    /// A route of an edge node.
    Route,
    /// An upstream cluster of an edge node.
    Upstream,
    /// An upstream endpoint (`host:port`).
    Endpoint,
    /// An LLM model name.
    Model,
    /// A policy of an edge node's chains.
    Policy,
}

/// Circuit breaker state, as the edge saw it: the type the gateway and the
/// policies use, serialized as `closed`, `open` or `half_open`.
pub use edgegate_policy_core::Circuit;

/// Observed health of a node or link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per second over the last report interval.
    #[serde(default)]
    pub requests_per_s: f64,
    /// Share of failed requests (0..=1), moving average.
    #[serde(default)]
    pub error_rate: f64,
    /// Moving-average latency, milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
    /// Circuit state (endpoints).
    #[serde(default)]
    pub circuit: Circuit,
    /// False when the node is known to be down (edge stopped reporting,
    /// endpoint failing its health checks, circuit open).
    #[serde(default = "yes")]
    pub up: bool,
}

fn yes() -> bool {
    true
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests_per_s: 0.0,
            error_rate: 0.0,
            latency_ms: 0.0,
            circuit: Circuit::Closed,
            up: true,
        }
    }
}

/// A node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Global id (see the module docs).
    pub id: String,
    /// What it is.
    pub kind: NodeKind,
    /// Human label.
    pub label: String,
    /// Site it belongs to (none for shared nodes: endpoints, models).
    #[serde(default)]
    pub site: Option<String>,
    /// Its health.
    #[serde(default)]
    pub stats: Stats,
}

/// A dependency: `from` needs `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphLink {
    /// The dependent.
    pub from: String,
    /// What it depends on.
    pub to: String,
    /// Traffic over this link.
    #[serde(default)]
    pub stats: Stats,
}

/// A graph: an edge node's local one or the coordinator's meta-graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Nodes, ids unique.
    pub nodes: Vec<GraphNode>,
    /// Links between node ids.
    pub links: Vec<GraphLink>,
}

/// What an edge node sends the coordinator every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    /// Edge node id (unique across the fleet).
    pub node: String,
    /// Its site.
    pub site: String,
    /// Increases with every report of one edge process; a restart starts again
    /// at 1 with a new `boot` id.
    pub seq: u64,
    /// Random id of the edge process; with `seq` orders reports.
    pub boot: String,
    /// Milliseconds since the Unix epoch at the edge.
    pub sent_at_ms: u64,
    /// The edge's local graph (its edge node, routes, upstreams, endpoints, models).
    pub graph: Graph,
    /// Version of the revocation list the edge holds (none: it has none).
    #[serde(default)]
    pub revocation_list_version: Option<u64>,
    /// Content digest (hex sha256 without the signature sections) of the
    /// component each policy serves, by policy name.
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, String>,
}

/// Most nodes one report may carry.
pub const MAX_REPORT_NODES: usize = 20_000;
/// Most links one report may carry.
pub const MAX_REPORT_LINKS: usize = 100_000;

impl EdgeReport {
    /// Checks that the report speaks only for its own edge: node ids in its
    /// own namespace (`edge:{node}`, `route:{node}/…`, `upstream:{node}/…`) or
    /// of the shared kinds (`endpoint:…`, `model:…`), ids unique, links
    /// between nodes it carries, and sizes within bounds. The error names
    /// the first offending id.
    pub fn check(&self) -> Result<(), String> {
        if self.graph.nodes.len() > MAX_REPORT_NODES || self.graph.links.len() > MAX_REPORT_LINKS {
            return Err(format!(
                "graph: at most {MAX_REPORT_NODES} nodes and {MAX_REPORT_LINKS} links per report"
            ));
        }
        let edge = format!("edge:{}", self.node);
        let route = format!("route:{}/", self.node);
        let upstream = format!("upstream:{}/", self.node);
        let policy = format!("policy:{}/", self.node);
        let mut ids = std::collections::HashSet::with_capacity(self.graph.nodes.len());
        for n in &self.graph.nodes {
            let own = match n.kind {
                NodeKind::Edge => n.id == edge,
                NodeKind::Route => n.id.len() > route.len() && n.id.starts_with(&route),
                NodeKind::Upstream => n.id.len() > upstream.len() && n.id.starts_with(&upstream),
                NodeKind::Endpoint => {
                    n.id.len() > "endpoint:".len() && n.id.starts_with("endpoint:")
                }
                NodeKind::Model => n.id.len() > "model:".len() && n.id.starts_with("model:"),
                NodeKind::Policy => n.id.len() > policy.len() && n.id.starts_with(&policy),
                NodeKind::Site => false,
            };
            if !own || n.id.len() > 512 {
                return Err(format!(
                    "graph: node `{}` ({:?}) is not one edge `{}` may report",
                    n.id.chars().take(100).collect::<String>(),
                    n.kind,
                    self.node
                ));
            }
            if !ids.insert(n.id.as_str()) {
                return Err(format!("graph: node `{}` appears twice", n.id));
            }
        }
        for l in &self.graph.links {
            for end in [&l.from, &l.to] {
                if *end != edge && !ids.contains(end.as_str()) {
                    return Err(format!(
                        "graph: link `{}` → `{}` names a node the report does not carry",
                        l.from.chars().take(100).collect::<String>(),
                        l.to.chars().take(100).collect::<String>()
                    ));
                }
            }
        }
        Ok(())
    }

    /// How this edge differs from the fleet's desired state, in words (empty:
    /// it is in step). Only policies the edge has are compared.
    pub fn drift(&self, desired: &DesiredState) -> Vec<String> {
        let mut drift = Vec::new();
        if let Some(want) = desired.revocation_list_version {
            match self.revocation_list_version {
                Some(held) if held >= want => {}
                Some(held) => drift.push(format!(
                    "revocation list: holds version {held}, the fleet is at {want}"
                )),
                None => drift.push(format!(
                    "revocation list: holds none, the fleet is at version {want}"
                )),
            }
        }
        for (policy, want) in &desired.desired_components {
            if let Some(serving) = self.components.get(policy) {
                if !serving.eq_ignore_ascii_case(want) {
                    drift.push(format!(
                        "policy `{policy}`: serves sha256 {serving}, the fleet wants {want}"
                    ));
                }
            }
        }
        drift
    }
}

/// What the coordinator answers a report with: the desired state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Version of this answer; increases when anything in it changes.
    pub version: u64,
    /// Routing hints for this edge.
    #[serde(default)]
    pub hints: Vec<RoutingHint>,
    /// Revocation list version the fleet should hold (the coordinator's
    /// `fleet.revocation_list_version`).
    #[serde(default)]
    pub revocation_list_version: Option<u64>,
    /// Content digest (hex sha256 without the signature sections) of the
    /// component each policy should serve, by policy name (the coordinator's
    /// `fleet.components`).
    #[serde(default)]
    pub desired_components: std::collections::BTreeMap<String, String>,
}

/// A hint an edge applies to its routing view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingHint {
    /// The endpoint (`host:port`) the hint is about.
    pub endpoint: String,
    /// `avoid`: unhealthy as seen from other sites too.
    pub action: HintAction,
    /// Why, in words.
    pub reason: String,
    /// Sites that saw it unhealthy.
    #[serde(default)]
    pub seen_by: Vec<String>,
}

/// What a hint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintAction {
    /// Treat the endpoint as unhealthy.
    Avoid,
}

impl Graph {
    /// The node with `id`.
    pub fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Milliseconds since the Unix epoch: the clock of `sent_at_ms` and of
/// every time edges and the coordinator exchange (wall time, so it means the
/// same on both sides; durations inside one process use `Instant`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind) -> GraphNode {
        GraphNode {
            id: id.into(),
            kind,
            label: id.into(),
            site: None,
            stats: Stats::default(),
        }
    }

    #[test]
    fn a_report_speaks_only_for_its_own_edge() {
        let mut r = EdgeReport {
            node: "a".into(),
            site: "s".into(),
            seq: 1,
            boot: "b".into(),
            sent_at_ms: 0,
            graph: Graph {
                nodes: vec![
                    node("edge:a", NodeKind::Edge),
                    node("route:a/r", NodeKind::Route),
                    node("upstream:a/u", NodeKind::Upstream),
                    node("endpoint:10.0.0.1:80", NodeKind::Endpoint),
                    node("model:gpt-4o", NodeKind::Model),
                    node("policy:a/auth", NodeKind::Policy),
                ],
                links: vec![GraphLink {
                    from: "route:a/r".into(),
                    to: "upstream:a/u".into(),
                    stats: Stats::default(),
                }],
            },
            revocation_list_version: None,
            components: Default::default(),
        };
        assert_eq!(r.check(), Ok(()));
        let refused = |r: &EdgeReport| r.check().expect_err("refused");
        let mut other = r.clone();
        other.graph.nodes.push(node("route:b/r", NodeKind::Route));
        assert_eq!(
            refused(&other),
            "graph: node `route:b/r` (Route) is not one edge `a` may report"
        );
        let mut policy = r.clone();
        policy
            .graph
            .nodes
            .push(node("policy:b/auth", NodeKind::Policy));
        assert!(refused(&policy).contains("`policy:b/auth` (Policy)"));
        let mut site = r.clone();
        site.graph.nodes.push(node("site:s", NodeKind::Site));
        assert!(refused(&site).contains("`site:s` (Site)"));
        let mut twice = r.clone();
        twice
            .graph
            .nodes
            .push(node("model:gpt-4o", NodeKind::Model));
        assert_eq!(refused(&twice), "graph: node `model:gpt-4o` appears twice");
        r.graph.links.push(GraphLink {
            from: "edge:a".into(),
            to: "endpoint:10.9.9.9:1".into(),
            stats: Stats::default(),
        });
        assert_eq!(
            refused(&r),
            "graph: link `edge:a` → `endpoint:10.9.9.9:1` names a node the report does not carry"
        );
    }

    #[test]
    fn drift_names_what_differs_and_ignores_what_the_edge_lacks() {
        let mut report = EdgeReport {
            node: "e".into(),
            site: "s".into(),
            seq: 1,
            boot: "b".into(),
            sent_at_ms: 0,
            graph: Graph::default(),
            revocation_list_version: Some(2),
            components: [("auth".to_string(), "AA".to_string())].into(),
        };
        let mut desired = DesiredState::default();
        assert!(report.drift(&desired).is_empty(), "nothing desired");
        desired.revocation_list_version = Some(3);
        desired.desired_components = [
            ("auth".to_string(), "aa".to_string()),
            ("caching".to_string(), "cc".to_string()),
        ]
        .into();
        assert_eq!(
            report.drift(&desired),
            ["revocation list: holds version 2, the fleet is at 3"]
        );
        report.revocation_list_version = Some(4);
        report.components.insert("auth".into(), "bb".into());
        assert_eq!(
            report.drift(&desired),
            ["policy `auth`: serves sha256 bb, the fleet wants aa"]
        );
        report.revocation_list_version = None;
        report.components.clear();
        assert_eq!(
            report.drift(&desired),
            ["revocation list: holds none, the fleet is at version 3"]
        );
    }
}
