//! Streamed answers through the shipped policies (contract 0.2), against the
//! real `edgegate` binary and the demo config's four-policy chain: the first
//! event passes before the upstream sends the rest, PII split across events
//! is redacted, a block rule ends the stream and cancels the upstream, auth
//! charges what a stream used, caching replays a streamed answer, and a
//! gigabyte streams through a policy in bounded memory.

#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use support::{demo_config, metric, Gateway};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

/// An answer the scripted upstream streams: its frames, the gap between
/// them, and after how many frames it waits for `release`.
#[derive(Clone)]
struct Script {
    frames: Vec<String>,
    /// The frames are sent this many times over (a long body from one frame).
    times: usize,
    gap: Duration,
    hold_after: Option<usize>,
    content_type: &'static str,
}

/// An upstream that streams the script `pick` chooses for each request.
struct Scripted {
    addr: SocketAddr,
    release: Arc<Notify>,
    /// Frames sent, over all answers.
    sent: Arc<AtomicUsize>,
    /// Set when an answer's body was dropped before its last frame: the
    /// gateway went away (cancelled the upstream request).
    cut: Arc<AtomicBool>,
}

/// Sets `cut` when dropped before `done`.
struct CutGuard {
    cut: Arc<AtomicBool>,
    done: bool,
}

impl CutGuard {
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        if !self.done && !std::thread::panicking() {
            self.cut.store(true, Ordering::SeqCst);
        }
    }
}

fn scripted(pick: impl Fn(&http::request::Parts) -> Script + Send + Sync + 'static) -> Scripted {
    let pick = Arc::new(pick);
    let release = Arc::new(Notify::new());
    let sent = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (r, s, c) = (release.clone(), sent.clone(), cut.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (r, s, c, pick) = (r.clone(), s.clone(), c.clone(), pick.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, s, c) = (r.clone(), s.clone(), c.clone());
                        let (parts, body) = req.into_parts();
                        // Health checks get a plain answer, outside the script's counts.
                        let script = (parts.uri.path() != "/healthz").then(|| pick(&parts));
                        let counts = parts.uri.path().ends_with("/count");
                        async move {
                            if counts {
                                // Reads the request body as it comes and
                                // answers what it got: bytes, and `a`s and `b`s.
                                let mut body = body;
                                let (mut n, mut a, mut b) = (0u64, 0u64, 0u64);
                                let mut failed = false;
                                while let Some(frame) = body.frame().await {
                                    let Ok(frame) = frame else {
                                        failed = true;
                                        break;
                                    };
                                    if let Ok(data) = frame.into_data() {
                                        n += data.len() as u64;
                                        a += data.iter().filter(|&&c| c == b'a').count() as u64;
                                        b += data.iter().filter(|&&c| c == b'b').count() as u64;
                                    }
                                }
                                let text = json!({"bytes": n, "a": a, "b": b, "failed": failed})
                                    .to_string();
                                let one = futures_util::stream::iter([Ok::<_, Infallible>(
                                    hyper::body::Frame::data(Bytes::from(text)),
                                )]);
                                return Ok(hyper::Response::new(
                                    StreamBody::new(one).boxed_unsync(),
                                ));
                            }
                            let Some(script) = script else {
                                let ok = futures_util::stream::iter([Ok::<_, Infallible>(
                                    hyper::body::Frame::data(Bytes::from_static(b"ok")),
                                )]);
                                return Ok(hyper::Response::new(
                                    StreamBody::new(ok).boxed_unsync(),
                                ));
                            };
                            let content_type = script.content_type;
                            let guard = CutGuard {
                                cut: c,
                                done: false,
                            };
                            let events = futures_util::stream::unfold(
                                (0usize, script, guard),
                                move |(i, script, mut guard)| {
                                    let (r, s) = (r.clone(), s.clone());
                                    async move {
                                        if i == script.frames.len() * script.times {
                                            guard.finish();
                                            return None;
                                        }
                                        if Some(i) == script.hold_after {
                                            r.notified().await;
                                        } else if i > 0 {
                                            tokio::time::sleep(script.gap).await;
                                        }
                                        s.fetch_add(1, Ordering::SeqCst);
                                        let frame = Bytes::from(
                                            script.frames[i % script.frames.len()].clone(),
                                        );
                                        Some((
                                            Ok::<_, Infallible>(hyper::body::Frame::data(frame)),
                                            (i + 1, script, guard),
                                        ))
                                    }
                                },
                            );
                            let mut resp =
                                hyper::Response::new(StreamBody::new(events).boxed_unsync());
                            resp.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static(content_type),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    Scripted {
        addr,
        release,
        sent,
        cut,
    }
}

/// OpenAI chat chunks for `pieces`, then a finish chunk, an optional usage
/// chunk and `[DONE]`, as SSE frames.
fn openai_frames(pieces: &[&str], usage: Option<serde_json::Value>) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        json!(null),
    )];
    frames.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({ "content": p }), json!(null))),
    );
    frames.push(chunk(json!({}), json!("stop")));
    if let Some(u) = usage {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-4o", "choices": [], "usage": u});
        frames.push(format!("data: {c}\n\n"));
    }
    frames.push("data: [DONE]\n\n".into());
    frames
}

fn sse(frames: Vec<String>) -> Script {
    Script {
        frames,
        times: 1,
        gap: Duration::from_millis(5),
        hold_after: None,
        content_type: "text/event-stream",
    }
}

/// The OpenAI SDK streaming a chat answer from the gateway: prints
/// `{"first": true}` at its first chunk, then each delta, then `{"done":...}`
/// or `{"error": ...}` when the stream fails.
const SDK_STREAM: &str = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="demo-key", max_retries=0)
try:
    stream = client.chat.completions.create(
        model="gpt-4o", stream=True, temperature=float(sys.argv[2]),
        messages=[{"role": "user", "content": "hello"}])
    first = True
    for chunk in stream:
        if first:
            print(json.dumps({"first": True}), flush=True)
            first = False
        if chunk.choices:
            print(json.dumps({"delta": chunk.choices[0].delta.content}), flush=True)
    print(json.dumps({"done": True}), flush=True)
except openai.APIError as e:
    print(json.dumps({"error": str(e)}), flush=True)
"#;

/// Runs [`SDK_STREAM`] against `gw`; its lines.
async fn sdk_stream(gw: &Gateway, temperature: &str) -> Vec<serde_json::Value> {
    let out = tokio::process::Command::new(support::sdk_python())
        .args(["-c", SDK_STREAM, &gw.url("/v1"), temperature])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", support::output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn text_of(lines: &[serde_json::Value]) -> String {
    lines.iter().filter_map(|l| l["delta"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_passes_the_four_policy_chain_before_the_upstream_sends_the_rest() {
    let mut script = sse(openai_frames(&["Hello", " there", "!"], None));
    script.hold_after = Some(1);
    let up = scripted(move |_| script.clone());
    let gw = Gateway::start(&demo_config(up.addr));
    let mut child = tokio::process::Command::new(support::sdk_python())
        .args(["-c", SDK_STREAM, &gw.url("/v1"), "0.7"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The upstream sent one chunk and waits: a chain that buffered the
    // answer would never hand the SDK its first chunk, and the bound only
    // turns that wait into a failure.
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the first chunk did not pass the chain")
        .unwrap()
        .unwrap();
    assert_eq!(first, r#"{"first": true}"#);
    assert_eq!(
        up.sent.load(Ordering::SeqCst),
        1,
        "only the first chunk was sent"
    );
    up.release.notify_one();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert!(child.wait().await.unwrap().success());
    assert_eq!(text_of(&rest), "Hello there!");
    assert_eq!(rest.last().unwrap()["done"], true, "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_split_across_events_is_redacted_as_the_answer_streams() {
    let pieces = [
        "Mail jane@exa",
        "mple.com or call +1 415 ",
        "555 0134; IBAN DE89 3704 0044 ",
        "0532 0130 00, key sk-proj-abcdefghij",
        "klmnopqrstuvwxyz0123 now.",
    ];
    let up = scripted(move |_| sse(openai_frames(&pieces, None)));
    let gw = Gateway::start(&demo_config(up.addr));
    let lines = sdk_stream(&gw, "0.7").await;
    assert_eq!(
        text_of(&lines),
        "Mail [REDACTED:email] or call [REDACTED:phone]; IBAN [REDACTED:iban], key [REDACTED:secret] now."
    );
    assert_eq!(lines.last().unwrap()["done"], true);

    // On the wire too: no piece of the PII in any event.
    let raw = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("demo-key")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in ["jane@", "example.com", "0134", "DE89", "sk-proj"] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    let metrics = gw.metrics().await;
    let redactions = |label| {
        metric(
            &metrics,
            "edgegate_policy_events_total",
            &[
                ("policy", "redaction"),
                ("event", "redactions"),
                ("label", label),
            ],
        )
    };
    assert_eq!(redactions("email"), Some(2), "one per stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_rule_mid_stream_ends_it_with_an_error_event_and_cancels_the_upstream() {
    let mut pieces = vec!["Your card is 4111 1111", " 1111 1111, keep it safe"];
    pieces.extend(std::iter::repeat_n(" more", 200));
    let mut script = sse(openai_frames(&pieces, None));
    script.gap = Duration::from_millis(20);
    let total = script.frames.len() * script.times;
    let up = scripted(move |_| script.clone());
    let gw = Gateway::start(&demo_config(up.addr));
    let lines = sdk_stream(&gw, "0.7").await;
    let error = lines
        .iter()
        .find_map(|l| l["error"].as_str())
        .unwrap_or_else(|| panic!("the SDK saw no error: {lines:?}"));
    assert!(error.contains("credit_card"), "{error}");
    assert!(!text_of(&lines).contains("4111"), "{lines:?}");
    support::eventually(
        Duration::from_secs(10),
        "the upstream request cancelled",
        || async { up.cut.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    assert!(
        up.sent.load(Ordering::SeqCst) < total / 2,
        "the upstream kept streaming after the block"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "edgegate_policy_events_total",
            &[
                ("policy", "redaction"),
                ("event", "blocked"),
                ("label", "credit_card")
            ],
        ),
        Some(1)
    );

    // The error event as the client reads it.
    let raw = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("demo-key")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last = raw.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{raw}");
    let data: serde_json::Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(data["error"]["code"], "response_blocked");
    assert_eq!(data["error"]["policy"], "redaction");
}

fn anthropic_frames() -> Vec<String> {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let delta = |t: &str| {
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
        )
    };
    vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 25, "cache_read_input_tokens": 10, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        delta("0123456789012345678901234567890123456789"),
        delta("0123456789012345678901234567890123456789"),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

/// Tokens the auth policy charged so far, from the gateway's metrics.
async fn charged(gw: &Gateway) -> u64 {
    let metrics = gw.metrics().await;
    metric(
        &metrics,
        "edgegate_policy_events_total",
        &[("policy", "auth"), ("event", "tokens"), ("label", "total")],
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_charges_a_stream_its_usage_at_the_end_and_a_cut_one_what_was_streamed() {
    let up = scripted(|parts| {
        let shape = parts
            .headers
            .get("x-shape")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut script = match shape.as_str() {
            "anthropic" => sse(anthropic_frames()),
            "slow" => sse(openai_frames(&[" tokens"; 40], None)),
            _ => sse(openai_frames(
                &["Hi", " there"],
                Some(json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})),
            )),
        };
        if shape == "slow" {
            script.gap = Duration::from_millis(50);
        }
        script
    });
    let gw = Gateway::start(&demo_config(up.addr));
    let http = reqwest::Client::new();
    let ask = |shape: &'static str| {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth("demo-key")
            .header("x-shape", shape)
            .json(&json!({"model": "gpt-4o", "stream": true,
                          "messages": [{"role": "user", "content": "sixteen bytes..!"}]}))
            .send()
    };
    // OpenAI with a usage chunk: its total, once.
    let body = ask("openai").await.unwrap().text().await.unwrap();
    assert!(body.contains("[DONE]"));
    assert_eq!(charged(&gw).await, 15);

    // Anthropic: input 25 + 10 cache reads, output the last cumulative 15.
    let body = ask("anthropic").await.unwrap().text().await.unwrap();
    assert!(body.contains("message_stop"), "{body}");
    assert_eq!(charged(&gw).await, 15 + 50);

    // A client gone after three events: the prompt estimate (16 bytes → 4)
    // plus what was streamed by then (a word or more), and the upstream
    // request cancelled.
    let mut resp = ask("slow").await.unwrap();
    let mut got = Vec::new();
    while got.iter().filter(|&&b| b == b'\n').count() < 6 {
        got.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    drop(resp);
    let after_cut = support::eventually(
        Duration::from_secs(10),
        "the cut stream charged",
        || async {
            let total = charged(&gw).await;
            (total > 65).then_some(total - 65)
        },
    )
    .await;
    assert!((4 + 1..=4 + 70).contains(&after_cut), "charged {after_cut}");
    support::eventually(
        Duration::from_secs(10),
        "the upstream cancelled",
        || async { up.cut.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "edgegate_policy_events_total",
            &[
                ("policy", "auth"),
                ("event", "stream_charges"),
                ("label", "client_gone")
            ],
        ),
        Some(1)
    );
}

/// The events of an SSE body, as (event, data) pairs.
fn events_of(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Vec::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_streamed_answer_replays_the_same_events() {
    let seen = Arc::new(Mutex::new(0usize));
    let s = seen.clone();
    let up = scripted(move |_| {
        *s.lock().unwrap() += 1;
        sse(openai_frames(
            &["A deterministic", " answer"],
            Some(json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})),
        ))
    });
    let gw = Gateway::start(&demo_config(up.addr));
    let http = reqwest::Client::new();
    let ask = || {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth("demo-key")
            .json(&json!({"model": "gpt-4o", "stream": true, "temperature": 0,
                          "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "same question"}]}))
            .send()
    };
    let first = ask().await.unwrap();
    assert_eq!(first.headers()["x-edgegate-cache"], "miss");
    let first = first.text().await.unwrap();
    let second = ask().await.unwrap();
    assert_eq!(second.headers()["x-edgegate-cache"], "hit");
    assert_eq!(second.headers()["content-type"], "text/event-stream");
    let second = second.text().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        1,
        "the second answer came from the cache"
    );
    assert_eq!(events_of(&second), events_of(&first));
    assert_eq!(events_of(&second).last().unwrap().1, "[DONE]");
    // A hit costs no tokens: only the first answer's 7 were charged.
    assert_eq!(charged(&gw).await, 7);

    // The OpenAI SDK reads the replay as it read the original.
    let lines = sdk_stream(&gw, "0").await;
    assert_eq!(text_of(&lines), "A deterministic answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_a_policy_in_bounded_memory_whatever_the_reader() {
    // 1 GiB of text in 64 KiB frames, through the redaction policy in
    // `stream` mode (every byte is scanned as it passes).
    const FRAME: usize = 64 << 10;
    const FRAMES: usize = (1 << 30) / FRAME;
    let line = "The quick brown fox jumps over the lazy dog, mail me at nobody. \n";
    let frame: String = line.repeat(FRAME / line.len() + 1)[..FRAME].to_string();
    let up = scripted(move |_| Script {
        frames: vec![frame.clone()],
        times: FRAMES,
        gap: Duration::ZERO,
        hold_after: None,
        content_type: "text/plain",
    });
    let config = support::base_config(up.addr)
        + &support::policy(
            "redact",
            "redaction",
            "response_body = \"stream\"\nmemory_limit_bytes = 16777216",
        )
        + &support::route("all", "/", &["redact"]);
    let gw = Gateway::start(&config);
    let before = gw.rss_bytes();
    let mut resp = reqwest::Client::new()
        .get(gw.url("/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut read = 0u64;
    let mut peak = before;
    let mut paused = false;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        read += chunk.len() as u64;
        if !paused && read > 256 << 20 {
            // A reader that stops: the gateway must not buffer for it.
            paused = true;
            tokio::time::sleep(Duration::from_secs(2)).await;
            peak = peak.max(gw.rss_bytes());
        }
        if read % (64 << 20) < chunk.len() as u64 {
            peak = peak.max(gw.rss_bytes());
        }
    }
    assert_eq!(read, (FRAMES * FRAME) as u64, "every byte passed");
    let grew = peak.saturating_sub(before);
    eprintln!("RSS before {} MiB, peak {} MiB", before >> 20, peak >> 20);
    assert!(grew < 96 << 20, "the gateway grew by {} MiB", grew >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_streaming_policy_ends_its_stream_and_the_gateway_serves_on() {
    let up = scripted(|_| sse(openai_frames(&["one", " two", " three"], None)));
    let config = support::base_config(up.addr)
        + &support::policy("hostile", "hostile-output", "response_body = \"sse\"")
        + &support::route("all", "/", &["hostile"]);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    for path in [
        "/stream-carry",
        "/stream-flood",
        "/stream-forge",
        "/stream-trap",
    ] {
        let body = http
            .get(gw.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        assert!(last.starts_with("event: error\ndata: "), "{path}: {body}");
        let data: serde_json::Value =
            serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
        assert_eq!(data["error"]["code"], "policy_failed", "{path}");
        assert!(!body.contains("forged"), "{path}: {body}");
        assert!(!body.contains("[DONE]"), "{path}: the stream went on");
        // The next request is served, whole.
        let fine = http
            .get(gw.url("/fine"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(fine.trim_end().ends_with("data: [DONE]"), "{path}: {fine}");
    }
    let metrics = gw.metrics().await;
    let failed = |kind| {
        metric(
            &metrics,
            "edgegate_policy_failures_total",
            &[("policy", "hostile"), ("kind", kind)],
        )
        .unwrap_or(0)
    };
    assert_eq!(failed("guest_error") + failed("trap"), 4, "{metrics}");
}

#[test]
fn a_contract_0_1_component_and_an_undeclared_body_mode_are_refused_by_name() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let old = support::base_config(up)
        + &support::policy("old", "contract-0-1", "")
        + &support::route("all", "/", &["old"]);
    let (ok, _, stderr) = support::check_config(&old);
    assert!(!ok, "a 0.1 component was accepted");
    assert!(
        stderr.contains("edgegate:policy@0.1.0") && stderr.contains("edgegate:policy@0.2.0"),
        "{stderr}"
    );

    // The headers policy declares no body modes: a config that would hand
    // it the events of an answer is refused, naming the key.
    let undeclared = support::base_config(up)
        + &support::policy("h", "headers", "response_body = \"sse\"")
        + &support::route("all", "/", &["h"]);
    let (ok, _, stderr) = support::check_config(&undeclared);
    assert!(!ok, "an undeclared body mode was accepted");
    assert!(
        stderr.contains("response_body = \"sse\"") && stderr.contains("modes: buffer"),
        "{stderr}"
    );
}

/// A request body of `total` bytes of `piece`, in 64 KiB frames, made as it is sent.
fn upload(piece: &'static [u8], total: usize) -> reqwest::Body {
    let frame = Bytes::from(piece.repeat((64 << 10) / piece.len()));
    let frames = total / frame.len();
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..frames).map(move |_| Ok::<_, Infallible>(frame.clone())),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_past_policies_and_through_a_chunk_policy_in_bounded_memory() {
    let up = scripted(|_| sse(openai_frames(&["ok"], None)));
    // timeout_ms bounds the wait for the answer's headers, which here comes
    // after the whole upload.
    let config = support::base_config(up.addr).replace("timeout_ms = 2000", "timeout_ms = 60000")
        + &support::policy(
            "h",
            "headers",
            r#"config = { request_set = { "x-h" = "1" } }"#,
        )
        + &support::policy("echo", "body-echo", "request_body = \"stream\"")
        + &support::route("past", "/past", &["h"])
        + &support::route("through", "/stream", &["echo"]);
    let gw = Gateway::start(&config);
    let http = reqwest::Client::new();
    let before = gw.rss_bytes();

    // 512 MiB past a policy that does not ask for the body: unbuffered.
    let total = 512 << 20;
    let got: serde_json::Value = http
        .post(gw.url("/past/count"))
        .body(upload(b"abcdefgh", total))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["bytes"], total as u64, "{got}");
    assert_eq!(got["a"], (total / 8) as u64);

    // 256 MiB through a policy that rewrites it chunk by chunk.
    let total = 256 << 20;
    let got: serde_json::Value = http
        .post(gw.url("/stream/count"))
        .body(upload(b"abcdefgh", total))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["bytes"], total as u64, "{got}");
    assert_eq!(got["a"], 0, "every a was rewritten");
    assert_eq!(got["b"], (total / 4) as u64);
    let grew = gw.rss_bytes().saturating_sub(before);
    eprintln!("RSS grew {} MiB over 768 MiB of uploads", grew >> 20);
    assert!(grew < 96 << 20, "the gateway grew by {} MiB", grew >> 20);

    // A `STOP` split across two frames: the policy ends the body, the
    // client gets 403 with its error, the upstream request is abandoned.
    let frames = futures_util::stream::iter(
        [&b"xxxxST"[..], b"OPxxxx"].map(|f| Ok::<_, Infallible>(Bytes::from_static(f))),
    );
    let resp = http
        .post(gw.url("/stream/count"))
        .body(reqwest::Body::wrap_stream(frames))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "stop_seen");
}
