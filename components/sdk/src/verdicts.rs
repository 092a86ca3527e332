//! Constructors for the WIT records and variants a policy builds or tests with.

use crate::{
    header, ConfigError, Error, HeaderOp, HeaderView, Headers, Request, RequestMutations,
    RequestSummary, RequestVerdict, Response, ResponseMutations, ResponseVerdict, RouteDecision,
};

impl RequestVerdict {
    /// Go on to the next policy with the request unchanged.
    pub fn continue_() -> Self {
        RequestVerdict::Continue(RequestMutations::default())
    }

    /// Go on to the next policy with these changes.
    pub fn continue_with(changes: RequestMutations) -> Self {
        RequestVerdict::Continue(changes)
    }

    /// Answer the client now; the upstream is not contacted.
    pub fn respond(status: u16, headers: Headers, body: impl Into<Vec<u8>>) -> Self {
        RequestVerdict::Respond(Response {
            status,
            headers,
            body: Some(body.into()),
        })
    }
}

impl ResponseVerdict {
    /// Pass the response on unchanged.
    pub fn continue_() -> Self {
        ResponseVerdict::Continue(ResponseMutations::default())
    }

    /// Pass the response on with these changes.
    pub fn continue_with(changes: ResponseMutations) -> Self {
        ResponseVerdict::Continue(changes)
    }

    /// Replace the upstream's response entirely.
    pub fn replace(status: u16, headers: Headers, body: impl Into<Vec<u8>>) -> Self {
        ResponseVerdict::Replace(Response {
            status,
            headers,
            body: Some(body.into()),
        })
    }
}

impl HeaderOp {
    /// Replace every value of `name` with `value`.
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> Self {
        HeaderOp::Set((name.into(), value.into()))
    }

    /// Add a value for `name`, keeping the ones there.
    pub fn append(name: impl Into<String>, value: impl Into<String>) -> Self {
        HeaderOp::Append((name.into(), value.into()))
    }

    /// Remove every value of `name`.
    pub fn remove(name: impl Into<String>) -> Self {
        HeaderOp::Remove(name.into())
    }
}

impl Default for RequestMutations {
    /// No changes.
    fn default() -> Self {
        RequestMutations {
            headers: Vec::new(),
            path: None,
            body: None,
        }
    }
}

impl RequestMutations {
    /// True when applying these changes would change nothing.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.path.is_none() && self.body.is_none()
    }

    /// Replace every value of a request header.
    pub fn set_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.push(HeaderOp::set(name, value));
        self
    }

    /// Add a request header value, keeping the ones there.
    pub fn append_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.push(HeaderOp::append(name, value));
        self
    }

    /// Remove a request header.
    pub fn remove_header(&mut self, name: &str) -> &mut Self {
        self.headers.push(HeaderOp::remove(name));
        self
    }
}

impl Default for ResponseMutations {
    /// No changes.
    fn default() -> Self {
        ResponseMutations {
            status: None,
            headers: Vec::new(),
            body: None,
        }
    }
}

impl ResponseMutations {
    /// True when applying these changes would change nothing.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.headers.is_empty() && self.body.is_none()
    }

    /// Replace every value of a response header.
    pub fn set_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.push(HeaderOp::set(name, value));
        self
    }

    /// Add a response header value, keeping the ones there.
    pub fn append_header(&mut self, name: &str, value: &str) -> &mut Self {
        self.headers.push(HeaderOp::append(name, value));
        self
    }

    /// Remove a response header.
    pub fn remove_header(&mut self, name: &str) -> &mut Self {
        self.headers.push(HeaderOp::remove(name));
        self
    }
}

impl RouteDecision {
    /// Send the request to `upstream`, with no fallbacks, retries or changes.
    pub fn to(upstream: impl Into<String>) -> Self {
        RouteDecision {
            upstream: upstream.into(),
            fallbacks: Vec::new(),
            retries: 0,
            backoff_ms: 0,
            mutations: RequestMutations::default(),
        }
    }
}

impl Response {
    /// A response with this status, no headers and no body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header (name lower-cased, as the host delivers them).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The upstream's response as `on_response` sees it. Its headers are a
/// [`HeaderView`] the host answers on demand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Response headers, read on demand.
    pub headers: HeaderView,
    /// True when the body follows in chunk or event calls.
    pub streamed: bool,
    /// The whole body, when the policy buffers it.
    pub body: Option<Vec<u8>>,
}

impl ResponseHead {
    /// A response head with this status, no headers and no body, for tests.
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            ..Self::default()
        }
    }

    /// Adds a header (name lower-cased, as the host delivers them).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the buffered body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of a header, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }
}

impl RequestSummary {
    /// What the response phase learns about `req` once it went to `upstream`, for tests.
    pub fn from_request(req: &Request, upstream: &str) -> Self {
        RequestSummary {
            method: req.method.clone(),
            path: req.path.clone(),
            authority: req.authority.clone(),
            route: req.route.clone(),
            upstream: upstream.to_string(),
        }
    }
}

impl Error {
    /// Something failed inside the policy.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// `init` refuses the config value at `key` (a path like `deny[0].status`).
    pub fn invalid_config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig(ConfigError {
            key: key.into(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_path_splits_off_the_query() {
        let req = Request::new("GET", "/a/b?x=1&y=2");
        assert_eq!(req.path_only(), "/a/b");
        assert_eq!(req.query(), Some("x=1&y=2"));
        let req = Request::new("GET", "/a");
        assert_eq!(req.path_only(), "/a");
        assert_eq!(req.query(), None);
    }

    #[test]
    fn mutation_builders_record_ops_in_order() {
        let mut changes = RequestMutations::default();
        assert!(changes.is_empty());
        changes
            .remove_header("a")
            .set_header("b", "1")
            .append_header("c", "2");
        assert_eq!(
            changes.headers,
            vec![
                HeaderOp::remove("a"),
                HeaderOp::set("b", "1"),
                HeaderOp::append("c", "2")
            ]
        );
        assert!(!changes.is_empty());
    }

    #[test]
    fn respond_always_carries_a_body() {
        let RequestVerdict::Respond(resp) = RequestVerdict::respond(404, vec![], "") else {
            panic!("not a respond verdict");
        };
        assert_eq!((resp.status, resp.body), (404, Some(Vec::new())));
    }
}
