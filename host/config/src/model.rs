//! The config model. Each field's doc comment is the documentation of its key;
//! defaults live in the `default_*` functions next to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// `policies/gateway.toml`: the whole gateway config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Config format version; must be 1.
    pub version: Spanned<u32>,
    /// The proxy listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (health, metrics).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Which component signatures the gateway trusts.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Upstream clusters by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Policy instances by name; routes refer to them in order.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Routes, matched in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How a canary version pushed through the admin API is judged.
    #[serde(default)]
    pub canary: CanaryConfig,
    /// This edge node's identity and its coordinator (health graph sync).
    #[serde(default)]
    pub node: Option<NodeConfig>,
    /// One line per request: where it goes, its format and sampling.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// When a policy version whose sandbox keeps failing stops being run.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Folder of the config file; relative paths resolve against it (set by `load`).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was loaded from (set by `load`).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[server]`: the proxy listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to accept client traffic on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Worker threads, each with its own listener socket (SO_REUSEPORT); 0 = one per CPU.
    #[serde(default)]
    pub workers: usize,
    /// Largest total size of request headers (names + values); larger → 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time a client has to send its request headers.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Value of the `Via` header added to requests and responses.
    #[serde(default = "default_via")]
    pub via: String,
    /// Client connections open at once (across workers); past it, accepting waits.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per client connection.
    #[serde(default = "default_max_streams")]
    pub max_concurrent_streams: u32,
    /// Time a new connection has to send its first byte; silent ones are closed.
    #[serde(default = "default_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest gap between two pieces of a request body; past it → 408.
    #[serde(default = "default_body_idle_timeout_ms")]
    pub body_idle_timeout_ms: u64,
    /// Time a client has to send a whole body that a policy buffers; past it → 408.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Merge runs of `/` in request paths before routing (`//admin` → `/admin`).
    #[serde(default = "default_true")]
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` inside a path segment.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// Answer every request on the cleartext listener with a 308 to the same
    /// URL on the TLS listener (`server.tls` must be set).
    #[serde(default)]
    pub redirect_to_https: bool,
    /// A TLS listener beside the cleartext one; absent: cleartext only.
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
    /// Whose `x-request-id` a request carries upstream, into the access log
    /// and into error bodies.
    #[serde(default)]
    pub request_id: RequestIdMode,
}

/// `server.request_id`: where a request's id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestIdMode {
    /// Keep a client's `x-request-id` when it is 1 to 128 characters of
    /// `[A-Za-z0-9._:-]`; otherwise make one.
    #[default]
    Accept,
    /// Always make one; a client's `x-request-id` is replaced.
    Generate,
}

/// `[access_log]`: one line per request, written by a thread of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Off: no line is made at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `"stdout"`, or a file (relative to the config file) opened for
    /// appending and opened again on SIGUSR1, after a log rotation.
    #[serde(default = "default_access_log_target")]
    pub target: String,
    /// `text` (key=value pairs) or `json` (one object per line); absent:
    /// what `--log-format` says.
    #[serde(default)]
    pub format: Option<LineFormat>,
    /// Share of requests answered below 400 that are logged, from 0 to 1.
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// Share of requests answered 400 or above that are logged, from 0 to 1.
    #[serde(default = "default_sample")]
    pub sample_errors: f64,
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// `key=value` pairs, values quoted when they need it (logfmt).
    Text,
    /// One JSON object per line.
    Json,
}

fn default_access_log_target() -> String {
    "stdout".into()
}

fn default_sample() -> f64 {
    1.0
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            target: default_access_log_target(),
            format: None,
            sample: 1.0,
            sample_errors: 1.0,
        }
    }
}

/// `[server.tls]`: the TLS listener, its certificates and client certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Address to accept TLS client traffic on (ALPN `h2` and `http/1.1`).
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// Certificates picked by SNI; the first one (or the one marked
    /// `default`) serves clients that send no name or an unknown one.
    pub certificates: Vec<TlsCertificate>,
    /// What a client gets whose SNI matches no certificate (or that sends none).
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`.
    #[serde(default = "default_min_tls_version")]
    pub min_version: String,
    /// Time a client has to finish the handshake; past it the connection is closed.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress at once (across workers); past it, accepting TLS waits,
    /// while connections already open go on being served.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// How often the certificate and key files are checked for changes (a change
    /// reloads the config); 0 = only on SIGHUP or the admin API's reload.
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
    /// Client certificates (mTLS); absent: none are asked for.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

/// `[[server.tls.certificates]]`: one certificate chain and its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM file with the certificate chain, leaf first; relative to the config file.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 RSA or SEC1 EC): RSA,
    /// ECDSA P-256/P-384 or Ed25519.
    pub key: PathBuf,
    /// Server names it answers (`api.example.com`, `*.example.com`); absent:
    /// the DNS names of the certificate's subject alternative names.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Serve it to clients with no or an unknown SNI (default: the first certificate).
    #[serde(default)]
    pub default: bool,
}

/// What happens to a client whose SNI names no configured certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// It gets the default certificate.
    #[default]
    Default,
    /// The handshake fails (`unrecognized_name`).
    Refuse,
}

/// `[server.tls.client_auth]`: which client certificates are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs that sign client certificates; relative to the config file.
    pub ca_file: PathBuf,
    /// `required`: no certificate, no handshake; `optional`: a client without
    /// one is served with no identity.
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// The handshake fails without a valid client certificate.
    #[default]
    Required,
    /// A valid certificate is verified and passed on; none is fine.
    Optional,
}

fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_min_tls_version() -> String {
    "1.2".into()
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}
fn default_max_handshakes() -> usize {
    1024
}
fn default_watch_interval_ms() -> u64 {
    5_000
}

/// What the gateway does with `%2F` (`/`) and `%5C` (`\`) in a path segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Refuse the request with 400: upstreams disagree on what they mean.
    #[default]
    Reject,
    /// Keep them escaped and treat them as part of the segment.
    Keep,
}

fn default_true() -> bool {
    true
}
fn default_first_byte_timeout_ms() -> u64 {
    10_000
}
fn default_body_idle_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_header_bytes() -> usize {
    16 << 10
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_shutdown_grace_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_streams() -> u32 {
    256
}
fn default_via() -> String {
    "edgegate".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            workers: 0,
            max_header_bytes: default_max_header_bytes(),
            header_timeout_ms: default_header_timeout_ms(),
            shutdown_grace_ms: default_shutdown_grace_ms(),
            via: default_via(),
            max_connections: default_max_connections(),
            max_concurrent_streams: default_max_streams(),
            first_byte_timeout_ms: default_first_byte_timeout_ms(),
            body_idle_timeout_ms: default_body_idle_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            redirect_to_https: false,
            tls: None,
            request_id: RequestIdMode::Accept,
        }
    }
}

/// `[admin]`: the admin listener (`/healthz`, `/readyz`, `/metrics`) and the
/// admin API under `/v1/` (push, promote, roll back, reload; docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; keep it on loopback or a private network.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token the admin API requires. Without one, the API answers
    /// only clients on loopback.
    #[serde(default)]
    pub token: Option<String>,
    /// Where pushed component versions are kept, so a restart serves the last
    /// promoted ones; relative to the config file. Default `.edgegate-state`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Keep compiled components in `state_dir/compiled`, so a restart or a
    /// push of a digest seen before loads them instead of compiling again
    /// (docs/operations.md, "Compile cache"). A change needs a restart.
    #[serde(default = "default_true")]
    pub compile_cache: bool,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            state_dir: None,
            compile_cache: true,
        }
    }
}

/// `[node]`: who this edge node is and where it reports its health graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id, unique across the fleet (`[A-Za-z0-9._-]`, at most 64).
    pub id: String,
    /// Site (region, PoP) the node belongs to (same characters).
    pub site: String,
    /// Coordinator base URL (`http://host:port` or `https://host:port`); none:
    /// the graph stays local.
    #[serde(default)]
    pub coordinator: Option<String>,
    /// PEM CA bundle an `https://` coordinator's certificate must chain to;
    /// default the system's roots. Relative to the config file.
    #[serde(default)]
    pub coordinator_ca_file: Option<PathBuf>,
    /// How often the node reports.
    #[serde(default = "default_report_interval_ms")]
    pub report_interval_ms: u64,
    /// Bearer token the coordinator requires, if any.
    #[serde(default)]
    pub coordinator_token: Option<String>,
}

fn default_report_interval_ms() -> u64 {
    2_000
}

/// `[canary]`: when a canary version is promoted or rolled back on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// How long a canary runs before it is promoted (when it stayed healthy).
    #[serde(default = "default_canary_window_ms")]
    pub window_ms: u64,
    /// Canary calls needed before it is judged (promotion waits for them too).
    #[serde(default = "default_canary_min_requests")]
    pub min_requests: u64,
    /// Roll back when the canary's failure rate (trap, timeout, OOM, error)
    /// exceeds the serving version's by more than this (0.01 = one point).
    #[serde(default = "default_rate_margin")]
    pub max_failure_rate_increase: f64,
    /// Roll back when the share of 5xx answers on requests the canary handled
    /// exceeds the serving version's by more than this.
    #[serde(default = "default_rate_margin")]
    pub max_5xx_rate_increase: f64,
    /// Roll back when the canary's p99 call time is more than this many times
    /// the serving version's (and at least 1 ms slower); judged once both
    /// sides made 100 calls.
    #[serde(default = "default_p99_ratio")]
    pub max_p99_ratio: f64,
}

fn default_canary_window_ms() -> u64 {
    60_000
}
fn default_canary_min_requests() -> u64 {
    50
}
fn default_rate_margin() -> f64 {
    0.02
}
fn default_p99_ratio() -> f64 {
    2.0
}

/// `[quarantine]`: a policy version that traps, times out or runs out of
/// memory or stack `failures` times within `window_ms` is not run for
/// `cool_down_ms`; its `on_error` answers for it. A push, a rollback or a
/// reload lifts it sooner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Off: a failing version keeps being run (each call still fails alone).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sandbox failures within the window that quarantine a version (1..=1000).
    #[serde(default = "default_quarantine_failures")]
    pub failures: u32,
    /// The window the failures are counted in.
    #[serde(default = "default_quarantine_window_ms")]
    pub window_ms: u64,
    /// How long a quarantine lasts; then the version runs again, and a new
    /// run of failures quarantines it again.
    #[serde(default = "default_quarantine_cool_down_ms")]
    pub cool_down_ms: u64,
}

/// Most failures `[quarantine] failures` may ask for (the window keeps that many instants).
pub const MAX_QUARANTINE_FAILURES: u32 = 1000;

fn default_quarantine_failures() -> u32 {
    5
}
fn default_quarantine_window_ms() -> u64 {
    10_000
}
fn default_quarantine_cool_down_ms() -> u64 {
    60_000
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failures: default_quarantine_failures(),
            window_ms: default_quarantine_window_ms(),
            cool_down_ms: default_quarantine_cool_down_ms(),
        }
    }
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            window_ms: default_canary_window_ms(),
            min_requests: default_canary_min_requests(),
            max_failure_rate_increase: default_rate_margin(),
            max_5xx_rate_increase: default_rate_margin(),
            max_p99_ratio: default_p99_ratio(),
        }
    }
}

/// One admission self-test: a request the policy must answer as expected
/// before a new version of it may serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// Method.
    #[serde(default = "default_self_test_method")]
    pub method: String,
    /// Path and query.
    #[serde(default = "default_self_test_path")]
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body (text).
    #[serde(default)]
    pub body: Option<String>,
    /// The status the policy must answer with; absent: it must let the request continue.
    #[serde(default)]
    pub expect_status: Option<u16>,
}

fn default_self_test_method() -> String {
    "GET".into()
}
fn default_self_test_path() -> String {
    "/".into()
}

/// `[trust]`: the gateway runs only components signed by keys it trusts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Trust store file (see docs/signing.md), relative to the config file.
    #[serde(default)]
    pub store: Option<Spanned<PathBuf>>,
    /// Signed revocation list (`edgegate revoke`), relative to the config file. The highest
    /// version accepted is remembered beside it (`FILE.held-version`); older lists are refused.
    #[serde(default)]
    pub revocations: Option<Spanned<PathBuf>>,
    /// Run unsigned components. For local development only; logged loudly at start.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Distinct trusted signers required per policy kind (k of n), e.g. `{ auth = 2 }`; default 1.
    #[serde(default)]
    pub required_signers: BTreeMap<PolicyKind, usize>,
}

/// How a cluster spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight.
    LeastRequests,
}

/// `[upstreams.NAME]`: a cluster of endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Endpoints: `host:port` (cleartext) or `https://host[:port]` (TLS; port
    /// 443 by default). One cluster speaks one scheme.
    pub endpoints: Vec<Spanned<String>>,
    /// `auto` (HTTP/2 when TLS ALPN agrees, else HTTP/1.1), `http1`, or
    /// `http2` (over TLS, or h2c with prior knowledge on cleartext).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// `Host` sent upstream instead of the client's (e.g. `api.openai.com`
    /// for a provider behind a name).
    #[serde(default)]
    pub host_rewrite: Option<String>,
    /// TLS to `https://` endpoints: trust, server name, client certificate.
    #[serde(default)]
    pub tls: UpstreamTlsConfig,
    /// `round_robin` (default) or `least_requests`.
    #[serde(default)]
    pub balance: Balance,
    /// How often endpoint names are resolved again; every address a name
    /// resolves to is an endpoint of its own.
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// Time to establish a TCP connection; past it → 502.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time from sending the request to the response headers; past it → 504.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest silence inside a response body (between two chunks or
    /// events) before the answer is cut; a long stream that keeps sending
    /// is never cut.
    #[serde(default = "default_upstream_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per endpoint and worker.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// When an endpoint's circuit opens and for how long.
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// Outlier ejection by error rate; off unless the table is present.
    #[serde(default)]
    pub outlier: Option<OutlierConfig>,
    /// Active health checks; off unless the table is present.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// Which HTTP version a cluster speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/2 when the TLS handshake's ALPN picks `h2`, else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: over TLS, or h2c (prior knowledge) on cleartext endpoints.
    Http2,
}

/// `[upstreams.NAME.tls]`: how `https://` endpoints are verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of the CAs trusted for this cluster; absent: the system's
    /// roots (`/etc/ssl/certs`, Debian `ca-certificates`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the certificate; default: the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM client certificate chain presented to the upstream (mTLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Accept any certificate. For local development only; logged loudly at start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_upstream_idle_timeout_ms() -> u64 {
    300_000
}

fn default_dns_refresh_ms() -> u64 {
    10_000
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_upstream_timeout_ms() -> u64 {
    30_000
}
fn default_max_idle() -> usize {
    64
}

/// `[upstreams.NAME.circuit]`: the passive circuit breaker of each endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failed attempts (5xx, connect error, timeout) that open an
    /// endpoint's circuit.
    #[serde(default = "default_circuit_failures")]
    pub consecutive_failures: u32,
    /// How long an open circuit holds traffic back; then one failure re-opens
    /// it and one success closes it (half-open).
    #[serde(default = "default_circuit_open_ms")]
    pub open_ms: u64,
}

fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open_ms() -> u64 {
    10_000
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_circuit_failures(),
            open_ms: default_circuit_open_ms(),
        }
    }
}

/// `[upstreams.NAME.outlier]`: eject endpoints whose error rate stays high
/// (Envoy's failure-percentage outlier detection). Present = on; an empty
/// table turns it on with these defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Eject an endpoint whose moving error rate (EWMA over attempts, the
    /// health view's `error_rate_ppm`) is above this, 0 to 1 exclusive.
    #[serde(default = "default_outlier_max_error_rate")]
    pub max_error_rate: f64,
    /// Attempts an endpoint needs in the current window (since the cluster was
    /// built or since its last ejection) before its rate is judged.
    #[serde(default = "default_outlier_min_requests")]
    pub min_requests: u64,
    /// How long the first ejection lasts; each consecutive one doubles it.
    #[serde(default = "default_outlier_eject_ms")]
    pub eject_ms: u64,
    /// The longest an ejection lasts, however many came before it.
    #[serde(default = "default_outlier_max_eject_ms")]
    pub max_eject_ms: u64,
    /// Most endpoints ejected at once, in percent of the cluster, rounded down
    /// (so a cluster of one never ejects); the last usable endpoint is never ejected.
    #[serde(default = "default_outlier_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

fn default_outlier_max_error_rate() -> f64 {
    0.5
}
fn default_outlier_min_requests() -> u64 {
    20
}
fn default_outlier_eject_ms() -> u64 {
    30_000
}
fn default_outlier_max_eject_ms() -> u64 {
    300_000
}
fn default_outlier_max_ejected_percent() -> u32 {
    50
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            max_error_rate: default_outlier_max_error_rate(),
            min_requests: default_outlier_min_requests(),
            eject_ms: default_outlier_eject_ms(),
            max_eject_ms: default_outlier_max_eject_ms(),
            max_ejected_percent: default_outlier_max_ejected_percent(),
        }
    }
}

/// `[upstreams.NAME.health_check]`: a GET sent to every endpoint at an interval;
/// an endpoint failing it takes no traffic until it passes again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path (and query) requested, e.g. `/healthz`.
    pub path: String,
    /// `Host` header sent; default the endpoint's `host:port`.
    #[serde(default)]
    pub host: Option<String>,
    /// Time between two checks of one endpoint (at least 100).
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    /// Time a check has for the answer (headers and body); past it, it failed.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passed checks that mark an unhealthy endpoint healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failed checks that mark a healthy endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass: a code, a `"lo-hi"` range, or a list of either.
    #[serde(default)]
    pub expect_status: ExpectStatus,
}

fn default_check_interval_ms() -> u64 {
    5_000
}
fn default_check_timeout_ms() -> u64 {
    2_000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// One entry of `expect_status`: `204` or `"200-299"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// One status code.
    Code(u16),
    /// An inclusive range written `"lo-hi"` (or one code as a string).
    Range(String),
}

impl StatusSpec {
    /// The inclusive range it stands for; `None` when it is not a status (100-599) or range.
    pub fn range(&self) -> Option<(u16, u16)> {
        let (lo, hi) = match self {
            StatusSpec::Code(c) => (*c, *c),
            StatusSpec::Range(s) => match s.split_once('-') {
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let c = s.trim().parse().ok()?;
                    (c, c)
                }
            },
        };
        ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
    }
}

/// `expect_status`: the statuses a health check accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct ExpectStatus(pub Vec<StatusSpec>);

impl Default for ExpectStatus {
    fn default() -> Self {
        Self(vec![StatusSpec::Range("200-399".into())])
    }
}

impl ExpectStatus {
    /// Whether `status` passes (entries that are not valid ranges match nothing;
    /// validation refuses them).
    pub fn accepts(&self, status: u16) -> bool {
        self.0
            .iter()
            .filter_map(StatusSpec::range)
            .any(|(lo, hi)| (lo..=hi).contains(&status))
    }
}

/// `expect_status = 200`, `= "200-299"` or `= [200, "300-399"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(StatusSpec),
    Many(Vec<StatusSpec>),
}

impl From<OneOrMany> for ExpectStatus {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => Self(vec![s]),
            OneOrMany::Many(list) => Self(list),
        }
    }
}

/// What a policy does to the request when it fails (trap, timeout, out of memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail closed: answer 503, never contact the upstream.
    Deny,
    /// Fail open: skip the policy.
    Allow,
}

/// What kind of policy a component is: drives `on_error` defaults and which keys may sign it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Authentication / authorization.
    Auth,
    /// Upstream choice.
    Routing,
    /// PII and secret redaction.
    Redaction,
    /// Response caching.
    Caching,
    /// Anything else.
    #[default]
    Custom,
}

impl PolicyKind {
    /// The name used in config files and trust stores.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Auth => "auth",
            PolicyKind::Routing => "routing",
            PolicyKind::Redaction => "redaction",
            PolicyKind::Caching => "caching",
            PolicyKind::Custom => "custom",
        }
    }

    /// `on_error` when the config does not say: caching fails open, the rest fail closed.
    pub fn default_on_error(self) -> OnError {
        match self {
            PolicyKind::Caching => OnError::Allow,
            _ => OnError::Deny,
        }
    }
}

/// How a policy sees a body (docs/phases.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// The policy sees no body; it streams past untouched.
    #[default]
    None,
    /// The body is buffered up to `body_limit_bytes` and handed to the policy whole.
    Buffer,
    /// The policy sees the body chunk by chunk as it passes.
    Stream,
    /// Responses only: a `text/event-stream` body one server-sent event at a
    /// time; any other response is buffered as with `buffer`.
    Sse,
}

impl BodyMode {
    /// The name in config files.
    pub fn name(self) -> &'static str {
        match self {
            BodyMode::None => "none",
            BodyMode::Buffer => "buffer",
            BodyMode::Stream => "stream",
            BodyMode::Sse => "sse",
        }
    }
}

/// A capability a policy may be granted (`log` and `context` are always granted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapabilityName {
    /// Wall and monotonic clocks.
    Clock,
    /// The namespaced key/value store.
    Kv,
    /// Read-only upstream health.
    Health,
    /// Native sha256 / HMAC / signature checks.
    Crypto,
}

/// `[policies.NAME]`: one policy instance: a component plus its config and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Path to the `.wasm` component, relative to the config file. Required
    /// by the edgegate host; a runtime with the logic compiled in (the Spin
    /// component) needs none and ignores it.
    #[serde(default)]
    pub component: Option<Spanned<PathBuf>>,
    /// Optional sha256 (hex) pin of the component's signed content (the file
    /// without its signature sections, as `edgegate verify` prints it); any
    /// other content is refused, however its signatures are encoded.
    #[serde(default)]
    pub sha256: Option<String>,
    /// What the policy is; `caching` defaults to `on_error = "allow"`, the rest to `deny`.
    #[serde(default)]
    pub kind: PolicyKind,
    /// `deny` (503, upstream not contacted) or `allow` (skip the policy) when it fails.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// Host capabilities granted; everything not listed is denied.
    #[serde(default)]
    pub capabilities: Vec<CapabilityName>,
    /// Linear memory limit per instance, from 65536 (one wasm page) to
    /// [`MAX_POLICY_MEMORY_BYTES`].
    #[serde(default = "default_memory_limit")]
    pub memory_limit_bytes: usize,
    /// Wall-time budget per call (epoch deadline).
    #[serde(default = "default_policy_timeout_ms")]
    pub timeout_ms: u64,
    /// `none` (default), `buffer` or `stream`: how the policy sees the request body.
    #[serde(default)]
    pub request_body: BodyMode,
    /// `none` (default), `buffer`, `stream` or `sse`: how the policy sees the response body.
    #[serde(default)]
    pub response_body: BodyMode,
    /// Largest body buffered for this policy; a larger request body → 413.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Byte budget of the policy's key/value namespace.
    #[serde(default = "default_kv_budget")]
    pub kv_budget_bytes: usize,
    /// Key/value namespace; defaults to the policy name.
    #[serde(default)]
    pub kv_namespace: Option<String>,
    /// Keep initialised instances for later calls instead of a fresh instance
    /// per call (faster; guest memory then lives across requests, so only for
    /// policies that keep no per-request state in globals). Off by default.
    #[serde(default)]
    pub reuse_instances: bool,
    /// The policy's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Requests every new version must answer as expected at admission.
    #[serde(default)]
    pub self_tests: Vec<SelfTest>,
}

/// The most linear memory a policy may be given (`memory_limit_bytes`): the
/// runtime's pooling allocator reserves this much per memory slot, so a
/// larger limit would be accepted here and never honoured there.
pub const MAX_POLICY_MEMORY_BYTES: usize = 64 << 20;

fn default_memory_limit() -> usize {
    16 << 20
}
fn default_policy_timeout_ms() -> u64 {
    100
}
fn default_body_limit() -> usize {
    1 << 20
}
fn default_kv_budget() -> usize {
    16 << 20
}

impl PolicyConfig {
    /// The component file; [`crate::parse`] refuses a policy without one, so
    /// only a config from [`crate::parse_embedded`] gives an empty path here.
    pub fn component_path(&self) -> &std::path::Path {
        self.component
            .as_ref()
            .map_or(std::path::Path::new(""), |c| c.get_ref().as_path())
    }

    /// The effective `on_error`.
    pub fn on_error(&self) -> OnError {
        self.on_error.unwrap_or(self.kind.default_on_error())
    }
}

/// `[[routes]]`: which requests take which policies to which upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name, used in metrics and logs.
    pub name: String,
    /// Host to match (without port); `*.example.com` matches subdomains; absent = any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix to match, on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Methods to match; empty = any method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Upstream cluster name.
    pub upstream: Spanned<String>,
    /// Policy names, run in this order in the request phase and reverse in the response phase.
    #[serde(default)]
    pub policies: Vec<Spanned<String>>,
}

fn default_path_prefix() -> String {
    "/".into()
}

/// One endpoint of a cluster, read from `host:port` or `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddress {
    /// Reached over TLS (`https://`).
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl EndpointAddress {
    /// Parse an endpoint as the config writes it; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = match s.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "`{s}`: scheme `{scheme}` is not supported (use https:// or host:port)"
                ))
            }
            None => (false, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{s}` is not host:port or https://host[:port] (no path, query or user)"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // `[::1]` or `[::1]:443`
            _ if rest.starts_with('[') => match rest.split_once(']') {
                Some((h, "")) => (&h[1..], None),
                Some((h, p)) => (&h[1..], Some(p.strip_prefix(':').unwrap_or("x"))),
                None => return Err(format!("`{s}`: unclosed `[`")),
            },
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(format!("`{s}`: `{p}` is not a port (1-65535)")),
            },
            None if tls => 443,
            None => return Err(format!("`{s}` is not host:port (the port is required)")),
        };
        let name_ok = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        if !name_ok {
            return Err(format!("`{s}`: `{host}` is not a host name or IP address"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Whether `name` is a server name a certificate may be picked by: a DNS
/// name, or `*.` followed by one (a wildcard for exactly one label).
pub fn server_name_ok(name: &str) -> bool {
    let dns = name.strip_prefix("*.").unwrap_or(name);
    !dns.is_empty()
        && dns.len() <= 253
        && dns.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod endpoint_tests {
    use super::EndpointAddress;

    #[test]
    fn endpoints_parse_with_their_scheme_and_default_port() {
        let e = EndpointAddress::parse("https://api.openai.com").unwrap();
        assert!(e.tls);
        assert_eq!(e.authority(), "api.openai.com:443");
        let e = EndpointAddress::parse("127.0.0.1:8080").unwrap();
        assert!(!e.tls);
        assert_eq!(e.port, 8080);
        let e = EndpointAddress::parse("https://[::1]:9443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9443));
        assert_eq!(e.authority(), "[::1]:9443");
        for bad in [
            "localhost",
            "https://a/b",
            "ftp://a:1",
            "a:0",
            "https://user@a",
            "a b:1",
            "https://[::1",
        ] {
            assert!(EndpointAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
