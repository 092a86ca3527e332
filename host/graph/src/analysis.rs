//! Analytics on a (meta-)graph: health colours, single points of failure
//! (articulation points and bridges), degree and betweenness centrality,
//! blast radius, shortest healthy path, failover suggestions and the routing
//! hints the coordinator sends back to edges.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::model::{Circuit, Graph, HintAction, NodeKind, RoutingHint, Stats};

/// When a node turns yellow or red.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Error rate from which a node is yellow.
    #[serde(default = "yellow_error")]
    pub yellow_error_rate: f64,
    /// Error rate from which a node is red.
    #[serde(default = "red_error")]
    pub red_error_rate: f64,
    /// Latency (ms) from which a node is yellow.
    #[serde(default = "yellow_latency")]
    pub yellow_latency_ms: f64,
    /// Latency (ms) from which a node is red.
    #[serde(default = "red_latency")]
    pub red_latency_ms: f64,
}

fn yellow_error() -> f64 {
    0.01
}
fn red_error() -> f64 {
    0.10
}
fn yellow_latency() -> f64 {
    500.0
}
fn red_latency() -> f64 {
    2000.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            yellow_error_rate: yellow_error(),
            red_error_rate: red_error(),
            yellow_latency_ms: yellow_latency(),
            red_latency_ms: red_latency(),
        }
    }
}

/// Health colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// Healthy.
    Green,
    /// Degraded.
    Yellow,
    /// Failing or down.
    Red,
}

/// A node's own colour from its stats.
pub fn colour(stats: &Stats, t: &Thresholds) -> Colour {
    if !stats.up
        || stats.circuit == Circuit::Open
        || stats.error_rate >= t.red_error_rate
        || stats.latency_ms >= t.red_latency_ms
    {
        Colour::Red
    } else if stats.circuit == Circuit::HalfOpen
        || stats.error_rate >= t.yellow_error_rate
        || stats.latency_ms >= t.yellow_latency_ms
    {
        Colour::Yellow
    } else {
        Colour::Green
    }
}

/// Everything the coordinator computes over the meta-graph.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Analysis {
    /// Colour per node id, after propagation along dependencies.
    pub colours: BTreeMap<String, Colour>,
    /// Nodes whose removal disconnects the (undirected) graph.
    pub articulation_points: Vec<String>,
    /// Links whose removal disconnects it.
    pub bridges: Vec<(String, String)>,
    /// In + out links per node.
    pub degree: BTreeMap<String, usize>,
    /// Normalised betweenness centrality on the undirected view: exact up to
    /// [`EXACT_BETWEENNESS_MAX`] nodes, else estimated from
    /// [`BETWEENNESS_PIVOTS`] sampled sources.
    pub betweenness: BTreeMap<String, f64>,
    /// Endpoints red in the merged view, for the edges that use them.
    pub routing_hints: Vec<RoutingHint>,
}

/// Largest graph whose betweenness is computed exactly.
pub const EXACT_BETWEENNESS_MAX: usize = 2_000;
/// Sampled sources for estimated betweenness on larger graphs (32 keeps the
/// whole analysis of a 10,000-node / 50,000-link graph near 60 ms here).
pub const BETWEENNESS_PIVOTS: usize = 32;

/// Index of a [`Graph`] in petgraph form.
struct Indexed<'g> {
    graph: &'g Graph,
    directed: DiGraph<usize, usize>,
    index: HashMap<&'g str, NodeIndex>,
}

impl<'g> Indexed<'g> {
    fn new(graph: &'g Graph) -> Self {
        let mut directed = DiGraph::with_capacity(graph.nodes.len(), graph.links.len());
        let mut index = HashMap::with_capacity(graph.nodes.len());
        for (i, n) in graph.nodes.iter().enumerate() {
            index.insert(n.id.as_str(), directed.add_node(i));
        }
        for (i, l) in graph.links.iter().enumerate() {
            if let (Some(&a), Some(&b)) = (index.get(l.from.as_str()), index.get(l.to.as_str())) {
                if a != b {
                    directed.add_edge(a, b, i);
                }
            }
        }
        Self {
            graph,
            directed,
            index,
        }
    }

    fn id(&self, n: NodeIndex) -> &'g str {
        &self.graph.nodes[self.directed[n]].id
    }

    /// The undirected view, parallel links collapsed.
    fn undirected(&self) -> UnGraph<usize, ()> {
        let mut g = UnGraph::with_capacity(self.directed.node_count(), self.directed.edge_count());
        for n in self.directed.node_indices() {
            g.add_node(n.index());
        }
        let mut seen = std::collections::HashSet::new();
        for e in self.directed.edge_references() {
            let (a, b) = (e.source().index(), e.target().index());
            let key = (a.min(b), a.max(b));
            if seen.insert(key) {
                g.add_edge(NodeIndex::new(key.0), NodeIndex::new(key.1), ());
            }
        }
        g
    }
}

/// Colours, single points of failure, centrality and routing hints.
pub fn analyse(graph: &Graph, t: &Thresholds) -> Analysis {
    let ix = Indexed::new(graph);
    let colours = propagate(&ix, t);
    let undirected = ix.undirected();

    // petgraph's own: rustworkx-core 0.17's `bridges` misses links at the
    // DFS root (a chain's first link).
    let mut articulation_points: Vec<String> =
        petgraph::algo::articulation_points::articulation_points(&undirected)
            .into_iter()
            .map(|n| ix.id(n).to_string())
            .collect();
    articulation_points.sort_unstable();
    let mut bridges: Vec<(String, String)> = petgraph::algo::bridges::bridges(&undirected)
        .map(|e| (e.source(), e.target()))
        .map(|(a, b)| {
            let (a, b) = (ix.id(a).to_string(), ix.id(b).to_string());
            if a <= b {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    bridges.sort_unstable();

    let degree = ix
        .directed
        .node_indices()
        .map(|n| {
            let d = ix
                .directed
                .neighbors_directed(n, Direction::Outgoing)
                .count()
                + ix.directed
                    .neighbors_directed(n, Direction::Incoming)
                    .count();
            (ix.id(n).to_string(), d)
        })
        .collect();

    let scores = if undirected.node_count() <= EXACT_BETWEENNESS_MAX {
        rustworkx_core::centrality::betweenness_centrality(&undirected, false, true, usize::MAX)
            .into_iter()
            .map(|s| s.unwrap_or(0.0))
            .collect()
    } else {
        sampled_betweenness(&undirected, BETWEENNESS_PIVOTS)
    };
    let betweenness = scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| (ix.id(NodeIndex::new(i)).to_string(), s))
        .collect();

    let routing_hints = hints(&ix, &colours, t);
    Analysis {
        colours,
        articulation_points,
        bridges,
        degree,
        betweenness,
        routing_hints,
    }
}

/// Own colours, then along dependencies (targets before dependents): a node
/// whose dependencies are all red is red; one with some red or yellow
/// dependency is at least yellow (something under it is degraded). Cycles
/// (not expected) are left with their own colour.
fn propagate(ix: &Indexed<'_>, t: &Thresholds) -> BTreeMap<String, Colour> {
    let g = &ix.directed;
    let mut colour_of: Vec<Colour> = g
        .node_indices()
        .map(|n| colour(&ix.graph.nodes[g[n]].stats, t))
        .collect();
    // Kahn's algorithm on the reversed graph: leaves (no dependencies) first.
    let mut pending: Vec<usize> = g
        .node_indices()
        .map(|n| g.neighbors_directed(n, Direction::Outgoing).count())
        .collect();
    let mut ready: VecDeque<NodeIndex> = g
        .node_indices()
        .filter(|n| pending[n.index()] == 0)
        .collect();
    while let Some(n) = ready.pop_front() {
        let deps: Vec<NodeIndex> = g.neighbors_directed(n, Direction::Outgoing).collect();
        if !deps.is_empty() {
            let red = deps
                .iter()
                .filter(|d| colour_of[d.index()] == Colour::Red)
                .count();
            let degraded = deps.iter().any(|d| colour_of[d.index()] != Colour::Green);
            let inherited = if red == deps.len() {
                Colour::Red
            } else if degraded {
                Colour::Yellow
            } else {
                Colour::Green
            };
            colour_of[n.index()] = colour_of[n.index()].max(inherited);
        }
        for dependent in g.neighbors_directed(n, Direction::Incoming) {
            let p = &mut pending[dependent.index()];
            *p = p.saturating_sub(1);
            if *p == 0 {
                ready.push_back(dependent);
            }
        }
    }
    g.node_indices()
        .map(|n| (ix.id(n).to_string(), colour_of[n.index()]))
        .collect()
}

/// Brandes' accumulation from `pivots` evenly spread sources, scaled to the
/// full-graph estimate and normalised like the exact computation.
fn sampled_betweenness(g: &UnGraph<usize, ()>, pivots: usize) -> Vec<f64> {
    let n = g.node_count();
    let mut score = vec![0.0; n];
    if n < 3 {
        return score;
    }
    let k = pivots.min(n);
    let step = n / k;
    let mut sigma = vec![0.0f64; n];
    let mut dist = vec![-1i64; n];
    let mut delta = vec![0.0f64; n];
    // Adjacency as flat arrays: the BFS runs k times over every link.
    let mut start = vec![0usize; n + 1];
    for v in 0..n {
        start[v + 1] = start[v] + g.neighbors(NodeIndex::new(v)).count();
    }
    let mut adjacent = vec![0usize; start[n]];
    for v in 0..n {
        for (i, w) in g.neighbors(NodeIndex::new(v)).enumerate() {
            adjacent[start[v] + i] = w.index();
        }
    }
    let mut order = Vec::with_capacity(n);
    for p in 0..k {
        let s = p * step;
        sigma.iter_mut().for_each(|x| *x = 0.0);
        dist.iter_mut().for_each(|x| *x = -1);
        delta.iter_mut().for_each(|x| *x = 0.0);
        order.clear();
        let mut queue = VecDeque::new();
        sigma[s] = 1.0;
        dist[s] = 0;
        queue.push_back(s);
        while let Some(v) = queue.pop_front() {
            order.push(v);
            for &w in &adjacent[start[v]..start[v + 1]] {
                if dist[w] < 0 {
                    dist[w] = dist[v] + 1;
                    queue.push_back(w);
                }
                if dist[w] == dist[v] + 1 {
                    sigma[w] += sigma[v];
                }
            }
        }
        // Predecessors are the neighbours one step closer to the source.
        for &w in order.iter().rev() {
            for &v in &adjacent[start[w]..start[w + 1]] {
                if dist[v] == dist[w] - 1 {
                    delta[v] += sigma[v] / sigma[w] * (1.0 + delta[w]);
                }
            }
            if w != s {
                score[w] += delta[w];
            }
        }
    }
    // Undirected: each pair counted from both ends (/2); scale k samples to n;
    // normalise by the pairs not involving the node.
    let scale = (n as f64 / k as f64) / 2.0 / (((n - 1) * (n - 2)) as f64 / 2.0);
    score.iter().map(|s| s * scale).collect()
}

/// One hint per red endpoint that edges reach through their upstreams.
fn hints(ix: &Indexed<'_>, colours: &BTreeMap<String, Colour>, t: &Thresholds) -> Vec<RoutingHint> {
    let mut out = Vec::new();
    for n in ix.directed.node_indices() {
        let node = &ix.graph.nodes[ix.directed[n]];
        if node.kind != NodeKind::Endpoint || colours.get(&node.id) != Some(&Colour::Red) {
            continue;
        }
        let mut sites = BTreeSet::new();
        for up in ix.directed.neighbors_directed(n, Direction::Incoming) {
            let up_node = &ix.graph.nodes[ix.directed[up]];
            if up_node.kind == NodeKind::Upstream {
                if let Some(site) = &up_node.site {
                    sites.insert(site.clone());
                }
            }
        }
        if sites.is_empty() {
            continue;
        }
        let s = &node.stats;
        let why = if !s.up || s.circuit == Circuit::Open {
            "down: circuit open".to_string()
        } else if s.error_rate >= t.red_error_rate {
            format!("error rate {:.1}%", s.error_rate * 100.0)
        } else {
            format!("latency {:.0} ms", s.latency_ms)
        };
        let address = node
            .id
            .strip_prefix("endpoint:")
            .unwrap_or(&node.id)
            .to_string();
        let seen_by: Vec<String> = sites.into_iter().collect();
        out.push(RoutingHint {
            reason: format!(
                "{address} is unhealthy ({why}) as seen from sites {}",
                seen_by.join(", ")
            ),
            endpoint: address,
            action: HintAction::Avoid,
            seen_by,
        });
    }
    out
}

/// What depends on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlastRadius {
    /// The node asked about.
    pub node: String,
    /// Every node with a dependency path to it.
    pub dependents: Vec<String>,
    /// The routes among them.
    pub routes: Vec<String>,
    /// The edge nodes among them.
    pub edges: Vec<String>,
    /// The sites among them.
    pub sites: Vec<String>,
    /// Dependents left with no path to any leaf (endpoint, model) without the
    /// node: they lose all service, the others are degraded.
    pub fully_cut: Vec<String>,
}

/// The blast radius of `id`; `None` when the graph has no such node.
pub fn blast_radius(graph: &Graph, id: &str) -> Option<BlastRadius> {
    let ix = Indexed::new(graph);
    let &start = ix.index.get(id)?;
    let g = &ix.directed;
    let mut seen = vec![false; g.node_count()];
    seen[start.index()] = true;
    let mut queue = VecDeque::from([start]);
    let mut dependents = Vec::new();
    while let Some(n) = queue.pop_front() {
        for d in g.neighbors_directed(n, Direction::Incoming) {
            if !seen[d.index()] {
                seen[d.index()] = true;
                dependents.push(d);
                queue.push_back(d);
            }
        }
    }
    // Which nodes still reach a leaf with `start` removed: reverse search from
    // every leaf except `start`.
    let mut reaches = vec![false; g.node_count()];
    let mut queue: VecDeque<NodeIndex> = g
        .node_indices()
        .filter(|&n| {
            n != start
                && g.neighbors_directed(n, Direction::Outgoing)
                    .next()
                    .is_none()
        })
        .collect();
    for n in &queue {
        reaches[n.index()] = true;
    }
    while let Some(n) = queue.pop_front() {
        for d in g.neighbors_directed(n, Direction::Incoming) {
            if d != start && !reaches[d.index()] {
                reaches[d.index()] = true;
                queue.push_back(d);
            }
        }
    }
    let pick = |kind: NodeKind| -> Vec<String> {
        let mut v: Vec<String> = dependents
            .iter()
            .filter(|&&n| ix.graph.nodes[g[n]].kind == kind)
            .map(|&n| ix.id(n).to_string())
            .collect();
        v.sort_unstable();
        v
    };
    let mut fully_cut: Vec<String> = dependents
        .iter()
        .filter(|n| !reaches[n.index()])
        .map(|&n| ix.id(n).to_string())
        .collect();
    fully_cut.sort_unstable();
    let mut all: Vec<String> = dependents.iter().map(|&n| ix.id(n).to_string()).collect();
    all.sort_unstable();
    Some(BlastRadius {
        node: id.to_string(),
        routes: pick(NodeKind::Route),
        edges: pick(NodeKind::Edge),
        sites: pick(NodeKind::Site),
        dependents: all,
        fully_cut,
    })
}

/// Single-source Dijkstra over the dependency links that never enters a red
/// node; each link costs its latency + 1. Distances and predecessors by node.
fn healthy_distances(
    ix: &Indexed<'_>,
    colours: &BTreeMap<String, Colour>,
    from: NodeIndex,
) -> (Vec<f64>, Vec<Option<NodeIndex>>) {
    use std::cmp::Reverse;
    let g = &ix.directed;
    let mut dist = vec![f64::INFINITY; g.node_count()];
    let mut prev = vec![None; g.node_count()];
    let mut heap = std::collections::BinaryHeap::new();
    dist[from.index()] = 0.0;
    // Costs are finite and non-negative: order them by their bits.
    heap.push(Reverse((0u64, from.index())));
    while let Some(Reverse((bits, n))) = heap.pop() {
        let d = f64::from_bits(bits);
        if d > dist[n] {
            continue;
        }
        for e in g.edges_directed(NodeIndex::new(n), Direction::Outgoing) {
            let m = e.target();
            if colours.get(ix.id(m)) == Some(&Colour::Red) {
                continue;
            }
            let cost = d + ix.graph.links[*e.weight()].stats.latency_ms.max(0.0) + 1.0;
            if cost < dist[m.index()] {
                dist[m.index()] = cost;
                prev[m.index()] = Some(NodeIndex::new(n));
                heap.push(Reverse((cost.to_bits(), m.index())));
            }
        }
    }
    (dist, prev)
}

fn path_to(
    ix: &Indexed<'_>,
    prev: &[Option<NodeIndex>],
    from: NodeIndex,
    to: NodeIndex,
) -> Option<Vec<String>> {
    let mut path = vec![to];
    let mut at = to;
    while at != from {
        at = prev[at.index()]?;
        path.push(at);
    }
    path.reverse();
    Some(path.into_iter().map(|n| ix.id(n).to_string()).collect())
}

/// The lowest-latency dependency path from `from` to `to` that passes no red
/// node (`to` must not be red either). Each link costs its latency + 1.
pub fn shortest_healthy_path(
    graph: &Graph,
    colours: &BTreeMap<String, Colour>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let ix = Indexed::new(graph);
    let (&a, &b) = (ix.index.get(from)?, ix.index.get(to)?);
    if colours.get(to) == Some(&Colour::Red) {
        return None;
    }
    let (_, prev) = healthy_distances(&ix, colours, a);
    path_to(&ix, &prev, a, b)
}

/// A suggested replacement for a failing node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failover {
    /// The failing node.
    pub instead_of: String,
    /// What to use.
    pub use_node: String,
    /// A healthy path to it from an edge node that depends on the failing one.
    pub path: Vec<String>,
}

/// For a red endpoint or upstream: the non-red node of the same kind with the
/// lowest-latency healthy path from an edge node that depends on it (its own
/// site first); when none of those edges reaches one, the closest healthy
/// node of the kind from any edge (cross-site failover: move the traffic to
/// that site). `None` when the node is not red or nothing fits. One Dijkstra
/// per edge node considered.
pub fn failover(graph: &Graph, colours: &BTreeMap<String, Colour>, id: &str) -> Option<Failover> {
    let ix = Indexed::new(graph);
    let &target = ix.index.get(id)?;
    let kind = graph.node(id)?.kind;
    if colours.get(id) != Some(&Colour::Red)
        || !matches!(kind, NodeKind::Endpoint | NodeKind::Upstream)
    {
        return None;
    }
    let g = &ix.directed;
    // Edge nodes that depend on it: reverse reachability.
    let mut seen = vec![false; g.node_count()];
    let mut queue = VecDeque::from([target]);
    let mut dependents = Vec::new();
    while let Some(n) = queue.pop_front() {
        for d in g.neighbors_directed(n, Direction::Incoming) {
            if !std::mem::replace(&mut seen[d.index()], true) {
                if ix.graph.nodes[g[d]].kind == NodeKind::Edge {
                    dependents.push(d);
                }
                queue.push_back(d);
            }
        }
    }
    let candidate = |n: NodeIndex| {
        n != target
            && ix.graph.nodes[g[n]].kind == kind
            && colours.get(ix.id(n)) != Some(&Colour::Red)
    };
    let best_from = |sources: &[NodeIndex]| -> Option<Failover> {
        let mut best: Option<(f64, NodeIndex, NodeIndex, Vec<Option<NodeIndex>>)> = None;
        for &s in sources {
            let (dist, prev) = healthy_distances(&ix, colours, s);
            for n in g.node_indices().filter(|&n| candidate(n)) {
                let d = dist[n.index()];
                if d.is_finite() && best.as_ref().is_none_or(|(b, ..)| d < *b) {
                    best = Some((d, s, n, prev.clone()));
                }
            }
        }
        let (_, s, n, prev) = best?;
        Some(Failover {
            instead_of: id.to_string(),
            use_node: ix.id(n).to_string(),
            path: path_to(&ix, &prev, s, n)?,
        })
    };
    best_from(&dependents).or_else(|| {
        let others: Vec<NodeIndex> = g
            .node_indices()
            .filter(|&n| ix.graph.nodes[g[n]].kind == NodeKind::Edge && !dependents.contains(&n))
            .collect();
        best_from(&others)
    })
}

/// A fleet-shaped graph for benchmarks and tests: sites → edges → routes →
/// upstreams → endpoints, endpoints shared across sites; about `nodes` nodes
/// and `links` links, the same for the same `seed`.
pub fn generate(nodes: usize, links: usize, seed: u64) -> Graph {
    use crate::model::{GraphLink, GraphNode};
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let endpoints = (nodes / 5).max(1);
    let sites = (nodes / 500).max(2);
    let edges = (nodes / 50).max(sites);
    let routes = (nodes - endpoints - sites - edges) / 3;
    let upstreams = nodes
        .saturating_sub(endpoints + sites + edges + routes)
        .max(1);
    let mut g = Graph::default();
    let mut add = |id: String, kind: NodeKind, site: Option<String>| {
        g.nodes.push(GraphNode {
            label: id.clone(),
            id,
            kind,
            site,
            stats: Stats::default(),
        });
    };
    for s in 0..sites {
        add(format!("site:s{s}"), NodeKind::Site, Some(format!("s{s}")));
    }
    for e in 0..edges {
        add(
            format!("edge:e{e}"),
            NodeKind::Edge,
            Some(format!("s{}", e % sites)),
        );
    }
    for r in 0..routes {
        add(
            format!("route:e{}/r{r}", r % edges),
            NodeKind::Route,
            Some(format!("s{}", (r % edges) % sites)),
        );
    }
    for u in 0..upstreams {
        add(
            format!("upstream:e{}/u{u}", u % edges),
            NodeKind::Upstream,
            Some(format!("s{}", (u % edges) % sites)),
        );
    }
    for p in 0..endpoints {
        add(
            format!(
                "endpoint:10.{}.{}.{}:80",
                p >> 16 & 255,
                p >> 8 & 255,
                p & 255
            ),
            NodeKind::Endpoint,
            None,
        );
    }
    let link = |from: &str, to: &str| GraphLink {
        from: from.to_string(),
        to: to.to_string(),
        stats: Stats {
            latency_ms: 1.0,
            ..Stats::default()
        },
    };
    for e in 0..edges {
        g.links
            .push(link(&format!("site:s{}", e % sites), &format!("edge:e{e}")));
    }
    for r in 0..routes {
        g.links.push(link(
            &format!("edge:e{}", r % edges),
            &format!("route:e{}/r{r}", r % edges),
        ));
    }
    let mut u = 0;
    while g.links.len() < links {
        let r = (next() as usize) % routes.max(1);
        let up = (next() as usize) % upstreams;
        g.links.push(link(
            &format!("route:e{}/r{r}", r % edges),
            &format!("upstream:e{}/u{up}", up % edges),
        ));
        let p = (next() as usize) % endpoints;
        let uu = u % upstreams;
        g.links.push(link(
            &format!("upstream:e{}/u{uu}", uu % edges),
            &format!(
                "endpoint:10.{}.{}.{}:80",
                p >> 16 & 255,
                p >> 8 & 255,
                p & 255
            ),
        ));
        u += 1;
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GraphLink, GraphNode};

    fn graph(nodes: &[(&str, NodeKind, Option<&str>)], links: &[(&str, &str)]) -> Graph {
        Graph {
            nodes: nodes
                .iter()
                .map(|(id, kind, site)| GraphNode {
                    id: id.to_string(),
                    kind: *kind,
                    label: id.to_string(),
                    site: site.map(String::from),
                    stats: Stats::default(),
                })
                .collect(),
            links: links
                .iter()
                .map(|(a, b)| GraphLink {
                    from: a.to_string(),
                    to: b.to_string(),
                    stats: Stats::default(),
                })
                .collect(),
        }
    }

    fn down(g: &mut Graph, id: &str) {
        let n = g.nodes.iter_mut().find(|n| n.id == id).expect("node");
        n.stats.up = false;
        n.stats.circuit = Circuit::Open;
    }

    use NodeKind::*;

    /// Two sites whose edges share one endpoint; each site also has its own.
    fn two_sites() -> Graph {
        graph(
            &[
                ("site:eu", Site, Some("eu")),
                ("site:us", Site, Some("us")),
                ("edge:a", Edge, Some("eu")),
                ("edge:b", Edge, Some("us")),
                ("route:a/r", Route, Some("eu")),
                ("route:b/r", Route, Some("us")),
                ("upstream:a/u", Upstream, Some("eu")),
                ("upstream:b/u", Upstream, Some("us")),
                ("upstream:a/v", Upstream, Some("eu")),
                ("endpoint:shared", Endpoint, None),
                ("endpoint:a-own", Endpoint, None),
            ],
            &[
                ("site:eu", "edge:a"),
                ("site:us", "edge:b"),
                ("edge:a", "route:a/r"),
                ("edge:b", "route:b/r"),
                ("route:a/r", "upstream:a/u"),
                ("route:a/r", "upstream:a/v"),
                ("route:b/r", "upstream:b/u"),
                ("upstream:a/u", "endpoint:shared"),
                ("upstream:b/u", "endpoint:shared"),
                ("upstream:a/v", "endpoint:a-own"),
            ],
        )
    }

    #[test]
    fn a_chain_is_all_single_points_of_failure() {
        let g = graph(
            &[
                ("a", Edge, None),
                ("b", Route, None),
                ("c", Upstream, None),
                ("d", Endpoint, None),
            ],
            &[("a", "b"), ("b", "c"), ("c", "d")],
        );
        let a = analyse(&g, &Thresholds::default());
        assert_eq!(a.articulation_points, ["b", "c"]);
        assert_eq!(a.bridges.len(), 3);
        assert_eq!(a.degree["b"], 2);
        assert!(
            a.betweenness["b"] > 0.6 && a.betweenness["a"] == 0.0,
            "{:?}",
            a.betweenness
        );
    }

    #[test]
    fn a_diamond_has_no_single_point_of_failure() {
        let g = graph(
            &[
                ("r", Route, None),
                ("u1", Upstream, None),
                ("u2", Upstream, None),
                ("e", Endpoint, None),
            ],
            &[("r", "u1"), ("r", "u2"), ("u1", "e"), ("u2", "e")],
        );
        let a = analyse(&g, &Thresholds::default());
        assert!(a.articulation_points.is_empty());
        assert!(a.bridges.is_empty());
    }

    #[test]
    fn a_shared_endpoint_joins_sites_and_its_failure_spreads() {
        let mut g = two_sites();
        let a = analyse(&g, &Thresholds::default());
        assert!(a
            .articulation_points
            .contains(&"endpoint:shared".to_string()));
        assert!(a.colours.values().all(|c| *c == Colour::Green));
        assert!(a.routing_hints.is_empty());

        down(&mut g, "endpoint:shared");
        let a = analyse(&g, &Thresholds::default());
        assert_eq!(a.colours["endpoint:shared"], Colour::Red);
        assert_eq!(a.colours["upstream:a/u"], Colour::Red);
        assert_eq!(a.colours["upstream:b/u"], Colour::Red);
        assert_eq!(
            a.colours["route:b/r"],
            Colour::Red,
            "its only upstream is red"
        );
        assert_eq!(
            a.colours["route:a/r"],
            Colour::Yellow,
            "one of two upstreams is red"
        );
        assert_eq!(a.colours["edge:b"], Colour::Red);
        assert_eq!(a.colours["edge:a"], Colour::Yellow);
        assert_eq!(a.routing_hints.len(), 1);
        let hint = &a.routing_hints[0];
        assert_eq!(hint.endpoint, "shared");
        assert_eq!(hint.seen_by, ["eu", "us"]);
        assert!(hint.reason.contains("circuit open"), "{}", hint.reason);

        let r = blast_radius(&g, "endpoint:shared").expect("known node");
        assert_eq!(r.routes, ["route:a/r", "route:b/r"]);
        assert_eq!(r.edges, ["edge:a", "edge:b"]);
        assert_eq!(r.sites, ["site:eu", "site:us"]);
        // Site us loses everything; route a/r keeps its other upstream.
        assert!(r.fully_cut.contains(&"route:b/r".to_string()));
        assert!(r.fully_cut.contains(&"site:us".to_string()));
        assert!(!r.fully_cut.contains(&"route:a/r".to_string()));
        assert!(blast_radius(&g, "nope").is_none());
    }

    #[test]
    fn paths_avoid_red_nodes_and_failover_finds_a_healthy_twin() {
        let mut g = two_sites();
        down(&mut g, "endpoint:shared");
        let a = analyse(&g, &Thresholds::default());
        assert_eq!(
            shortest_healthy_path(&g, &a.colours, "edge:a", "endpoint:a-own").expect("path"),
            ["edge:a", "route:a/r", "upstream:a/v", "endpoint:a-own"]
        );
        assert_eq!(
            shortest_healthy_path(&g, &a.colours, "edge:a", "endpoint:shared"),
            None
        );
        let f = failover(&g, &a.colours, "endpoint:shared").expect("failover");
        assert_eq!(f.use_node, "endpoint:a-own");
        assert_eq!(f.path.first().map(String::as_str), Some("edge:a"));
        assert_eq!(failover(&g, &a.colours, "endpoint:a-own"), None, "not red");
    }

    #[test]
    fn sampled_betweenness_tracks_the_exact_one() {
        let g = generate(600, 1_500, 7);
        let ix = Indexed::new(&g);
        let u = ix.undirected();
        let exact: Vec<f64> =
            rustworkx_core::centrality::betweenness_centrality(&u, false, true, usize::MAX)
                .into_iter()
                .map(|s| s.unwrap_or(0.0))
                .collect();
        let sampled = sampled_betweenness(&u, u.node_count());
        for (e, s) in exact.iter().zip(&sampled) {
            assert!((e - s).abs() < 1e-9, "all pivots = exact: {e} vs {s}");
        }
        let top = |v: &[f64]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        let estimate = sampled_betweenness(&u, 64);
        assert!(estimate[top(&exact).expect("nodes")] > 0.0);
    }

    #[test]
    fn generated_graphs_have_the_asked_size() {
        let g = generate(10_000, 50_000, 1);
        assert!(
            (9_000..=11_000).contains(&g.nodes.len()),
            "{}",
            g.nodes.len()
        );
        assert!(
            (49_000..=51_000).contains(&g.links.len()),
            "{}",
            g.links.len()
        );
        assert_eq!(g, generate(10_000, 50_000, 1));
    }
}
