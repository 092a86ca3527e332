//! Health graph end to end: a coordinator and two edge processes in
//! different sites on loopback, with real upstreams. An upstream both sites
//! use dies: the edge that sees it fail reports it, it turns red at the
//! coordinator, and the routing hint reaches the other site. The coordinator
//! stops: the edges keep serving; it comes back: they resync, and its
//! snapshot kept every site meanwhile.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::coordinator::{colour, edge_live, free_port, wait_for, CoordinatorProcess};
use support::{base_config, Gateway, Upstream};

fn edge_config(
    shared: SocketAddr,
    local: SocketAddr,
    node: &str,
    site: &str,
    coordinator: SocketAddr,
) -> String {
    base_config(shared)
        + &format!(
            "[upstreams.local]\nendpoints = [\"{local}\"]\n\
             [node]\nid = \"{node}\"\nsite = \"{site}\"\ncoordinator = \"http://{coordinator}\"\nreport_interval_ms = 200\n\
             [[routes]]\nname = \"local\"\npath_prefix = \"/local\"\nupstream = \"local\"\n\
             [[routes]]\nname = \"shared\"\npath_prefix = \"/\"\nupstream = \"backend\"\n"
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_turns_red_and_the_hint_reaches_the_other_site() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = CoordinatorProcess::start(dir.path(), port);
    let mut shared = Upstream::start_named("shared");
    let local_a = Upstream::start_named("local-a");
    let local_b = Upstream::start_named("local-b");
    let a = Gateway::start(&edge_config(
        shared.addr,
        local_a.addr,
        "edge-a",
        "eu",
        coordinator.addr,
    ));
    let b = Gateway::start(&edge_config(
        shared.addr,
        local_b.addr,
        "edge-b",
        "us",
        coordinator.addr,
    ));
    let client = reqwest::Client::new();
    for gw in [&a, &b] {
        assert_eq!(client.get(gw.url("/x")).send().await.unwrap().status(), 200);
        assert_eq!(
            client.get(gw.url("/local")).send().await.unwrap().status(),
            200
        );
    }
    let shared_id = format!("endpoint:{}", shared.addr);
    wait_for(
        "both edges live and the shared endpoint green",
        15,
        || async {
            let g = coordinator.graph().await;
            edge_live(&g, "edge-a") == Some(true)
                && edge_live(&g, "edge-b") == Some(true)
                && colour(&g, &shared_id).as_deref() == Some("green")
        },
    )
    .await;
    let g = coordinator.graph().await;
    assert!(colour(&g, "site:eu").is_some() && colour(&g, "site:us").is_some());

    // The shared upstream dies; only edge A sends it traffic and sees it fail.
    shared.stop();
    for _ in 0..8 {
        let status = client.get(a.url("/x")).send().await.unwrap().status();
        assert_eq!(status, 502);
    }
    wait_for("the shared endpoint red at the coordinator", 15, || async {
        let g = coordinator.graph().await;
        colour(&g, &shared_id).as_deref() == Some("red")
            && colour(&g, "upstream:edge-a/backend").as_deref() == Some("red")
    })
    .await;
    let radius: Value = reqwest::get(format!(
        "http://{}/v1/nodes/{}/blast-radius",
        coordinator.addr, shared_id
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let routes = radius["blast_radius"]["routes"].as_array().unwrap();
    assert!(
        routes.contains(&Value::from("route:edge-a/shared")),
        "{radius}"
    );
    assert!(
        routes.contains(&Value::from("route:edge-b/shared")),
        "{radius}"
    );
    assert!(
        !routes.contains(&Value::from("route:edge-a/local")),
        "{radius}"
    );

    // Edge B never called it since, yet learns to avoid it.
    let shared_address = shared.addr.to_string();
    wait_for("the routing hint at edge B", 15, || async {
        let h = b.health().await;
        h["hints"].as_array().is_some_and(|hints| {
            hints
                .iter()
                .any(|x| x["endpoint"] == shared_address.as_str())
        })
    })
    .await;
    assert!(
        b.logs()
            .contains("coordinator hint: avoiding this endpoint"),
        "{}",
        b.logs()
    );

    // The coordinator stops: both edges keep serving what is healthy.
    coordinator.stop();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for gw in [&a, &b] {
        assert_eq!(
            client.get(gw.url("/local")).send().await.unwrap().status(),
            200
        );
        let h = gw.health().await;
        assert_eq!(h["coordinator"]["connected"], false, "{h}");
    }
    assert!(a.logs().contains("coordinator unreachable"));

    // It comes back on the same port and snapshot: both sites are there at
    // once, and the edges resync.
    let coordinator = CoordinatorProcess::start(dir.path(), port);
    let g = coordinator.graph().await;
    assert!(
        edge_live(&g, "edge-a").is_some() && edge_live(&g, "edge-b").is_some(),
        "snapshot lost a site: {g}"
    );
    let seq_before = |g: &Value, node: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"] == node)
            .unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let (sa, sb) = (seq_before(&g, "edge-a"), seq_before(&g, "edge-b"));
    wait_for("both edges resynced", 40, || async {
        let g = coordinator.graph().await;
        edge_live(&g, "edge-a") == Some(true)
            && edge_live(&g, "edge-b") == Some(true)
            && seq_before(&g, "edge-a") > sa
            && seq_before(&g, "edge-b") > sb
    })
    .await;
    drop(local_a);
    drop(local_b);
}

/// Runs headless Chromium on `url`: the DOM after the page's scripts ran, and
/// a screenshot kept under target/test-artifacts/.
fn chromium(url: &str, screenshot: &str) -> String {
    let dir = support::repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let base = |extra: &[String]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1400,700",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("running chromium (Debian package `chromium`; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shot = dir.join(screenshot);
    base(&[format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    base(&["--dump-dom".to_string()])
}

fn node_colour_in_dom(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("data-id=\"{id}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[dom[..at].rfind('<')?..tag_end];
    let c = tag.split("data-colour=\"").nth(1)?;
    Some(c[..c.find('"')?].to_string())
}

/// The dashboard, in headless Chromium: the page loads from the coordinator
/// alone, draws the nodes of the known graph, and shows the endpoint red
/// once its upstream died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_graph_and_a_dead_upstream_red() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = CoordinatorProcess::start(dir.path(), port);
    let mut upstream = Upstream::start_named("dash");
    let local = Upstream::start_named("dash-local");
    let edge = Gateway::start(&edge_config(
        upstream.addr,
        local.addr,
        "edge-d",
        "ap",
        coordinator.addr,
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(edge.url("/x")).send().await.unwrap().status(),
        200
    );
    let endpoint = format!("endpoint:{}", upstream.addr);
    wait_for("the graph at the coordinator", 15, || async {
        colour(&coordinator.graph().await, &endpoint).as_deref() == Some("green")
    })
    .await;

    let url = format!("http://{}/", coordinator.addr);
    let dom = chromium(&url, "dashboard-green.png");
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page did not draw: {dom}"
    );
    for id in [
        "site:ap",
        "edge:edge-d",
        "route:edge-d/shared",
        "upstream:edge-d/backend",
        endpoint.as_str(),
    ] {
        assert!(dom.contains(&format!("data-id=\"{id}\"")), "{id} not drawn");
    }
    assert_eq!(
        node_colour_in_dom(&dom, &endpoint).as_deref(),
        Some("green")
    );

    upstream.stop();
    for _ in 0..8 {
        let _ = client.get(edge.url("/x")).send().await.unwrap();
    }
    wait_for("the endpoint red at the coordinator", 15, || async {
        colour(&coordinator.graph().await, &endpoint).as_deref() == Some("red")
    })
    .await;
    let dom = chromium(&url, "dashboard-red.png");
    assert_eq!(
        node_colour_in_dom(&dom, &endpoint).as_deref(),
        Some("red"),
        "{dom}"
    );
    assert_eq!(
        node_colour_in_dom(&dom, "upstream:edge-d/backend").as_deref(),
        Some("red")
    );
    drop(local);
}

/// LLM routes: the models the routing policy sent requests to are nodes of
/// the edge's graph (route → model, with the request rate and failures of
/// that model's upstream step), and of the coordinator's meta-graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_routes_show_their_models_in_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(dir.path(), free_port());
    let provider = Upstream::start_named("provider");
    let config = format!(
        "{}{}{}[node]\nid = \"edge-m\"\nsite = \"eu\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 200\n",
        base_config(provider.addr),
        support::policy(
            "routing",
            "routing",
            "capabilities = [\"health\"]\nrequest_body = \"buffer\"\n[policies.routing.config]\nllm = { models = { \"gpt-4o\" = [\"backend\"] } }\n",
        ),
        support::route("chat", "/v1", &["routing"]),
        coordinator.addr,
    );
    let edge = Gateway::start(&config);
    let client = reqwest::Client::new();
    // An unknown model is refused by the policy: never counted as a model.
    let refused = client
        .post(edge.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-2", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let chat = || async {
        let resp = client
            .post(edge.url("/v1/chat/completions"))
            .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    };
    // Traffic goes on while we look: each sample shows the rate since the last.
    wait_for(
        "model:gpt-4o in the edge's graph with traffic",
        15,
        || async {
            chat().await;
            edge.health().await["graph"]["links"]
                .as_array()
                .is_some_and(|links| {
                    links.iter().any(|l| {
                        l["from"] == "route:edge-m/chat"
                            && l["to"] == "model:gpt-4o"
                            && l["stats"]["requests_per_s"].as_f64() > Some(0.0)
                    })
                })
        },
    )
    .await;
    let seen = edge.health().await;
    let nodes = seen["graph"]["nodes"].as_array().unwrap();
    let model = nodes.iter().find(|n| n["id"] == "model:gpt-4o").unwrap();
    assert_eq!(model["kind"], "model", "{model}");
    assert!(
        !nodes.iter().any(|n| n["id"] == "model:gpt-2"),
        "a refused model is not a node"
    );
    wait_for("model:gpt-4o green at the coordinator", 15, || async {
        colour(&coordinator.graph().await, "model:gpt-4o").as_deref() == Some("green")
    })
    .await;
}

/// `[fleet]` at the coordinator: every edge learns the revocation list
/// version and component digests the fleet should run; an edge that differs
/// says so in `/v1/health` and its log, and the coordinator flags it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_that_differ_from_the_fleet_are_flagged_on_both_sides() {
    // The fleet names the signed content, as `edgegate verify` prints it.
    let noop = std::fs::read(support::component("noop")).unwrap();
    let noop_digest = edgegate_trust::content_digest(&noop).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start_with(
        dir.path(),
        "fleet.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n[store]\nbackend = \"embedded\"\npath = \"state.json\"\n\
             [fleet]\nrevocation_list_version = 3\n\
             components = {{ noop = \"{}\", headers = \"{}\" }}\n",
            noop_digest.to_uppercase(),
            "ab".repeat(32)
        ),
    );
    let upstream = Upstream::start_named("fleet");
    let edge = Gateway::start(&format!(
        "{}{}{}[node]\nid = \"edge-f\"\nsite = \"eu\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 200\n",
        base_config(upstream.addr),
        support::policy("noop", "noop", ""),
        support::route("all", "/", &["noop"]),
        coordinator.addr,
    ));
    // The edge serves noop at the fleet's digest (compared without case), has
    // no headers policy (not compared) and holds no revocation list.
    let expected = Value::from(vec![
        "revocation list: holds none, the fleet is at version 3",
    ]);
    wait_for("the drift in the edge's /v1/health", 15, || async {
        let h = edge.health().await;
        h["drift"] == expected
    })
    .await;
    assert!(
        edge.logs()
            .contains("this node differs from the fleet's desired state"),
        "{}",
        edge.logs()
    );
    wait_for("the drift at the coordinator", 15, || async {
        let g = coordinator.graph().await;
        g["edges"].as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["node"] == "edge-f" && e["drift"] == expected)
        })
    })
    .await;

    // A report may speak only for its own edge.
    let mut forged = support::coordinator::edge_report("edge-x", "eu", 1, "10.0.0.1:80", true);
    forged["graph"]["nodes"][1]["id"] = Value::from("route:edge-f/all");
    let (status, answer) = coordinator.report(&forged).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["message"],
        "report of `edge-x`: graph: node `route:edge-f/all` (Route) is not one edge `edge-x` may report"
    );

    let refused = CoordinatorProcess::try_start(
        dir.path(),
        "bad-fleet.toml",
        "listen = \"127.0.0.1:0\"\n[fleet]\ncomponents = { auth = \"sha256:1234\" }\n",
    )
    .err()
    .expect("a digest that is not hex sha256 is refused");
    assert!(
        refused.contains("bad-fleet.toml: key `fleet.components.auth`: must be the hex sha256"),
        "{refused}"
    );
}
