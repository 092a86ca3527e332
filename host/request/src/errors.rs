//! The JSON body of an answer the gateway makes itself:
//! `{"error": code, "message": ..., "request_id": ...}`, on the host and on
//! Spin alike (tests/fixtures/attempts.toml has the cases).

/// The body of a gateway error; `request_id` is left out when there is none.
pub fn error_body(code: &str, message: &str, request_id: Option<&str>) -> String {
    let mut body = serde_json::json!({ "error": code, "message": message });
    if let Some(id) = request_id {
        body["request_id"] = id.into();
    }
    body.to_string()
}
