//! What the headers policy decides, as plain functions of the request, the
//! response and the context bag, so it tests natively.

use crate::config::{is_header_value, DenyRule, HeadersConfig};
use edgegate_policy_sdk::core::{
    HeaderOp, HttpRequest as Request, HttpResponse, RequestChanges, RequestOutcome,
    ResponseChanges, ResponseOutcome,
};

/// The headers policy, built from a checked config.
#[derive(Debug)]
pub struct HeaderRules {
    config: HeadersConfig,
}

impl HeaderRules {
    /// Rules that do what `config` says.
    pub fn new(config: HeadersConfig) -> Self {
        HeaderRules { config }
    }

    /// Request phase: deny rules first, then the required header, then the
    /// header changes. Context values are set (through `set_context`) only when
    /// the request goes on.
    pub fn on_request(
        &self,
        req: &Request,
        mut set_context: impl FnMut(&str, &str),
    ) -> RequestOutcome {
        if let Some(rule) = self.matching_deny_rule(req.path_only()) {
            let mut answer = HttpResponse::new(rule.status).with_body(rule.body.as_bytes());
            if !rule.body.is_empty() {
                answer = answer.with_header("content-type", "text/plain; charset=utf-8");
            }
            return RequestOutcome::Respond(answer);
        }
        if let Some(name) = &self.config.require_header {
            if req.header(name).is_none_or(|v| v.trim().is_empty()) {
                let body =
                    serde_json::json!({ "error": "missing required header", "header": name });
                return RequestOutcome::Respond(
                    HttpResponse::new(401)
                        .with_header("content-type", "application/json")
                        .with_body(body.to_string()),
                );
            }
        }
        let mut changes = RequestChanges::default();
        for name in &self.config.request_remove {
            changes.remove_header(name);
        }
        for (name, value) in &self.config.request_set {
            changes.set_header(name, value);
        }
        for (key, value) in &self.config.context_set {
            set_context(key, value);
        }
        RequestOutcome::Continue(changes)
    }

    /// Response phase: header changes, then `echo_context` values found through
    /// `get_context` (values that cannot be header values are skipped).
    pub fn on_response(&self, get_context: impl Fn(&str) -> Option<String>) -> ResponseOutcome {
        let mut changes = ResponseChanges::default();
        for name in &self.config.response_remove {
            changes.headers.push(HeaderOp::Remove(name.clone()));
        }
        for (name, value) in &self.config.response_set {
            changes
                .headers
                .push(HeaderOp::Set(name.clone(), value.clone()));
        }
        for key in &self.config.echo_context {
            if let Some(value) = get_context(key).filter(|v| is_header_value(v)) {
                changes.headers.push(HeaderOp::Set(
                    format!("x-ctx-{}", key.to_ascii_lowercase()),
                    value,
                ));
            }
        }
        ResponseOutcome::Continue(changes)
    }

    fn matching_deny_rule(&self, path: &str) -> Option<&DenyRule> {
        self.config.deny.iter().find(|rule| {
            let prefix = rule.path_prefix.as_str();
            path.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const EXAMPLE: &str = r#"{
        "request_set": {"x-a": "1"}, "request_remove": ["x-secret"],
        "response_set": {"x-served-by": "edgegate"}, "response_remove": ["server"],
        "deny": [{"path_prefix": "/admin", "status": 403, "body": "forbidden"}],
        "require_header": "x-api-key", "context_set": {"k": "v"},
        "echo_context": ["principal", "absent"]
    }"#;

    fn rules(json: &str) -> HeaderRules {
        HeaderRules::new(HeadersConfig::parse(json).expect("valid config"))
    }

    fn request(req: &Request) -> (RequestOutcome, Vec<(String, String)>) {
        let mut set = Vec::new();
        let verdict =
            rules(EXAMPLE).on_request(req, |k, v| set.push((k.to_string(), v.to_string())));
        (verdict, set)
    }

    fn respond_parts(verdict: RequestOutcome) -> (u16, String, String) {
        let RequestOutcome::Respond(answer) = verdict else {
            panic!("expected a respond verdict, got {verdict:?}");
        };
        let content_type = answer.header("content-type").unwrap_or_default();
        (
            answer.status,
            content_type,
            String::from_utf8(answer.body.unwrap_or_default()).expect("utf-8"),
        )
    }

    #[test]
    fn allowed_request_gets_header_changes_and_context() {
        let req = Request::new("GET", "/api/x?q=1")
            .with_header("X-Api-Key", "k")
            .with_header("x-secret", "s");
        let (verdict, set) = request(&req);
        assert_eq!(
            verdict,
            RequestOutcome::Continue(RequestChanges {
                headers: vec![
                    HeaderOp::Remove("x-secret".into()),
                    HeaderOp::Set("x-a".into(), "1".into())
                ],
                path: None,
                body: None,
            })
        );
        assert_eq!(set, [("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn deny_rule_matches_the_prefix_by_path_segment() {
        for path in ["/admin", "/admin/", "/admin/users?x=1"] {
            let (verdict, set) = request(&Request::new("GET", path).with_header("x-api-key", "k"));
            let (status, content_type, body) = respond_parts(verdict);
            assert_eq!((status, body.as_str()), (403, "forbidden"), "{path}");
            assert_eq!(content_type, "text/plain; charset=utf-8");
            assert!(set.is_empty(), "denied requests set no context");
        }
        let (verdict, _) =
            request(&Request::new("GET", "/administrator").with_header("x-api-key", "k"));
        assert!(matches!(verdict, RequestOutcome::Continue(_)));
    }

    #[test]
    fn deny_wins_over_a_missing_required_header() {
        let (verdict, _) = request(&Request::new("GET", "/admin"));
        assert_eq!(respond_parts(verdict).0, 403);
    }

    #[test]
    fn missing_or_empty_required_header_is_401_json() {
        for req in [
            Request::new("GET", "/"),
            Request::new("GET", "/").with_header("x-api-key", "  "),
        ] {
            let (verdict, set) = request(&req);
            let (status, content_type, body) = respond_parts(verdict);
            assert_eq!((status, content_type.as_str()), (401, "application/json"));
            assert_eq!(
                body,
                r#"{"error":"missing required header","header":"x-api-key"}"#
            );
            assert!(set.is_empty());
        }
    }

    #[test]
    fn response_gets_header_changes_and_echoed_context() {
        let context = HashMap::from([("principal", "alice"), ("other", "x")]);
        let verdict = rules(EXAMPLE).on_response(|k| context.get(k).map(|v| v.to_string()));
        assert_eq!(
            verdict,
            ResponseOutcome::Continue(ResponseChanges {
                status: None,
                headers: vec![
                    HeaderOp::Remove("server".into()),
                    HeaderOp::Set("x-served-by".into(), "edgegate".into()),
                    HeaderOp::Set("x-ctx-principal".into(), "alice".into()),
                ],
                body: None,
            })
        );
    }

    #[test]
    fn context_values_that_cannot_be_header_values_are_not_echoed() {
        let verdict =
            rules(r#"{"echo_context": ["p"]}"#).on_response(|_| Some("a\r\nb".to_string()));
        assert_eq!(verdict, ResponseOutcome::pass());
    }

    #[test]
    fn empty_config_continues_unchanged() {
        let rules = rules("{}");
        assert_eq!(
            rules.on_request(&Request::new("GET", "/"), |_, _| panic!("no context")),
            RequestOutcome::pass()
        );
        assert_eq!(rules.on_response(|_| None), ResponseOutcome::pass());
    }
}
