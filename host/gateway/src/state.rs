//! Building a route table from a config: read, compile and admit every policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgegate_config::{BodyMode, CapabilityName, GatewayConfig};
use edgegate_runtime::{
    Capabilities, Capability, HostServices, KvStore, PolicyFailure, PolicyInstance, PolicySettings,
    Runtime, RuntimeError,
};
use edgegate_trust::{
    sha256_hex, verify_component, Refusal, RevocationList, TrustStore, VerifyOptions,
};
use http::header::HeaderValue;
use http::Method;

use crate::metrics::Metrics;
use crate::routes::{ChainEntry, HostMatch, Route, RouteTable};
use crate::upstream::{Cluster, Upstreams};

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

/// Everything one config generation serves with: the route table and its clusters.
pub struct GatewayState {
    pub(crate) routes: RouteTable,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) via: HeaderValue,
    pub(crate) max_header_bytes: usize,
}

impl GatewayState {
    /// Compile and admit every policy of `config` and build its route table.
    pub async fn build(
        config: &GatewayConfig,
        runtime: &Runtime,
        kv: &KvStore,
        metrics: &Metrics,
        workers: usize,
    ) -> Result<Self, BuildError> {
        let mut clusters = BTreeMap::new();
        for (name, u) in &config.upstreams {
            let c = Cluster::new(name, u, workers, metrics)
                .map_err(|e| BuildError::Invalid(format!("upstreams.{name}: {e}")))?;
            clusters.insert(name.clone(), Arc::new(c));
        }
        let upstreams = Arc::new(Upstreams { clusters });
        let services = HostServices {
            health: upstreams.clone(),
            events: metrics.events(),
        };

        let trust = match &config.trust.store {
            Some(path) => Some(TrustStore::load(path.get_ref())?),
            None => {
                if !config.policies.is_empty() {
                    tracing::warn!("trust.allow_unsigned = true: running components without verifying signatures");
                }
                None
            }
        };
        let revocations = match (&trust, &config.trust.revocations) {
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
        let now = SystemTime::now();
        let mut policies = BTreeMap::new();
        for (name, p) in &config.policies {
            let path = p.component.get_ref();
            let bytes = read_component(name, path)?;
            let refused = |refusal| BuildError::Refused {
                policy: name.clone(),
                path: path.clone(),
                refusal,
            };
            match &trust {
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
                        now,
                        revocations: revocations.as_ref(),
                    };
                    let verified = verify_component(&bytes, store, &opts).map_err(refused)?;
                    tracing::info!(policy = %name, signers = %verified.key_ids.join(","), "component verified");
                }
                None => {
                    if let Some(pin) = &p.sha256 {
                        let actual = sha256_hex(&bytes);
                        if !pin.eq_ignore_ascii_case(&actual) {
                            return Err(refused(Refusal::DigestMismatch {
                                expected: pin.to_ascii_lowercase(),
                                actual,
                            }));
                        }
                    }
                }
            }
            let compiled = runtime
                .compile(name, &bytes)
                .map_err(|source| BuildError::Compile {
                    policy: name.clone(),
                    source,
                })?;
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
                kv.namespace(p.kv_namespace.as_deref().unwrap_or(name), p.kv_budget_bytes)
            });
            let config_json = serde_json::to_string(&p.config)
                .map_err(|e| BuildError::Invalid(format!("policies.{name}.config: {e}")))?;
            let instance = PolicyInstance::new(
                compiled,
                PolicySettings {
                    name: name.clone(),
                    config_json,
                    capabilities: caps,
                    memory_limit_bytes: p.memory_limit_bytes,
                    timeout: Duration::from_millis(p.timeout_ms),
                    reuse_instances: p.reuse_instances,
                },
                kv_ns,
                services.clone(),
            );
            instance
                .check_init()
                .await
                .map_err(|failure| BuildError::Admission {
                    policy: name.clone(),
                    failure,
                })?;
            policies.insert(name.clone(), Arc::new(instance));
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let cluster = upstreams
                .clusters
                .get(r.upstream.get_ref())
                .cloned()
                .ok_or_else(|| {
                    BuildError::Invalid(format!("route `{}`: unknown upstream", r.name))
                })?;
            let mut chain = Vec::with_capacity(r.policies.len());
            for p in &r.policies {
                let name = p.get_ref();
                let (Some(cfg), Some(instance)) = (config.policies.get(name), policies.get(name))
                else {
                    return Err(BuildError::Invalid(format!(
                        "route `{}`: unknown policy `{name}`",
                        r.name
                    )));
                };
                chain.push(ChainEntry {
                    metrics: metrics.policy(name, instance.component().digest()),
                    policy: instance.clone(),
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
            let buffer_response = limit_of(|c| c.response_body);
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
                name: r.name.clone(),
                host: r.host.as_deref().map(HostMatch::parse),
                path_prefix: r.path_prefix.clone(),
                methods,
                cluster,
                chain,
                buffer_request,
                buffer_response,
            });
        }
        let via = HeaderValue::from_str(&format!("1.1 {}", config.server.via))
            .map_err(|_| BuildError::Invalid("server.via: not a valid header value".into()))?;
        metrics.count_config_load();
        Ok(Self {
            routes: RouteTable { routes },
            upstreams,
            via,
            max_header_bytes: config.server.max_header_bytes,
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
