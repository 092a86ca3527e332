//! Requests, responses and the outcomes a policy returns, as plain Rust types.

use crate::HeaderView;

/// The request a policy sees in the request phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Host the client asked for.
    pub authority: String,
    /// Request headers, read on demand.
    pub headers: HeaderView,
    /// The body, when the policy buffers it.
    pub body: Option<Vec<u8>>,
    /// The client's IP address.
    pub client_ip: String,
    /// Name of the route that matched.
    pub route: String,
}

impl HttpRequest {
    /// A request with a method and path (for tests and hosts).
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            ..Self::default()
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }

    /// The query string without its `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, query)| query)
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split_once('?').map_or(&self.path, |(p, _)| p)
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.path.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The summary the response phase sees.
    pub fn info(&self, upstream: &str) -> RequestInfo {
        RequestInfo {
            method: self.method.clone(),
            path: self.path.clone(),
            authority: self.authority.clone(),
            route: self.route.clone(),
            upstream: upstream.to_string(),
            streamed_body: false,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    out.push(hex_value(h) << 4 | hex_value(l));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// What a policy learns about the request in the response phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Method.
    pub method: String,
    /// Path and query as sent upstream.
    pub path: String,
    /// Host the client asked for.
    pub authority: String,
    /// Route name.
    pub route: String,
    /// Upstream cluster that answered (empty when a policy answered).
    pub upstream: String,
    /// The response body comes after the response call, in chunk or event
    /// calls (the policy's mode is `stream`, or `sse` on an event stream).
    pub streamed_body: bool,
}

/// A response: one a policy builds, or the upstream's in the response phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers: the upstream's, read on demand, or the ones a policy built.
    pub headers: HeaderView,
    /// Body, when buffered or built.
    pub body: Option<Vec<u8>>,
}

impl HttpResponse {
    /// A response with this status, no headers and no body.
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            ..Self::default()
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }
}

/// A JSON error response `{"error": code, "message": message}`.
pub fn json_error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())].into(),
        body: Some(body.into_bytes()),
    }
}

/// One change to a header map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value.
    Set(String, String),
    /// Add a value.
    Append(String, String),
    /// Remove the header.
    Remove(String),
}

/// Changes to the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestChanges {
    /// Header changes, in order.
    pub headers: Vec<HeaderOp>,
    /// New path and query.
    pub path: Option<String>,
    /// New body (only when buffered).
    pub body: Option<Vec<u8>>,
}

impl RequestChanges {
    /// Sets a header (builder style on `&mut`).
    pub fn set_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers
            .push(HeaderOp::Set(name.to_string(), value.to_string()));
        self
    }

    /// Removes a header.
    pub fn remove_header(&mut self, name: &str) -> &mut Self {
        self.headers.push(HeaderOp::Remove(name.to_string()));
        self
    }
}

/// Where the request should go; the host executes retries and fallbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDecision {
    /// Upstream cluster name.
    pub upstream: String,
    /// Clusters to try in order when the first fails (5xx, 429, timeout, unreachable).
    pub fallbacks: Vec<String>,
    /// Retries per cluster.
    pub retries: u32,
    /// Base of the exponential backoff between attempts, ms (the host adds jitter and a cap).
    pub backoff_ms: u32,
}

/// The outcome of the request phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Go on with these changes.
    Continue(RequestChanges),
    /// Answer now; the upstream is not contacted.
    Respond(HttpResponse),
    /// Go on, to where the decision says.
    Route(RouteDecision, RequestChanges),
}

impl RequestOutcome {
    /// Go on unchanged.
    pub fn pass() -> Self {
        RequestOutcome::Continue(RequestChanges::default())
    }
}

/// Changes to the upstream's response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseChanges {
    /// New status.
    pub status: Option<u16>,
    /// Header changes.
    pub headers: Vec<HeaderOp>,
    /// New body (only when buffered).
    pub body: Option<Vec<u8>>,
}

/// The outcome of the response phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Pass on with these changes.
    Continue(ResponseChanges),
    /// Replace the response.
    Replace(HttpResponse),
}

impl ResponseOutcome {
    /// Pass on unchanged.
    pub fn pass() -> Self {
        ResponseOutcome::Continue(ResponseChanges::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let r = HttpRequest::new("GET", "/x?a=1&api_key=k%2Fy+z&b");
        assert_eq!(r.query_param("api_key").as_deref(), Some("k/y z"));
        assert_eq!(r.query_param("b").as_deref(), Some(""));
        assert_eq!(r.query_param("c"), None);
        assert_eq!(r.path_only(), "/x");
        assert_eq!(
            HttpRequest::new("GET", "/q?x=%zz%4")
                .query_param("x")
                .as_deref(),
            Some("%zz%4")
        );
    }
}
