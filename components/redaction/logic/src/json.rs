//! Redacting inside JSON string values while every other byte stays as it was.

use edgegate_policy_core::PolicyError;

use crate::Scan;

/// Whether `text` is one valid JSON value.
pub fn is_valid(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Runs `scan` on every string value of the (valid) JSON `text`, not on
/// object keys, and re-encodes only the strings it changed.
pub fn redact_strings(
    text: &str,
    mut scan: impl FnMut(&str) -> Result<Scan<String>, PolicyError>,
) -> Result<Scan<String>, PolicyError> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        let mut escaped = false;
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                    continue;
                }
                b'"' => break,
                _ => i += 1,
            }
        }
        let end = (i + 1).min(bytes.len()); // one past the closing quote
        i = end;
        if is_key(bytes, end) {
            continue;
        }
        let literal = &text[start..end];
        let value: std::borrow::Cow<str> = if escaped {
            match serde_json::from_str::<String>(literal) {
                Ok(s) => s.into(),
                Err(_) => continue,
            }
        } else {
            literal[1..literal.len() - 1].into()
        };
        match scan(&value)? {
            Scan::Clean => {}
            Scan::Changed(new) => {
                out.push_str(&text[copied..start]);
                out.push_str(&serde_json::to_string(&new).unwrap_or_else(|_| "\"\"".into()));
                copied = end;
                changed = true;
            }
            Scan::Blocked(rule) => return Ok(Scan::Blocked(rule)),
        }
    }
    if !changed {
        return Ok(Scan::Clean);
    }
    out.push_str(&text[copied..]);
    Ok(Scan::Changed(out))
}

/// A string followed (after whitespace) by `:` is an object key.
fn is_key(bytes: &[u8], after: usize) -> bool {
    bytes[after.min(bytes.len())..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b':')
}
