//! The gateway config, read from the Spin variable `gateway_config`: a
//! `policies/gateway.toml`, parsed and checked by the host's own config
//! crate ([`edgegate_config::parse_embedded`]): one schema, one set of
//! rules. What is built here is what Spin runs: each policy's logic (compiled
//! into this component, so it names no `.wasm` file), upstream base URLs and
//! the route table. The few keys whose meaning Spin cannot honour are refused
//! by name; the ones that only tune the host (listeners, wasm limits, circuit
//! breakers) are listed as ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use edgegate_config::{EndpointAddress, GatewayConfig};
use edgegate_policy_core::BodyModes;

use crate::policies::Policy;

/// What happens to the request when a policy fails, and how a policy sees a
/// body (`request_body`, `response_body`; docs/phases.md §7): the host's
/// config types, so a mode or an `on_error` means the same on both.
pub use edgegate_config::{BodyMode, OnError};

/// The Spin variable holding the gateway config (TOML).
pub const CONFIG_VARIABLE: &str = "gateway_config";

/// Keys the Spin gateway reads; any other key present is valid (the host's
/// schema accepted it) and is listed as ignored. Per table: the top level,
/// `[upstreams.NAME]` and `[policies.NAME]`; every route key is read.
const READ_TOP: &[&str] = &["version", "upstreams", "policies", "routes"];
const READ_UPSTREAM: &[&str] = &["endpoints", "timeout_ms", "idle_timeout_ms"];
const READ_POLICY: &[&str] = &[
    "kind",
    "on_error",
    "body_limit_bytes",
    "request_body",
    "response_body",
    "kv_namespace",
    "config",
];

/// A refused config: where, the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line and column in the config text, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted key path (`routes[0].upstream`); empty for the whole document.
    pub key: String,
    /// Why it is refused.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            position: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<edgegate_config::ConfigError> for ConfigError {
    fn from(e: edgegate_config::ConfigError) -> Self {
        Self {
            position: e.position,
            key: e.key,
            message: e.message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            write!(f, "line {line}, column {column}: ")?;
        }
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

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
    /// Keys present that only the edgegate host reads, ignored here.
    pub ignored: Vec<String>,
}

impl Config {
    /// The route for a request; `authority` may carry a port.
    pub fn find_route(&self, authority: &str, path: &str, method: &str) -> Option<&Route> {
        let host = strip_port(authority);
        self.routes.iter().find(|r| r.matches(host, path, method))
    }

    /// Parses and checks `text` (TOML) with the host's config crate, then
    /// builds every policy's logic from its config.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw = edgegate_config::parse_embedded(Path::new(CONFIG_VARIABLE), text)?;
        refuse_what_spin_cannot_honour(&raw)?;

        let mut upstreams = BTreeMap::new();
        for (name, u) in &raw.upstreams {
            let endpoints = u
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    // The host's parse accepted it already; this only shapes it.
                    EndpointAddress::parse(e.get_ref())
                        .map(|a| {
                            let scheme = if a.tls { "https" } else { "http" };
                            format!("{scheme}://{}", a.authority())
                        })
                        .map_err(|m| {
                            ConfigError::new(format!("upstreams.{name}.endpoints[{i}]"), m)
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            upstreams.insert(
                name.clone(),
                Upstream {
                    endpoints,
                    timeout: Duration::from_millis(u.timeout_ms),
                    idle_timeout: Duration::from_millis(u.idle_timeout_ms),
                },
            );
        }

        let mut policies = Vec::new();
        for (name, p) in &raw.policies {
            let at = format!("policies.{name}");
            let json = serde_json::to_string(&p.config)
                .map_err(|e| ConfigError::new(format!("{at}.config"), e.to_string()))?;
            let policy = Policy::build(p.kind, &json)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.kind"),
                        format!("`{}` cannot run on Spin: the Spin gateway runs the logic of auth, routing, redaction and caching (say which with `kind`; other components need the edgegate host)", p.kind.as_str()),
                    )
                })?
                .map_err(|e| match e {
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
            for (key, mode, declared) in [
                ("request_body", p.request_body, policy.request_modes()),
                ("response_body", p.response_body, policy.response_modes()),
            ] {
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
                request_body: p.request_body,
                response_body: p.response_body,
                on_error: p.on_error(),
                kv_namespace: p.kv_namespace.clone().unwrap_or_else(|| name.clone()),
                name: name.clone(),
                policy,
                body_limit: p.body_limit_bytes,
            });
        }

        let mut routes = Vec::new();
        for r in &raw.routes {
            // The host's checks resolved every name; a miss cannot happen.
            let chain = r
                .policies
                .iter()
                .filter_map(|name| policies.iter().position(|p| &p.name == name.get_ref()))
                .collect();
            routes.push(Route {
                name: r.name.clone(),
                host: r.host.as_deref().map(HostMatch::parse),
                path_prefix: r.path_prefix.clone(),
                methods: r.methods.iter().map(|m| m.get_ref().clone()).collect(),
                upstream: r.upstream.get_ref().clone(),
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
            ignored: ignored_keys(text),
        })
    }
}

/// Refuses the keys that change what a request gets and that Spin's
/// outbound HTTP cannot do: ignoring them would serve something else than
/// the operator wrote.
fn refuse_what_spin_cannot_honour(c: &GatewayConfig) -> Result<(), ConfigError> {
    for (name, u) in &c.upstreams {
        if u.host_rewrite.is_some() {
            return Err(ConfigError::new(
                format!("upstreams.{name}.host_rewrite"),
                "Spin's outbound HTTP sets `Host` from the endpoint URL; name the endpoint by the host it should see",
            ));
        }
        let t = &u.tls;
        if t.ca_file.is_some()
            || t.server_name.is_some()
            || t.client_cert.is_some()
            || t.insecure_skip_verify
        {
            return Err(ConfigError::new(
                format!("upstreams.{name}.tls"),
                "Spin verifies `https://` endpoints with its own roots and presents no client certificate; remove the table",
            ));
        }
    }
    Ok(())
}

/// The keys of `text` outside [`READ_TOP`], [`READ_UPSTREAM`] and
/// [`READ_POLICY`], dotted: what the host reads and Spin does not.
fn ignored_keys(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut ignored = Vec::new();
    let mut sort = |at: &str, table: &toml::Table, read: &[&str]| {
        for key in table.keys().filter(|k| !read.contains(&k.as_str())) {
            ignored.push(if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            });
        }
    };
    sort("", &doc, READ_TOP);
    for (section, read) in [("upstreams", READ_UPSTREAM), ("policies", READ_POLICY)] {
        if let Some(toml::Value::Table(entries)) = doc.get(section) {
            for (name, entry) in entries {
                if let toml::Value::Table(entry) = entry {
                    sort(&format!("{section}.{name}"), entry, read);
                }
            }
        }
    }
    ignored
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        version = 1
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
        let table = edgegate_request::fixtures::routes();
        let with_route = |route: &str| {
            format!("version = 1\n[upstreams.app]\nendpoints = [\"127.0.0.1:9000\"]\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n{route}")
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

    /// The refusal as `key `K`: message`, without its position.
    fn refused(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("config was accepted"),
            Err(e) => ConfigError {
                position: None,
                ..e
            }
            .to_string(),
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
        for key in [
            "server",
            "node",
            "upstreams.demo.health_check",
            "policies.auth.component",
            "policies.auth.capabilities",
        ] {
            assert!(
                config.ignored.iter().any(|k| k == key),
                "{key}: {:?}",
                config.ignored
            );
        }
        for read in [
            "version",
            "routes",
            "policies.auth.config",
            "policies.auth.kind",
        ] {
            assert!(!config.ignored.iter().any(|k| k == read), "{read}");
        }
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
    fn refusals_name_the_key_and_where() {
        // The host's own checks, through its config crate, with the position.
        let e = Config::parse("version = 1\n[[routes]]\nname = \"r\"\nupstream = \"nope\"\n")
            .err()
            .expect("refused");
        assert_eq!(
            e.to_string(),
            "line 4, column 12: key `routes[0].upstream`: unknown upstream `nope`"
        );
        assert_eq!(
            refused(&format!("{MINIMAL}\npolicies = [\"x\"]\n")),
            "key `routes[0].policies[0]`: unknown policy `x`"
        );
        assert!(
            refused("version = 1\n[upstreams.a]\nendpoints = [\"ftp://x\"]\n").starts_with(
                "key `upstreams.a.endpoints[0]`: `ftp://x`: scheme `ftp` is not supported"
            )
        );
        assert!(
            refused(&format!("{MINIMAL}\n[policies.auth]\nlisten = 1\n"))
                .starts_with("key `policies.auth.listen`: unknown field `listen`")
        );
        assert!(refused(&MINIMAL.replace("version = 1", "version = 2"))
            .starts_with("key `version`: unsupported config version 2"));
        // What Spin cannot honour is refused, not ignored.
        assert!(
            refused(&format!("{MINIMAL}\n[policies.x]\nkind = \"custom\"\n"))
                .starts_with("key `policies.x.kind`: `custom` cannot run on Spin")
        );
        assert!(refused(&format!("{MINIMAL}\n[policies.x]\n"))
            .starts_with("key `policies.x.kind`: `custom` cannot run on Spin"));
        assert!(refused(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:9000\"]",
            "endpoints = [\"127.0.0.1:9000\"]\nhost_rewrite = \"api.example\""
        ))
        .starts_with("key `upstreams.app.host_rewrite`: Spin's outbound HTTP sets `Host`"));
        assert!(refused(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:9000\"]",
            "endpoints = [\"127.0.0.1:9000\"]\ntls = { ca_file = \"ca.pem\" }"
        ))
        .starts_with("key `upstreams.app.tls`: Spin verifies"));
        // Spin's own: the logic's config and the body modes it declared.
        let bad_policy = refused(&format!(
            "{MINIMAL}\n[policies.auth]\nkind = \"auth\"\n[policies.auth.config]\napi_keys = {{ keys = [{{ id = \"k\", sha256 = \"zz\" }}] }}\n"
        ));
        assert!(
            bad_policy.starts_with("key `policies.auth.config.api_keys.keys[0].sha256`"),
            "{bad_policy}"
        );
        assert_eq!(
            refused(&format!(
                "{MINIMAL}\n[policies.auth]\nkind = \"auth\"\nresponse_body = \"stream\"\n[policies.auth.config]\napi_keys = {{ keys = [] }}\n"
            )),
            "key `policies.auth.response_body`: its config says response_body = \"stream\", and the policy handles response_body modes: buffer, sse"
        );
        assert!(refused(&format!(
            "{MINIMAL}\n[policies.redaction]\nkind = \"redaction\"\nrequest_body = \"sse\"\n"
        ))
        .starts_with("key `policies.redaction.request_body`: `sse` is a response format"));
        assert!(refused(&format!(
            "{MINIMAL}\n[policies.redaction]\nkind = \"redaction\"\nresponse_body = \"everything\"\n"
        ))
        .starts_with("key `policies.redaction.response_body`"));
        assert!(refused("version = 1\nroutes = 3").starts_with("key `routes`"));
        assert_eq!(
            refused("version = 1"),
            "key `routes`: no routes: add at least one [[routes]]"
        );
    }
}
