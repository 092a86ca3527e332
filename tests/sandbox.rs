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

/// A policy reads the request's headers from the host during its call (the
/// `message` import): they are lent to the store and come back whatever the
/// call does, so a policy that traps under `on_error = "allow"` is skipped
/// and the upstream still gets every header the client sent.
#[tokio::test]
async fn headers_lent_to_a_trapping_policy_come_back() {
    let up = Upstream::start();
    let config = base_config(up.addr)
        + &policy("lenient", "instance-counter", "on_error = \"allow\"")
        + &route("lenient", "/", &["lenient"]);
    let gw = Gateway::start(&config);
    let r = reqwest::Client::new()
        .get(gw.url("/x"))
        .header("x-trap", "1")
        .header("x-keep", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "on_error = allow skips the trapped policy");
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-keep"), Some("kept"));
    assert_eq!(seen.header("x-trap"), Some("1"));
    assert_eq!(
        seen.header("x-instance-calls"),
        None,
        "its changes were dropped"
    );
    assert_eq!(failure_count(&gw, "lenient", "trap").await, 1);
}

/// The hostile-output guest on every path of one route, failing closed.
fn hostile_output_gateway(upstream: &Upstream) -> Gateway {
    let config = base_config(upstream.addr)
        + &policy("hostile", "hostile-output", "on_error = \"deny\"")
        + &route("hostile", "/", &["hostile"]);
    Gateway::start(&config)
}

#[tokio::test]
async fn what_a_policy_returns_is_bounded_and_a_flood_is_a_503_not_a_panic() {
    let upstream = Upstream::start();
    let gw = hostile_output_gateway(&upstream);
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let client = client.clone();
        let url = gw.url(path);
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    // Within the bounds, operations apply.
    assert_eq!(status("/ops/50").await, 200);
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.header("x-h0"), Some("v"));
    assert_eq!(seen.header("x-h49"), Some("v"));
    // Past them, the policy failed: on_error (deny) answers 503. Each of these
    // panicked a worker or burned seconds of host CPU before.
    for path in [
        "/ops/30000",
        "/churn/120000",
        "/respond-headers/30000",
        "/response-ops/30000",
        "/status/101",
        "/status/99",
        "/status/600",
        "/big-body",
    ] {
        assert_eq!(status(path).await, 503, "{path}");
    }
    let m = gw.metrics().await;
    // 120,000 appends exhaust the guest's own memory first (oom); the others are refused by the host.
    assert_eq!(
        failure_count(&gw, "hostile", "guest_error").await
            + failure_count(&gw, "hostile", "oom").await,
        8,
        "each refused output counts as a policy failure: {}",
        m.lines()
            .filter(|l| l.contains("policy_failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(status("/ops/1").await, 200, "the gateway serves on");
    assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
}

#[tokio::test]
async fn the_host_owns_framing_whatever_headers_a_policy_answers_with() {
    let upstream = Upstream::start();
    let gw = hostile_output_gateway(&upstream);
    // A lying content-length followed, on the same connection, by a second
    // request: the first answer is framed by its real body (3 bytes), so the
    // second one is read as a response of its own, not as the rest of a body.
    let raw = support::raw_exchange(
        gw.proxy,
        b"GET /lying-length HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked-lie HTTP/1.1\r\nHost: x\r\n\r\nGET /ops/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        std::time::Duration::from_millis(500),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert_eq!(text.matches("http/1.1 200").count(), 3, "{text}");
    assert!(text.contains("content-length: 3\r\n"), "{text}");
    assert!(!text.contains("content-length: 100"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(!text.contains("x-keep"), "{text}");
    assert!(
        text.ends_with("upstream-ok"),
        "the third answer is the upstream's: {text}"
    );
}

#[tokio::test]
async fn guest_error_strings_reach_the_log_cut_and_escaped() {
    let upstream = Upstream::start();
    let gw = hostile_output_gateway(&upstream);
    for path in ["/big-error", "/big-error", "/forged-error"] {
        let r = reqwest::get(gw.url(path)).await.unwrap();
        assert_eq!(r.status(), 503);
    }
    let logs = support::eventually(
        std::time::Duration::from_secs(5),
        "the forged error is logged",
        || async {
            let logs = gw.logs();
            logs.contains("forged line").then_some(logs)
        },
    )
    .await;
    // 8 MiB twice before; now each is cut to about a kilobyte.
    assert!(logs.len() < 64 << 10, "{} bytes of log", logs.len());
    assert!(logs.contains("bytes cut"), "{logs}");
    // The CR/LF and ESC the guest sent cannot start a line of their own.
    assert!(!logs.contains("\n2026-01-01T00:00:00Z"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "an ESC reached the log (the gateway writes no colours off a terminal)"
    );
    assert!(logs.contains("\\r\\n2026-01-01"), "{logs}");
}

#[tokio::test]
async fn a_clients_connection_header_cannot_remove_what_a_policy_set() {
    let upstream = Upstream::start();
    let gw = hostile_output_gateway(&upstream);
    let r = reqwest::Client::new()
        .get(gw.url("/set-x-foo"))
        .header("connection", "x-foo, x-other")
        .header("x-foo", "from-client")
        .header("x-other", "client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.header("x-foo"), Some("from-policy"));
    assert_eq!(
        seen.header("x-other"),
        None,
        "the client's own hop-by-hop header goes"
    );
}

#[tokio::test]
async fn a_policy_looping_to_its_budget_does_not_stall_another_route() {
    let upstream = Upstream::start();
    // Two workers, eight looping requests: before, every worker sat in a loop
    // and the other route completed nothing until the loops timed out.
    let config = base_config(upstream.addr)
        + &policy("spin", "spin", "timeout_ms = 3000")
        + &route("spin", "/spin", &["spin"])
        + &route("fast", "/fast", &[]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let idle = p99_of(&client, &gw.url("/fast"), 200).await;
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = gw.url("/spin");
            tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    // Barrier: all eight are in the gateway, looping.
    support::eventually(
        std::time::Duration::from_secs(5),
        "eight looping requests in flight",
        || async {
            let m = gw.metrics().await;
            (in_flight(&m) >= 8).then_some(())
        },
    )
    .await;
    let busy = p99_of(&client, &gw.url("/fast"), 200).await;
    // Still looping: the 200 requests above did not wait for the loops to end.
    let m = gw.metrics().await;
    assert!(
        in_flight(&m) >= 8,
        "the loops ended before the other route was served"
    );
    eprintln!("other route p99: idle {idle:?}, with 8 looping policy calls {busy:?}");
    for l in loops {
        assert_eq!(l.await.unwrap(), 503, "each loop is cut at its budget");
    }
    assert_eq!(failure_count(&gw, "spin", "timeout").await, 8);
}

/// p99 of `n` sequential GETs (reported, not asserted: timing is a benchmark's job).
async fn p99_of(client: &reqwest::Client, url: &str, n: usize) -> std::time::Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[n * 99 / 100]
}

/// `edgegate_requests_in_flight` from Prometheus text (a gauge without labels).
fn in_flight(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgegate_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
