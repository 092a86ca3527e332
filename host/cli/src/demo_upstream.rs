//! A small upstream for the demo and benchmarks.
//!
//! `GET /bytes/N` answers N bytes; `/slow/MS` waits MS milliseconds first;
//! `POST /v1/chat/completions` plays an OpenAI-compatible provider (echoes the
//! last message, reports `usage`; with `"stream": true` it streams the answer
//! as server-sent events, one word per chunk, `--stream-interval-ms` apart,
//! then a usage chunk when `stream_options.include_usage` asks, then
//! `[DONE]`, as OpenAI does); `GET /static/...` answers with
//! `cache-control: max-age=30` and an ETag; anything else echoes the request
//! (method, path, headers, body size) as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Largest response `/bytes/N` produces.
const MAX_BYTES: usize = 64 << 20;
/// Largest request body read for the echo.
const MAX_ECHO_BODY: usize = 16 << 20;

/// Most words of a streamed answer (one event each).
const MAX_STREAM_EVENTS: usize = 4096;

type Body = BoxBody<Bytes, Infallible>;

pub fn run(listen: SocketAddr, stream_interval: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!(
            "demo upstream listening on http://{}",
            listener.local_addr()?
        );
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| answer(req, stream_interval)),
                    )
                    .await;
            });
        }
    })
}

async fn answer(
    req: Request<Incoming>,
    stream_interval: Duration,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Ok(Response::new(full(Bytes::from(vec![
            b'x';
            n.min(MAX_BYTES)
        ]))));
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if req.method() == hyper::Method::POST && path == "/v1/chat/completions" {
        let body = http_body_util::Limited::new(req.into_body(), MAX_ECHO_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let chat: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if chat["stream"].as_bool() == Some(true) {
            return Ok(streamed_completion(&chat, body.len(), stream_interval));
        }
        return Ok(json_response(chat_completion(&chat, body.len())));
    }
    let cacheable = path.starts_with("/static/");
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = http_body_util::Limited::new(req.into_body(), MAX_ECHO_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0);
    let json = serde_json::json!({
        "upstream": "demo",
        "method": method,
        "uri": uri,
        "headers": headers,
        "body_bytes": body,
    });
    let mut resp = json_response(json);
    if cacheable {
        let h = resp.headers_mut();
        h.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("max-age=30"),
        );
        h.insert(
            hyper::header::ETAG,
            hyper::header::HeaderValue::from_static("\"demo-v1\""),
        );
    }
    Ok(resp)
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

fn json_response(json: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(json.to_string())));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The answer to a chat request: it echoes the last message. A question
/// about support gets contact details too, so the demo shows an answer's PII
/// redacted as it streams (the prompt's own PII is redacted on the way in).
fn echo(req: &serde_json::Value) -> String {
    let text = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    if text.to_ascii_lowercase().contains("support") {
        return format!("You said: {text}. Write to help@example.com or call +1 415 555 0134.");
    }
    format!("You said: {text}")
}

/// `usage`, estimated at four bytes per token.
fn usage(request_bytes: usize, answer: &str) -> serde_json::Value {
    let prompt_tokens = request_bytes.div_ceil(4);
    let completion_tokens = answer.len().div_ceil(4);
    serde_json::json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// An OpenAI-style chat completion that echoes the last message.
fn chat_completion(req: &serde_json::Value, request_bytes: usize) -> serde_json::Value {
    let answer = echo(req);
    serde_json::json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": usage(request_bytes, &answer),
    })
}

/// The same answer as OpenAI streams it: `chat.completion.chunk` events,
/// the role first, then one word per event, `interval` apart, then the
/// finish reason, a usage chunk with no choices when the request sets
/// `stream_options.include_usage`, and `data: [DONE]`.
fn streamed_completion(
    req: &serde_json::Value,
    request_bytes: usize,
    interval: Duration,
) -> Response<Body> {
    let answer = echo(req);
    let chunk = |choices: serde_json::Value| {
        serde_json::json!({
            "id": "chatcmpl-demo",
            "object": "chat.completion.chunk",
            "model": req["model"],
            "choices": choices,
        })
    };
    let mut events = vec![chunk(
        serde_json::json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    )];
    events.extend(answer.split_inclusive(' ').take(MAX_STREAM_EVENTS).map(|word| {
        chunk(serde_json::json!([{"index": 0, "delta": {"content": word}, "finish_reason": null}]))
    }));
    events.push(chunk(
        serde_json::json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ));
    if req["stream_options"]["include_usage"].as_bool() == Some(true) {
        let mut last = chunk(serde_json::json!([]));
        last["usage"] = usage(request_bytes, &answer);
        events.push(last);
    }
    let mut frames: Vec<Bytes> = events
        .iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut rest, first)| async move {
            let frame = rest.next()?;
            if !first {
                tokio::time::sleep(interval).await;
            }
            Some((
                Ok::<_, Infallible>(hyper::body::Frame::data(frame)),
                (rest, false),
            ))
        },
    );
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    resp
}
