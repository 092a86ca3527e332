//! Which LLM calls the cache may answer, and their canonical form: the same
//! request written with other key order, whitespace or number spelling
//! (`0` / `0.0`) normalizes to the same text.

use serde_json::{Map, Value};

/// Top-level fields that do not change the answer: who asked, for the
/// provider's records (`user`, `metadata`). `stream` and `stream_options`
/// change how it is delivered (events, a usage chunk), so a streamed call
/// has entries of its own; `"stream": false` is the same as no `stream`.
const IGNORED_FIELDS: [&str; 2] = ["user", "metadata"];

/// Why an LLM call goes past the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// No body, or not a JSON object.
    NotJson,
    /// Sampling makes the answer vary (`temperature` absent or not 0, or `n` > 1).
    NonDeterministic,
}

impl Bypass {
    /// For logs.
    pub fn reason(self) -> &'static str {
        match self {
            Bypass::NotJson => "LLM request body is not a JSON object",
            Bypass::NonDeterministic => "LLM request samples (temperature not 0 or n > 1)",
        }
    }
}

/// The canonical text of an LLM call's body, or why it is not cached.
/// `always_deterministic` is for calls without sampling (embeddings).
pub fn canonical_body(
    body: Option<&[u8]>,
    deterministic_only: bool,
    always_deterministic: bool,
) -> Result<String, Bypass> {
    let parsed: Value = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or(Bypass::NotJson)?;
    let Value::Object(mut fields) = parsed else {
        return Err(Bypass::NotJson);
    };
    if fields.get("stream").and_then(Value::as_bool) != Some(true) {
        fields.remove("stream");
        fields.remove("stream_options");
    }
    if deterministic_only && !always_deterministic && !deterministic(&fields) {
        return Err(Bypass::NonDeterministic);
    }
    for name in IGNORED_FIELDS {
        fields.remove(name);
    }
    let mut out = Vec::with_capacity(body.map_or(0, <[u8]>::len));
    write_canonical(&Value::Object(fields), &mut out);
    // Written from `str`s and ASCII only, so always UTF-8.
    String::from_utf8(out).map_err(|_| Bypass::NotJson)
}

/// `temperature` is 0 and at most one choice is asked for.
fn deterministic(fields: &Map<String, Value>) -> bool {
    let greedy = fields.get("temperature").and_then(Value::as_f64) == Some(0.0);
    let one_choice = match fields.get("n") {
        None | Some(Value::Null) => true,
        Some(n) => n.as_f64().is_some_and(|n| n <= 1.0),
    };
    greedy && one_choice
}

/// JSON with object keys sorted at every level, no whitespace, and integral
/// numbers written as integers. Sorting here rather than relying on
/// serde_json's map order keeps the key stable if a dependency turns on
/// `preserve_order`. Written straight into `out`, with serde_json's own
/// string escaping: no text per value on the way.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    use std::io::Write;
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        // Writing into a Vec cannot fail.
        Value::Number(n) => match n.as_f64() {
            // Exactly representable integers: `1.0`, `1` and `1e0` are the same number.
            Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                let _ = write!(out, "{}", f as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => write_str(s, out),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// A JSON string literal, escaped as serde_json escapes it.
fn write_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(body: &str) -> Result<String, Bypass> {
        canonical_body(Some(body.as_bytes()), true, false)
    }

    #[test]
    fn normalizes_order_whitespace_numbers_and_ignored_fields() {
        let a = canonical(
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let b = canonical(
            r#"{ "messages" : [ {"content":"hi", "role":"user"} ],
                "temperature": 0.0, "model": "m", "stream": false, "user": "u1",
                "metadata": {"k": "v"}, "stream_options": null }"#,
        );
        assert_eq!(a, b);
        assert_eq!(
            a.as_deref(),
            Ok(r#"{"messages":[{"content":"hi","role":"user"}],"model":"m","temperature":0}"#)
        );
        // Strings keep serde_json's escaping: quotes, controls, raw UTF-8.
        assert_eq!(
            canonical(r#"{"k\"ey":"caf\u00e9\n\u0001","temperature":0,"x":[true,null,1.5,2.0]}"#)
                .as_deref(),
            Ok(r#"{"k\"ey":"café\n\u0001","temperature":0,"x":[true,null,1.5,2]}"#)
        );
        assert_ne!(
            canonical(r#"{"model":"m","temperature":0,"messages":[],"seed":1}"#),
            canonical(r#"{"model":"m","temperature":0,"messages":[],"seed":2}"#)
        );
    }

    #[test]
    fn refuses_sampling_and_non_json_and_keys_streams_apart() {
        let streamed = canonical(r#"{"temperature":0,"stream":true}"#);
        assert!(streamed.is_ok(), "a deterministic stream is cached");
        assert_ne!(streamed, canonical(r#"{"temperature":0}"#));
        assert_eq!(
            canonical(
                r#"{"temperature":0,"stream":false,"stream_options":{"include_usage":true}}"#
            ),
            canonical(r#"{"temperature":0}"#)
        );
        assert_ne!(
            streamed,
            canonical(r#"{"temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#)
        );
        for body in [
            r#"{"temperature":0.7}"#,
            r#"{"model":"m"}"#,
            r#"{"temperature":"0"}"#,
            r#"{"temperature":0,"n":2}"#,
        ] {
            assert_eq!(canonical(body), Err(Bypass::NonDeterministic), "{body}");
        }
        assert!(canonical(r#"{"temperature":0,"n":1}"#).is_ok());
        assert_eq!(canonical("[1]"), Err(Bypass::NotJson));
        assert_eq!(canonical("{"), Err(Bypass::NotJson));
        assert_eq!(canonical_body(None, true, false), Err(Bypass::NotJson));
        assert!(canonical_body(Some(br#"{"temperature":0.7}"#), false, false).is_ok());
        assert!(canonical_body(Some(br#"{"input":"x"}"#), true, true).is_ok());
    }
}
