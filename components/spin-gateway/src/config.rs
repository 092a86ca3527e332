//! The gateway config, read from the Spin variable `gateway_config`: the
//! `[upstreams]`, `[policies]` and `[[routes]]` of a `policies/gateway.toml`,
//! in the same shape. Keys that only mean something to the edgegate host
//! (listeners, trust store, component files, wasm limits) are accepted and
//! listed as ignored; any other unknown key is refused by name, as the host
//! refuses it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use edgegate_policy_core::BodyModes;
use serde::Deserialize;

use crate::policies::{Kind, Policy};

/// Largest request or response body buffered when a policy does not say (the host's default).
const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// Upstream answer deadline when the config does not say (the host's default).
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest silence inside an upstream's answer body, as the host's default.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;

/// Top-level keys only the edgegate host reads.
const HOST_ONLY_TOP: &[&str] = &[
    "server",
    "admin",
    "trust",
    "canary",
    "node",
    "access_log",
    "quarantine",
];
/// `[upstreams.NAME]` keys only the edgegate host reads.
const HOST_ONLY_UPSTREAM: &[&str] = &[
    "balance",
    "max_idle_per_endpoint",
    "connect_timeout_ms",
    "circuit",
    "outlier",
    "health_check",
];
/// `[policies.NAME]` keys only the edgegate host reads (Spin runs the logic
/// compiled into this component, in its own sandbox).
const HOST_ONLY_POLICY: &[&str] = &[
    "component",
    "sha256",
    "capabilities",
    "memory_limit_bytes",
    "timeout_ms",
    "kv_budget_bytes",
    "reuse_instances",
];

/// A refused config: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`routes[0].upstream`); empty for the whole document.
    pub key: String,
    /// Why it is refused.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// What happens to the request when a policy fails, and how a policy sees a
/// body (`request_body`, `response_body`; docs/phases.md §7): the host's
/// config types, so a mode or an `on_error` means the same on both.
pub use edgegate_config::{BodyMode, OnError};

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URLs (`http://host:port`), one per endpoint.
    pub endpoints: Vec<String>,
    /// Deadline for the answer's headers, counted from the attempt's start.
    pub timeout: Duration,
    /// Longest silence inside the answer's body (between two chunks).
    pub idle_timeout: Duration,
}

/// Whether a policy that declared `modes` handles `mode`.
fn declared_in(mode: BodyMode, modes: BodyModes) -> bool {
    match mode {
        BodyMode::None => true,
        BodyMode::Buffer => modes.buffer,
        BodyMode::Stream => modes.chunks,
        BodyMode::Sse => modes.sse,
    }
}

/// The mode names in `modes`, for an error message.
fn mode_names(modes: BodyModes) -> String {
    [
        (modes.buffer, "buffer"),
        (modes.chunks, "stream"),
        (modes.sse, "sse"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join(", ")
}

/// One configured policy: which logic, its settings and limits.
pub struct PolicyDef {
    /// The `[policies.NAME]` name.
    pub name: String,
    /// Its logic, built from its `config` table.
    pub policy: Policy,
    /// `deny` or `allow` on failure.
    pub on_error: OnError,
    /// Largest body buffered for it.
    pub body_limit: usize,
    /// How it sees the request body (`none` or `buffer`: the shipped
    /// policies take no request chunks).
    pub request_body: BodyMode,
    /// How it sees the response body.
    pub response_body: BodyMode,
    /// Key prefix in the key-value store.
    pub kv_namespace: String,
}

use edgegate_request::routes::prefix_matches;
/// How a route matches the request's host and path: the host's rules.
pub use edgegate_request::routes::HostMatch;

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name, handed to the policies.
    pub name: String,
    /// Host filter.
    pub host: Option<HostMatch>,
    /// Path prefix, matched on segment boundaries.
    pub path_prefix: String,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Upstream when no routing decision names one.
    pub upstream: String,
    /// Indexes into [`Config::policies`], in chain order.
    pub chain: Vec<usize>,
}

impl Route {
    fn matches(&self, host: &str, path: &str, method: &str) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(host))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && prefix_matches(&self.path_prefix, path)
    }
}

/// The parsed, checked gateway config.
pub struct Config {
    /// Upstream clusters by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Policies in name order; routes refer to them by index.
    pub policies: Vec<PolicyDef>,
    /// Routes in config order; the first match wins.
    pub routes: Vec<Route>,
    /// Host-only keys that were present and are ignored here.
    pub ignored: Vec<String>,
}

impl Config {
    /// The route for a request; `authority` may carry a port.
    pub fn find_route(&self, authority: &str, path: &str, method: &str) -> Option<&Route> {
        let host = strip_port(authority);
        self.routes.iter().find(|r| r.matches(host, path, method))
    }

    /// Parses and checks `text` (TOML), building every policy's logic from its config.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            ConfigError::new(if key == "." { String::new() } else { key }, message)
        })?;
        let mut ignored = Vec::new();
        check_keys("", &raw.other, HOST_ONLY_TOP, &mut ignored)?;

        let mut upstreams = BTreeMap::new();
        for (name, u) in raw.upstreams {
            let at = format!("upstreams.{name}");
            check_keys(&at, &u.other, HOST_ONLY_UPSTREAM, &mut ignored)?;
            if u.endpoints.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.endpoints"),
                    "needs at least one endpoint",
                ));
            }
            let endpoints = u
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    base_url(e).map_err(|m| ConfigError::new(format!("{at}.endpoints[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let timeout_ms = u.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
            if timeout_ms == 0 {
                return Err(ConfigError::new(
                    format!("{at}.timeout_ms"),
                    "must be above 0",
                ));
            }
            let idle_timeout_ms = u.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS);
            if idle_timeout_ms == 0 {
                return Err(ConfigError::new(
                    format!("{at}.idle_timeout_ms"),
                    "must be above 0",
                ));
            }
            upstreams.insert(
                name,
                Upstream {
                    endpoints,
                    timeout: Duration::from_millis(timeout_ms),
                    idle_timeout: Duration::from_millis(idle_timeout_ms),
                },
            );
        }

        let mut policies = Vec::new();
        for (name, p) in raw.policies {
            let at = format!("policies.{name}");
            check_keys(&at, &p.other, HOST_ONLY_POLICY, &mut ignored)?;
            let kind = match p.kind.as_deref() {
                Some(k) => Kind::from_name(k).ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.kind"),
                        format!("`{k}` cannot run on Spin: the Spin gateway runs the logic of auth, routing, redaction and caching (the components of other kinds need the edgegate host)"),
                    )
                })?,
                None => Kind::from_name(&name).ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.kind"),
                        "missing: say which logic runs (auth, routing, redaction or caching)",
                    )
                })?,
            };
            let json = serde_json::to_string(&p.config)
                .map_err(|e| ConfigError::new(format!("{at}.config"), e.to_string()))?;
            let policy = Policy::build(kind, &json).map_err(|e| match e {
                edgegate_policy_core::PolicyError::Config(c) if c.key.is_empty() => {
                    ConfigError::new(format!("{at}.config"), c.reason)
                }
                edgegate_policy_core::PolicyError::Config(c) => {
                    ConfigError::new(format!("{at}.config.{}", c.key), c.reason)
                }
                edgegate_policy_core::PolicyError::Internal(m) => {
                    ConfigError::new(format!("{at}.config"), m)
                }
            })?;
            let body_limit = p.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
            if body_limit == 0 {
                return Err(ConfigError::new(
                    format!("{at}.body_limit_bytes"),
                    "must be above 0",
                ));
            }
            let request_body = p.request_body.unwrap_or_default();
            let response_body = p.response_body.unwrap_or_default();
            for (key, mode, declared) in [
                ("request_body", request_body, policy.request_modes()),
                ("response_body", response_body, policy.response_modes()),
            ] {
                if key == "request_body" && mode == BodyMode::Sse {
                    return Err(ConfigError::new(
                        format!("{at}.{key}"),
                        "`sse` is for responses; a request body is `none`, `buffer` or `stream`",
                    ));
                }
                if !declared_in(mode, declared) {
                    return Err(ConfigError::new(
                        format!("{at}.{key}"),
                        format!(
                            "its config says {key} = \"{}\", and the policy handles {key} modes: {}",
                            mode.name(),
                            mode_names(declared)
                        ),
                    ));
                }
            }
            policies.push(PolicyDef {
                request_body,
                response_body,
                on_error: p.on_error.unwrap_or(match kind {
                    Kind::Caching => OnError::Allow,
                    _ => OnError::Deny,
                }),
                kv_namespace: p.kv_namespace.unwrap_or_else(|| name.clone()),
                name,
                policy,
                body_limit,
            });
        }

        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            check_keys(&at, &r.other, &[], &mut ignored)?;
            if let Some(why) = r
                .host
                .as_deref()
                .and_then(edgegate_config::route_host_problem)
            {
                return Err(ConfigError::new(
                    format!("{at}.host"),
                    format!("`{}`: {why}", r.host.as_deref().unwrap_or_default()),
                ));
            }
            for (j, m) in r.methods.iter().enumerate() {
                if let Some(why) = edgegate_config::route_method_problem(m) {
                    return Err(ConfigError::new(
                        format!("{at}.methods[{j}]"),
                        format!("`{m}` {why}"),
                    ));
                }
            }
            if !upstreams.contains_key(&r.upstream) {
                return Err(ConfigError::new(
                    format!("{at}.upstream"),
                    format!("unknown upstream `{}`", r.upstream),
                ));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{at}.path_prefix"),
                    "must start with `/`",
                ));
            }
            let mut chain = Vec::new();
            for (j, name) in r.policies.iter().enumerate() {
                let index = policies
                    .iter()
                    .position(|p| &p.name == name)
                    .ok_or_else(|| {
                        ConfigError::new(
                            format!("{at}.policies[{j}]"),
                            format!("unknown policy `{name}`"),
                        )
                    })?;
                chain.push(index);
            }
            routes.push(Route {
                name: r.name.unwrap_or_else(|| format!("route-{i}")),
                host: r.host.as_deref().map(HostMatch::parse),
                path_prefix: r.path_prefix,
                methods: r.methods,
                upstream: r.upstream,
                chain,
            });
        }
        if routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "no routes: add at least one [[routes]]",
            ));
        }
        Ok(Config {
            upstreams,
            policies,
            routes,
            ignored,
        })
    }
}

/// Sorts the leftover keys of a table into ignored (host-only) and refused.
fn check_keys(
    at: &str,
    other: &BTreeMap<String, toml::Value>,
    host_only: &[&str],
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for key in other.keys() {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        if host_only.contains(&key.as_str()) {
            ignored.push(path);
        } else {
            return Err(ConfigError::new(path, "unknown key"));
        }
    }
    Ok(())
}

/// `host:port`, `http://host:port` or `https://host[:port]` as a base URL without a trailing slash.
fn base_url(endpoint: &str) -> Result<String, String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((s, _)) => return Err(format!("scheme `{s}` is not http or https")),
        None => ("http", endpoint),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!(
            "`{endpoint}` is not `host:port` or `http(s)://host[:port]` (no path)"
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn strip_port(authority: &str) -> &str {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map_or(authority, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u32>,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct RawUpstream {
    endpoints: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    idle_timeout_ms: Option<u64>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct RawPolicy {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    on_error: Option<OnError>,
    #[serde(default)]
    body_limit_bytes: Option<usize>,
    #[serde(default)]
    request_body: Option<BodyMode>,
    #[serde(default)]
    response_body: Option<BodyMode>,
    #[serde(default)]
    kv_namespace: Option<String>,
    #[serde(default)]
    config: toml::Table,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct RawRoute {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default = "root")]
    path_prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    upstream: String,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

fn root() -> String {
    "/".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [upstreams.app]
        endpoints = ["127.0.0.1:9000"]
        [[routes]]
        name = "all"
        upstream = "app"
    "#;

    /// tests/fixtures/routes.toml, the case table the edgegate host is
    /// tested against too, through this component's own config parser.
    #[test]
    fn the_shared_route_table_matches_and_refuses_as_written() {
        #[derive(serde::Deserialize)]
        struct Table {
            refused_hosts: Vec<String>,
            refused_methods: Vec<String>,
            case: Vec<Case>,
        }
        #[derive(serde::Deserialize)]
        struct Case {
            route: RouteSpec,
            #[serde(rename = "match")]
            hits: Vec<(String, String, String)>,
            miss: Vec<(String, String, String)>,
        }
        #[derive(serde::Deserialize)]
        struct RouteSpec {
            host: Option<String>,
            path_prefix: Option<String>,
            #[serde(default)]
            methods: Vec<String>,
        }
        let text = include_str!("../../../tests/fixtures/routes.toml");
        let table: Table = toml::from_str(text).unwrap();
        let with_route = |route: &str| {
            format!("[upstreams.app]\nendpoints = [\"127.0.0.1:9000\"]\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n{route}")
        };
        for pattern in &table.refused_hosts {
            let e = refused(&with_route(&format!("host = {pattern:?}\n")));
            assert!(e.contains("routes[0].host"), "`{pattern}`: {e}");
        }
        for m in &table.refused_methods {
            let e = refused(&with_route(&format!("methods = [{m:?}]\n")));
            assert!(e.contains("routes[0].methods[0]"), "`{m}`: {e}");
        }
        for case in &table.case {
            let r = &case.route;
            let mut route = format!("methods = {:?}\n", r.methods);
            if let Some(h) = &r.host {
                route += &format!("host = {h:?}\n");
            }
            if let Some(p) = &r.path_prefix {
                route += &format!("path_prefix = {p:?}\n");
            }
            let config = Config::parse(&with_route(&route)).unwrap();
            for (want, requests) in [(true, &case.hits), (false, &case.miss)] {
                for (host, path, method) in requests {
                    let got = config.find_route(host, path, method).is_some();
                    assert_eq!(got, want, "{host} {method} {path} against {route}");
                }
            }
        }
    }

    fn refused(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("config was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_shipped_gateway_config_parses_with_host_keys_ignored() {
        let text = include_str!("../../../policies/gateway.toml");
        let config = Config::parse(text).expect("policies/gateway.toml");
        assert_eq!(config.policies.len(), 4);
        assert_eq!(config.routes[0].chain.len(), 4);
        assert_eq!(
            config.upstreams["demo"].endpoints,
            ["http://127.0.0.1:9000"]
        );
        assert!(config.ignored.contains(&"server".to_string()));
        assert!(config.ignored.contains(&"node".to_string()));
        assert!(config
            .ignored
            .contains(&"upstreams.demo.health_check".to_string()));
        assert!(config
            .ignored
            .contains(&"policies.auth.component".to_string()));
    }

    #[test]
    fn routes_match_host_prefix_and_method() {
        let config = Config::parse(&format!(
            "{MINIMAL}\n[[routes]]\nname = \"api\"\nhost = \"*.example.com\"\npath_prefix = \"/api\"\nmethods = [\"POST\"]\nupstream = \"app\"\n"
        ))
        .expect("config");
        // The first route takes everything; reorder by checking the second directly.
        let api = &config.routes[1];
        assert!(api.matches("a.example.com", "/api/x", "POST"));
        assert!(!api.matches("example.com", "/api/x", "POST"));
        assert!(!api.matches("a.example.com", "/apix", "POST"));
        assert!(!api.matches("a.example.com", "/api", "GET"));
        assert_eq!(
            config
                .find_route("a.example.com:8080", "/x", "GET")
                .map(|r| r.name.as_str()),
            Some("all")
        );
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn refusals_name_the_key() {
        assert_eq!(
            refused("[[routes]]\nupstream = \"nope\"\n"),
            "key `routes[0].upstream`: unknown upstream `nope`"
        );
        assert_eq!(
            refused(&format!("{MINIMAL}\npolicies = [\"x\"]\n")),
            "key `routes[0].policies[0]`: unknown policy `x`"
        );
        assert_eq!(
            refused("[upstreams.a]\nendpoints = [\"ftp://x\"]\n"),
            "key `upstreams.a.endpoints[0]`: scheme `ftp` is not http or https"
        );
        assert_eq!(
            refused(&format!("{MINIMAL}\n[policies.auth]\nlisten = 1\n")),
            "key `policies.auth.listen`: unknown key"
        );
        assert!(
            refused(&format!("{MINIMAL}\n[policies.x]\nkind = \"custom\"\n"))
                .starts_with("key `policies.x.kind`: `custom` cannot run on Spin")
        );
        let bad_policy = refused(&format!(
            "{MINIMAL}\n[policies.auth.config]\napi_keys = {{ keys = [{{ id = \"k\", sha256 = \"zz\" }}] }}\n"
        ));
        assert!(
            bad_policy.starts_with("key `policies.auth.config.api_keys.keys[0].sha256`"),
            "{bad_policy}"
        );
        assert_eq!(
            refused(&format!(
                "{MINIMAL}\n[policies.auth]\nresponse_body = \"stream\"\n[policies.auth.config]\napi_keys = {{ keys = [] }}\n"
            )),
            "key `policies.auth.response_body`: its config says response_body = \"stream\", and the policy handles response_body modes: buffer, sse"
        );
        assert!(refused(&format!(
            "{MINIMAL}\n[policies.redaction]\nrequest_body = \"sse\"\n"
        ))
        .starts_with("key `policies.redaction.request_body`: `sse` is for responses"));
        assert!(refused(&format!(
            "{MINIMAL}\n[policies.redaction]\nresponse_body = \"everything\"\n"
        ))
        .starts_with("key `policies.redaction.response_body`"));
        assert!(refused("routes = 3").starts_with("key `routes`"));
        assert_eq!(
            refused(""),
            "key `routes`: no routes: add at least one [[routes]]"
        );
    }
}
