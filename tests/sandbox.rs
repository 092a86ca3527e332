//! Hostile and failing guests: traps, endless loops, memory and stack exhaustion,
//! capability denial. None may take the process down; each follows `on_error`.

#![allow(clippy::unwrap_used)]

mod support;

use support::{base_config, policy, route, Gateway, Upstream};

/// A gateway with one route per (guest, on_error) pair, all on one upstream.
fn hostile_gateway(upstream: &Upstream, guests: &[(&str, &str, &str)]) -> Gateway {
    let mut config = base_config(upstream.addr);
    for (name, component, extra) in guests {
        config += &policy(name, component, extra);
        config += &route(name, &format!("/{name}"), &[name]);
    }
    Gateway::start(&config)
}

async fn failure_count(gw: &Gateway, policy: &str, kind: &str) -> u64 {
    let m = gw.metrics().await;
    support::metric(
        &m,
        "edgegate_policy_failures_total",
        &[("policy", policy), ("kind", kind)],
    )
    .unwrap_or(0)
}

#[tokio::test]
async fn trap_with_deny_is_503_and_upstream_untouched_with_allow_passes() {
    let upstream = Upstream::start();
    let gw = hostile_gateway(
        &upstream,
        &[
            ("trapdeny", "trap", "on_error = \"deny\""),
            ("trapallow", "trap", "on_error = \"allow\""),
        ],
    );
    let r = reqwest::get(gw.url("/trapdeny")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "policy_failed");
    assert_eq!(upstream.count(), 0, "deny must not contact the upstream");

    let r = reqwest::get(gw.url("/trapallow")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(upstream.count(), 1);
    assert_eq!(failure_count(&gw, "trapdeny", "trap").await, 1);
    assert_eq!(failure_count(&gw, "trapallow", "trap").await, 1);

    // The process and other requests are unharmed by traps.
    for _ in 0..20 {
        assert_eq!(
            reqwest::get(gw.url("/trapallow")).await.unwrap().status(),
            200
        );
    }
}

#[tokio::test]
async fn endless_loop_is_cut_off_by_the_epoch_deadline() {
    let upstream = Upstream::start();
    let gw = hostile_gateway(
        &upstream,
        &[
            ("spin", "spin", "timeout_ms = 50"),
            ("spinallow", "spin", "timeout_ms = 50\non_error = \"allow\""),
        ],
    );
    let r = reqwest::get(gw.url("/spin")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(upstream.count(), 0);
    let r = reqwest::get(gw.url("/spinallow")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(failure_count(&gw, "spin", "timeout").await, 1);
    assert_eq!(failure_count(&gw, "spinallow", "timeout").await, 1);
}

#[tokio::test]
async fn memory_and_stack_exhaustion_are_contained() {
    let upstream = Upstream::start();
    let gw = hostile_gateway(
        &upstream,
        &[
            ("oom", "oom", "memory_limit_bytes = 4194304"),
            ("stack", "stack", ""),
        ],
    );
    assert_eq!(reqwest::get(gw.url("/oom")).await.unwrap().status(), 503);
    assert_eq!(reqwest::get(gw.url("/stack")).await.unwrap().status(), 503);
    assert_eq!(failure_count(&gw, "oom", "oom").await, 1);
    assert_eq!(failure_count(&gw, "stack", "stack_overflow").await, 1);
    assert_eq!(upstream.count(), 0);
    assert_eq!(
        reqwest::get(gw.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn capabilities_are_denied_unless_granted() {
    let upstream = Upstream::start();
    let gw = hostile_gateway(
        &upstream,
        &[
            ("kvdenied", "kv-user", ""),
            ("kvgranted", "kv-user", "capabilities = [\"kv\"]"),
        ],
    );
    let r = reqwest::get(gw.url("/kvdenied")).await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "kv denied");
    for _ in 1..=3 {
        let r = reqwest::get(gw.url("/kvgranted")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // The counter lives in the host across fresh instances.
    let hits: Vec<String> = upstream
        .seen()
        .iter()
        .filter_map(|s| s.header("x-hits").map(str::to_string))
        .collect();
    assert_eq!(hits, ["1", "2", "3"]);
}

/// `reuse_instances = true` keeps an initialised instance (and its memory)
/// for later calls; the default gives every call a fresh one. An instance that
/// trapped is never used again.
#[tokio::test]
async fn reused_instances_keep_guest_memory_until_they_trap() {
    let up = Upstream::start();
    let config = base_config(up.addr)
        + &policy("fresh", "instance-counter", "")
        + &policy("reused", "instance-counter", "reuse_instances = true")
        + &route("fresh", "/fresh", &["fresh"])
        + &route("reused", "/reused", &["reused"]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let calls = |up: &Upstream| {
        up.seen()
            .last()
            .and_then(|s| s.header("x-instance-calls").map(String::from))
            .unwrap()
    };

    for _ in 0..5 {
        let r = client.get(gw.url("/fresh")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(calls(&up), "1", "a fresh instance per call");
    }
    // One request at a time: the one idle instance serves them all.
    for n in 1..=5 {
        client.get(gw.url("/reused")).send().await.unwrap();
        assert_eq!(calls(&up), n.to_string());
    }
    let trapped = client
        .get(gw.url("/reused"))
        .header("x-trap", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(trapped.status(), 503, "on_error = deny");
    client.get(gw.url("/reused")).send().await.unwrap();
    assert_eq!(calls(&up), "1", "the trapped instance was dropped");
    assert_eq!(
        failure_count(&gw, "reused", "trap").await,
        1,
        "the trap is counted like any other"
    );
}
