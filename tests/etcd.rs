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

/// The mod revision of `key` as member `url` has it (a serializable read:
/// it answers without a leader).
async fn mod_revision(http: &reqwest::Client, url: &str, key: &str) -> Option<i64> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let answer: Value = http
        .post(format!("{url}/v3/kv/range"))
        .json(&serde_json::json!({ "key": b64.encode(key), "serializable": true }))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer["kvs"][0]["mod_revision"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_kill_shows_no_live_edge_down_and_writes_move_on_within_an_election() {
    let mut cluster = support::coordinator::EtcdCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster
        .client_urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "listen = \"127.0.0.1:0\"\nedge_ttl_ms = 3000\nremove_after_ms = 30000\n\
         [store]\nbackend = \"etcd\"\nendpoints = [{endpoints}]\nprefix = \"{PREFIX}\"\ntimeout_ms = 2000\n"
    );
    let a = CoordinatorProcess::start_with(dir.path(), "a.toml", &config);
    let b = CoordinatorProcess::start_with(dir.path(), "b.toml", &config);
    let upstream = Upstream::start();
    let edge = |id: &str, to: &CoordinatorProcess| {
        Gateway::start(&(base_config(upstream.addr)
            + &format!(
                "[node]\nid = \"{id}\"\nsite = \"s\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 500\n",
                to.addr
            )))
    };
    let (_e1, _e2) = (edge("edge-1", &a), edge("edge-2", &b));
    let both_live =
        |g: &Value| edge_live(g, "edge-1") == Some(true) && edge_live(g, "edge-2") == Some(true);
    wait_for("both replicas to see both edges", 20, || async {
        both_live(&a.graph().await) && both_live(&b.graph().await)
    })
    .await;

    let leader = cluster.leader().await.expect("a leader");
    let survivor = cluster.client_urls[(leader + 1) % 3].clone();
    let http = reqwest::Client::new();
    // Watch both edges' keys change on a surviving member, and both replicas'
    // views, from a second before the kill to six seconds after it.
    let watch_until = std::time::Instant::now() + Duration::from_secs(7);
    let keys = {
        let (http, survivor) = (http.clone(), survivor.clone());
        tokio::spawn(async move {
            let mut last: Vec<(Option<i64>, std::time::Instant)> =
                vec![(None, std::time::Instant::now()); 2];
            let mut longest = Duration::ZERO;
            let mut changes: Vec<Vec<std::time::Instant>> = vec![Vec::new(); 2];
            while std::time::Instant::now() < watch_until {
                for (i, id) in ["edge-1", "edge-2"].iter().enumerate() {
                    let rev = mod_revision(&http, &survivor, &format!("{PREFIX}/edges/{id}")).await;
                    if rev.is_some() && rev != last[i].0 {
                        longest = longest.max(last[i].1.elapsed());
                        last[i] = (rev, std::time::Instant::now());
                        changes[i].push(last[i].1);
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (longest, changes)
        })
    };
    let views = {
        let (a, b) = (a.url("/v1/graph"), b.url("/v1/graph"));
        let http = http.clone();
        tokio::spawn(async move {
            let mut down = Vec::new();
            while std::time::Instant::now() < watch_until {
                for (name, url) in [("a", &a), ("b", &b)] {
                    let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await else {
                        continue;
                    };
                    let Ok(g) = r.json::<Value>().await else {
                        continue;
                    };
                    for id in ["edge-1", "edge-2"] {
                        if edge_live(&g, id) == Some(false) {
                            down.push(format!("replica {name} showed {id} down"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            down
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(leader);
    let killed = std::time::Instant::now();
    // When the survivors have a new leader: etcd takes writes again from then.
    let elected = loop {
        if cluster.leader().await.is_some() {
            break std::time::Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "no new etcd leader"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let (longest_gap, changes) = keys.await.unwrap();
    let down = views.await.unwrap();
    // Reports come every 500 ms: the stall is what the longest gap between
    // two writes of one edge's key adds to that.
    let stall = longest_gap.saturating_sub(Duration::from_millis(500));
    // What the store adds to the election: from the new leader to each
    // edge's first write after it.
    let resumed: Vec<Duration> = changes
        .iter()
        .map(|c| {
            c.iter()
                .find(|t| **t >= elected)
                .map_or(Duration::MAX, |t| t.duration_since(elected))
        })
        .collect();
    eprintln!(
        "etcd leader kill: new leader after {:?}; longest gap between two writes of an edge's key {longest_gap:?} (write stall {stall:?}); writes after the election within {resumed:?}",
        elected.duration_since(killed)
    );
    let logs = || format!("replica a:\n{}\nreplica b:\n{}", a.logs(), b.logs());
    assert!(down.is_empty(), "{down:?}\n{}", logs());
    // Both replicas' writes went on as soon as etcd could take them: within
    // a report interval and one attempt's deadline of the new leader, with
    // room for this machine's noise. (A split vote can make the election
    // itself longer than an edge's TTL; that is etcd's time, not the store's.)
    assert!(
        resumed.iter().all(|r| *r < Duration::from_millis(1500)),
        "writes after the election within {resumed:?}\n{}",
        logs()
    );
    assert!(both_live(&a.graph().await) && both_live(&b.graph().await));
}
