//! Hot swap: versions pushed through the admin API under live
//! traffic, canaries rolled back on their own, refused uploads, the state
//! folder across restarts, config reload, the admin token, and memory over
//! many swaps. Everything through the real binary on loopback.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{base_config, component, edgegate, output_text, route, Gateway, Upstream};

/// The policy under test: `noop` (no header) or `headers` (sets `x-version`).
fn config_with(upstream: std::net::SocketAddr, first: &str, extra: &str) -> String {
    base_config(upstream)
        + extra
        + &format!(
            "[policies.p]\ncomponent = {:?}\nconfig = {{ response_set = {{ \"x-version\" = \"headers\" }} }}\n",
            component(first).display().to_string()
        )
        + &route("all", "/", &["p"])
}

async fn push(gw: &Gateway, file: &std::path::Path, query: &str) -> (u16, Value) {
    let bytes = std::fs::read(file).unwrap();
    push_bytes(gw, bytes, query).await
}

async fn push_bytes(gw: &Gateway, bytes: Vec<u8>, query: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(gw.admin_url(&format!("/v1/policies/p/versions{query}")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn status(gw: &Gateway) -> Value {
    let v: Value = reqwest::get(gw.admin_url("/v1/policies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p")
        .cloned()
        .unwrap()
}

/// The `x-version` header of one request (None: the noop version answered).
async fn version_seen(client: &reqwest::Client, gw: &Gateway) -> (u16, Option<String>) {
    let resp = client.get(gw.url("/probe")).send().await.unwrap();
    let v = resp
        .headers()
        .get("x-version")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), v)
}

/// 50 swaps under a bounded concurrent load: every request succeeds, and after
/// each swap the responses show the new version's behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_no_request() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config_with(upstream.addr, "noop", ""));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let failures = failures.clone();
        let url = gw.url("/load");
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let why = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => format!("{e:?}"),
                };
                failed.fetch_add(1, Ordering::Relaxed);
                let mut seen = failures.lock().unwrap();
                if seen.len() < 5 {
                    seen.push(why);
                }
            }
        }));
    }
    let client = reqwest::Client::new();
    for i in 0..50 {
        let (name, expect) = if i % 2 == 0 {
            ("headers", Some("headers".to_string()))
        } else {
            ("noop", None)
        };
        let (code, body) = push(&gw, &component(name), "").await;
        assert_eq!(code, 201, "push {i}: {body}");
        assert_eq!(body["state"], "serving");
        assert_eq!(
            version_seen(&client, &gw).await,
            (200, expect),
            "after swap {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("50 swaps under load: {ok} requests succeeded, {failed} failed");
    assert_eq!(
        failed,
        0,
        "requests failed during swaps, the first: {:?}",
        failures.lock().unwrap()
    );
    assert!(ok > 100, "the load ran ({ok} requests)");
    let metrics = gw.metrics().await;
    assert_eq!(
        support::metric(
            &metrics,
            "edgegate_policy_swap_steps_total",
            &[("policy", "p"), ("step", "promoted")]
        ),
        Some(50)
    );
}

/// A canary that traps on every call is rolled back on its own; while it ran,
/// its requests followed `on_error` (deny: 503) and the rest were served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_canary_rolls_itself_back() {
    let upstream = Upstream::start();
    let canary_rules = "[canary]\nwindow_ms = 600000\nmin_requests = 10\n";
    let gw = Gateway::start(&config_with(upstream.addr, "headers", canary_rules));
    let (code, body) = push(&gw, &component("trap"), "?canary=50").await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["state"], "canary");
    let trap_digest = body["digest"].as_str().unwrap().to_string();
    assert_eq!(status(&gw).await["canary"]["percent"], 50);

    let client = reqwest::Client::new();
    let (mut served, mut denied) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&gw).await["canary"].is_object() {
        assert!(Instant::now() < deadline, "the canary was not rolled back");
        let resp = client.get(gw.url("/c")).send().await.unwrap();
        match resp.status().as_u16() {
            200 => {
                assert_eq!(resp.headers()["x-version"], "headers");
                served += 1;
            }
            503 => {
                assert!(resp.text().await.unwrap().contains("policy `p` failed"));
                denied += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    println!("canary at 50%: {served} served by the serving version, {denied} denied by the trapping canary before rollback");
    assert!(denied >= 10, "the canary took its share ({denied})");
    assert!(served > 0);
    for _ in 0..20 {
        assert_eq!(
            version_seen(&client, &gw).await,
            (200, Some("headers".into()))
        );
    }
    let p = status(&gw).await;
    let refused = p["refused"].as_array().unwrap();
    let last = refused.last().unwrap();
    assert_eq!(last["digest"], trap_digest.as_str());
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("rolled back automatically: failure rate 100.0%"),
        "{reason}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        support::metric(
            &metrics,
            "edgegate_policy_swap_steps_total",
            &[("policy", "p"), ("step", "auto_rolled_back")]
        ),
        Some(1)
    );
    assert!(gw.logs().contains("rolled back"));
}

/// A healthy canary is promoted when its window ends; an operator can also
/// promote or roll back by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_after_its_window() {
    let upstream = Upstream::start();
    let canary_rules = "[canary]\nwindow_ms = 1500\nmin_requests = 5\n";
    let gw = Gateway::start(&config_with(upstream.addr, "noop", canary_rules));
    let (code, body) = push(&gw, &component("headers"), "?canary=50&sticky=false").await;
    assert_eq!(code, 201, "{body}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_new = 0;
    while status(&gw).await["canary"].is_object() {
        assert!(Instant::now() < deadline, "the canary was not promoted");
        let (code, v) = version_seen(&client, &gw).await;
        assert_eq!(code, 200);
        seen_new += usize::from(v.is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_new > 0, "the canary served some requests");
    let p = status(&gw).await;
    assert_eq!(p["serving"]["source"], "push", "{p:#}");
    assert!(p["previous"].is_object());
    for _ in 0..10 {
        assert_eq!(
            version_seen(&client, &gw).await,
            (200, Some("headers".into()))
        );
    }

    // Manual rollback to the previous version, then a manual canary promotion.
    let r = client
        .post(gw.admin_url("/v1/policies/p/rollback"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(version_seen(&client, &gw).await, (200, None));
    let (code, _) = push(&gw, &component("headers"), "?canary=10").await;
    assert_eq!(code, 201);
    let r = client
        .post(gw.admin_url("/v1/policies/p/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("headers".into()))
    );
    let r = client
        .post(gw.admin_url("/v1/policies/p/promote"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "no canary left to promote");
}

/// Tampered, unsigned and misnamed uploads are refused with the reason, and
/// the serving version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_change_nothing() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config_with(upstream.addr, "headers", ""));
    let before = status(&gw).await["serving"]["digest"].clone();
    let client = reqwest::Client::new();

    let mut tampered = std::fs::read(component("noop")).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let (code, body) = push_bytes(&gw, tampered, "").await;
    assert_eq!(code, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("refused") && message.contains("signature"),
        "{message}"
    );

    let (code, body) = push(&gw, &support::unsigned_component("noop"), "").await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    let (code, body) = push_bytes(&gw, b"not wasm".to_vec(), "").await;
    assert_eq!(code, 422, "{body}");

    let (code, _) = push(&gw, &component("noop"), "?canary=150").await;
    assert_eq!(code, 400);
    let r = client
        .post(gw.admin_url("/v1/policies/nope/versions"))
        .body(std::fs::read(component("noop")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let p = status(&gw).await;
    assert_eq!(
        p["serving"]["digest"], before,
        "the serving version is unchanged"
    );
    assert_eq!(p["refused"].as_array().unwrap().len(), 3);
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("headers".into()))
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        support::metric(
            &metrics,
            "edgegate_policy_swap_steps_total",
            &[("policy", "p"), ("step", "refused")]
        ),
        Some(3)
    );
}

/// The node serves its last promoted version after a restart (verified
/// again); a kept file that no longer verifies falls back to the config's.
/// Pushes here go through the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_versions_survive_a_restart_and_are_verified_again() {
    let upstream = Upstream::start();
    let token = "test-admin-token-0123456789";
    let config = config_with(upstream.addr, "noop", "")
        .replace("[admin]\n", &format!("[admin]\ntoken = {token:?}\n"));
    let gw = Gateway::start(&config);
    let admin = format!("http://{}", gw.admin);
    let client = reqwest::Client::new();

    // The token is required: none or a wrong one gets 401.
    let r = client
        .get(gw.admin_url("/v1/policies"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(gw.admin_url("/v1/policies"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let out = edgegate(&["status", "--admin", &admin]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("401"), "{}", output_text(&out));

    let headers = component("headers");
    let out = edgegate(&[
        "push",
        "--admin",
        &admin,
        "--token",
        token,
        "p",
        headers.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("p: serving"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("headers".into()))
    );
    let out = edgegate(&["status", "--admin", &admin, "--token", token]);
    assert!(out.status.success());
    let text = output_text(&out);
    assert!(
        text.contains("serving") && text.contains("previous"),
        "{text}"
    );

    let kept = gw
        .dir
        .path()
        .join(".edgegate-state/policies/p/serving.wasm");
    assert!(
        kept.is_file(),
        "the pushed version is kept in the state folder"
    );
    let gw = gw.restart();
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("headers".into())),
        "served again after the restart"
    );
    assert!(gw
        .logs()
        .contains("serving the version pushed before the restart"));

    // Someone edits the kept file: it no longer verifies, the config's version serves.
    let mut bytes = std::fs::read(&kept).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&kept, bytes).unwrap();
    let gw = gw.restart();
    assert_eq!(version_seen(&client, &gw).await, (200, None));
    assert!(
        gw.logs().contains("is not admitted any more"),
        "{}",
        gw.logs()
    );

    // CLI rollback with nothing to roll back to is refused with the reason.
    let admin = format!("http://{}", gw.admin);
    let out = edgegate(&["rollback", "--admin", &admin, "--token", token, "p"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("no previous version"),
        "{}",
        output_text(&out)
    );
}

/// Reload through the admin API and SIGHUP: a valid config replaces the
/// running one; an invalid one is refused with the reason and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_valid_configs_and_refuses_invalid_ones() {
    let upstream = Upstream::start();
    let config = config_with(upstream.addr, "headers", "");
    let gw = Gateway::start(&config);
    let file = gw.dir.path().join("gateway.toml");
    let client = reqwest::Client::new();

    let r = gw
        .reload(&config.replace("\"x-version\" = \"headers\"", "\"x-version\" = \"v2\""))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(version_seen(&client, &gw).await, (200, Some("v2".into())));

    let r = gw
        .reload(&config.replace("[policies.p]", "[policies.p]\ncolour = \"red\""))
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("policies.p.colour") && message.contains("nothing changed"),
        "{message}"
    );
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("v2".into())),
        "still the last good config"
    );

    std::fs::write(
        &file,
        config.replace("\"x-version\" = \"headers\"", "\"x-version\" = \"v3\""),
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(gw.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while version_seen(&client, &gw).await.1.as_deref() != Some("v3") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The line is written after the new config serves, and reaches the
    // test through the child's stderr pipe: wait for it too.
    while !gw.logs().contains("SIGHUP: config reloaded") {
        assert!(Instant::now() < deadline, "no reload line: {}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resident memory after 200 swaps stays near where it started: old versions
/// are dropped when their last request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_over_200_swaps() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config_with(upstream.addr, "noop", ""));
    let client = reqwest::Client::new();
    let files = [
        std::fs::read(component("headers")).unwrap(),
        std::fs::read(component("noop")).unwrap(),
    ];
    let swap = |i: usize| {
        let bytes = files[i % 2].clone();
        let gw = &gw;
        async move {
            let (code, body) = push_bytes(gw, bytes, "").await;
            assert_eq!(code, 201, "{body}");
        }
    };
    for i in 0..20 {
        swap(i).await;
        version_seen(&client, &gw).await;
    }
    let start = gw.rss_bytes();
    for i in 0..200 {
        swap(i).await;
        assert_eq!(version_seen(&client, &gw).await.0, 200);
    }
    let end = gw.rss_bytes();
    let grew = end.saturating_sub(start);
    println!(
        "resident memory: {:.1} MiB after 20 warm-up swaps, {:.1} MiB after 200 more (+{:.1} MiB)",
        start as f64 / 1048576.0,
        end as f64 / 1048576.0,
        grew as f64 / 1048576.0
    );
    assert!(
        grew < 96 << 20,
        "resident memory grew by {grew} bytes over 200 swaps"
    );
}

/// A version that fails the policy's self-tests is refused at admission with
/// the test and the answer it gave; one that passes them serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_tests_gate_admission() {
    let upstream = Upstream::start();
    let config = base_config(upstream.addr)
        + &format!(
            "[policies.p]\ncomponent = {:?}\nconfig = {{ deny = [{{ path_prefix = \"/admin\", status = 403 }}] }}\n\
             [[policies.p.self_tests]]\npath = \"/admin/users\"\nexpect_status = 403\n\
             [[policies.p.self_tests]]\npath = \"/public\"\n",
            component("headers").display().to_string()
        )
        + &route("all", "/", &["p"]);
    let gw = Gateway::start(&config);
    let (code, body) = push(&gw, &component("noop"), "").await;
    assert_eq!(code, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(
            "self_tests[0] (GET /admin/users): expected it to answer 403; it let it continue"
        ),
        "{message}"
    );
    let r = reqwest::get(gw.url("/admin/x")).await.unwrap();
    assert_eq!(r.status(), 403, "the serving version still denies");
    let (code, body) = push(&gw, &component("headers"), "").await;
    assert_eq!(code, 201, "{body}");
}

/// A version that traps on every call is quarantined after `failures` traps:
/// its `on_error` answers without running it, `edgegate status` and the
/// coordinator's graph show it (a red policy node), and a push lifts it.
/// The other route keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_version_is_quarantined_shown_and_lifted_by_a_push() {
    use support::coordinator::{colour, free_port, wait_for, CoordinatorProcess};
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(dir.path(), free_port());
    let config = base_config(upstream.addr)
        + "[quarantine]\nfailures = 3\nwindow_ms = 60000\ncool_down_ms = 600000\n"
        + "[access_log]\ntarget = \"access.log\"\nformat = \"json\"\n"
        + &format!(
            "[node]\nid = \"edge-q\"\nsite = \"eu\"\ncoordinator = \"http://{}\"\nreport_interval_ms = 200\n",
            coordinator.addr
        )
        + &support::policy("p", "trap", "on_error = \"deny\"")
        + &support::policy(
            "other",
            "headers",
            "config = { response_set = { \"x-version\" = \"headers\" } }",
        )
        + &route("trapping", "/t", &["p"])
        + &route("all", "/", &["other"]);
    let gw = Gateway::start(&config);
    let client = reqwest::Client::new();
    let other_serves = || async {
        let (code, v) = version_seen(&client, &gw).await;
        assert_eq!(
            (code, v.as_deref()),
            (200, Some("headers")),
            "the other route"
        );
    };
    let trapped = |m: &str| {
        support::metric(
            m,
            "edgegate_policy_failures_total",
            &[("policy", "p"), ("kind", "trap")],
        )
    };

    for _ in 0..3 {
        let resp = client.get(gw.url("/t")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        other_serves().await;
    }
    let m = gw.metrics().await;
    assert_eq!(trapped(&m), Some(3));
    let labels = [("policy", "p")];
    assert_eq!(
        support::metric(&m, "edgegate_policy_quarantined", &labels),
        Some(1)
    );
    assert_eq!(
        support::metric(&m, "edgegate_policy_quarantines_total", &labels),
        Some(1)
    );

    // Held: answered by on_error = deny without running the guest.
    for _ in 0..10 {
        let resp = client.get(gw.url("/t")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.text().await.unwrap().contains("policy `p` failed"));
        other_serves().await;
    }
    let m = gw.metrics().await;
    assert_eq!(trapped(&m), Some(3), "a quarantined version is not run");
    assert_eq!(
        support::metric(&m, "edgegate_policy_quarantine_skips_total", &labels),
        Some(10)
    );
    let held = &status(&gw).await["serving"]["quarantine"];
    let reason = held["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("3 sandbox failures within 60000 ms, the last: trapped"),
        "{reason}"
    );
    assert!(held["lifts_in_ms"].as_u64().unwrap() > 500_000, "{held}");
    let out = edgegate(&["status", "--admin", &format!("http://{}", gw.admin)]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("QUARANTINED"), "{text}");
    assert!(text.contains("3 sandbox failures"), "{text}");
    let log = gw.dir.path().join("access.log");
    let verdicts = support::eventually(
        Duration::from_secs(10),
        "13 access log lines of /t",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let verdicts: Vec<String> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|l| l["route"] == "trapping")
                .map(|l| l["policies"][0]["verdict"].as_str().unwrap().to_string())
                .collect();
            (verdicts.len() >= 13).then_some(verdicts)
        },
    )
    .await;
    assert_eq!(verdicts[..3], ["failed_deny"; 3], "{verdicts:?}");
    assert_eq!(verdicts[3..], ["quarantined_deny"; 10], "{verdicts:?}");

    // The coordinator's meta-graph: the policy node is red, the route that uses it is not green.
    let graph_url = coordinator.url("/v1/graph");
    wait_for("the quarantined policy to show red", 20, || async {
        let g: Value = reqwest::get(&graph_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        colour(&g, "policy:edge-q/p").as_deref() == Some("red")
            && colour(&g, "policy:edge-q/other").as_deref() == Some("green")
            && colour(&g, "route:edge-q/trapping").as_deref() == Some("yellow")
    })
    .await;

    // A push of a working version lifts it.
    let (code, body) = push_bytes(&gw, std::fs::read(component("headers")).unwrap(), "").await;
    assert_eq!(code, 201, "{body}");
    let resp = client.get(gw.url("/t")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the pushed version runs");
    assert!(status(&gw).await["serving"]["quarantine"].is_null());
    let m = gw.metrics().await;
    let digest = body["digest"].as_str().unwrap();
    assert_eq!(
        support::metric(
            &m,
            "edgegate_policy_quarantined",
            &[("policy", "p"), ("digest", digest)]
        ),
        Some(0)
    );
    wait_for("the pushed version to show green", 20, || async {
        let g: Value = reqwest::get(&graph_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        colour(&g, "policy:edge-q/p").as_deref() == Some("green")
    })
    .await;
    other_serves().await;
}

/// The compile cache at the runtime: a second engine with the same settings
/// loads what the first compiled, a changed engine setting misses, and an
/// entry that is corrupted, truncated or writable by others is refused and
/// compiled again; whatever was loaded runs.
#[tokio::test]
async fn compiled_components_are_kept_and_only_a_matching_private_entry_is_loaded() {
    use edgegate_runtime::{
        CacheOutcome, Capabilities, HostServices, PolicyInstance, PolicySettings, Runtime,
        RuntimeConfig,
    };
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let cfg = RuntimeConfig {
        compile_cache: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let bytes = std::fs::read(component("noop")).unwrap();
    let entries = || {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // One engine at a time: each reserves its instance pool's address space.
    let compile = |cfg: &RuntimeConfig| {
        let runtime = Runtime::new(cfg).unwrap();
        let compiled = runtime.compile("noop", "d".into(), &bytes).unwrap();
        (compiled.cache_outcome(), runtime, compiled)
    };
    let runs = |compiled| async {
        let instance = PolicyInstance::new(
            compiled,
            PolicySettings {
                name: "noop".into(),
                config_json: "{}".into(),
                capabilities: Capabilities::NONE,
                memory_limit_bytes: 16 << 20,
                timeout: Duration::from_millis(1000),
                reuse_instances: false,
            },
            None,
            HostServices::none(),
        );
        instance.check_init().await.unwrap();
    };

    let (outcome, _, compiled) = compile(&cfg);
    assert_eq!(outcome, CacheOutcome::Miss);
    runs(compiled).await;
    let first = entries();
    assert_eq!(first.len(), 1, "{first:?}");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache folder is private");

    let (outcome, _, compiled) = compile(&cfg);
    assert_eq!(outcome, CacheOutcome::Hit, "a restart loads it");
    runs(compiled).await;

    let changed = RuntimeConfig {
        max_wasm_stack: 256 << 10,
        ..cfg.clone()
    };
    let (outcome, _, compiled) = compile(&changed);
    assert_eq!(
        outcome,
        CacheOutcome::Miss,
        "another engine setting, another entry"
    );
    runs(compiled).await;
    assert_eq!(entries().len(), 2);

    let entry = &first[0];
    let mut data = std::fs::read(entry).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(entry, &data).unwrap();
    let (outcome, _, compiled) = compile(&cfg);
    assert_eq!(
        outcome,
        CacheOutcome::Miss,
        "a corrupted entry is compiled again"
    );
    runs(compiled).await;
    assert_eq!(compile(&cfg).0, CacheOutcome::Hit, "and replaced");

    std::fs::write(entry, &data[..100]).unwrap();
    assert_eq!(compile(&cfg).0, CacheOutcome::Miss, "a truncated entry");

    std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(
        compile(&cfg).0,
        CacheOutcome::Miss,
        "an entry others may write"
    );
    assert_eq!(
        std::fs::metadata(entry).unwrap().permissions().mode() & 0o777,
        0o600,
        "replaced by a private one"
    );
    assert_eq!(compile(&cfg).0, CacheOutcome::Hit);
}

/// The compile cache in the gateway: the first start compiles its policies
/// and keeps them, a restart loads them all, and a push of a digest seen
/// before loads it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_a_known_push_load_compiled_components() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config_with(upstream.addr, "headers", ""));
    let compiles = |m: &str, outcome: &str| {
        support::metric(
            m,
            "edgegate_component_compiles_total",
            &[("outcome", outcome)],
        )
    };
    let m = gw.metrics().await;
    assert_eq!(compiles(&m, "miss"), Some(1), "{m}");
    assert_eq!(compiles(&m, "hit"), None);
    let (code, body) = push(&gw, &component("noop"), "").await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["timings_ms"]["compile_cache"], "miss", "{body}");

    let gw = gw.restart();
    let m = gw.metrics().await;
    assert_eq!(
        compiles(&m, "hit"),
        Some(1),
        "the pushed version it serves again: {m}"
    );
    assert_eq!(compiles(&m, "miss"), None);
    let client = reqwest::Client::new();
    assert_eq!(version_seen(&client, &gw).await, (200, None), "noop serves");
    // The config's component, compiled at the first start only.
    let (code, body) = push(&gw, &component("headers"), "").await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["timings_ms"]["compile_cache"], "hit", "{body}");
    assert_eq!(
        version_seen(&client, &gw).await,
        (200, Some("headers".into()))
    );
}
