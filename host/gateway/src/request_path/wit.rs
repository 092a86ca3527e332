//! The adapter between http types and the WIT contract: a policy's header
//! operations, request mutations and own answers become http changes here,
//! each bounded and checked. A policy's output is hostile input: a bad name,
//! value, status or size is a policy failure, and `on_error` applies.

use bytes::Bytes;
use edgegate_request::canonical::{self, PathRules};
use edgegate_runtime::bindings::types;
use edgegate_runtime::PolicyFailure;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Response, StatusCode, Uri};

use super::phases::RequestBody;
use crate::request_path::body::{self, ProxyBody};
use crate::request_path::routes::ChainEntry;

/// Most header operations one policy verdict may carry.
pub(crate) const MAX_HEADER_OPS: usize = 256;
/// Most header fields a request or response may have after a policy changed them.
pub(crate) const MAX_POLICY_HEADER_FIELDS: usize = 256;
/// Largest total size (names + values) of headers a policy leaves behind.
pub(crate) const MAX_POLICY_HEADER_BYTES: usize = 64 << 10;

pub(super) fn header_name(name: &str) -> Result<HeaderName, PolicyFailure> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PolicyFailure::Guest(format!("invalid header name `{name}`")))
}

pub(super) fn header_value(name: &str, value: &str) -> Result<HeaderValue, PolicyFailure> {
    HeaderValue::from_str(value)
        .map_err(|_| PolicyFailure::Guest(format!("invalid value for header `{name}`")))
}

/// Headers that frame the message or the connection: the host owns them, so
/// a policy's value for one is dropped (the host computes its own).
pub(super) fn is_framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Apply a policy's header operations to a header map. Bounded and linear:
/// at most [`MAX_HEADER_OPS`] operations, and the result must keep within
/// [`MAX_POLICY_HEADER_FIELDS`] and [`MAX_POLICY_HEADER_BYTES`]; framing
/// headers are ignored.
pub(super) fn apply_header_ops(
    ops: &[types::HeaderOp],
    map: &mut HeaderMap,
) -> Result<(), PolicyFailure> {
    if ops.is_empty() {
        return Ok(());
    }
    if ops.len() > MAX_HEADER_OPS {
        return Err(PolicyFailure::Guest(format!(
            "{} header operations, over the limit of {MAX_HEADER_OPS}",
            ops.len()
        )));
    }
    let full = || {
        PolicyFailure::Guest(format!(
            "header operations leave more than {MAX_POLICY_HEADER_FIELDS} header fields"
        ))
    };
    for op in ops {
        match op {
            types::HeaderOp::Set((n, v)) => {
                let name = header_name(n)?;
                if !is_framing(&name) {
                    map.try_insert(name, header_value(n, v)?)
                        .map_err(|_| full())?;
                }
            }
            types::HeaderOp::Append((n, v)) => {
                let name = header_name(n)?;
                if !is_framing(&name) {
                    map.try_append(name, header_value(n, v)?)
                        .map_err(|_| full())?;
                }
            }
            types::HeaderOp::Remove(n) => {
                let name = header_name(n)?;
                if !is_framing(&name) {
                    map.remove(&name);
                }
            }
        }
        if map.len() > MAX_POLICY_HEADER_FIELDS {
            return Err(full());
        }
    }
    check_header_bytes(map)?;
    Ok(())
}

/// Refuse a header map from a policy that is larger than [`MAX_POLICY_HEADER_BYTES`].
pub(super) fn check_header_bytes(map: &HeaderMap) -> Result<(), PolicyFailure> {
    let bytes: usize = map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if bytes > MAX_POLICY_HEADER_BYTES {
        return Err(PolicyFailure::Guest(format!(
            "headers of {bytes} bytes, over the limit of {MAX_POLICY_HEADER_BYTES}"
        )));
    }
    Ok(())
}

/// A status a policy may answer with: a final status, 200–599 (a 1xx or
/// 101 is the host's to send, never a policy's).
pub(super) fn policy_status(code: u16) -> Result<StatusCode, PolicyFailure> {
    match code {
        200..=599 => StatusCode::from_u16(code)
            .map_err(|_| PolicyFailure::Guest(format!("invalid status {code}"))),
        _ => Err(PolicyFailure::Guest(format!(
            "status {code} is not a final status (200-599)"
        ))),
    }
}

/// Refuse a body from a policy larger than the policy's `body_limit_bytes`.
pub(super) fn check_body(len: usize, limit: usize) -> Result<(), PolicyFailure> {
    if len > limit {
        return Err(PolicyFailure::Guest(format!(
            "a body of {len} bytes, over the policy's body_limit_bytes ({limit})"
        )));
    }
    Ok(())
}

pub(super) fn apply_request_mutations(
    m: &types::RequestMutations,
    entry: &ChainEntry,
    rules: PathRules,
    wit: &mut types::Request,
    parts: &mut Parts,
    body: &mut RequestBody,
) -> Result<(), PolicyFailure> {
    apply_header_ops(&m.headers, &mut parts.headers)?;
    if let Some(path) = &m.path {
        // A policy's path gets the client's treatment: the upstream never
        // sees a form the route table would not have matched as it is.
        let path = canonical::normalize_path(path, rules)
            .map_err(|e| PolicyFailure::Guest(format!("invalid path from the policy: {e}")))?
            .into_owned();
        let pq: PathAndQuery = path
            .parse()
            .map_err(|_| PolicyFailure::Guest("invalid path from the policy".into()))?;
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.path_and_query = Some(pq);
        parts.uri =
            Uri::from_parts(uri).map_err(|e| PolicyFailure::Guest(format!("invalid path: {e}")))?;
        wit.path = path;
    }
    if let Some(new_body) = &m.body {
        check_body(new_body.len(), entry.body_limit)?;
        match body {
            RequestBody::Buffered(b) => {
                *b = Bytes::from(new_body.clone());
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            RequestBody::Stream(_) => {
                return Err(PolicyFailure::Guest(
                    "policy replaced the request body, but its config does not buffer it (request_body = \"buffer\")".into(),
                ))
            }
        }
    }
    Ok(())
}

/// A policy's own answer as a response: final status only, bounded headers
/// without framing ones (the body's length is the host's to state), bounded body.
pub(super) fn build_response(
    r: types::Response,
    body_limit: usize,
) -> Result<Response<ProxyBody>, PolicyFailure> {
    let status = policy_status(r.status)?;
    if r.headers.len() > MAX_POLICY_HEADER_FIELDS {
        return Err(PolicyFailure::Guest(format!(
            "{} response headers, over the limit of {MAX_POLICY_HEADER_FIELDS}",
            r.headers.len()
        )));
    }
    let body = r.body.unwrap_or_default();
    check_body(body.len(), body_limit)?;
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    for (n, v) in &r.headers {
        let name = header_name(n)?;
        if !is_framing(&name) {
            resp.headers_mut().append(name, header_value(n, v)?);
        }
    }
    check_header_bytes(resp.headers())?;
    Ok(resp)
}
