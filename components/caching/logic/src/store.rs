//! Which upstream responses the cache stores, and for how long (RFC 9111 §3
//! and §4.2, as a shared cache).

use edgegate_policy_core::{header_values, hop, HeaderView, HttpResponse};

use crate::config::CachingConfig;
use crate::directives::{self, CacheControl, Vary};
use crate::entry::Entry;
use crate::http_date;

/// Statuses stored at all: those RFC 9110 §15.1 calls heuristically cacheable,
/// minus the ones a gateway rarely sees (206, 405, 414, 501). Only `200` is
/// stored without explicit freshness.
pub const STORED_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The response may not or need not be stored; the reason is for logs.
    Uncacheable(&'static str),
    /// The response arrived without its body: `response_body = "buffer"` is missing.
    Unbuffered,
    /// The body is larger than `max_entry_bytes`.
    TooLarge,
}

impl Refusal {
    /// The counter label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Uncacheable(_) | Refusal::Unbuffered => "uncacheable",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// The entry to store for `resp` and the header names it varies on, or why
/// it is not stored. `llm` selects the default TTL.
pub fn admit(
    config: &CachingConfig,
    llm: bool,
    resp: HttpResponse,
    now_ms: u64,
) -> Result<(Entry, Vec<String>), Refusal> {
    if !STORED_STATUSES.contains(&resp.status) {
        return Err(Refusal::Uncacheable("status not cacheable"));
    }
    // Every check below reads the headers, and a stored entry keeps them:
    // one copy from the host serves them all.
    let headers = HeaderView::from(resp.headers.into_vec());
    let cc = CacheControl::of(&headers);
    if cc.no_store {
        return Err(Refusal::Uncacheable("response says no-store"));
    }
    // Stored responses are never revalidated, so one that must be is not stored.
    if cc.no_cache {
        return Err(Refusal::Uncacheable("response says no-cache"));
    }
    if cc.private && !config.per_user {
        return Err(Refusal::Uncacheable(
            "response says private and per_user is off",
        ));
    }
    if headers.get("set-cookie").is_some() {
        return Err(Refusal::Uncacheable("response sets a cookie"));
    }
    let Vary::Names(vary) = Vary::of(&headers) else {
        return Err(Refusal::Uncacheable(
            "response varies on `*` or on too many headers",
        ));
    };
    let body = match resp.body {
        Some(body) => body,
        None if resp.status == 204 => Vec::new(),
        None => return Err(Refusal::Unbuffered),
    };
    if body.len() as u64 > config.max_entry_bytes {
        return Err(Refusal::TooLarge);
    }
    let default_ttl_s = if llm { config.llm.ttl_s } else { config.ttl_s };
    let lifetime_s =
        freshness_lifetime(&headers, resp.status, &cc, default_ttl_s, now_ms).min(config.max_ttl_s);
    let age_s = directives::age(&headers);
    if lifetime_s <= age_s {
        return Err(Refusal::Uncacheable("response is not fresh"));
    }
    let stored_at_ms = now_ms.saturating_sub(age_s.saturating_mul(1000));
    let entry = Entry {
        status: resp.status,
        stored_at_ms,
        expires_at_ms: stored_at_ms.saturating_add(lifetime_s.saturating_mul(1000)),
        headers: stored_headers(headers.into_vec(), &config.status_header),
        body,
    };
    Ok((entry, vary))
}

/// Seconds the response stays fresh: `s-maxage`, else `max-age`, else
/// `Expires` minus `Date` (an `Expires` that is not a date is in the past),
/// else `default_ttl_s` for a `200` and 0 for other statuses.
fn freshness_lifetime(
    headers: &HeaderView,
    status: u16,
    cc: &CacheControl,
    default_ttl_s: u64,
    now_ms: u64,
) -> u64 {
    if let Some(s) = cc.s_maxage.or(cc.max_age) {
        return s;
    }
    if let Some(expires) = headers.get("expires") {
        let Some(expires) = http_date::parse(&expires) else {
            return 0;
        };
        let date = headers
            .get("date")
            .as_deref()
            .and_then(http_date::parse)
            .unwrap_or(now_ms / 1000);
        return expires.saturating_sub(date);
    }
    if status == 200 {
        default_ttl_s
    } else {
        0
    }
}

/// The end-to-end headers: without hop-by-hop ones (policy-core's list, the
/// gateway's; also those `Connection` names), `Age`, which the cache computes
/// itself, and the cache's own status header.
fn stored_headers(headers: Vec<(String, String)>, status_header: &str) -> Vec<(String, String)> {
    let connection_named: Vec<String> = header_values(&headers, "connection")
        .flat_map(hop::named_by_connection)
        .collect();
    headers
        .into_iter()
        .filter(|(name, _)| {
            !hop::is_hop_by_hop(name)
                && !name.eq_ignore_ascii_case("age")
                && !name.eq_ignore_ascii_case(status_header)
                && !connection_named
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT

    fn response(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Some(b"body".to_vec()),
        }
    }

    fn ttl_s(resp: HttpResponse) -> Result<u64, Refusal> {
        let (entry, _) = admit(&CachingConfig::default(), false, resp, NOW_MS)?;
        Ok((entry.expires_at_ms - NOW_MS) / 1000)
    }

    #[test]
    fn lifetime_comes_from_the_response_first() {
        assert_eq!(ttl_s(response(200, &[])), Ok(60));
        assert_eq!(
            ttl_s(response(200, &[("cache-control", "max-age=10")])),
            Ok(10)
        );
        assert_eq!(
            ttl_s(response(
                200,
                &[("cache-control", "max-age=10, s-maxage=20")]
            )),
            Ok(20)
        );
        assert_eq!(
            ttl_s(response(200, &[("cache-control", "max-age=999999999")])),
            Ok(86_400)
        );
        assert_eq!(
            ttl_s(response(
                404,
                &[("cache-control", "max-age=5"), ("age", "2")]
            )),
            Ok(3)
        );
        assert_eq!(
            ttl_s(response(404, &[])),
            Err(Refusal::Uncacheable("response is not fresh"))
        );
    }

    #[test]
    fn expires_counts_from_date() {
        assert_eq!(
            ttl_s(response(
                200,
                &[
                    ("date", "Sun, 06 Nov 1994 08:00:00 GMT"),
                    ("expires", "Sun, 06 Nov 1994 08:00:30 GMT"),
                ]
            )),
            Ok(30)
        );
        assert_eq!(
            ttl_s(response(
                301,
                &[("expires", "Sun, 06 Nov 1994 08:50:37 GMT")]
            )),
            Ok(60)
        );
        assert_eq!(
            ttl_s(response(
                200,
                &[
                    ("expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
                    ("cache-control", "max-age=5")
                ]
            )),
            Ok(5)
        );
        for past in ["0", "Thu, 19 Nov 1981 08:52:00 GMT"] {
            assert_eq!(
                ttl_s(response(200, &[("expires", past)])),
                Err(Refusal::Uncacheable("response is not fresh")),
                "{past}"
            );
        }
    }

    #[test]
    fn hop_by_hop_age_and_status_headers_are_dropped() {
        let resp = response(
            200,
            &[
                ("Connection", "x-conn"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("x-conn", "1"),
                ("age", "1"),
                ("x-edgegate-cache", "hit"),
                ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("content-type", "text/plain"),
            ],
        );
        let (entry, _) = admit(&CachingConfig::default(), false, resp, NOW_MS).expect("stored");
        let names: Vec<&str> = entry.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["date", "content-type"]);
        assert_eq!(entry.stored_at_ms, NOW_MS - 1000);
    }

    #[test]
    fn unbuffered_bodies_are_refused_except_for_204() {
        let mut resp = response(200, &[]);
        resp.body = None;
        assert_eq!(ttl_s(resp), Err(Refusal::Unbuffered));
        let mut resp = response(204, &[("cache-control", "max-age=5")]);
        resp.body = None;
        assert_eq!(ttl_s(resp), Ok(5));
    }
}
