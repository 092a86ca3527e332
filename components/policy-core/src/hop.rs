//! Headers that describe one connection and are never forwarded or stored
//! (RFC 9110 §7.6.1): one list for the gateway, the Spin component and the
//! caching policy.

/// Hop-by-hop header names, lower-case; `proxy-connection` is the
/// non-standard one some clients still send.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (any case) is hop-by-hop.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The header names a `Connection` value lists, lower-case: they are
/// hop-by-hop for this message too.
pub fn named_by_connection(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}
