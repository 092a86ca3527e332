//! Building a route table from a config: read, compile and admit every policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use edgegate_config::{BodyMode, CapabilityName, GatewayConfig, PolicyConfig, SelfTest};
use edgegate_runtime::bindings::types;
use edgegate_runtime::{
    Capabilities, Capability, ContextBag, HostServices, KvStore, PolicyFailure, PolicyInstance,
    PolicySettings, Runtime, RuntimeError,
};
use edgegate_trust::{
    content_digest_or_file_sha256, verify_component, verify_unsigned, Refusal, RevocationList,
    TrustStore, Verified, VerifyOptions,
};
use http::header::HeaderValue;
use http::Method;

use crate::control::versions::{PolicySet, Source, Version, VersionStats};
use crate::observability::metrics::Metrics;
use crate::observability::models::ModelStats;
use crate::request_path::routes::{ChainEntry, HostMatch, Route, RouteTable};
use crate::tls::ListenerTls;
use crate::upstreams::cluster::{Cluster, Upstreams};

/// Largest component file read.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Why a config could not become a route table.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The component file could not be read.
    #[error("policy `{policy}`: cannot read component {}: {reason}", path.display())]
    ReadComponent {
        /// Policy name.
        policy: String,
        /// Resolved path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The component failed signature verification.
    #[error("policy `{policy}`: component {} refused: {refusal}", path.display())]
    Refused {
        /// Policy name.
        policy: String,
        /// Resolved path.
        path: PathBuf,
        /// The exact reason.
        refusal: edgegate_trust::Refusal,
    },
    /// The trust store could not be loaded.
    #[error("{0}")]
    Trust(#[from] edgegate_trust::TrustError),
    /// The component did not compile or link.
    #[error("policy `{policy}`: {source}")]
    Compile {
        /// Policy name.
        policy: String,
        /// What the runtime said.
        source: RuntimeError,
    },
    /// Instantiation or `init` failed at admission.
    #[error("policy `{policy}` refused at admission: {failure}")]
    Admission {
        /// Policy name.
        policy: String,
        /// Why.
        failure: PolicyFailure,
    },
    /// A config value the gateway cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// The trust store and revocation list of one config generation.
pub(crate) struct Trust {
    store: Option<TrustStore>,
    revocations: Option<RevocationList>,
}

impl Trust {
    fn load(config: &GatewayConfig) -> Result<Self, BuildError> {
        let store = match &config.trust.store {
            Some(path) => Some(TrustStore::load(path.get_ref())?),
            None => {
                if !config.policies.is_empty() {
                    tracing::warn!("trust.allow_unsigned = true: running components without verifying signatures");
                }
                None
            }
        };
        let revocations = match (&store, &config.trust.revocations) {
            (Some(store), Some(path)) => {
                let path = path.get_ref();
                Some(RevocationList::load(
                    path,
                    store,
                    &RevocationList::held_file(path),
                )?)
            }
            _ => None,
        };
        Ok(Self { store, revocations })
    }

    /// Version of the revocation list in force (none without one).
    pub(crate) fn revocation_version(&self) -> Option<u64> {
        self.revocations.as_ref().map(|r| r.version)
    }

    /// Checks `bytes` as policy `p`'s component; the verified signers' key ids
    /// and its content digest.
    fn verify(
        &self,
        config: &GatewayConfig,
        p: &PolicyConfig,
        bytes: &[u8],
    ) -> Result<Verified, Refusal> {
        match &self.store {
            Some(store) => {
                let opts = VerifyOptions {
                    kind: p.kind.as_str(),
                    required_signers: config
                        .trust
                        .required_signers
                        .get(&p.kind)
                        .copied()
                        .unwrap_or(1),
                    sha256_pin: p.sha256.as_deref(),
                    now: SystemTime::now(),
                    revocations: self.revocations.as_ref(),
                };
                verify_component(bytes, store, &opts)
            }
            None => verify_unsigned(bytes, p.sha256.as_deref()),
        }
    }
}

/// How long each step of admitting a version took.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitTimes {
    /// Signature verification.
    pub verify: Duration,
    /// Compiling to machine code (or loading it from the compile cache).
    pub compile: Duration,
    /// Whether the compile cache had it.
    pub compile_cache: edgegate_runtime::CacheOutcome,
    /// Instantiation, `init` and the self-tests.
    pub admission: Duration,
}

/// What a new version needs besides its bytes.
pub(crate) struct AdmitContext<'a> {
    pub(crate) config: &'a GatewayConfig,
    pub(crate) runtime: &'a Arc<Runtime>,
    pub(crate) kv: &'a KvStore,
    pub(crate) services: &'a HostServices,
    pub(crate) trust: &'a Trust,
    pub(crate) metrics: &'a Metrics,
}

/// Verifies, compiles (off the calling thread) and admits `bytes` as a version
/// of policy `name`: instantiate, `init` with the policy's config, then the
/// policy's self-tests.
pub(crate) async fn admit(
    cx: &AdmitContext<'_>,
    name: &str,
    bytes: Arc<Vec<u8>>,
    source: Source,
) -> Result<(Arc<Version>, AdmitTimes), BuildError> {
    let p = cx
        .config
        .policies
        .get(name)
        .ok_or_else(|| BuildError::Invalid(format!("no policy `{name}` in the config")))?;
    let mut times = AdmitTimes::default();
    let started = Instant::now();
    let Verified {
        key_ids: signers,
        digest,
    } = cx
        .trust
        .verify(cx.config, p, &bytes)
        .map_err(|refusal| BuildError::Refused {
            policy: name.to_string(),
            path: match source {
                Source::Config => p.component_path().to_path_buf(),
                Source::Push => PathBuf::from("(pushed)"),
            },
            refusal,
        })?;
    times.verify = started.elapsed();
    tracing::info!(policy = %name, signers = %signers.join(","), source = source.as_str(), "component verified");

    let started = Instant::now();
    let compiled = {
        let runtime = Arc::clone(cx.runtime);
        let bytes = Arc::clone(&bytes);
        let policy = name.to_string();
        let digest = digest.clone();
        // Compiling takes milliseconds to seconds: on a thread of its own, at
        // a lower priority than the request workers (a push under live traffic
        // takes idle CPU first).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("edgegate-compile-{policy}"))
            .spawn(move || {
                edgegate_runtime::lower_this_threads_priority(10);
                let _ = tx.send(runtime.compile(&policy, digest, &bytes));
            });
        if let Err(e) = spawned {
            return Err(BuildError::Invalid(format!(
                "policy `{name}`: cannot start a compile thread: {e}"
            )));
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => {
                return Err(BuildError::Invalid(format!(
                    "policy `{name}`: the compile thread ended without a result"
                )))
            }
        }
    }
    .map_err(|source| BuildError::Compile {
        policy: name.to_string(),
        source,
    })?;
    times.compile = started.elapsed();
    times.compile_cache = compiled.cache_outcome();
    cx.metrics.count_compile(times.compile_cache);
    tracing::info!(policy = %name, ms = times.compile.as_millis() as u64, cache = times.compile_cache.as_str(), "component compiled");

    let started = Instant::now();
    let caps: Capabilities = p
        .capabilities
        .iter()
        .map(|c| match c {
            CapabilityName::Clock => Capability::Clock,
            CapabilityName::Kv => Capability::Kv,
            CapabilityName::Health => Capability::Health,
            CapabilityName::Crypto => Capability::Crypto,
        })
        .collect();
    let kv_ns = caps.has(Capability::Kv).then(|| {
        cx.kv
            .namespace(p.kv_namespace.as_deref().unwrap_or(name), p.kv_budget_bytes)
    });
    let config_json = serde_json::to_string(&p.config)
        .map_err(|e| BuildError::Invalid(format!("policies.{name}.config: {e}")))?;
    let instance = PolicyInstance::new(
        compiled,
        PolicySettings {
            name: name.to_string(),
            config_json,
            capabilities: caps,
            memory_limit_bytes: p.memory_limit_bytes,
            timeout: Duration::from_millis(p.timeout_ms),
            reuse_instances: p.reuse_instances,
        },
        kv_ns,
        cx.services.clone(),
    );
    let admission = |failure| BuildError::Admission {
        policy: name.to_string(),
        failure,
    };
    instance.check_init().await.map_err(admission)?;
    check_body_modes(&instance, p).map_err(|why| admission(PolicyFailure::Guest(why)))?;
    for (i, test) in p.self_tests.iter().enumerate() {
        self_test(&instance, test).await.map_err(|reason| {
            admission(PolicyFailure::Guest(format!(
                "self_tests[{i}] ({} {}): {reason}",
                test.method, test.path
            )))
        })?;
    }
    times.admission = started.elapsed();
    let version = Version {
        metrics: cx.metrics.policy(name, &digest),
        instance: Arc::new(instance),
        stats: VersionStats::default(),
        quarantine: crate::control::quarantine::Quarantine::new(
            cx.config.quarantine.clone(),
            cx.metrics.quarantine(name, &digest),
        ),
        digest,
        signers,
        size: bytes.len(),
        source,
        admitted_at: SystemTime::now(),
        bytes,
    };
    Ok((Arc::new(version), times))
}

/// A config that hands a policy a body in a mode the policy did not declare
/// in `init` is refused: the body would pass a policy meant to see it unseen.
fn check_body_modes(instance: &PolicyInstance, p: &PolicyConfig) -> Result<(), String> {
    use edgegate_runtime::bindings::types::BodyModes as M;
    let (request, response) = instance.body_modes();
    let needs = |mode: BodyMode| match mode {
        BodyMode::None => None,
        BodyMode::Buffer => Some(M::BUFFER),
        BodyMode::Stream => Some(M::CHUNKS),
        // A non-event-stream response is buffered for an `sse` policy.
        BodyMode::Sse => Some(M::SSE | M::BUFFER),
    };
    let names = |modes: M| {
        let names: Vec<&str> = [
            (M::BUFFER, "buffer"),
            (M::CHUNKS, "stream"),
            (M::SSE, "sse"),
        ]
        .iter()
        .filter(|(m, _)| modes.contains(*m))
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    for (key, mode, declared) in [
        ("request_body", p.request_body, request),
        ("response_body", p.response_body, response),
    ] {
        if let Some(needed) = needs(mode) {
            if !declared.contains(needed) {
                return Err(format!(
                    "its config says {key} = \"{}\", and the policy handles {key} modes: {} (as its init declared)",
                    mode.name(),
                    names(declared)
                ));
            }
        }
    }
    Ok(())
}

/// Runs one self-test request through the request phase of `instance`.
async fn self_test(instance: &PolicyInstance, test: &SelfTest) -> Result<(), String> {
    let req = types::Request {
        method: test.method.to_ascii_uppercase(),
        path: test.path.clone(),
        authority: "self-test.edgegate".into(),
        body: test.body.as_ref().map(|b| b.as_bytes().to_vec()),
        client_ip: "127.0.0.1".into(),
        route: "self-test".into(),
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &test.headers {
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) else {
            return Err(format!("header `{name}` is not a valid header field"));
        };
        headers.append(n, v);
    }
    let mut ctx = ContextBag::default();
    let verdict = instance
        .on_request(&req, &mut headers, &mut ctx)
        .await
        .map_err(|f| format!("failed: {f}"))?;
    let answered = match verdict {
        types::RequestVerdict::Respond(r) => Some(r.status),
        types::RequestVerdict::Continue(_) | types::RequestVerdict::Route(_) => None,
    };
    if answered == test.expect_status {
        return Ok(());
    }
    let expected = test.expect_status.map_or_else(
        || "let the request continue".to_string(),
        |s| format!("answer {s}"),
    );
    let got = answered.map_or_else(
        || "let it continue".to_string(),
        |s| format!("answered {s}"),
    );
    Err(format!("expected it to {expected}; it {got}"))
}

/// Everything one config generation serves with: the route table, its clusters
/// and the policy versions; replaced whole (arc-swap) by a swap or a reload.
pub struct GatewayState {
    pub(crate) routes: RouteTable,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) via: HeaderValue,
    /// What clients may send, and the canonical form of their requests.
    pub(crate) limits: crate::request_path::phases::ClientLimits,
    /// Serving version (and canary) of every policy.
    pub(crate) policies: BTreeMap<String, PolicySet>,
    pub(crate) services: HostServices,
    pub(crate) trust: Arc<Trust>,
    /// The TLS listener's certificates and client-certificate check.
    pub(crate) tls: Option<Arc<ListenerTls>>,
    /// `server.redirect_to_https`: cleartext requests get a 308 to the TLS listener.
    pub(crate) redirect_to_https: bool,
    /// `server.request_id`: whose `x-request-id` a request carries.
    pub(crate) request_id: edgegate_config::RequestIdMode,
    /// `[access_log]`, when it is on.
    pub(crate) access_log: Option<Arc<crate::observability::access_log::AccessLog>>,
}

impl GatewayState {
    /// Verify, compile and admit every policy of `config` and build its
    /// route table, with pushed versions (from the state folder) in place of
    /// the config's component files. A pushed version the
    /// config no longer admits is skipped for the config's file; the returned
    /// list says which and why.
    pub(crate) async fn build(
        config: &GatewayConfig,
        runtime: &Arc<Runtime>,
        kv: &KvStore,
        metrics: &Metrics,
        logs: &crate::observability::access_log::Sinks,
        workers: usize,
        pushed: &BTreeMap<String, Arc<Vec<u8>>>,
    ) -> Result<(Self, Vec<String>), BuildError> {
        let mut clusters = BTreeMap::new();
        for (name, u) in &config.upstreams {
            let c = Cluster::new(name, u, workers, metrics)
                .map_err(|e| BuildError::Invalid(format!("upstreams.{name}: {e}")))?;
            clusters.insert(name.clone(), Arc::new(c));
        }
        let upstreams = Arc::new(Upstreams { clusters });
        upstreams.resolve().await;
        let services = HostServices {
            health: upstreams.clone(),
            events: metrics.events(),
        };
        let trust = Arc::new(Trust::load(config)?);
        let cx = AdmitContext {
            config,
            runtime,
            kv,
            services: &services,
            trust: &trust,
            metrics,
        };
        let mut policies = BTreeMap::new();
        let mut skipped = Vec::new();
        for (name, p) in &config.policies {
            if let Some(bytes) = pushed.get(name) {
                match admit(&cx, name, Arc::clone(bytes), Source::Push).await {
                    Ok((version, _)) => {
                        policies.insert(
                            name.clone(),
                            PolicySet {
                                serving: version,
                                canary: None,
                            },
                        );
                        continue;
                    }
                    Err(e) => skipped.push(format!("policy `{name}`: the pushed version ({}) is not admitted any more, serving the config's component: {e}", content_digest_or_file_sha256(bytes))),
                }
            }
            let bytes = Arc::new(read_component(name, p.component_path())?);
            let (version, _) = admit(&cx, name, bytes, Source::Config).await?;
            policies.insert(
                name.clone(),
                PolicySet {
                    serving: version,
                    canary: None,
                },
            );
        }
        let via = HeaderValue::from_str(&format!("1.1 {}", config.server.via))
            .map_err(|_| BuildError::Invalid("server.via: not a valid header value".into()))?;
        let tls = match &config.server.tls {
            Some(t) => {
                Some(Arc::new(ListenerTls::load(t).map_err(|e| {
                    BuildError::Invalid(format!("server.tls: {e}"))
                })?))
            }
            None => None,
        };
        let access_log = logs
            .settings(&config.access_log)
            .map_err(BuildError::Invalid)?
            .map(Arc::new);
        let state = Self {
            tls,
            redirect_to_https: config.server.redirect_to_https && config.server.tls.is_some(),
            request_id: config.server.request_id,
            access_log,
            routes: RouteTable { routes: Vec::new() },
            upstreams,
            via,
            limits: crate::request_path::phases::ClientLimits::of(&config.server),
            policies: BTreeMap::new(),
            services,
            trust,
        };
        let state = state.with_policies(config, policies, metrics)?;
        metrics.set_tls_certs(state.tls.as_ref().map_or(&[][..], |t| &t.certs));
        metrics.count_config_load();
        Ok((state, skipped))
    }

    /// The same generation (clusters, trust, limits) serving `policies`: what a
    /// swap stores.
    pub(crate) fn with_policies(
        &self,
        config: &GatewayConfig,
        policies: BTreeMap<String, PolicySet>,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let cluster = self
                .upstreams
                .clusters
                .get(r.upstream.get_ref())
                .cloned()
                .ok_or_else(|| {
                    BuildError::Invalid(format!("route `{}`: unknown upstream", r.name))
                })?;
            let mut chain = Vec::with_capacity(r.policies.len());
            for p in &r.policies {
                let name = p.get_ref();
                let (Some(cfg), Some(set)) = (config.policies.get(name), policies.get(name)) else {
                    return Err(BuildError::Invalid(format!(
                        "route `{}`: unknown policy `{name}`",
                        r.name
                    )));
                };
                chain.push(ChainEntry {
                    name: name.clone(),
                    versions: set.clone(),
                    on_error: cfg.on_error(),
                    request_body: cfg.request_body,
                    response_body: cfg.response_body,
                    body_limit: cfg.body_limit_bytes,
                });
            }
            let limit_of = |pick: fn(&ChainEntry) -> BodyMode| {
                chain
                    .iter()
                    .filter(|c| pick(c) == BodyMode::Buffer)
                    .map(|c| c.body_limit)
                    .min()
            };
            let buffer_request = limit_of(|c| c.request_body);
            let mut methods = Vec::with_capacity(r.methods.len());
            for m in &r.methods {
                methods.push(Method::from_bytes(m.get_ref().as_bytes()).map_err(|e| {
                    BuildError::Invalid(format!(
                        "route `{}`: method `{}`: {e}",
                        r.name,
                        m.get_ref()
                    ))
                })?);
            }
            routes.push(Route {
                metrics: metrics.route(&r.name),
                models: ModelStats::default(),
                name: r.name.clone(),
                host: r.host.as_deref().map(HostMatch::parse),
                path_prefix: r.path_prefix.clone(),
                methods,
                cluster,
                has_canary: chain.iter().any(|c| c.versions.canary.is_some()),
                chain,
                buffer_request,
            });
        }
        Ok(Self {
            routes: RouteTable { routes },
            upstreams: Arc::clone(&self.upstreams),
            via: self.via.clone(),
            limits: self.limits,
            policies,
            services: self.services.clone(),
            trust: Arc::clone(&self.trust),
            tls: self.tls.clone(),
            redirect_to_https: self.redirect_to_https,
            request_id: self.request_id,
            access_log: self.access_log.clone(),
        })
    }
}

fn read_component(policy: &str, path: &std::path::Path) -> Result<Vec<u8>, BuildError> {
    let err = |reason: String| BuildError::ReadComponent {
        policy: policy.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(err(format!(
            "{} bytes is over the {MAX_COMPONENT_BYTES}-byte limit",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}
