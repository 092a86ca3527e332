//! How a route matches a request's host and path, on the edgegate host and
//! on Spin alike (tests/fixtures/routes.toml is the case table both suites
//! read). The host pattern was checked by `edgegate_config::route_host_problem`.

/// Which hosts a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// This host exactly (case-insensitive).
    Exact(String),
    /// `*.example.com`: any subdomain (the suffix keeps its dot).
    Suffix(String),
}

impl HostMatch {
    /// A pattern in the canonical form of hosts: lower case, no trailing dot.
    pub fn parse(pattern: &str) -> Self {
        let p = pattern.to_ascii_lowercase();
        let p = p.strip_suffix('.').map(str::to_string).unwrap_or(p);
        match p.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_string()),
            _ => HostMatch::Exact(p),
        }
    }

    /// Whether `host` (without a port) is one this pattern accepts.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, but not `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    if prefix.ends_with('/') || path.len() == prefix.len() {
        return true;
    }
    matches!(path.as_bytes()[prefix.len()], b'/' | b'?')
}
