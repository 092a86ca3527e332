//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the admin API
//! under `/v1/` (docs/operations.md): list, push, promote, roll back, reload.

use std::convert::Infallible;
use std::net::{IpAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::watch;

use crate::control::plane::{Control, ControlError, PushMode, MAX_PUSH_BYTES};
use crate::observability::metrics::Metrics;
use crate::request_path::body::{self, BufferError, ProxyBody};
use crate::request_path::phases::error_response;

/// How often running canaries are judged.
const JUDGE_EVERY: Duration = Duration::from_millis(250);
/// Time an admin client has for its first byte and then for each request's headers.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections open at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The admin server's shared state.
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) control: Arc<Control>,
    /// The health graph, when `[node]` is configured.
    pub(crate) health: Option<Arc<crate::observability::graph::HealthGraph>>,
}

impl Admin {
    pub(crate) fn run(self, listener: StdListener, mut shutdown: watch::Receiver<bool>) {
        let admin = Arc::new(self);
        crate::run_on_this_thread("admin listener", async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register admin listener");
                    return;
                }
            };
            let judge = admin.control.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(JUDGE_EVERY);
                loop {
                    tick.tick().await;
                    judge.judge_canaries().await;
                }
            });
            let connections = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, peer)) = accepted else { continue };
                        // A bounded number of admin connections; past it, new ones are closed.
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, "admin listener: too many connections; closing a new one");
                            continue;
                        };
                        let admin = admin.clone();
                        tokio::spawn(async move {
                            if !crate::server::first_byte(&stream, ADMIN_HEADER_TIMEOUT).await {
                                return;
                            }
                            let service = service_fn(move |req| {
                                let admin = admin.clone();
                                async move { Ok::<_, Infallible>(admin.handle(req, peer.ip()).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            drop(permit);
                        });
                    }
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    async fn handle(&self, req: Request<Incoming>, peer: IpAddr) -> Response<ProxyBody> {
        if req.uri().path().starts_with("/v1/") {
            return match self.authorize(&req, peer).await {
                Ok(()) => self.api(req).await,
                Err(resp) => resp,
            };
        }
        self.probe(req)
    }

    /// The admin API needs the bearer token when one is configured, else a loopback client.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: IpAddr,
    ) -> Result<(), Response<ProxyBody>> {
        match self.control.token().await {
            Some(token) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                // Compare digests: equal length, no early exit on the secret's bytes.
                if edgegate_trust::sha256_hex(given.trim().as_bytes())
                    == edgegate_trust::sha256_hex(token.trim().as_bytes())
                {
                    Ok(())
                } else {
                    let mut resp = error_response(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "the admin API needs `Authorization: Bearer <admin.token>`",
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer realm=\"edgegate-admin\""),
                    );
                    Err(resp)
                }
            }
            None if peer.is_loopback() => Ok(()),
            None => Err(error_response(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no admin.token is configured, so the admin API answers loopback clients only",
            )),
        }
    }

    async fn api(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let result = match (req.method(), segments.as_slice()) {
            (&Method::GET, ["policies"]) => {
                Ok((StatusCode::OK, to_json(&self.control.status().await)))
            }
            (&Method::GET, ["health"]) => match &self.health {
                Some(h) => Ok((StatusCode::OK, h.view())),
                None => Err(ControlError::NotFound(
                    "no [node] in the config: this gateway keeps no health graph".into(),
                )),
            },
            (&Method::POST, ["policies", name, "versions"]) => {
                let name = name.to_string();
                match push_mode(&query) {
                    Err(e) => Err(e),
                    Ok(mode) => match read_body(req).await {
                        Err(resp) => return resp,
                        Ok(bytes) => self
                            .control
                            .push(&name, bytes, mode)
                            .await
                            .map(|v| (StatusCode::CREATED, to_json(&v))),
                    },
                }
            }
            (&Method::POST, ["policies", name, "promote"]) => self
                .control
                .promote(name)
                .await
                .map(|v| (StatusCode::OK, to_json(&v))),
            (&Method::POST, ["policies", name, "rollback"]) => self
                .control
                .rollback(name)
                .await
                .map(|v| (StatusCode::OK, to_json(&v))),
            (&Method::POST, ["reload"]) => self
                .control
                .reload()
                .await
                .map(|v| (StatusCode::OK, to_json(&v))),
            _ => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!(
                        "no admin API endpoint {} {path} (docs/operations.md)",
                        req.method()
                    ),
                )
            }
        };
        match result {
            Ok((status, value)) => json_response(status, &value),
            Err(e) => {
                let (status, code) = match &e {
                    ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                    ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
                    ControlError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
                    ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                };
                error_response(status, code, &e.to_string())
            }
        }
    }

    fn probe(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let text = |status: StatusCode, content_type: &'static str, body: String| {
            let mut r = Response::new(body::full(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            r
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
            (&Method::GET, "/readyz") => {
                if self.ready.load(Ordering::SeqCst) {
                    text(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "draining\n".into(),
                    )
                }
            }
            (&Method::GET, "/metrics") => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            _ => error_response(StatusCode::NOT_FOUND, "not_found", "unknown admin path"),
        }
    }
}

/// An answer of the control plane as JSON (its types serialize infallibly:
/// strings, numbers and options only).
fn to_json<T: serde::Serialize>(answer: &T) -> Value {
    serde_json::to_value(answer).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut r = Response::new(body::full(format!("{value:#}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `?canary=PERCENT&sticky=true`.
fn push_mode(query: &str) -> Result<PushMode, ControlError> {
    let mut mode = PushMode {
        canary_percent: None,
        sticky: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "canary" => {
                mode.canary_percent = Some(v.parse().map_err(|_| {
                    ControlError::BadRequest(format!("canary: `{v}` is not a percent"))
                })?)
            }
            "sticky" => {
                mode.sticky = match v {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ControlError::BadRequest(format!(
                            "sticky: `{v}` is not true or false"
                        )))
                    }
                }
            }
            other => {
                return Err(ControlError::BadRequest(format!(
                    "unknown parameter `{other}` (canary, sticky)"
                )))
            }
        }
    }
    Ok(mode)
}

async fn read_body(req: Request<Incoming>) -> Result<Vec<u8>, Response<ProxyBody>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("components are limited to {MAX_PUSH_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_PUSH_BYTES as u64) {
        return Err(too_large());
    }
    let stream = req
        .into_body()
        .map_err(|e| Box::new(e) as crate::request_path::body::BoxError)
        .boxed_unsync();
    match body::buffer(stream, MAX_PUSH_BYTES).await {
        Ok(b) => Ok(b.to_vec()),
        Err(BufferError::TooLarge) => Err(too_large()),
        Err(BufferError::Read(e)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            &format!("reading the upload failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_parameters_are_checked() {
        let m = push_mode("canary=10&sticky=true").expect("mode");
        assert_eq!((m.canary_percent, m.sticky), (Some(10), true));
        assert!(push_mode("").expect("mode").canary_percent.is_none());
        assert!(push_mode("canary=ten").is_err());
        assert!(push_mode("percent=3").is_err());
    }
}
