//! A small upstream for the demo and benchmarks.
//!
//! `GET /bytes/N` answers N bytes; `/slow/MS` waits MS milliseconds first;
//! `POST /v1/chat/completions` plays an OpenAI-compatible provider (echoes the
//! last message, reports `usage`); `GET /static/...` answers with
//! `cache-control: max-age=30` and an ETag; anything else echoes the request
//! (method, path, headers, body size) as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Largest response `/bytes/N` produces.
const MAX_BYTES: usize = 64 << 20;
/// Largest request body read for the echo.
const MAX_ECHO_BODY: usize = 16 << 20;

pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
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
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Ok(Response::new(Full::new(Bytes::from(vec![
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
        return Ok(json_response(chat_completion(&body)));
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

fn json_response(json: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// An OpenAI-style chat completion that echoes the last message, with `usage`
/// estimated at four bytes per token.
fn chat_completion(body: &[u8]) -> serde_json::Value {
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let answer = format!("You said: {text}");
    let prompt_tokens = body.len().div_ceil(4);
    let completion_tokens = answer.len().div_ceil(4);
    serde_json::json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": req["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}
