//! The canonical request: the one form of path and host that route matching,
//! policies and the upstream all see, so that no two of them can disagree about
//! which resource a request names (RFC 3986 §6, RFC 9112 §3.2, RFC 9113 §8.3.1).
//!
//! Host-neutral on purpose (std and edgegate-config only): the Spin gateway
//! is to share it.

use std::borrow::Cow;

use edgegate_config::{EscapedSlashes, ServerConfig};

/// Longest path (before the query) the gateway accepts, in bytes.
pub const MAX_PATH_BYTES: usize = 8192;

/// How paths are normalised.
#[derive(Debug, Clone, Copy)]
pub struct PathRules {
    /// Merge runs of `/` into one (`//admin` → `/admin`).
    pub merge_slashes: bool,
    /// `%2F` and `%5C` in a segment.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> Self {
        Self::of(&ServerConfig::default())
    }
}

impl PathRules {
    /// The rules a server config sets.
    pub fn of(server: &ServerConfig) -> Self {
        Self {
            merge_slashes: server.merge_slashes,
            escaped_slashes: server.escaped_slashes,
        }
    }
}

/// Why a path or host cannot be put in canonical form; each is a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The path does not start with `/`.
    #[error("the request target must be an absolute path (origin-form) or an absolute URI")]
    NotAbsolutePath,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("the path exceeds {MAX_PATH_BYTES} bytes")]
    PathTooLong,
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// `%2F` or `%5C` under `escaped_slashes = "reject"`.
    #[error("the path has an escaped slash or backslash (%2F, %5C) in a segment")]
    EscapedSlash,
    /// A raw `\`, which some upstreams read as `/`.
    #[error("the path has a backslash")]
    Backslash,
    /// A control byte, raw or escaped (`%00`..`%1F`, `%7F`).
    #[error("the path has a control character")]
    ControlChar,
    /// HTTP/1.1 without `Host`.
    #[error("the request has no Host header")]
    MissingHost,
    /// Two `Host` fields.
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// A `Host` that is not `host[:port]`.
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
    /// HTTP/2 `:authority` and `host` name different hosts.
    #[error("the :authority and Host headers disagree")]
    AuthorityMismatch,
}

/// RFC 3986 unreserved bytes: decoding their escapes never changes meaning.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The normal form of `path_and_query`: unreserved escapes decoded, other
/// escapes in upper-case hex, dot segments removed, slashes merged when the
/// rules say so. The query is kept as it is. Borrowed when nothing changed,
/// which is the common case; linear in the input.
pub fn normalize_path<'a>(
    path_and_query: &'a str,
    rules: PathRules,
) -> Result<Cow<'a, str>, Malformed> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(Malformed::PathTooLong);
    }
    if !path.starts_with('/') {
        return Err(Malformed::NotAbsolutePath);
    }
    // Pass 1: escapes, and whether the path needs rewriting at all.
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::new();
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(Malformed::BadEscape);
                };
                let v = hi << 4 | lo;
                if v < 0x20 || v == 0x7f {
                    return Err(Malformed::ControlChar);
                }
                if (v == b'/' || v == b'\\') && rules.escaped_slashes == EscapedSlashes::Reject {
                    return Err(Malformed::EscapedSlash);
                }
                if !changed {
                    changed = true;
                    decoded.extend_from_slice(&bytes[..i]);
                }
                if is_unreserved(v) {
                    decoded.push(v);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    decoded.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(v >> 4)],
                        HEX[usize::from(v & 15)],
                    ]);
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(Malformed::Backslash),
            _ if b < 0x20 || b == 0x7f => return Err(Malformed::ControlChar),
            _ => {}
        }
        if changed {
            decoded.push(b);
        }
        i += 1;
    }
    let decoded_path: &[u8] = if changed { &decoded } else { bytes };
    if !changed && !needs_segment_work(decoded_path, rules.merge_slashes) {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let mut out = remove_dot_segments(decoded_path, rules.merge_slashes);
    out.push_str(query);
    Ok(Cow::Owned(out))
}

/// Whether the path has a dot segment or (when merging) an empty one; the
/// trailing empty segment of `/a/` is not a merge.
fn needs_segment_work(path: &[u8], merge_slashes: bool) -> bool {
    let mut segs = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg == b"." || seg == b".." || (merge_slashes && seg.is_empty() && !last) {
            return true;
        }
    }
    false
}

/// RFC 3986 §5.2.4 on an absolute path, by segments: `.` dropped, `..`
/// drops the segment before it (never above the root). A path that ended in
/// a dot segment keeps its trailing slash.
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> String {
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    let mut parts = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            b"." => trailing = last,
            b".." => {
                segs.pop();
                trailing = last;
            }
            b"" if merge_slashes && !last => {}
            _ => {
                segs.push(seg);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segs {
        out.push('/');
        // Every byte came from a valid &str or is ASCII.
        out.push_str(&String::from_utf8_lossy(seg));
    }
    if out.is_empty() || (trailing && !out.ends_with('/')) {
        out.push('/');
    }
    out
}

/// A host in canonical form: lower case, no trailing dot, and the port apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `example.com`, `127.0.0.1` or `[::1]`.
    pub name: String,
    /// The port, when the authority names one.
    pub port: Option<u16>,
}

impl Host {
    /// The name without IPv6 brackets, as routes match it.
    pub fn match_name(&self) -> &str {
        self.name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&self.name)
    }

    /// `name[:port]`, as the upstream's `Host` header.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Parse `host[:port]` strictly (RFC 3986 reg-name of letters, digits, `-`,
/// `_`, `.`; an IPv4 address; or a bracketed IPv6 address); no user info,
/// lists, spaces or escapes.
pub fn parse_host(raw: &str) -> Result<Host, Malformed> {
    if raw.is_empty() || raw.len() > 255 + 7 {
        return Err(Malformed::InvalidHost);
    }
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(Malformed::InvalidHost)?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(Malformed::InvalidHost);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(Malformed::InvalidHost)?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        let (name, port) = match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (raw, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..");
        if !valid {
            return Err(Malformed::InvalidHost);
        }
        (name.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed::InvalidHost);
            }
            Some(p.parse::<u16>().map_err(|_| Malformed::InvalidHost)?)
        }
    };
    Ok(Host { name, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, Malformed> {
        normalize_path(p, PathRules::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_and_unreserved_escapes_cannot_hide_a_path() {
        for (raw, want) in [
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/adm%69n/x", "/admin/x"),
            ("/x/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/..", "/"),
            ("/", "/"),
            ("/a/", "/a/"),
            ("/a/b?x=/../y", "/a/b?x=/../y"),
            ("/a/../b?q=%2e", "/b?q=%2e"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/..a/b.", "/..a/b."),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn a_path_already_normal_is_borrowed() {
        assert!(matches!(
            normalize_path("/v1/chat/completions?x=1", PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalize_path("/a/", PathRules::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn what_has_no_safe_normal_form_is_refused() {
        assert_eq!(norm("/a%2Fb"), Err(Malformed::EscapedSlash));
        assert_eq!(norm("/a%2fb"), Err(Malformed::EscapedSlash));
        assert_eq!(norm("/a%5cb"), Err(Malformed::EscapedSlash));
        assert_eq!(norm("/a\\b"), Err(Malformed::Backslash));
        assert_eq!(norm("/a%zz"), Err(Malformed::BadEscape));
        assert_eq!(norm("/a%4"), Err(Malformed::BadEscape));
        assert_eq!(norm("/a%00"), Err(Malformed::ControlChar));
        assert_eq!(norm("*"), Err(Malformed::NotAbsolutePath));
        assert_eq!(
            norm(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(Malformed::PathTooLong)
        );
        let keep = PathRules {
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert_eq!(
            normalize_path("/a%2fb//c", keep).as_deref(),
            Ok("/a%2Fb//c")
        );
    }

    #[test]
    fn hosts_have_one_canonical_form() {
        let h = parse_host("Admin.Test.").unwrap();
        assert_eq!((h.name.as_str(), h.port), ("admin.test", None));
        let h = parse_host("admin.test.:8080").unwrap();
        assert_eq!(
            (h.authority().as_str(), h.port),
            ("admin.test:8080", Some(8080))
        );
        let h = parse_host("[::1]:80").unwrap();
        assert_eq!((h.match_name(), h.port), ("::1", Some(80)));
        for bad in [
            "",
            "a b",
            "a,b",
            "user@host",
            "host:",
            "host:99999",
            "host:8x",
            "[::1",
            "[zz]",
            "a..b",
            "a..",
            ".",
            "h%41",
            "host\r",
        ] {
            assert_eq!(parse_host(bad), Err(Malformed::InvalidHost), "{bad:?}");
        }
    }
}
