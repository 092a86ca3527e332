//! Streamed answers through the gateway, against the real `edgegate` binary:
//! server-sent events pass chunk by chunk on routes whose policies do not
//! buffer the response, and the demo upstream streams chat answers as
//! OpenAI does, read here by the official OpenAI Python SDK.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{barrier_upstream, base_config, policy, read_until, route, Gateway};

const FIRST: &str = "data: {\"n\":1}\n\n";
const REST: &str = "data: {\"n\":2}\n\ndata: [DONE]\n\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_event_arrives_before_the_upstream_sends_the_rest() {
    let up = barrier_upstream(FIRST, REST);
    let config = base_config(up.addr)
        + &policy(
            "h",
            "headers",
            r#"config = { response_set = { "x-h" = "1" } }"#,
        )
        + &route("plain", "/plain", &[])
        + &route("with-policy", "/with-policy", &["h"]);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    for (n, path) in [
        "/plain/v1/chat/completions",
        "/with-policy/v1/chat/completions",
    ]
    .iter()
    .enumerate()
    {
        let mut got = Vec::new();
        // The upstream holds the rest back until this client has the first
        // event: a gateway that buffered the answer would wait forever, so
        // the bound only turns that into a failure.
        let mut resp = tokio::time::timeout(Duration::from_secs(20), async {
            let mut resp = http.post(gw.url(path)).body("{}").send().await.unwrap();
            read_until(&mut resp, &mut got, "\"n\":1").await;
            resp
        })
        .await
        .unwrap_or_else(|_| panic!("{path}: the gateway held the first event back"));
        assert_eq!(resp.status(), 200, "{path}");
        if path.starts_with("/with-policy") {
            // A response-phase policy that does not ask for the body runs on
            // the headers and lets the body stream.
            assert_eq!(resp.headers()["x-h"], "1");
        }
        assert_eq!(*up.sent_rest.lock().unwrap(), n, "{path}");
        up.release.notify_one();
        read_until(&mut resp, &mut got, "[DONE]").await;
        assert_eq!(String::from_utf8_lossy(&got), format!("{FIRST}{REST}"));
        assert_eq!(*up.sent_rest.lock().unwrap(), n + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_outlives_timeout_ms_and_a_silent_one_is_cut_at_idle_timeout_ms() {
    let up = barrier_upstream(FIRST, REST);
    let config = base_config(up.addr).replace("timeout_ms = 2000", "timeout_ms = 300")
        + "idle_timeout_ms = 1500\n"
        + &route("all", "/", &[]);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();

    // Silent for longer than timeout_ms (which bounds only the headers), then
    // the rest: the answer arrives whole.
    let mut resp = http.post(gw.url("/slow")).body("{}").send().await.unwrap();
    let mut got = Vec::new();
    read_until(&mut resp, &mut got, "\"n\":1").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    up.release.notify_one();
    read_until(&mut resp, &mut got, "[DONE]").await;
    assert_eq!(String::from_utf8_lossy(&got), format!("{FIRST}{REST}"));

    // Silent past idle_timeout_ms: the gateway cuts the answer, so the
    // client sees a broken body, never an answer that looks complete.
    let mut resp = http
        .post(gw.url("/silent"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut resp, &mut got, "\"n\":1").await;
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => got.extend_from_slice(&c),
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the silent answer was not cut");
    assert!(rest.is_err(), "the cut answer ended cleanly: {got:?}");
    assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
    support::eventually(Duration::from_secs(5), "the cut in the log", || async {
        gw.logs()
            .contains("upstream answer stopped mid-body")
            .then_some(())
    })
    .await;
}

/// `edgegate demo-upstream` on an OS-chosen port; its address from its first line.
struct DemoUpstream {
    child: std::process::Child,
    addr: SocketAddr,
}

impl DemoUpstream {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgegate"))
            .args([
                "demo-upstream",
                "--listen",
                "127.0.0.1:0",
                "--stream-interval-ms",
                "5",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, addr }
    }
}

impl Drop for DemoUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_a_demo_answer_through_the_gateway() {
    let python = support::sdk_python();
    let demo = DemoUpstream::start();
    let gw = Gateway::start(&(base_config(demo.addr) + &route("all", "/", &[])));
    // Each chunk as the SDK hands it over, then the usage it reports.
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test")
stream = client.chat.completions.create(
    model="demo", stream=True, stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "stream these four words"}])
for chunk in stream:
    if chunk.choices:
        print(json.dumps({"delta": chunk.choices[0].delta.content, "finish": chunk.choices[0].finish_reason}))
    if chunk.usage:
        print(json.dumps({"usage": chunk.usage.completion_tokens}))
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script, &gw.url("/v1")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = lines.iter().filter_map(|l| l["delta"].as_str()).collect();
    let answer = "You said: stream these four words";
    assert_eq!(text, answer);
    // One event per word, after the role's, and the finish reason at the end.
    let words = lines
        .iter()
        .filter(|l| l["delta"].as_str().is_some_and(|d| !d.is_empty()))
        .count();
    assert_eq!(words, answer.split(' ').count(), "{lines:?}");
    assert!(lines.iter().any(|l| l["finish"] == "stop"), "{lines:?}");
    assert_eq!(
        lines.last().unwrap()["usage"].as_u64(),
        Some(answer.len().div_ceil(4) as u64),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_streams_an_answer_through_its_four_policies_redacted_as_it_streams() {
    let python = support::sdk_python();
    let demo = DemoUpstream::start();
    let gw = Gateway::start(&support::demo_config(demo.addr));
    // The README tour's SDK lines: one print per chunk.
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="demo-key")
for chunk in client.chat.completions.create(model="gpt-4o", stream=True,
        messages=[{"role": "user", "content": "how do I reach support?"}]):
    if chunk.choices and chunk.choices[0].delta.content:
        print(json.dumps(chunk.choices[0].delta.content))
"#;
    let out = tokio::process::Command::new(&python)
        .args(["-c", script, &gw.url("/v1")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    let pieces: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The phone number came as four events, one group each.
    assert_eq!(
        pieces.concat(),
        "You said: how do I reach support?. Write to [REDACTED:email] or call [REDACTED:phone]."
    );
    assert!(pieces.len() > 8, "the answer came in pieces: {pieces:?}");
}
