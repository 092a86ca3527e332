//! The well-known context keys: the facts one policy (or the host) leaves
//! for the others of the same request. One definition, which the shipped
//! policies, the Spin gateway and the edgegate host all use; a policy of
//! your own reads them by these names (docs/writing-a-policy.md).
//!
//! Keys that only one policy reads back (its request phase for its response
//! phase) stay in that policy.

/// The authenticated principal (key id, token subject, user name, or
/// `anonymous`), set by the auth policy; the access log shows it.
pub const PRINCIPAL: &str = "principal";
/// The principal's tenant, when known, set by the auth policy; the access
/// log shows it.
pub const TENANT: &str = "tenant";
/// The principal's roles, comma-separated, set by the auth policy.
pub const ROLES: &str = "roles";
/// The `model` of an LLM request, set by the routing policy; the host counts
/// the model's requests and latency in the health graph under this name.
pub const ROUTE_MODEL: &str = "route.model";
/// The cluster the routing policy chose first.
pub const ROUTE_UPSTREAM: &str = "route.upstream";

/// Keys the host sets from a TLS connection before the first policy runs.
/// They are the host's word: a policy's `set` of `tls` or of a key under
/// `tls.` is dropped.
pub mod tls {
    /// `1` when the request came over the TLS listener.
    pub const TLS: &str = "tls";
    /// The server name (SNI) the client asked for.
    pub const SNI: &str = "tls.sni";
    /// Subject DN of the verified client certificate (`CN=alice,O=Example`).
    pub const CLIENT_SUBJECT: &str = "tls.client.subject";
    /// Its DNS subject alternative names, comma-separated.
    pub const CLIENT_DNS: &str = "tls.client.dns";
    /// Its URI subject alternative names, comma-separated.
    pub const CLIENT_URI: &str = "tls.client.uri";
    /// Its first `spiffe://` URI name.
    pub const CLIENT_SPIFFE: &str = "tls.client.spiffe";

    /// Whether `key` is one only the host may set.
    pub fn reserved(key: &str) -> bool {
        key == TLS || key.starts_with("tls.")
    }
}
