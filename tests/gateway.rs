//! The proxy path through the real `edgegate` binary with real loopback upstreams:
//! policy chains, short circuits, limits, upstream failures, HTTP/2, metrics, drain.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{base_config, eventually, policy, route, Gateway, Upstream};

fn headers_policy(name: &str, config: &str) -> String {
    policy(name, "headers", &format!("config = {config}"))
}

#[tokio::test]
async fn chain_applies_mutations_both_ways_and_adds_forwarding_headers() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &headers_policy(
            "first",
            r#"{ request_set = { "x-first" = "1" }, request_remove = ["x-secret"], response_set = { "x-order" = "first" }, context_set = { "principal" = "alice" } }"#,
        )
        + &headers_policy(
            "second",
            r#"{ request_set = { "x-second" = "2" }, response_set = { "x-order" = "second" }, response_remove = ["server"], echo_context = ["principal"], require_header = "x-first" }"#,
        )
        + &headers_policy("wants-secret", r#"{ require_header = "x-secret" }"#)
        + &route("secret", "/secret", &["first", "wants-secret"])
        + &route("api", "/", &["first", "second"]);
    let gw = Gateway::start(&config);

    // Each policy reads headers from the host on demand, and reads them as
    // the policies before it left them: `first` removed `x-secret`, which
    // the client sent, so a policy after it that requires it refuses.
    let refused = reqwest::Client::new()
        .get(gw.url("/secret"))
        .header("x-secret", "s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("x-secret"));

    let resp = reqwest::Client::new()
        .get(gw.url("/hello?q=1"))
        .header("x-secret", "s3cr3t")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    // `second` requires `x-first`, which only `first` set.
    assert_eq!(resp.status(), 200);
    // Response phase runs in reverse: `second` first, then `first` overwrites x-order.
    assert_eq!(resp.headers()["x-order"], "first");
    assert!(
        resp.headers().get("server").is_none(),
        "second removed `server`"
    );
    assert_eq!(
        resp.headers()["x-ctx-principal"],
        "alice",
        "context crossed policies and phases"
    );
    assert_eq!(resp.headers()["via"], "1.1 edgegate");
    assert_eq!(resp.text().await.unwrap(), "upstream-ok");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/hello?q=1");
    assert_eq!(req.header("x-first"), Some("1"));
    assert_eq!(req.header("x-second"), Some("2"));
    assert_eq!(req.header("x-secret"), None);
    assert_eq!(
        req.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(req.header("via"), Some("1.1 edgegate"));
}

#[tokio::test]
async fn policy_short_circuits_without_contacting_upstream() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &headers_policy(
            "guard",
            r#"{ deny = [{ path_prefix = "/admin", status = 403, body = "forbidden" }] }"#,
        )
        + &route("api", "/", &["guard"]);
    let gw = Gateway::start(&config);
    let resp = reqwest::get(gw.url("/admin/users")).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.text().await.unwrap(), "forbidden");
    assert_eq!(upstream.count(), 0);
    let ok = reqwest::get(gw.url("/public")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn routes_match_host_path_and_method() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + "[[routes]]\nname = \"posts\"\nhost = \"api.example.com\"\npath_prefix = \"/v1\"\nmethods = [\"POST\"]\nupstream = \"backend\"\n";
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let ok = client
        .post(gw.url("/v1/items"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for (method, host, path) in [
        ("GET", "api.example.com", "/v1/items"),
        ("POST", "other.example.com", "/v1/items"),
        ("POST", "api.example.com", "/v10"),
    ] {
        let r = client
            .request(method.parse().unwrap(), gw.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {host}{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "no_route");
    }
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        .replace("workers = 2", "workers = 2\nmax_header_bytes = 4096")
        + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    // Over our limit but inside hyper's read buffer: our check answers.
    let r = client
        .get(gw.url("/"))
        .header("x-big", "a".repeat(6000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // Far over: hyper's parser refuses it.
    let r = client
        .get(gw.url("/"))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn buffered_body_over_limit_gets_413_and_within_limit_reaches_policy() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &policy(
            "echo",
            "body-echo",
            "request_body = \"buffer\"\nbody_limit_bytes = 1024",
        )
        + &route("api", "/", &["echo"]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let r = client
        .post(gw.url("/"))
        .body("x".repeat(2048))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Chunked (no content-length) is cut off while reading.
    let stream = futures_body(vec![vec![b'y'; 800], vec![b'y'; 800]]);
    let r = client.post(gw.url("/")).body(stream).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r = client
        .post(gw.url("/"))
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello body");
    assert_eq!(upstream.count(), 0);
}

fn futures_body(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(bytes::Bytes::from(c)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    reqwest::Body::wrap(ChannelBody(rx))
}

/// A streamed (chunked, no content-length) request body fed from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_is_504() {
    let mut dead = Upstream::start();
    let dead_addr = dead.addr;
    dead.stop();
    let config = base_config(dead_addr) + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let r = reqwest::get(gw.url("/")).await.unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unreachable");

    let slow = Upstream::start();
    let config = base_config(slow.addr).replace("timeout_ms = 2000", "timeout_ms = 200")
        + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let r = reqwest::get(gw.url("/slow/3000")).await.unwrap();
    assert_eq!(r.status(), 504);
    let fast = reqwest::get(gw.url("/fast")).await.unwrap();
    assert_eq!(fast.status(), 200);
}

#[tokio::test]
async fn http2_cleartext_and_keepalive_reuse() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &headers_policy("h", r#"{ request_set = { "x-h" = "1" } }"#)
        + &route("api", "/", &["h"]);
    let gw = Gateway::start(&config);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = h2.get(gw.url("/h2")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.header("x-h") == Some("1")));
    // The upstream gets a Host header even though HTTP/2 carries :authority.
    assert_eq!(seen[0].header("host"), Some(gw.proxy.to_string().as_str()));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr) + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    for _ in 0..30 {
        assert_eq!(client.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(upstream.count(), 30);
    // At most one pool per worker (2 workers): 30 requests, at most 2 connections.
    assert!(
        upstream.connections() <= 2,
        "{} connections",
        upstream.connections()
    );
}

#[tokio::test]
async fn round_robin_spreads_over_endpoints() {
    let a = Upstream::start_named("a");
    let b = Upstream::start_named("b");
    let config = base_config(a.addr).replace(
        &format!("endpoints = [\"{}\"]", a.addr),
        &format!("endpoints = [\"{}\", \"{}\"]", a.addr, b.addr),
    ) + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    for _ in 0..10 {
        assert_eq!(reqwest::get(gw.url("/")).await.unwrap().status(), 200);
    }
    assert_eq!(a.count() + b.count(), 10);
    assert!(
        a.count() >= 4 && b.count() >= 4,
        "a={} b={}",
        a.count(),
        b.count()
    );
}

#[tokio::test]
async fn metrics_count_routes_and_policies() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &headers_policy("h", r#"{ request_set = { "x-h" = "1" } }"#)
        + &route("api", "/", &["h"]);
    let gw = Gateway::start(&config);
    for _ in 0..3 {
        reqwest::get(gw.url("/")).await.unwrap();
    }
    let health = reqwest::get(gw.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"edgegate_requests_total{route="api",code="2xx"} 3"#),
        "{m}"
    );
    let request = [("policy", "h"), ("phase", "request")];
    assert_eq!(
        support::metric(&m, "edgegate_policy_calls_total", &request),
        Some(3),
        "{m}"
    );
    assert_eq!(
        support::metric(&m, "edgegate_policy_duration_seconds_count", &request),
        Some(3),
        "{m}"
    );
    assert!(m.contains("# EOF"));
}

#[tokio::test]
async fn sigterm_drains_in_flight_request() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr) + &route("api", "/", &[]);
    let mut gw = Gateway::start(&config);
    let url = gw.url("/slow/1500");
    let in_flight = tokio::spawn(async move { reqwest::get(url).await });
    // Wait until the upstream has the request, so it is truly in flight.
    for _ in 0..100 {
        if upstream.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.count(), 1, "request never reached the upstream");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request survived SIGTERM");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "upstream-ok");
    let status = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn request_only_policies_skip_the_response_phase() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &policy("noop", "noop", "")
        + &headers_policy("h", r#"{ response_set = { "x-h" = "1" } }"#)
        + &route("api", "/", &["noop", "h"]);
    let gw = Gateway::start(&config);
    for _ in 0..4 {
        let r = reqwest::get(gw.url("/")).await.unwrap();
        assert_eq!(r.headers()["x-h"], "1");
    }
    let m = gw.metrics().await;
    let calls = |policy, phase| {
        support::metric(
            &m,
            "edgegate_policy_calls_total",
            &[("policy", policy), ("phase", phase)],
        )
    };
    assert_eq!(calls("noop", "request"), Some(4), "{m}");
    // noop's init said wants-response = false: never instantiated for responses.
    assert_eq!(calls("noop", "response"), Some(0), "{m}");
    assert_eq!(calls("h", "response"), Some(4), "{m}");
}

#[tokio::test]
async fn open_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        .replace("workers = 2", "workers = 1\nmax_connections = 1")
        + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The kernel completes the handshake (backlog), but the gateway does not serve it
    // while the first connection holds the only permit.
    let mut second = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    second.write_all(request).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "second connection was served while the first was open"
    );
    assert_eq!(upstream.count(), 1);

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("second connection served once the first closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// `edgegate_upstream_healthy` of endpoint `addr` of cluster `backend`.
async fn healthy_gauge(gw: &Gateway, addr: SocketAddr) -> Option<u64> {
    support::metric(
        &gw.metrics().await,
        "edgegate_upstream_healthy",
        &[("upstream", "backend"), ("endpoint", &addr.to_string())],
    )
}

/// `up` of node `endpoint:ADDR` in the admin `GET /v1/health` graph.
async fn graph_up(gw: &Gateway, addr: SocketAddr) -> Option<bool> {
    let view: serde_json::Value = reqwest::get(gw.admin_url("/v1/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let id = format!("endpoint:{addr}");
    view["graph"]["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id.as_str())
        .and_then(|n| n["stats"]["up"].as_bool())
}

/// Which test upstream answered `GET /` through the gateway.
async fn answered_by(client: &reqwest::Client, gw: &Gateway) -> String {
    let r = client.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-upstream"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn active_health_checks_take_a_failing_endpoint_out_and_bring_it_back() {
    let (a, b) = (Upstream::start_named("a"), Upstream::start_named("b"));
    let config = base_config(a.addr).replace(
        &format!("endpoints = [\"{}\"]", a.addr),
        &format!("endpoints = [\"{}\", \"{}\"]", a.addr, b.addr),
    ) + "[upstreams.backend.health_check]\n\
         path = \"/healthz\"\n\
         interval_ms = 100\n\
         timeout_ms = 1000\n\
         healthy_threshold = 2\n\
         unhealthy_threshold = 2\n\
         [node]\n\
         id = \"edge-1\"\n\
         site = \"test\"\n\
         report_interval_ms = 100\n"
        + &route("api", "/", &[]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let (gw, a, b, client) = (&gw, &a, &b, &client);
    let limit = Duration::from_secs(15);

    // Both pass their checks: both take traffic.
    eventually(limit, "checks of both endpoints", || async move {
        (a.health_checks() >= 2 && b.health_checks() >= 2).then_some(())
    })
    .await;
    assert_eq!(healthy_gauge(gw, a.addr).await, Some(1));
    assert_eq!(healthy_gauge(gw, b.addr).await, Some(1));
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..10 {
        *by.entry(answered_by(client, gw).await).or_insert(0) += 1;
    }
    assert_eq!(by.len(), 2, "{by:?}");

    // b fails its health path (its other answers stay fine, so it is the checks
    // that take it out, not the circuit): unhealthy in the metrics and the graph.
    b.set_health(503);
    eventually(limit, "b marked unhealthy", || async move {
        (healthy_gauge(gw, b.addr).await == Some(0)).then_some(())
    })
    .await;
    let seen_by_b = b.count();
    for _ in 0..20 {
        assert_eq!(answered_by(client, gw).await, "a");
    }
    assert_eq!(b.count(), seen_by_b, "b took traffic while unhealthy");
    assert_eq!(healthy_gauge(gw, a.addr).await, Some(1));
    eventually(limit, "b down in the health graph", || async move {
        (graph_up(gw, b.addr).await == Some(false)).then_some(())
    })
    .await;
    assert_eq!(graph_up(gw, a.addr).await, Some(true));
    let failed_checks = support::metric(
        &gw.metrics().await,
        "edgegate_upstream_health_checks_total",
        &[("endpoint", &b.addr.to_string()), ("result", "fail")],
    );
    assert!(failed_checks.unwrap_or(0) >= 2, "{failed_checks:?}");

    // It passes again: back in after healthy_threshold checks.
    b.set_health(200);
    eventually(limit, "b healthy again", || async move {
        (healthy_gauge(gw, b.addr).await == Some(1)).then_some(())
    })
    .await;
    eventually(limit, "b up in the health graph", || async move {
        (graph_up(gw, b.addr).await == Some(true)).then_some(())
    })
    .await;
    eventually(limit, "traffic on b again", || async move {
        (answered_by(client, gw).await == "b").then_some(())
    })
    .await;

    // Each transition was logged once, however many checks failed.
    let logs = gw.logs();
    assert_eq!(
        logs.matches("health check failing: endpoint unhealthy")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("health check passing: endpoint healthy again")
            .count(),
        1,
        "{logs}"
    );
}

#[tokio::test]
async fn a_reload_keeps_health_verdicts_and_stops_the_checks_it_replaces() {
    let (a, b) = (Upstream::start_named("a"), Upstream::start_named("b"));
    let plain = base_config(a.addr).replace(
        &format!("endpoints = [\"{}\"]", a.addr),
        &format!("endpoints = [\"{}\", \"{}\"]", a.addr, b.addr),
    ) + &route("api", "/", &[]);
    let checked = plain.clone()
        + "[upstreams.backend.health_check]\n\
           path = \"/healthz\"\n\
           interval_ms = 100\n\
           unhealthy_threshold = 2\n";
    b.set_health(503);
    let gw = Gateway::start(&checked);
    let client = reqwest::Client::new();
    let (gw, a, b, client) = (&gw, &a, &b, &client);
    let limit = Duration::from_secs(15);
    let reload = |config: String| async move {
        let r = gw.reload(&config).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    };
    eventually(limit, "b marked unhealthy", || async move {
        (healthy_gauge(gw, b.addr).await == Some(0)).then_some(())
    })
    .await;

    // A reload builds new clusters; the verdict carries over, so b takes no
    // traffic while the new checks start.
    reload(checked.replace("interval_ms = 100", "interval_ms = 150")).await;
    for _ in 0..10 {
        assert_eq!(answered_by(client, gw).await, "a");
    }
    assert_eq!(healthy_gauge(gw, b.addr).await, Some(0));

    // Without checks in the config the old ones stop, and b serves again.
    reload(plain).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a check in flight may still land
    let checks = (a.health_checks(), b.health_checks());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((a.health_checks(), b.health_checks()), checks);
    eventually(limit, "traffic on b again", || async move {
        (answered_by(client, gw).await == "b").then_some(())
    })
    .await;
}

/// A gateway with short client timeouts, a streamed route and a buffered one.
fn slow_client_gateway(upstream: &Upstream) -> Gateway {
    let config = base_config(upstream.addr).replace(
        "[server]\n",
        "[server]\nfirst_byte_timeout_ms = 300\nbody_idle_timeout_ms = 300\nbody_timeout_ms = 1000\n",
    ) + &policy("echo", "body-echo", "request_body = \"buffer\"")
        + &route("buffered", "/buffered", &["echo"])
        + &route("streamed", "/", &[]);
    Gateway::start(&config)
}

#[tokio::test]
async fn silent_and_dripping_clients_are_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start();
    let gw = slow_client_gateway(&upstream);
    // A connection that never sends a byte is closed (EOF), not kept forever.
    let mut silent = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the gateway closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A buffered body dripped a byte at a time never completes: 408 at the body deadline.
    let mut drip = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    drip.write_all(b"POST /buffered HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..100 {
            if drip.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), drip.read(&mut buf)).await
            {
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let answer = dripping.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A streamed body that stops: 408 after the idle timeout, and the
    // upstream's health is not blamed for it.
    let answer = support::raw_exchange(
        gw.proxy,
        b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
        Duration::from_secs(3),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(
        upstream_errors(&gw).await,
        0,
        "a client's stalled body is not an upstream error"
    );

    // The admin listener has a header deadline too (10 s).
    let mut admin = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    admin.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(20), admin.read(&mut buf))
        .await
        .expect("the admin listener closes a connection that never ends its headers")
        .unwrap_or(0);
    let _ = n;
}

#[tokio::test]
async fn malformed_client_bodies_are_400_and_never_open_the_upstream_circuit() {
    let upstream = Upstream::start();
    let gw = slow_client_gateway(&upstream);
    // The default circuit opens after 5 failures in a row; ten broken bodies
    // are the client's fault and must leave it closed.
    for _ in 0..10 {
        let answer = support::raw_exchange(
            gw.proxy,
            b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
            Duration::from_millis(500),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(upstream_errors(&gw).await, 0);
    let r = reqwest::get(gw.url("/after")).await.unwrap();
    assert_eq!(r.status(), 200, "the upstream still takes traffic");
}

/// Upstream failures the gateway counted (errors, timeouts, unreachable).
async fn upstream_errors(gw: &Gateway) -> u64 {
    let m = gw.metrics().await;
    ["error", "timeout", "connect_error"]
        .iter()
        .filter_map(|r| support::metric(&m, "edgegate_upstream_requests_total", &[("outcome", r)]))
        .sum()
}

/// The demo chain with its access log in `access.log` (JSON), plus a route
/// to an upstream nobody listens on.
fn logged_demo_config(up: SocketAddr) -> String {
    let config = support::demo_config(up)
        .replace(
            "[access_log]\ntarget = \"stdout\"",
            "[access_log]\ntarget = \"access.log\"\nformat = \"json\"",
        )
        .replace(
            "[[routes]]\nname = \"demo\"",
            "[upstreams.dead]\nendpoints = [\"127.0.0.1:1\"]\n\n\
             [[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"dead\"\n\n\
             [[routes]]\nname = \"demo\"",
        );
    assert!(config.contains("target = \"access.log\"") && config.contains("name = \"dead\""));
    config
}

/// The access log's lines once there are `n` of them.
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(10), "access log lines", || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

/// `(policy, phase, verdict)` of each policy call a line lists.
fn marks(line: &serde_json::Value) -> Vec<(String, String, String)> {
    line["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m["us"].as_u64().is_some(), "{m}");
            let s = |k: &str| m[k].as_str().unwrap().to_string();
            (s("policy"), s("phase"), s("verdict"))
        })
        .collect()
}

fn mark(policy: &str, phase: &str, verdict: &str) -> (String, String, String) {
    (policy.into(), phase.into(), verdict.into())
}

#[tokio::test]
async fn access_log_lines_and_request_ids_for_served_denied_cached_and_failed_requests() {
    let up = Upstream::start();
    let gw = Gateway::start(&logged_demo_config(up.addr));
    let log = gw.dir.path().join("access.log");
    let client = reqwest::Client::new();
    let chat = serde_json::json!({"model": "gpt-4o", "temperature": 0,
        "messages": [{"role": "user", "content": "hello there"}]});
    let body = serde_json::to_vec(&chat).unwrap();
    let ask = |id: Option<&str>| {
        let mut req = client
            .post(gw.url("/v1/chat/completions?api_key=in-the-query"))
            .bearer_auth("demo-key")
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req
    };

    // 1. Served: the client's id is kept, sent upstream and returned.
    let served = ask(Some("client-trace.1")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["x-request-id"], "client-trace.1");
    let served_bytes = served.bytes().await.unwrap().len() as u64;
    assert_eq!(
        up.seen().pop().unwrap().header("x-request-id"),
        Some("client-trace.1")
    );
    // 2. The same call again: a cache hit. A malformed id is replaced.
    let hit = ask(Some("bad id; with spaces")).send().await.unwrap();
    assert_eq!(hit.headers()["x-edgegate-cache"], "hit");
    let hit_id = hit.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(hit_id.len(), 32, "{hit_id}");
    assert!(hit_id.bytes().all(|b| b.is_ascii_hexdigit()));
    // 3. Denied by auth: no key.
    let denied = client.get(gw.url("/cache/x")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let denied_id = denied.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    // 4. A failed upstream: the gateway's error body carries the id.
    let failed = client.get(gw.url("/dead/x")).send().await.unwrap();
    assert_eq!(failed.status(), 502);
    let failed_id = failed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let failed_body: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(failed_body["error"], "upstream_unreachable");
    assert_eq!(failed_body["request_id"], failed_id.as_str());

    let lines = log_lines(&log, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let raw = std::fs::read_to_string(&log).unwrap();
    for secret in ["demo-key", "in-the-query", "authorization", "Bearer"] {
        assert!(!raw.contains(secret), "`{secret}` reached the log:\n{raw}");
    }
    let (s, h, d, f) = (&lines[0], &lines[1], &lines[2], &lines[3]);

    assert_eq!(s["request_id"], "client-trace.1");
    assert_eq!(s["route"], "demo");
    assert_eq!(s["method"], "POST");
    assert_eq!(s["path"], "/v1/chat/completions");
    assert_eq!(s["status"], 200);
    assert_eq!(s["upstream"], "demo");
    assert_eq!(s["endpoint"], up.addr.to_string());
    assert_eq!(s["attempts"], 1);
    assert_eq!(s["bytes_in"], body.len() as u64);
    assert_eq!(s["bytes_out"], served_bytes);
    assert_eq!(s["body"], "complete");
    assert_eq!(s["model"], "gpt-4o");
    assert_eq!(s["principal"], "demo-team");
    assert_eq!(s["tenant"], "demo");
    assert!(s.get("error").is_none(), "{s}");
    assert!(s["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(s["time"].as_str().unwrap().ends_with('Z'), "{s}");
    let m = marks(s);
    assert_eq!(
        m[..4],
        [
            mark("auth", "request", "continue"),
            mark("routing", "request", "route"),
            mark("redaction", "request", "continue"),
            mark("caching", "request", "continue"),
        ]
    );
    for p in ["caching", "redaction", "auth"] {
        assert!(m.contains(&mark(p, "response", "continue")), "{m:?}");
    }

    assert_eq!(h["request_id"], hit_id.as_str());
    assert_eq!(h["status"], 200);
    assert_eq!(h["attempts"], 0);
    assert!(h.get("upstream").is_none(), "a hit goes nowhere: {h}");
    assert_eq!(h["bytes_out"], served_bytes);
    let m = marks(h);
    assert_eq!(m[3], mark("caching", "request", "respond"), "{m:?}");
    assert!(m.contains(&mark("auth", "response", "continue")), "{m:?}");

    assert_eq!(d["request_id"], denied_id.as_str());
    assert_eq!(d["status"], 401);
    assert_eq!(d["path"], "/cache/x");
    assert_eq!(d["attempts"], 0);
    assert!(d.get("principal").is_none(), "{d}");
    assert_eq!(marks(d), [mark("auth", "request", "respond")]);

    assert_eq!(f["request_id"], failed_id.as_str());
    assert_eq!(f["route"], "dead");
    assert_eq!(f["status"], 502);
    assert_eq!(f["error"], "upstream_unreachable");
    assert_eq!(f["upstream"], "dead");
    assert_eq!(f["endpoint"], "127.0.0.1:1");
    assert_eq!(f["attempts"], 1);
    assert_eq!(f["policies"], serde_json::json!([]));

    // Rotation: the file is moved away, SIGUSR1, and the next line goes to
    // a new file at the old name.
    std::fs::rename(&log, gw.dir.path().join("access.log.1")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(gw.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    eventually(Duration::from_secs(10), "a new access.log", || async {
        let _ = client.get(gw.url("/dead/again")).send().await;
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("/dead/again"))
    })
    .await;
    // The moved file keeps its lines (and any line written before the
    // signal was handled).
    let rotated = std::fs::read_to_string(gw.dir.path().join("access.log.1")).unwrap();
    let before = rotated.lines().filter(|l| !l.contains("/dead/again"));
    assert_eq!(before.count(), 4, "{rotated}");
}

#[tokio::test]
async fn access_log_sampling_and_the_off_switch() {
    let up = Upstream::start();
    let off = base_config(up.addr)
        + "[access_log]\nenabled = false\ntarget = \"access.log\"\n"
        + &route("api", "/", &[]);
    let gw = Gateway::start(&off);
    let resp = reqwest::get(gw.url("/x")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The id is made whether or not anything is logged.
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    assert!(!gw.dir.path().join("access.log").exists());

    // Successes never sampled, errors always: only the 404s are logged.
    let sampled = base_config(up.addr)
        + "[access_log]\ntarget = \"access.log\"\nformat = \"json\"\nsample = 0.0\n"
        + &route("api", "/api", &[]);
    let gw = Gateway::start(&sampled);
    let client = reqwest::Client::new();
    for i in 0..20 {
        let ok = client
            .get(gw.url(&format!("/api/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    for i in 0..3 {
        let missing = client
            .get(gw.url(&format!("/nowhere/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
    let lines = log_lines(&gw.dir.path().join("access.log"), 3).await;
    // Lines for the 200s would have been written before the 404s'.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for l in &lines {
        assert_eq!(l["status"], 404);
        assert_eq!(l["error"], "no_route");
        assert!(l.get("route").is_none(), "{l}");
    }
}
