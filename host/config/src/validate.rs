//! Loading and checking a config file.

use std::collections::HashSet;
use std::path::Path;

use crate::error::ConfigError;
use crate::model::{
    server_name_ok, EndpointAddress, GatewayConfig, UpstreamConfig, CONFIG_VERSION,
    MAX_POLICY_MEMORY_BYTES,
};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Read, parse and validate a config file; relative paths resolve against its folder.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read config: {e}")))?;
    too_large(path, meta.len())?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read config: {e}")))?;
    parse(path, &text)
}

/// Who reads a config, and so what it must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The edgegate host: every policy names its component file, and the
    /// components it loads are signed.
    Host,
    /// A runtime with the policies' logic compiled in (the Spin component):
    /// no component files, so no trust store either.
    Embedded,
}

/// Parse and validate config text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
    let mut config = deserialize(path, text)?;
    config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    validate(&config, text, Reader::Host)?;
    let trust_files = [
        config.trust.store.as_mut(),
        config.trust.revocations.as_mut(),
    ];
    for file in trust_files.into_iter().flatten() {
        let p = file.get_mut();
        if p.is_relative() {
            *p = config.base_dir.join(&*p);
        }
    }
    let state_dir = config
        .admin
        .state_dir
        .clone()
        .unwrap_or_else(|| ".edgegate-state".into());
    config.admin.state_dir = Some(if state_dir.is_relative() {
        config.base_dir.join(state_dir)
    } else {
        state_dir
    });
    let base = config.base_dir.clone();
    let resolve = |p: &mut std::path::PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    if let Some(ca) = config
        .node
        .as_mut()
        .and_then(|n| n.coordinator_ca_file.as_mut())
    {
        resolve(ca);
    }
    if let Some(tls) = config.server.tls.as_mut() {
        for cert in &mut tls.certificates {
            resolve(&mut cert.cert);
            resolve(&mut cert.key);
        }
        if let Some(ca) = tls.client_auth.as_mut() {
            resolve(&mut ca.ca_file);
        }
    }
    if config.access_log.target != "stdout" {
        let mut p = std::path::PathBuf::from(&config.access_log.target);
        resolve(&mut p);
        config.access_log.target = p.to_string_lossy().into_owned();
    }
    for u in config.upstreams.values_mut() {
        let t = &mut u.tls;
        for p in [&mut t.ca_file, &mut t.client_cert, &mut t.client_key]
            .into_iter()
            .flatten()
        {
            resolve(p);
        }
    }
    for component in config
        .policies
        .values_mut()
        .filter_map(|p| p.component.as_mut())
    {
        let p = component.get_mut();
        if p.is_relative() {
            *p = config.base_dir.join(&*p);
        }
    }
    Ok(config)
}

/// Parse and validate config text for a runtime that carries the policies'
/// logic compiled in, as the Spin component does: the same schema and the
/// same checks as [`parse`], except that a policy names no component file
/// and no trust store is needed. Paths stay as written (nothing is read from
/// disk); `source` names where the text came from, in errors.
pub fn parse_embedded(source: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
    too_large(source, text.len() as u64)?;
    let config = deserialize(source, text)?;
    validate(&config, text, Reader::Embedded)?;
    Ok(config)
}

/// Refuses a config of `len` bytes above [`MAX_CONFIG_BYTES`].
fn too_large(source: &Path, len: u64) -> Result<(), ConfigError> {
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            source,
            "",
            format!("config is {len} bytes; the limit is {MAX_CONFIG_BYTES}"),
        ));
    }
    Ok(())
}

/// The config as written, before any check beyond its schema.
fn deserialize(source: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
    let de = toml::Deserializer::new(text);
    let mut config: GatewayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::new(
            source,
            if key == "." { String::new() } else { key },
            inner.message().to_string(),
        )
        .at(text, inner.span().map(|s| s.start))
    })?;
    config.source = source.to_path_buf();
    Ok(config)
}

fn validate(c: &GatewayConfig, text: &str, reader: Reader) -> Result<(), ConfigError> {
    let file = &c.source;
    let err =
        |key: String, msg: String, at: Option<usize>| ConfigError::new(file, key, msg).at(text, at);

    if *c.version.get_ref() != CONFIG_VERSION {
        return Err(err(
            "version".into(),
            format!(
                "unsupported config version {}; this build reads version {CONFIG_VERSION}",
                c.version.get_ref()
            ),
            Some(c.version.span().start),
        ));
    }
    if reader == Reader::Host
        && c.trust.store.is_none()
        && !c.trust.allow_unsigned
        && !c.policies.is_empty()
    {
        return Err(err(
            "trust.store".into(),
            "required: edgegate runs only signed components (see docs/signing.md; \
             `trust.allow_unsigned = true` is for local development)"
                .into(),
            None,
        ));
    }
    if c.trust.revocations.is_some() && c.trust.store.is_none() {
        return Err(err(
            "trust.revocations".into(),
            "needs trust.store: the list is checked against its keys".into(),
            None,
        ));
    }
    for (kind, n) in &c.trust.required_signers {
        if *n == 0 {
            return Err(err(
                format!("trust.required_signers.{}", kind.as_str()),
                "must be at least 1".into(),
                None,
            ));
        }
    }
    for (key, share) in [
        ("access_log.sample", c.access_log.sample),
        ("access_log.sample_errors", c.access_log.sample_errors),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(err(
                key.into(),
                format!("must be between 0 and 1, not {share}"),
                None,
            ));
        }
    }
    if c.access_log.target.is_empty() {
        return Err(err(
            "access_log.target".into(),
            "must be \"stdout\" or a file path".into(),
            None,
        ));
    }
    if c.server.max_header_bytes < 1024 {
        return Err(err(
            "server.max_header_bytes".into(),
            "must be at least 1024".into(),
            None,
        ));
    }
    if c.admin
        .token
        .as_deref()
        .is_some_and(|t| t.trim().len() < 16)
    {
        return Err(err(
            "admin.token".into(),
            "must be at least 16 characters (it guards pushing code into the gateway)".into(),
            None,
        ));
    }
    if let Some(node) = &c.node {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        for (key, value) in [("node.id", &node.id), ("node.site", &node.site)] {
            if !name_ok(value) {
                return Err(err(
                    key.into(),
                    format!("`{value}`: use 1 to 64 of A-Z a-z 0-9 . _ -"),
                    None,
                ));
            }
        }
        if let Some(url) = &node.coordinator {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or("");
            if rest.is_empty() {
                return Err(err(
                    "node.coordinator".into(),
                    format!("`{url}` is not an http:// or https:// URL"),
                    None,
                ));
            }
        }
        if node.report_interval_ms < 100 {
            return Err(err(
                "node.report_interval_ms".into(),
                "must be at least 100".into(),
                None,
            ));
        }
    }
    let canary = &c.canary;
    for (key, value) in [
        (
            "max_failure_rate_increase",
            canary.max_failure_rate_increase,
        ),
        ("max_5xx_rate_increase", canary.max_5xx_rate_increase),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(err(
                format!("canary.{key}"),
                "must be between 0 and 1".into(),
                None,
            ));
        }
    }
    if canary.max_p99_ratio.is_nan() || canary.max_p99_ratio < 1.0 {
        return Err(err(
            "canary.max_p99_ratio".into(),
            "must be at least 1".into(),
            None,
        ));
    }
    if canary.window_ms == 0 {
        return Err(err(
            "canary.window_ms".into(),
            "must be above 0".into(),
            None,
        ));
    }
    let q = &c.quarantine;
    if q.failures == 0 || q.failures > crate::MAX_QUARANTINE_FAILURES {
        return Err(err(
            "quarantine.failures".into(),
            format!("must be between 1 and {}", crate::MAX_QUARANTINE_FAILURES),
            None,
        ));
    }
    for (key, value) in [("window_ms", q.window_ms), ("cool_down_ms", q.cool_down_ms)] {
        if value == 0 {
            return Err(err(
                format!("quarantine.{key}"),
                "must be above 0".into(),
                None,
            ));
        }
    }
    if c.server.listen == c.admin.listen && c.server.listen.port() != 0 {
        return Err(err(
            "admin.listen".into(),
            "must differ from server.listen".into(),
            None,
        ));
    }
    if let Some(tls) = &c.server.tls {
        validate_tls_listener(c, tls)
            .map_err(|(key, msg)| err(format!("server.tls{key}"), msg, None))?;
    } else if c.server.redirect_to_https {
        return Err(err(
            "server.redirect_to_https".into(),
            "needs a [server.tls] listener to redirect to".into(),
            None,
        ));
    }
    for (name, u) in &c.upstreams {
        if u.endpoints.is_empty() {
            return Err(err(
                format!("upstreams.{name}.endpoints"),
                "needs at least one endpoint".into(),
                None,
            ));
        }
        let mut schemes = HashSet::new();
        for (i, ep) in u.endpoints.iter().enumerate() {
            match EndpointAddress::parse(ep.get_ref()) {
                Ok(a) => {
                    schemes.insert(a.tls);
                }
                Err(msg) => {
                    return Err(err(
                        format!("upstreams.{name}.endpoints[{i}]"),
                        msg,
                        Some(ep.span().start),
                    ))
                }
            }
        }
        if schemes.len() > 1 {
            return Err(err(
                format!("upstreams.{name}.endpoints"),
                "mixes https:// and cleartext endpoints; one cluster speaks one scheme".into(),
                None,
            ));
        }
        let tls = &u.tls;
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(err(
                format!("upstreams.{name}.tls"),
                "client_cert and client_key go together".into(),
                None,
            ));
        }
        if let Some(sn) = &tls.server_name {
            if !server_name_ok(sn) || sn.starts_with('*') {
                return Err(err(
                    format!("upstreams.{name}.tls.server_name"),
                    format!("`{sn}` is not a DNS name"),
                    None,
                ));
            }
        }
        if let Some(h) = &u.host_rewrite {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(
                    format!("upstreams.{name}.host_rewrite"),
                    format!("`{h}` is not a host"),
                    None,
                ));
            }
        }
        if u.timeout_ms == 0 || u.connect_timeout_ms == 0 || u.idle_timeout_ms == 0 {
            return Err(err(
                format!("upstreams.{name}"),
                "timeouts must be positive".into(),
                None,
            ));
        }
        if u.dns_refresh_ms < 100 {
            return Err(err(
                format!("upstreams.{name}.dns_refresh_ms"),
                format!("{} is below 100 ms", u.dns_refresh_ms),
                None,
            ));
        }
        validate_upstream_health(u)
            .map_err(|(key, msg)| err(format!("upstreams.{name}.{key}"), msg.into(), None))?;
    }
    for (name, p) in &c.policies {
        if p.request_body == crate::BodyMode::Sse {
            return Err(err(
                format!("policies.{name}.request_body"),
                "`sse` is a response format: a request body is `none`, `buffer` or `stream`".into(),
                None,
            ));
        }
        if p.timeout_ms == 0 {
            return Err(err(
                format!("policies.{name}.timeout_ms"),
                "must be positive".into(),
                None,
            ));
        }
        if p.memory_limit_bytes < (1 << 16) || p.memory_limit_bytes > MAX_POLICY_MEMORY_BYTES {
            return Err(err(
                format!("policies.{name}.memory_limit_bytes"),
                format!(
                    "must be between 65536 (one wasm page) and {MAX_POLICY_MEMORY_BYTES} \
                     ({} MiB, the most the runtime gives a policy)",
                    MAX_POLICY_MEMORY_BYTES >> 20
                ),
                None,
            ));
        }
        if let Some(pin) = &p.sha256 {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    format!("policies.{name}.sha256"),
                    "must be 64 hex digits".into(),
                    None,
                ));
            }
        }
        match &p.component {
            None if reader == Reader::Host => {
                return Err(err(
                    format!("policies.{name}.component"),
                    "required: the `.wasm` component file this policy runs".into(),
                    None,
                ))
            }
            Some(file) if file.get_ref().as_os_str().is_empty() => {
                return Err(err(
                    format!("policies.{name}.component"),
                    "must not be empty".into(),
                    Some(file.span().start),
                ))
            }
            _ => {}
        }
    }
    let mut names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            return Err(err(
                format!("routes[{i}].name"),
                format!("duplicate route name `{}`", r.name),
                None,
            ));
        }
        if let Some(why) = r.host.as_deref().and_then(route_host_problem) {
            return Err(err(
                format!("routes[{i}].host"),
                format!("`{}`: {why}", r.host.as_deref().unwrap_or_default()),
                None,
            ));
        }
        if !r.path_prefix.starts_with('/') {
            return Err(err(
                format!("routes[{i}].path_prefix"),
                "must start with `/`".into(),
                None,
            ));
        }
        if !c.upstreams.contains_key(r.upstream.get_ref()) {
            return Err(err(
                format!("routes[{i}].upstream"),
                format!("unknown upstream `{}`", r.upstream.get_ref()),
                Some(r.upstream.span().start),
            ));
        }
        for (j, m) in r.methods.iter().enumerate() {
            if let Some(why) = route_method_problem(m.get_ref()) {
                return Err(err(
                    format!("routes[{i}].methods[{j}]"),
                    format!("`{}` {why}", m.get_ref()),
                    Some(m.span().start),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (j, p) in r.policies.iter().enumerate() {
            if !c.policies.contains_key(p.get_ref()) {
                return Err(err(
                    format!("routes[{i}].policies[{j}]"),
                    format!("unknown policy `{}`", p.get_ref()),
                    Some(p.span().start),
                ));
            }
            if !seen.insert(p.get_ref()) {
                return Err(err(
                    format!("routes[{i}].policies[{j}]"),
                    format!("policy `{}` listed twice", p.get_ref()),
                    Some(p.span().start),
                ));
            }
        }
    }
    Ok(())
}

/// `[server.tls]`: the bad key (below `server.tls`) and why.
fn validate_tls_listener(
    c: &GatewayConfig,
    tls: &crate::model::TlsListenerConfig,
) -> Result<(), (String, String)> {
    if tls.certificates.is_empty() {
        return Err((
            ".certificates".into(),
            "needs at least one certificate".into(),
        ));
    }
    if tls.certificates.iter().filter(|c| c.default).count() > 1 {
        return Err((
            ".certificates".into(),
            "more than one certificate is marked `default`".into(),
        ));
    }
    for (i, cert) in tls.certificates.iter().enumerate() {
        for (j, name) in cert.names.iter().flatten().enumerate() {
            if !server_name_ok(name) {
                return Err((
                    format!(".certificates[{i}].names[{j}]"),
                    format!("`{name}` is not a DNS name or `*.` wildcard"),
                ));
            }
        }
        if cert.names.as_ref().is_some_and(Vec::is_empty) {
            return Err((
                format!(".certificates[{i}].names"),
                "is empty; leave it out to use the certificate's names".into(),
            ));
        }
    }
    if !["1.2", "1.3"].contains(&tls.min_version.as_str()) {
        return Err((
            ".min_version".into(),
            format!("`{}`: use \"1.2\" or \"1.3\"", tls.min_version),
        ));
    }
    if tls.handshake_timeout_ms == 0 {
        return Err((".handshake_timeout_ms".into(), "must be positive".into()));
    }
    if tls.max_handshakes == 0 {
        return Err((".max_handshakes".into(), "must be at least 1".into()));
    }
    if tls.watch_interval_ms != 0 && tls.watch_interval_ms < 100 {
        return Err((
            ".watch_interval_ms".into(),
            "must be 0 (off) or at least 100".into(),
        ));
    }
    for (other, addr) in [
        ("server.listen", c.server.listen),
        ("admin.listen", c.admin.listen),
    ] {
        if addr == tls.listen && addr.port() != 0 {
            return Err((".listen".into(), format!("must differ from {other}")));
        }
    }
    Ok(())
}

/// The circuit, outlier and health-check tables of one cluster: the bad key
/// (below `upstreams.NAME.`) and why.
fn validate_upstream_health(u: &UpstreamConfig) -> Result<(), (String, &'static str)> {
    let bad = |key: &str, msg| Err((key.to_string(), msg));
    if u.circuit.consecutive_failures == 0 {
        return bad("circuit.consecutive_failures", "must be at least 1");
    }
    if u.circuit.open_ms == 0 {
        return bad("circuit.open_ms", "must be above 0");
    }
    if let Some(o) = &u.outlier {
        // `!(x > 0)` also refuses NaN.
        if !(o.max_error_rate > 0.0 && o.max_error_rate < 1.0) {
            return bad("outlier.max_error_rate", "must be above 0 and below 1");
        }
        if o.min_requests == 0 {
            return bad("outlier.min_requests", "must be at least 1");
        }
        if o.eject_ms == 0 {
            return bad("outlier.eject_ms", "must be above 0");
        }
        if o.max_eject_ms < o.eject_ms {
            return bad("outlier.max_eject_ms", "must be at least outlier.eject_ms");
        }
        if !(1..=100).contains(&o.max_ejected_percent) {
            return bad("outlier.max_ejected_percent", "must be between 1 and 100");
        }
    }
    if let Some(h) = &u.health_check {
        // What an HTTP/1.1 request target may hold: visible ASCII, no fragment.
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !h.path.starts_with('/') || !visible(&h.path) {
            return bad(
                "health_check.path",
                "must start with `/` and hold visible ASCII only (no spaces, no `#`)",
            );
        }
        if h.host
            .as_deref()
            .is_some_and(|host| host.is_empty() || !visible(host))
        {
            return bad(
                "health_check.host",
                "must be a host name (visible ASCII, no spaces)",
            );
        }
        if h.interval_ms < 100 {
            return bad("health_check.interval_ms", "must be at least 100");
        }
        if h.timeout_ms == 0 {
            return bad("health_check.timeout_ms", "must be above 0");
        }
        if h.healthy_threshold == 0 {
            return bad("health_check.healthy_threshold", "must be at least 1");
        }
        if h.unhealthy_threshold == 0 {
            return bad("health_check.unhealthy_threshold", "must be at least 1");
        }
        if h.expect_status.0.is_empty() || h.expect_status.0.iter().any(|s| s.range().is_none()) {
            return bad(
                "health_check.expect_status",
                "must be status codes (100-599) or ranges like \"200-399\"",
            );
        }
    }
    Ok(())
}

/// What is wrong with a route's `host` pattern, if anything: it must be a
/// host name, or `*.` and one (any subdomain of it). A `*` anywhere else
/// would match what nobody meant (`*example.com` would take
/// `badexample.com`), so it is refused.
pub fn route_host_problem(pattern: &str) -> Option<&'static str> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        return None;
    }
    Some(if pattern.contains('*') {
        "a wildcard is `*.` and a domain (`*.example.com`, any subdomain of it)"
    } else {
        "must be a host name (letters, digits, `-` and `_` between dots)"
    })
}

/// What is wrong with a route's method, if anything. Methods are
/// case-sensitive (RFC 9110 §9.1): `post` is not `POST`, and a route that
/// named it would match no request, so it is refused rather than upper-cased.
pub fn route_method_problem(m: &str) -> Option<&'static str> {
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        Some("is not an HTTP method (methods are upper-case: `GET`, `POST`)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
trust.allow_unsigned = true
[upstreams.backend]
endpoints = ["127.0.0.1:9000"]
[policies.h]
component = "h.wasm"
[[routes]]
name = "api"
upstream = "backend"
policies = ["h"]
"#;

    #[test]
    fn good_config_resolves_paths() {
        let c = parse(Path::new("/etc/edgegate/gateway.toml"), GOOD).unwrap();
        assert_eq!(
            c.policies["h"].component_path(),
            Path::new("/etc/edgegate/h.wasm")
        );
    }

    #[test]
    fn the_host_needs_a_component_and_a_trust_store_and_an_embedded_reader_neither() {
        let bare = GOOD
            .replace("trust.allow_unsigned = true\n", "")
            .replace("component = \"h.wasm\"\n", "kind = \"auth\"\n");
        let e = parse(
            Path::new("g.toml"),
            &bare.replace("kind", "component = \"h.wasm\"\nkind"),
        )
        .unwrap_err();
        assert_eq!(e.key, "trust.store", "{e}");
        let e = parse(
            Path::new("g.toml"),
            &bare.replace("version = 1", "version = 1\ntrust.allow_unsigned = true"),
        )
        .unwrap_err();
        assert_eq!(e.key, "policies.h.component", "{e}");
        assert!(e.to_string().contains("required"), "{e}");

        let c = parse_embedded(Path::new("gateway_config"), &bare).unwrap();
        assert_eq!(c.policies["h"].kind, crate::PolicyKind::Auth);
        assert_eq!(c.policies["h"].component_path(), Path::new(""));
        // Every other rule is the host's: a bad route, a typo'd host key.
        let e = parse_embedded(
            Path::new("gateway_config"),
            &bare.replace("upstream = \"backend\"", "upstream = \"nope\""),
        )
        .unwrap_err();
        assert_eq!(e.key, "routes[0].upstream");
        assert!(e.to_string().starts_with("gateway_config:"), "{e}");
        let e = parse_embedded(
            Path::new("gateway_config"),
            &bare.replace("version = 1", "version = 1\n[server]\nlisten_on = 1"),
        )
        .unwrap_err();
        assert_eq!(e.key, "server.listen_on", "{e}");
        let e = parse_embedded(Path::new("gateway_config"), &"#".repeat(5 << 20)).unwrap_err();
        assert!(e.message.contains("the limit is"), "{e}");
    }

    #[test]
    fn access_log_target_resolves_and_shares_are_checked() {
        let text = format!("{GOOD}[access_log]\ntarget = \"logs/access.log\"\nformat = \"json\"\n");
        let c = parse(Path::new("/etc/edgegate/gateway.toml"), &text).unwrap();
        assert_eq!(c.access_log.target, "/etc/edgegate/logs/access.log");
        assert_eq!(c.access_log.format, Some(crate::LineFormat::Json));
        let stdout = parse(Path::new("/etc/edgegate/gateway.toml"), GOOD).unwrap();
        assert_eq!(stdout.access_log.target, "stdout");
        assert!(stdout.access_log.enabled);
        let e = parse(
            Path::new("g.toml"),
            &format!("{GOOD}[access_log]\nsample_errors = 1.5\n"),
        )
        .unwrap_err();
        assert_eq!(e.key, "access_log.sample_errors", "{e}");
        assert!(
            e.to_string().contains("must be between 0 and 1, not 1.5"),
            "{e}"
        );
        let e = parse(
            Path::new("g.toml"),
            &GOOD.replace(
                "version = 1",
                "version = 1\nserver.request_id = \"sometimes\"",
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.request_id"), "{e}");
    }

    #[test]
    fn quarantine_rules_have_defaults_and_bounds() {
        let c = parse(Path::new("g.toml"), GOOD).unwrap();
        assert!(c.quarantine.enabled);
        assert_eq!(
            (
                c.quarantine.failures,
                c.quarantine.window_ms,
                c.quarantine.cool_down_ms
            ),
            (5, 10_000, 60_000)
        );
        for (line, key, why) in [
            (
                "failures = 0",
                "quarantine.failures",
                "must be between 1 and 1000",
            ),
            (
                "failures = 1001",
                "quarantine.failures",
                "must be between 1 and 1000",
            ),
            ("window_ms = 0", "quarantine.window_ms", "must be above 0"),
            (
                "cool_down_ms = 0",
                "quarantine.cool_down_ms",
                "must be above 0",
            ),
        ] {
            let e = parse(
                Path::new("g.toml"),
                &format!("{GOOD}[quarantine]\n{line}\n"),
            )
            .unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
            assert!(e.to_string().contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn a_route_host_wildcard_is_a_whole_leftmost_label() {
        let e = parse(
            Path::new("g.toml"),
            &GOOD.replace("name = \"api\"", "name = \"api\"\nhost = \"*example.com\""),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.toml: key `routes[0].host`: `*example.com`: a wildcard is `*.` and a domain (`*.example.com`, any subdomain of it)"
        );
        let ok = GOOD.replace("name = \"api\"", "name = \"api\"\nhost = \"*.example.com\"");
        assert!(parse(Path::new("g.toml"), &ok).is_ok());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace(
            "upstream = \"backend\"",
            "upstream = \"backend\"\nupstrem = 1",
        );
        let e = parse(Path::new("g.toml"), &text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("g.toml:11:1: "), "{msg}");
        assert!(msg.contains("key `routes[0].upstrem`"), "{msg}");
        assert!(msg.contains("unknown field `upstrem`"), "{msg}");
    }

    #[test]
    fn unknown_policy_reference_is_located() {
        let text = GOOD.replace("policies = [\"h\"]", "policies = [\"h\", \"nope\"]");
        let e = parse(Path::new("g.toml"), &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.toml:11:18: key `routes[0].policies[1]`: unknown policy `nope`"
        );
    }

    #[test]
    fn wrong_version_is_refused() {
        let e = parse(
            Path::new("g.toml"),
            &GOOD.replace("version = 1", "version = 2"),
        )
        .unwrap_err();
        assert_eq!(e.key, "version");
        assert_eq!(e.position.map(|p| p.0), Some(2));
    }

    #[test]
    fn upstream_health_defaults_keep_the_circuit_and_turn_the_rest_off() {
        let c = parse(Path::new("g.toml"), GOOD).unwrap();
        let u = &c.upstreams["backend"];
        assert_eq!(u.circuit.consecutive_failures, 5);
        assert_eq!(u.circuit.open_ms, 10_000);
        assert!(u.outlier.is_none());
        assert!(u.health_check.is_none());

        let text = GOOD.replace(
            "endpoints = [\"127.0.0.1:9000\"]",
            "endpoints = [\"127.0.0.1:9000\"]\n\
             outlier = {}\n\
             health_check = { path = \"/healthz\" }",
        );
        let c = parse(Path::new("g.toml"), &text).unwrap();
        let u = &c.upstreams["backend"];
        let o = u.outlier.as_ref().unwrap();
        assert_eq!(
            (
                o.max_error_rate,
                o.min_requests,
                o.eject_ms,
                o.max_eject_ms,
                o.max_ejected_percent
            ),
            (0.5, 20, 30_000, 300_000, 50)
        );
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(h.path, "/healthz");
        assert_eq!(h.host, None);
        assert_eq!(
            (
                h.interval_ms,
                h.timeout_ms,
                h.healthy_threshold,
                h.unhealthy_threshold
            ),
            (5_000, 2_000, 2, 3)
        );
        assert!(h.expect_status.accepts(200) && h.expect_status.accepts(399));
        assert!(!h.expect_status.accepts(199) && !h.expect_status.accepts(400));
    }

    #[test]
    fn expect_status_takes_a_code_a_range_or_a_list() {
        let expect = |value: &str| {
            let text = GOOD.replace(
                "endpoints = [\"127.0.0.1:9000\"]",
                &format!(
                    "endpoints = [\"127.0.0.1:9000\"]\n\
                     health_check = {{ path = \"/h\", expect_status = {value} }}"
                ),
            );
            let c = parse(Path::new("g.toml"), &text).unwrap();
            let h = c.upstreams["backend"].health_check.clone().unwrap();
            (200..=599)
                .filter(|s| h.expect_status.accepts(*s))
                .collect::<Vec<u16>>()
        };
        assert_eq!(expect("204"), [204]);
        assert_eq!(expect("\"200-202\""), [200, 201, 202]);
        assert_eq!(
            expect("[200, \"404\", \"500 - 501\"]"),
            [200, 404, 500, 501]
        );
    }

    #[test]
    fn bad_upstream_health_values_are_refused_naming_the_key() {
        let refused = |table: &str| {
            let text = GOOD.replace(
                "endpoints = [\"127.0.0.1:9000\"]",
                &format!("endpoints = [\"127.0.0.1:9000\"]\n{table}"),
            );
            parse(Path::new("g.toml"), &text).unwrap_err().to_string()
        };
        let cases = [
            (
                "circuit = { consecutive_failures = 0 }",
                "g.toml: key `upstreams.backend.circuit.consecutive_failures`: must be at least 1",
            ),
            (
                "circuit = { open_ms = 0 }",
                "g.toml: key `upstreams.backend.circuit.open_ms`: must be above 0",
            ),
            (
                "outlier = { max_error_rate = 1.0 }",
                "g.toml: key `upstreams.backend.outlier.max_error_rate`: must be above 0 and below 1",
            ),
            (
                "outlier = { max_error_rate = nan }",
                "g.toml: key `upstreams.backend.outlier.max_error_rate`: must be above 0 and below 1",
            ),
            (
                "outlier = { min_requests = 0 }",
                "g.toml: key `upstreams.backend.outlier.min_requests`: must be at least 1",
            ),
            (
                "outlier = { eject_ms = 0 }",
                "g.toml: key `upstreams.backend.outlier.eject_ms`: must be above 0",
            ),
            (
                "outlier = { eject_ms = 5000, max_eject_ms = 1000 }",
                "g.toml: key `upstreams.backend.outlier.max_eject_ms`: must be at least outlier.eject_ms",
            ),
            (
                "outlier = { max_ejected_percent = 0 }",
                "g.toml: key `upstreams.backend.outlier.max_ejected_percent`: must be between 1 and 100",
            ),
            (
                "health_check = { path = \"healthz\" }",
                "g.toml: key `upstreams.backend.health_check.path`: must start with `/` and hold visible ASCII only (no spaces, no `#`)",
            ),
            (
                "health_check = { path = \"/h\", host = \"a b\" }",
                "g.toml: key `upstreams.backend.health_check.host`: must be a host name (visible ASCII, no spaces)",
            ),
            (
                "health_check = { path = \"/h\", interval_ms = 99 }",
                "g.toml: key `upstreams.backend.health_check.interval_ms`: must be at least 100",
            ),
            (
                "health_check = { path = \"/h\", timeout_ms = 0 }",
                "g.toml: key `upstreams.backend.health_check.timeout_ms`: must be above 0",
            ),
            (
                "health_check = { path = \"/h\", healthy_threshold = 0 }",
                "g.toml: key `upstreams.backend.health_check.healthy_threshold`: must be at least 1",
            ),
            (
                "health_check = { path = \"/h\", unhealthy_threshold = 0 }",
                "g.toml: key `upstreams.backend.health_check.unhealthy_threshold`: must be at least 1",
            ),
            (
                "health_check = { path = \"/h\", expect_status = \"300-200\" }",
                "g.toml: key `upstreams.backend.health_check.expect_status`: must be status codes (100-599) or ranges like \"200-399\"",
            ),
            (
                "health_check = { path = \"/h\", expect_status = [] }",
                "g.toml: key `upstreams.backend.health_check.expect_status`: must be status codes (100-599) or ranges like \"200-399\"",
            ),
        ];
        for (table, message) in cases {
            assert_eq!(refused(table), message, "{table}");
        }
        // A misspelt key is refused by the parser, with its place.
        let e = refused("circuit = { open = 1 }");
        assert!(
            e.starts_with(
                "g.toml:6:13: key `upstreams.backend.circuit.open`: unknown field `open`"
            ),
            "{e}"
        );
        // So is a health check without a path.
        let e = refused("health_check = { interval_ms = 100 }");
        assert!(
            e.contains("key `upstreams.backend.health_check`")
                && e.contains("missing field `path`"),
            "{e}"
        );
    }

    #[test]
    fn memory_limits_the_runtime_cannot_honour_are_refused() {
        let with_limit = |bytes: usize| {
            let text = GOOD.replace(
                "component = \"h.wasm\"",
                &format!("component = \"h.wasm\"\nmemory_limit_bytes = {bytes}"),
            );
            parse(Path::new("g.toml"), &text)
        };
        let refused = "g.toml: key `policies.h.memory_limit_bytes`: must be between \
                       65536 (one wasm page) and 67108864 (64 MiB, the most the runtime gives a policy)";
        assert_eq!(with_limit(1 << 30).unwrap_err().to_string(), refused);
        assert_eq!(
            with_limit(MAX_POLICY_MEMORY_BYTES + 1)
                .unwrap_err()
                .to_string(),
            refused
        );
        assert_eq!(with_limit(65535).unwrap_err().to_string(), refused);
        let c = with_limit(MAX_POLICY_MEMORY_BYTES).unwrap();
        assert_eq!(c.policies["h"].memory_limit_bytes, 64 << 20);
        assert!(with_limit(1 << 16).is_ok());
    }

    #[test]
    fn signed_components_are_the_default() {
        let e = parse(
            Path::new("g.toml"),
            &GOOD.replace("trust.allow_unsigned = true\n", ""),
        )
        .unwrap_err();
        assert_eq!(e.key, "trust.store");
        assert!(
            e.message
                .starts_with("required: edgegate runs only signed components"),
            "{e}"
        );
    }

    #[test]
    fn tls_listener_and_https_upstreams_resolve_paths_and_refuse_bad_values_by_key() {
        let tls = "[server.tls]\n[[server.tls.certificates]]\ncert = \"a.crt\"\nkey = \"a.key\"\n";
        let upstream = "[upstreams.llm]\nendpoints = [\"https://api.openai.com\"]\ntls = { ca_file = \"ca.pem\" }\n";
        let text = format!("{GOOD}{upstream}{tls}");
        let c = parse(Path::new("/etc/edgegate/g.toml"), &text).unwrap();
        let t = c.server.tls.as_ref().unwrap();
        assert_eq!(t.certificates[0].cert, Path::new("/etc/edgegate/a.crt"));
        assert_eq!(t.min_version, "1.2");
        assert_eq!(
            c.upstreams["llm"].tls.ca_file.as_deref(),
            Some(Path::new("/etc/edgegate/ca.pem"))
        );
        let refused = |text: String| parse(Path::new("g.toml"), &text).unwrap_err();
        let e = refused(format!(
            "{GOOD}[server.tls]\nmin_version = \"1.1\"\n[[server.tls.certificates]]\ncert = \"a\"\nkey = \"b\"\n"
        ));
        assert_eq!(e.key, "server.tls.min_version", "{e}");
        let e = refused(format!("{GOOD}[server.tls]\ncertificates = []\n"));
        assert_eq!(e.key, "server.tls.certificates", "{e}");
        let e = refused(GOOD.replace(
            "version = 1\n",
            "version = 1\nserver.redirect_to_https = true\n",
        ));
        assert_eq!(e.key, "server.redirect_to_https", "{e}");
        let e = refused(format!(
            "{GOOD}[upstreams.mixed]\nendpoints = [\"https://a\", \"b:80\"]\n"
        ));
        assert_eq!(e.key, "upstreams.mixed.endpoints", "{e}");
        let e = refused(format!(
            "{GOOD}[upstreams.half]\nendpoints = [\"https://a\"]\ntls = {{ client_cert = \"c.pem\" }}\n"
        ));
        assert_eq!(e.key, "upstreams.half.tls", "{e}");
        let e = refused(format!(
            "{GOOD}[upstreams.ftp]\nendpoints = [\"ftp://a:21\"]\n"
        ));
        assert_eq!(e.key, "upstreams.ftp.endpoints[0]", "{e}");
        assert!(e.message.contains("scheme `ftp`"), "{e}");
    }
}
