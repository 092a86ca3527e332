//! The upstream attempts of one request: an endpoint of the first cluster,
//! retries on it with capped, jittered backoff, then the fallback clusters,
//! as far as the request body allows a replay. An attempt fails when the
//! endpoint cannot be reached, times out, or answers as a failing provider.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::phases::{client_body_failed, error_response, Peer, RequestBody};
use crate::control::state::GatewayState;
use crate::observability::access_log::Trail;
use crate::request_path::body::{self, find_cause, ClientBodyError, ProxyBody};
use crate::request_path::{forwarding, stream};
use crate::upstreams::cluster::Cluster;
use edgegate_request::attempts::AttemptPlan;

/// Where the request phase sends the request: the plan (caps, backoff) is
/// the host-neutral one the Spin component follows too.
pub(super) type Target<'a> = AttemptPlan<&'a Arc<Cluster>>;

/// Whether an upstream answer counts as the provider failing: a 5xx, or a
/// 429 (a provider that is rate limiting us is worth a fallback, but does
/// not break the circuit).
pub(super) fn provider_failed(status: StatusCode) -> bool {
    edgegate_request::attempts::provider_failed(status.as_u16())
}

/// Set what the upstream sees: the forwarding headers. The client's hop-by-hop
/// headers went before the chain (so a client's `Connection: x-foo` cannot
/// remove an `x-foo` a policy set), and policies cannot set framing headers;
/// `Host` is the canonical one unless a policy set its own.
pub(super) fn prepare_upstream_request(state: &GatewayState, peer: Peer, parts: &mut Parts) {
    forwarding::append_forwarded_for(&mut parts.headers, peer.ip);
    forwarding::append_via(&mut parts.headers, &state.via);
    parts.version = Version::HTTP_11;
}

/// The host an upstream request is for: `host_rewrite`, else the client's
/// `Host` (or `:authority`), else the endpoint.
pub(super) fn upstream_authority(
    cluster: &Cluster,
    headers: &HeaderMap,
    client_authority: Option<http::uri::Authority>,
    endpoint: &http::uri::Authority,
) -> http::uri::Authority {
    let named = cluster
        .host_rewrite
        .as_ref()
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    named
        .or(client_authority)
        .unwrap_or_else(|| endpoint.clone())
}

/// Upstream phase: pick an endpoint, send, retry or fall back when the body allows it.
pub(super) async fn forward<'a>(
    peer: Peer,
    target: &Target<'a>,
    parts: Parts,
    body: RequestBody,
    trail: &mut Trail,
) -> Result<(Response<Incoming>, &'a Arc<Cluster>), Response<ProxyBody>> {
    let replay = body.replayable();
    let mut body = Some(body);
    let mut parts = Some(parts);
    let mut last_error = None;
    let total = target.attempts();
    for attempt in 0..total {
        let (&cluster, retry) = target.attempt(attempt);
        let last = attempt + 1 == total;
        if retry > 0 {
            tokio::time::sleep(target.backoff_before(retry, fastrand::f64())).await;
        }
        let Some(endpoint) = cluster.pick() else {
            // Every endpoint is a name that has not resolved yet.
            last_error = Some(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoint",
                &format!(
                    "upstream `{}` has no address: its endpoint names have not resolved",
                    cluster.name
                ),
            ));
            continue;
        };
        let attempt_body = match (body.take(), &replay) {
            (_, Some(bytes)) => body::full(bytes.clone()),
            (Some(RequestBody::Stream(s)), None) => s,
            (Some(RequestBody::Buffered(b)), None) => body::full(b),
            (None, None) => break, // a streamed body cannot be sent twice
        };
        let attempt_parts = if last || replay.is_none() {
            match parts.take() {
                Some(p) => p,
                None => break,
            }
        } else {
            match &parts {
                Some(p) => p.clone(),
                None => break,
            }
        };
        let mut uri = attempt_parts.uri.clone().into_parts();
        uri.scheme = Some(cluster.scheme.clone());
        // The URI names the host the request is for (hyper writes it as
        // `Host`, or HTTP/2's `:authority`, which must agree with `Host`);
        // the endpoint's connector decides where it goes.
        uri.authority = Some(upstream_authority(
            cluster,
            &attempt_parts.headers,
            uri.authority.take(),
            &endpoint.authority,
        ));
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        let mut req = Request::from_parts(attempt_parts, attempt_body);
        req.headers_mut().remove(header::HOST);
        match Uri::from_parts(uri) {
            Ok(u) => *req.uri_mut() = u,
            Err(e) => {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_uri",
                    &e.to_string(),
                ));
            }
        }
        trail.attempts += 1;
        if trail.on {
            trail.upstream = Some(cluster.name.clone());
            trail.endpoint = Some(endpoint.address.clone());
        }
        let started = Instant::now();
        endpoint
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = tokio::time::timeout(
            cluster.timeout,
            cluster.client(&endpoint, peer.worker).request(req),
        )
        .await;
        endpoint
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let elapsed = started.elapsed();
        endpoint.metrics.duration.observe(elapsed.as_secs_f64());
        match sent {
            Ok(Ok(resp)) => {
                cluster.observe(&endpoint, elapsed, resp.status().is_server_error());
                endpoint.metrics.ok.inc();
                if !provider_failed(resp.status()) || last || replay.is_none() {
                    return Ok((resp, cluster));
                }
                last_error = Some(error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    &format!("upstream `{}` answered {}", cluster.name, resp.status()),
                ));
            }
            Ok(Err(e)) if find_cause::<stream::BodyRefused>(&e).is_some() => {
                // A streaming policy ended the request body: its answer.
                let refused = find_cause::<stream::BodyRefused>(&e);
                let (code, message) = refused.map_or(("policy_blocked", ""), |r| {
                    (r.code.as_str(), r.message.as_str())
                });
                return Err(error_response(StatusCode::FORBIDDEN, code, message));
            }
            Ok(Err(e)) if find_cause::<ClientBodyError>(&e).is_some() => {
                // The client broke its own body: its answer, and no mark
                // against the upstream's health.
                return Err(client_body_failed(&e));
            }
            Ok(Err(e)) => {
                cluster.observe(&endpoint, elapsed, true);
                let resp = if let Some(reason) = crate::tls::upstream_failure(&e) {
                    let counter = if reason == "tls_verify" {
                        &endpoint.metrics.tls_verify
                    } else {
                        &endpoint.metrics.tls_handshake
                    };
                    counter.inc();
                    tracing::warn!(upstream = %cluster.name, endpoint = %endpoint.address, reason, error = %crate::tls::describe(&e), "TLS to the upstream failed");
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        reason,
                        &format!("TLS to upstream `{}` failed", cluster.name),
                    )
                } else if e.is_connect() {
                    endpoint.metrics.connect_error.inc();
                    tracing::warn!(upstream = %cluster.name, endpoint = %endpoint.address, error = %crate::tls::describe(&e), "upstream unreachable");
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unreachable",
                        &format!("upstream `{}` is unreachable", cluster.name),
                    )
                } else {
                    endpoint.metrics.error.inc();
                    tracing::warn!(upstream = %cluster.name, endpoint = %endpoint.address, error = %crate::tls::describe(&e), "upstream request failed");
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        &format!("upstream `{}` failed", cluster.name),
                    )
                };
                last_error = Some(resp);
            }
            Err(_) => {
                cluster.observe(&endpoint, elapsed, true);
                endpoint.metrics.timeout.inc();
                last_error = Some(error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    &format!(
                        "upstream `{}` did not answer within {} ms",
                        cluster.name,
                        cluster.timeout.as_millis()
                    ),
                ));
            }
        }
        if replay.is_none() {
            break;
        }
    }
    Err(last_error.unwrap_or_else(|| {
        error_response(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "no upstream attempt was possible",
        )
    }))
}
