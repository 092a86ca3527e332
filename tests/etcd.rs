//! The coordinator's etcd store against a real etcd (Debian `etcd-server`)
//! that the test starts on loopback ports with a temp data dir: reports
//! stored under a key with a lease, two coordinator replicas seeing the same
//! graph, a restarted replica losing nothing, and a dead edge's key deleted
//! by its lease with no coordinator running.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::coordinator::{edge_live, edge_report, wait_for, CoordinatorProcess, EtcdServer};
use support::{base_config, Gateway, Upstream};

const PREFIX: &str = "/edgegate-test";

fn etcd_config(etcd: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nedge_ttl_ms = 1000\nremove_after_ms = 5000\n\
         [store]\nbackend = \"etcd\"\nendpoints = [\"{etcd}\"]\nprefix = \"{PREFIX}\"\ntimeout_ms = 2000\n"
    )
}

async fn sees_both(c: &CoordinatorProcess) -> bool {
    let g = c.graph().await;
    edge_live(&g, "edge-real") == Some(true) && edge_live(&g, "edge-synth") == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_view_restarts_lose_nothing_and_leases_remove_dead_edges() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = etcd_config(&etcd.client_url);
    let a = CoordinatorProcess::start_with(dir.path(), "a.toml", &config);
    let b = CoordinatorProcess::start_with(dir.path(), "b.toml", &config);

    // A real edge reports to replica A every 200 ms.
    let upstream = Upstream::start_named("etcd-upstream");
    let edge = Gateway::start(&(base_config(upstream.addr)
        + &format!(
            "[node]\nid = \"edge-real\"\nsite = \"eu\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 200\n\
             [[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"backend\"\n",
            a.addr
        )));
    assert_eq!(reqwest::get(edge.url("/x")).await.unwrap().status(), 200);

    // Another edge's first report goes to replica B; later ones to A.
    let (status, answer) = b
        .report(&edge_report("edge-synth", "us", 1, "10.9.9.9:80", true))
        .await;
    assert_eq!(status, 200, "{answer}");
    let a_url = a.url("/v1/reports");
    let reporter = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for seq in 2.. {
            let _ = client
                .post(&a_url)
                .json(&edge_report("edge-synth", "us", seq, "10.9.9.9:80", true))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // Each replica sees what was written through the other.
    wait_for("both replicas see both edges live", 20, || async {
        sees_both(&a).await && sees_both(&b).await
    })
    .await;
    let (stored, lease) = etcd
        .get(&format!("{PREFIX}/edges/edge-synth"))
        .await
        .expect("edge-synth's report is a key in etcd");
    assert_eq!(stored["report"]["site"], "us", "{stored}");
    assert_ne!(lease, 0, "the key is attached to a lease");
    let leased_at = std::time::Instant::now();
    let (real, _) = etcd
        .get(&format!("{PREFIX}/edges/edge-real"))
        .await
        .expect("edge-real's report is a key in etcd");
    assert!(
        real["report"]["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == format!("endpoint:{}", upstream.addr)),
        "{real}"
    );

    // Replica B dies without a word and comes back: it lost nothing.
    b.kill();
    let b = CoordinatorProcess::start_with(dir.path(), "b.toml", &config);
    let g = b.graph().await;
    assert!(
        edge_live(&g, "edge-real").is_some() && edge_live(&g, "edge-synth").is_some(),
        "the restarted replica lost an edge: {g}"
    );
    let edges = |g: &Value| -> Vec<String> {
        let mut names: Vec<String> = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["node"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    assert_eq!(edges(&g), edges(&a.graph().await));

    // Reports renew the lease: past its 6 s TTL the key is still there,
    // on the same lease.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(leased_at.elapsed())).await;
    let (_, still) = etcd
        .get(&format!("{PREFIX}/edges/edge-synth"))
        .await
        .expect("a reporting edge keeps its key");
    assert_eq!(
        still, lease,
        "reports renew the lease instead of replacing it"
    );

    // Every edge and every coordinator stops: the leases delete the keys.
    reporter.abort();
    drop(edge);
    a.kill();
    b.kill();
    for node in ["edge-real", "edge-synth"] {
        let key = format!("{PREFIX}/edges/{node}");
        wait_for(&format!("the lease to delete {key}"), 20, || async {
            etcd.get(&key).await.is_none()
        })
        .await;
    }
    let c = CoordinatorProcess::start_with(dir.path(), "c.toml", &config);
    let g = c.graph().await;
    assert_eq!(g["edges"], Value::Array(Vec::new()), "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_or_a_bad_url_stops_the_start_with_a_named_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::coordinator::free_port();
    let unreachable = format!(
        "listen = \"127.0.0.1:0\"\n[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:{port}\"]\ntimeout_ms = 500\n"
    );
    let err = CoordinatorProcess::try_start(dir.path(), "down.toml", &unreachable)
        .err()
        .expect("no coordinator without its store");
    assert!(
        err.contains(&format!(
            "key `store`: etcd at http://127.0.0.1:{port} is not reachable"
        )),
        "{err}"
    );

    let bad = "[store]\nbackend = \"etcd\"\nendpoints = [\"127.0.0.1:2379\"]\n";
    let err = CoordinatorProcess::try_start(dir.path(), "bad.toml", bad)
        .err()
        .expect("refused");
    assert!(
        err.contains(
            "bad.toml: key `store.endpoints`: `127.0.0.1:2379` is not an http://host:port URL"
        ),
        "{err}"
    );
}
