//! Proxy header hygiene: hop-by-hop removal, `X-Forwarded-For`, `Via`.

use std::net::IpAddr;

use edgegate_policy_core::hop;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Remove hop-by-hop headers (`edgegate_policy_core::hop`, the list Spin uses
/// too), including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION).cloned() {
        if let Ok(s) = conn.to_str() {
            for name in hop::named_by_connection(s) {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(n);
                }
            }
        }
    }
    for h in hop::HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Append the client to `X-Forwarded-For`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// Append this proxy to `Via` (`1.1 edgegate`).
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers_and_appends_xff() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        strip_hop_by_hop(&mut h);
        append_forwarded_for(&mut h, "192.0.2.7".parse().unwrap());
        assert!(h.get("x-private").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h["x-keep"], "1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
    }
}
