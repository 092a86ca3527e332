//! Reading header lists the way HTTP means them: names compare case-insensitively.

/// The first value of header `name` in `headers`, compared case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name` in `headers`, in order, compared case-insensitively.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether `name` is a valid header field name (an RFC 9110 `token`).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        [("accept", "a"), ("x-api-key", "k"), ("Accept", "b")]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_lookup_ignores_case() {
        let h = headers();
        assert_eq!(header(&h, "X-API-Key"), Some("k"));
        assert_eq!(header(&h, "missing"), None);
        assert_eq!(header_values(&h, "ACCEPT").collect::<Vec<_>>(), ["a", "b"]);
        assert!(is_header_name("x-api-key"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name(""));
    }
}
