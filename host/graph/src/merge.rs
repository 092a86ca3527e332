//! The coordinator's meta-graph: every edge's local graph, joined at the
//! nodes they share (sites, endpoints, models).

use std::collections::BTreeMap;

use crate::model::{Circuit, EdgeReport, Graph, GraphLink, GraphNode, NodeKind, Stats};

/// Accumulates the stats several reports give one node or link.
#[derive(Default)]
struct Acc {
    rps: f64,
    weighted_error: f64,
    weighted_latency: f64,
    plain_error: f64,
    plain_latency: f64,
    samples: u32,
    circuit: Circuit,
    /// Some report saw it down (circuit open or not up).
    down: bool,
    /// Only reports of dead edges mention it.
    live_samples: u32,
}

fn worse(a: Circuit, b: Circuit) -> Circuit {
    let rank = |c| match c {
        Circuit::Closed => 0,
        Circuit::HalfOpen => 1,
        Circuit::Open => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

impl Acc {
    fn add(&mut self, s: &Stats, live: bool) {
        if !live {
            return;
        }
        self.live_samples += 1;
        self.rps += s.requests_per_s;
        self.weighted_error += s.error_rate * s.requests_per_s;
        self.weighted_latency += s.latency_ms * s.requests_per_s;
        self.plain_error += s.error_rate;
        self.plain_latency += s.latency_ms;
        self.samples += 1;
        self.circuit = worse(self.circuit, s.circuit);
        self.down |= !s.up || s.circuit == Circuit::Open;
    }

    fn stats(&self) -> Stats {
        if self.live_samples == 0 {
            return Stats {
                up: false,
                ..Stats::default()
            };
        }
        let (error_rate, latency_ms) = if self.rps > 0.0 {
            (
                self.weighted_error / self.rps,
                self.weighted_latency / self.rps,
            )
        } else {
            let n = f64::from(self.samples.max(1));
            (self.plain_error / n, self.plain_latency / n)
        };
        Stats {
            requests_per_s: self.rps,
            error_rate,
            latency_ms,
            circuit: self.circuit,
            up: !self.down,
        }
    }
}

/// Merges the latest report of every edge; `true` marks an edge live (it
/// reported within the coordinator's TTL).
///
/// - One `site:{site}` node per site, linked to its edges.
/// - Nodes several reports share (endpoints, models) appear once: requests/s
///   summed, error rate and latency averaged weighted by requests/s, the
///   worst circuit. A shared node is **down when any live edge sees it down**:
///   an endpoint failing from one site is a warning for every site that uses
///   it (that is what the routing hints carry).
/// - A dead edge's node is down and so are its own routes and upstreams;
///   shared nodes only count live reports (one only dead edges mention is down).
///
/// Output is sorted (nodes by id, links by endpoints), so equal input gives
/// equal output.
pub fn merge(reports: &[(EdgeReport, bool)]) -> Graph {
    let mut nodes: BTreeMap<String, (GraphNode, Acc)> = BTreeMap::new();
    let mut links: BTreeMap<(String, String), (GraphLink, Acc)> = BTreeMap::new();
    for (report, live) in reports {
        let site_id = format!("site:{}", report.site);
        let site = nodes.entry(site_id.clone()).or_insert_with(|| {
            (
                GraphNode {
                    id: site_id.clone(),
                    kind: NodeKind::Site,
                    label: report.site.clone(),
                    site: Some(report.site.clone()),
                    stats: Stats::default(),
                },
                Acc::default(),
            )
        });
        // A site is up while one of its edges is.
        site.1.add(&Stats::default(), *live);
        let edge_id = format!("edge:{}", report.node);
        let link = links
            .entry((site_id.clone(), edge_id.clone()))
            .or_insert_with(|| {
                (
                    GraphLink {
                        from: site_id.clone(),
                        to: edge_id.clone(),
                        stats: Stats::default(),
                    },
                    Acc::default(),
                )
            });
        link.1.add(&Stats::default(), *live);
        let mut saw_edge_node = false;
        for n in &report.graph.nodes {
            saw_edge_node |= n.id == edge_id;
            let entry = nodes
                .entry(n.id.clone())
                .or_insert_with(|| (n.clone(), Acc::default()));
            entry.1.add(&n.stats, *live);
        }
        if !saw_edge_node {
            let entry = nodes.entry(edge_id.clone()).or_insert_with(|| {
                (
                    GraphNode {
                        id: edge_id.clone(),
                        kind: NodeKind::Edge,
                        label: report.node.clone(),
                        site: Some(report.site.clone()),
                        stats: Stats::default(),
                    },
                    Acc::default(),
                )
            });
            entry.1.add(&Stats::default(), *live);
        }
        for l in &report.graph.links {
            let entry = links
                .entry((l.from.clone(), l.to.clone()))
                .or_insert_with(|| (l.clone(), Acc::default()));
            entry.1.add(&l.stats, *live);
        }
    }
    Graph {
        nodes: nodes
            .into_values()
            .map(|(mut n, acc)| {
                n.stats = acc.stats();
                n
            })
            .collect(),
        links: links
            .into_values()
            .filter(|(l, _)| l.from != l.to)
            .map(|(mut l, acc)| {
                l.stats = acc.stats();
                l
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind, stats: Stats) -> GraphNode {
        GraphNode {
            id: id.into(),
            kind,
            label: id.into(),
            site: None,
            stats,
        }
    }

    fn link(from: &str, to: &str) -> GraphLink {
        GraphLink {
            from: from.into(),
            to: to.into(),
            stats: Stats::default(),
        }
    }

    fn report(node_id: &str, site: &str, endpoint: Stats) -> EdgeReport {
        let edge = format!("edge:{node_id}");
        let route = format!("route:{node_id}/r");
        let up = format!("upstream:{node_id}/u");
        EdgeReport {
            node: node_id.into(),
            site: site.into(),
            seq: 1,
            boot: "b".into(),
            sent_at_ms: 0,
            graph: Graph {
                nodes: vec![
                    node(&edge, NodeKind::Edge, Stats::default()),
                    node(&route, NodeKind::Route, Stats::default()),
                    node(&up, NodeKind::Upstream, Stats::default()),
                    node("endpoint:10.0.0.1:80", NodeKind::Endpoint, endpoint),
                ],
                links: vec![
                    link(&edge, &route),
                    link(&route, &up),
                    link(&up, "endpoint:10.0.0.1:80"),
                ],
            },
            revocation_list_version: None,
            components: Default::default(),
        }
    }

    fn stats(rps: f64, error_rate: f64, latency_ms: f64, circuit: Circuit) -> Stats {
        Stats {
            requests_per_s: rps,
            error_rate,
            latency_ms,
            circuit,
            up: true,
        }
    }

    #[test]
    fn shared_endpoints_meet_and_stats_merge() {
        let g = merge(&[
            (
                report("a", "eu", stats(30.0, 0.0, 10.0, Circuit::Closed)),
                true,
            ),
            (
                report("b", "us", stats(10.0, 0.4, 50.0, Circuit::HalfOpen)),
                true,
            ),
        ]);
        let ep = g.node("endpoint:10.0.0.1:80").expect("shared endpoint");
        assert_eq!(ep.stats.requests_per_s, 40.0);
        assert!((ep.stats.error_rate - 0.1).abs() < 1e-9, "weighted by rps");
        assert!((ep.stats.latency_ms - 20.0).abs() < 1e-9);
        assert_eq!(ep.stats.circuit, Circuit::HalfOpen);
        assert!(ep.stats.up);
        assert_eq!(
            g.nodes.iter().filter(|n| n.kind == NodeKind::Site).count(),
            2
        );
        assert!(g
            .links
            .iter()
            .any(|l| l.from == "site:eu" && l.to == "edge:a"));
        // 2 sites + 2×(edge, route, upstream) + 1 shared endpoint.
        assert_eq!(g.nodes.len(), 9);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn one_live_edge_seeing_it_down_makes_it_down_and_dead_edges_go_down() {
        let mut open = stats(0.0, 1.0, 0.0, Circuit::Open);
        open.up = false;
        let g = merge(&[
            (report("a", "eu", open), true),
            (report("b", "us", Stats::default()), true),
        ]);
        assert!(!g.node("endpoint:10.0.0.1:80").expect("endpoint").stats.up);

        let g = merge(&[
            (report("a", "eu", open), false),
            (report("b", "us", Stats::default()), true),
        ]);
        assert!(
            g.node("endpoint:10.0.0.1:80").expect("endpoint").stats.up,
            "a dead edge's view does not count"
        );
        assert!(!g.node("edge:a").expect("edge").stats.up);
        assert!(!g.node("route:a/r").expect("route").stats.up);
        assert!(g.node("site:us").expect("site").stats.up);
        assert!(
            !g.node("site:eu").expect("site").stats.up,
            "no live edge left in the site"
        );
    }
}
