//! Prometheus metrics: per route, per policy, per upstream. Handles are resolved
//! once when a route table is built, so the request path only touches atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyPhase {
    policy: String,
    digest: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyFailure {
    policy: String,
    digest: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyVersion {
    policy: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyEvent {
    policy: String,
    event: String,
    label: String,
}

/// Most distinct `edgegate_policy_events_total` series per policy; counts for
/// further series are dropped (and the drop is logged once).
const MAX_EVENT_SERIES_PER_POLICY: usize = 256;

/// Counters policies report through the `metrics` import, bounded in series.
pub struct PolicyEvents {
    family: Family<PolicyEvent, Counter>,
    /// Handles by policy: found with borrowed strings, so counting on a
    /// series that exists allocates nothing (this runs on every policy call).
    series: std::sync::RwLock<std::collections::HashMap<String, PolicySeries>>,
}

/// One policy's series: counters by event, then label.
#[derive(Default)]
struct PolicySeries {
    counters: std::collections::HashMap<String, std::collections::HashMap<String, Counter>>,
    len: usize,
    warned: bool,
}

impl edgegate_runtime::EventSink for PolicyEvents {
    fn count(&self, policy: &str, event: &str, label: &str, delta: u64) {
        let counted = {
            let series = self
                .series
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            series
                .get(policy)
                .and_then(|p| p.counters.get(event))
                .and_then(|labels| labels.get(label))
                .map(|counter| counter.inc_by(delta))
        };
        if counted.is_some() {
            return;
        }
        let mut series = self
            .series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = series.entry(policy.to_string()).or_default();
        if let Some(counter) = mine.counters.get(event).and_then(|l| l.get(label)) {
            counter.inc_by(delta); // created meanwhile by another worker
            return;
        }
        if mine.len >= MAX_EVENT_SERIES_PER_POLICY {
            if !mine.warned {
                tracing::warn!(policy, "policy reports more than {MAX_EVENT_SERIES_PER_POLICY} metric series; dropping new ones");
                mine.warned = true;
            }
            return;
        }
        let key = PolicyEvent {
            policy: policy.into(),
            event: event.into(),
            label: label.into(),
        };
        let counter = handle(&self.family, &key);
        counter.inc_by(delta);
        mine.counters
            .entry(event.to_string())
            .or_default()
            .insert(label.to_string(), counter);
        mine.len += 1;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOutcome {
    upstream: String,
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Upstream {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamEndpoint {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthCheckResult {
    upstream: String,
    endpoint: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwapStep {
    policy: String,
    step: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Look up (or create) one labelled metric and return a handle to it. Going through
/// a function drops the family's read guard before the next lookup, which may
/// need the write lock: two lookups in one expression would deadlock.
fn handle<L, M, C>(family: &Family<L, M, C>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family.get_or_create(labels).clone()
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~20 s
    Histogram::new(exponential_buckets(0.000_01, 2.5, 17))
}

/// The `outcome` labels of `edgegate_upstream_requests`, in `EndpointMetrics` order.
const OUTCOMES: [&str; 6] = [
    "ok",
    "connect_error",
    "tls_verify",
    "tls_handshake",
    "timeout",
    "error",
];

/// The `result` labels of `edgegate_upstream_health_checks`, in `CheckMetrics` order.
const CHECK_RESULTS: [&str; 2] = ["pass", "fail"];

/// The families labelled by upstream endpoint (handles share their series).
#[derive(Clone)]
pub(crate) struct UpstreamMetrics {
    requests: Family<UpstreamOutcome, Counter>,
    duration: HistogramFamily<Upstream>,
    ejections: Family<UpstreamEndpoint, Counter>,
    healthy: Family<UpstreamEndpoint, Gauge>,
    checks: Family<HealthCheckResult, Counter>,
}

impl UpstreamMetrics {
    pub(crate) fn endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        let outcome = |o: &str| {
            handle(
                &self.requests,
                &UpstreamOutcome {
                    upstream: upstream.into(),
                    endpoint: endpoint.into(),
                    outcome: o.into(),
                },
            )
            .clone()
        };
        EndpointMetrics {
            ok: outcome(OUTCOMES[0]),
            connect_error: outcome(OUTCOMES[1]),
            tls_verify: outcome(OUTCOMES[2]),
            tls_handshake: outcome(OUTCOMES[3]),
            timeout: outcome(OUTCOMES[4]),
            error: outcome(OUTCOMES[5]),
            duration: handle(
                &self.duration,
                &Upstream {
                    upstream: upstream.into(),
                },
            )
            .clone(),
            ejections: handle(
                &self.ejections,
                &UpstreamEndpoint {
                    upstream: upstream.into(),
                    endpoint: endpoint.into(),
                },
            ),
        }
    }

    /// Handles of one actively checked endpoint. A new `edgegate_upstream_healthy`
    /// series starts at 1 (endpoints start healthy); one that exists keeps the
    /// live generation's verdict until this generation's checker takes over.
    pub(crate) fn health_check(&self, upstream: &str, endpoint: &str) -> CheckMetrics {
        let labels = UpstreamEndpoint {
            upstream: upstream.into(),
            endpoint: endpoint.into(),
        };
        let is_new = self.healthy.get(&labels).is_none();
        let healthy = handle(&self.healthy, &labels);
        if is_new {
            healthy.set(1);
        }
        let result = |r: &str| {
            handle(
                &self.checks,
                &HealthCheckResult {
                    upstream: upstream.into(),
                    endpoint: endpoint.into(),
                    result: r.into(),
                },
            )
        };
        CheckMetrics {
            healthy,
            passed: result(CHECK_RESULTS[0]),
            failed: result(CHECK_RESULTS[1]),
        }
    }

    /// Drops the series of an endpoint a DNS refresh removed, so a name whose
    /// addresses rotate does not grow the scrape without bound.
    pub(crate) fn forget(&self, upstream: &str, endpoint: &str) {
        let pair = UpstreamEndpoint {
            upstream: upstream.into(),
            endpoint: endpoint.into(),
        };
        self.ejections.remove(&pair);
        self.healthy.remove(&pair);
        for outcome in OUTCOMES {
            self.requests.remove(&UpstreamOutcome {
                upstream: upstream.into(),
                endpoint: endpoint.into(),
                outcome: outcome.into(),
            });
        }
        for result in CHECK_RESULTS {
            self.checks.remove(&HealthCheckResult {
                upstream: upstream.into(),
                endpoint: endpoint.into(),
                result: result.into(),
            });
        }
    }
}

/// The process's metrics registry and families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteCode, Counter>,
    request_duration: HistogramFamily<Route>,
    policy_calls: Family<PolicyPhase, Counter>,
    policy_failures: Family<PolicyFailure, Counter>,
    policy_duration: HistogramFamily<PolicyPhase>,
    policy_quarantines: Family<PolicyVersion, Counter>,
    policy_quarantined: Family<PolicyVersion, Gauge>,
    policy_quarantine_skips: Family<PolicyVersion, Counter>,
    compiles: Family<Outcome, Counter>,
    /// The per-endpoint families; clusters keep a clone to label the
    /// endpoints that DNS refreshes add.
    pub(crate) upstreams: UpstreamMetrics,
    in_flight: Gauge,
    config_reloads: Counter,
    /// Access log lines dropped because the writer fell behind.
    pub(crate) access_log_dropped: Counter,
    swap_steps: Family<SwapStep, Counter>,
    events: std::sync::Arc<PolicyEvents>,
    /// The TLS listener's certificates (name, `notAfter` as Unix seconds):
    /// `edgegate_tls_cert_expiry_seconds` is computed from them at each scrape.
    tls_certs: std::sync::Mutex<Vec<(String, i64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every edgegate family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgegate");
        let requests = Family::<RouteCode, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        let request_duration: HistogramFamily<Route> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            request_duration.clone(),
        );
        let policy_calls = Family::<PolicyPhase, Counter>::default();
        registry.register(
            "policy_calls",
            "Policy calls, by policy version and phase",
            policy_calls.clone(),
        );
        let policy_failures = Family::<PolicyFailure, Counter>::default();
        registry.register(
            "policy_failures",
            "Policy calls that trapped, timed out, ran out of memory or returned an error",
            policy_failures.clone(),
        );
        let policy_duration: HistogramFamily<PolicyPhase> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "policy_duration_seconds",
            "Time of one policy call including instantiation",
            policy_duration.clone(),
        );
        let policy_quarantines = Family::<PolicyVersion, Counter>::default();
        registry.register(
            "policy_quarantines",
            "Times a policy version was quarantined after repeated sandbox failures",
            policy_quarantines.clone(),
        );
        let policy_quarantined = Family::<PolicyVersion, Gauge>::default();
        registry.register(
            "policy_quarantined",
            "1 while a policy version is quarantined (its on_error answers for it)",
            policy_quarantined.clone(),
        );
        let policy_quarantine_skips = Family::<PolicyVersion, Counter>::default();
        registry.register(
            "policy_quarantine_skips",
            "Calls of a quarantined policy version answered by its on_error without running it",
            policy_quarantine_skips.clone(),
        );
        let compiles = Family::<Outcome, Counter>::default();
        registry.register(
            "component_compiles",
            "Components made ready to run, by compile-cache outcome (hit: loaded, miss: compiled and kept, off: no cache)",
            compiles.clone(),
        );
        let upstream_requests = Family::<UpstreamOutcome, Counter>::default();
        registry.register(
            "upstream_requests",
            "Upstream attempts, by endpoint and outcome",
            upstream_requests.clone(),
        );
        let upstream_duration: HistogramFamily<Upstream> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time to upstream response headers",
            upstream_duration.clone(),
        );
        let upstream_ejections = Family::<UpstreamEndpoint, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Outlier ejections of an endpoint (error rate above outlier.max_error_rate)",
            upstream_ejections.clone(),
        );
        let upstream_healthy = Family::<UpstreamEndpoint, Gauge>::default();
        registry.register(
            "upstream_healthy",
            "1 while an endpoint passes its active health checks, 0 while it fails them (clusters with [health_check])",
            upstream_healthy.clone(),
        );
        let health_checks = Family::<HealthCheckResult, Counter>::default();
        registry.register(
            "upstream_health_checks",
            "Active health checks, by endpoint and result (pass, fail)",
            health_checks.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        let swap_steps = Family::<SwapStep, Counter>::default();
        registry.register(
            "policy_swap_steps",
            "Steps of pushed versions: admitted, refused, canary, promoted, rolled_back, auto_promoted, auto_rolled_back",
            swap_steps.clone(),
        );
        let config_reloads = Counter::default();
        registry.register(
            "config_loads",
            "Route tables built from config",
            config_reloads.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind (a full pipe or a slow disk)",
            access_log_dropped.clone(),
        );
        let events = std::sync::Arc::new(PolicyEvents {
            family: Family::default(),
            series: Default::default(),
        });
        registry.register(
            "policy_events",
            "Counters policies report (redactions per rule, cache hits, ...)",
            events.family.clone(),
        );
        Self {
            events,
            registry,
            requests,
            request_duration,
            policy_calls,
            policy_failures,
            policy_duration,
            policy_quarantines,
            policy_quarantined,
            policy_quarantine_skips,
            compiles,
            upstreams: UpstreamMetrics {
                requests: upstream_requests,
                duration: upstream_duration,
                ejections: upstream_ejections,
                healthy: upstream_healthy,
                checks: health_checks,
            },
            in_flight,
            config_reloads,
            access_log_dropped,
            swap_steps,
            tls_certs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // Log lines the runtime dropped for policies over their log limits,
        // counted process-wide by the runtime; written before the end marker.
        let dropped = edgegate_runtime::LogLimits::global().dropped_by_policy();
        if !dropped.is_empty() {
            let end = out.rfind("# EOF").unwrap_or(out.len());
            let mut text = String::from(
                "# HELP edgegate_policy_log_lines_dropped Log lines dropped over a policy's log limits.\n# TYPE edgegate_policy_log_lines_dropped counter\n",
            );
            for (policy, n) in dropped {
                let policy = policy.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&format!(
                    "edgegate_policy_log_lines_dropped_total{{policy=\"{policy}\"}} {n}\n"
                ));
            }
            out.insert_str(end, &text);
        }
        let certs = crate::lock(&self.tls_certs);
        if !certs.is_empty() {
            let end = out.rfind("# EOF").unwrap_or(out.len());
            let mut text = String::from(
                "# HELP edgegate_tls_cert_expiry_seconds Seconds until the TLS listener's certificate expires (negative: expired).\n# TYPE edgegate_tls_cert_expiry_seconds gauge\n",
            );
            let now = crate::tls::unix_now();
            for (name, not_after) in certs.iter() {
                let name = name.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&format!(
                    "edgegate_tls_cert_expiry_seconds{{name=\"{name}\"}} {}\n",
                    not_after - now
                ));
            }
            out.insert_str(end, &text);
        }
        out
    }

    /// Where policies' own counters go.
    pub(crate) fn events(&self) -> std::sync::Arc<PolicyEvents> {
        self.events.clone()
    }

    pub(crate) fn route(&self, route: &str) -> RouteMetrics {
        let code = |c: &str| {
            handle(
                &self.requests,
                &RouteCode {
                    route: route.into(),
                    code: c.into(),
                },
            )
            .clone()
        };
        RouteMetrics {
            by_class: [
                code("1xx"),
                code("2xx"),
                code("3xx"),
                code("4xx"),
                code("5xx"),
            ],
            duration: handle(
                &self.request_duration,
                &Route {
                    route: route.into(),
                },
            ),
            in_flight: self.in_flight.clone(),
        }
    }

    pub(crate) fn policy(&self, policy: &str, digest: &str) -> PolicyMetrics {
        let labels = |phase: &str| PolicyPhase {
            policy: policy.into(),
            digest: digest.into(),
            phase: phase.into(),
        };
        PolicyMetrics {
            calls: [
                handle(&self.policy_calls, &labels("request")),
                handle(&self.policy_calls, &labels("response")),
            ],
            duration: [
                handle(&self.policy_duration, &labels("request")),
                handle(&self.policy_duration, &labels("response")),
            ],
            failures: self.policy_failures.clone(),
            policy: policy.into(),
            digest: digest.into(),
        }
    }

    /// One component compiled or loaded (`edgegate_component_compiles_total`).
    pub(crate) fn count_compile(&self, outcome: edgegate_runtime::CacheOutcome) {
        handle(
            &self.compiles,
            &Outcome {
                outcome: outcome.as_str().into(),
            },
        )
        .inc();
    }

    /// The quarantine handles of one policy version.
    pub(crate) fn quarantine(
        &self,
        policy: &str,
        digest: &str,
    ) -> crate::control::quarantine::QuarantineMetrics {
        let labels = PolicyVersion {
            policy: policy.into(),
            digest: digest.into(),
        };
        crate::control::quarantine::QuarantineMetrics {
            entered: handle(&self.policy_quarantines, &labels),
            held: handle(&self.policy_quarantined, &labels),
            skipped: handle(&self.policy_quarantine_skips, &labels),
        }
    }

    /// The certificates the serving generation's TLS listener holds.
    pub(crate) fn set_tls_certs(&self, certs: &[crate::tls::CertInfo]) {
        *crate::lock(&self.tls_certs) = certs.iter().map(|c| (c.label(), c.not_after)).collect();
    }

    pub(crate) fn count_config_load(&self) {
        self.config_reloads.inc();
    }

    /// One step of a pushed version's life (`edgegate_policy_swap_steps_total`).
    pub(crate) fn count_swap_step(&self, policy: &str, step: &str) {
        handle(
            &self.swap_steps,
            &SwapStep {
                policy: policy.into(),
                step: step.into(),
            },
        )
        .inc();
    }
}

/// Pre-resolved handles of one route.
#[derive(Clone)]
pub(crate) struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    pub(crate) in_flight: Gauge,
}

impl RouteMetrics {
    /// Requests answered and how many of them with 5xx, since start.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let all = self.by_class.iter().map(Counter::get).sum();
        (all, self.by_class[4].get())
    }

    pub(crate) fn record(&self, status: u16, seconds: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.duration.observe(seconds);
    }
}

/// Which hook of a policy ran.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    Request = 0,
    Response = 1,
}

impl Phase {
    /// Its name in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// Pre-resolved handles of one policy version.
#[derive(Clone)]
pub(crate) struct PolicyMetrics {
    calls: [Counter; 2],
    duration: [Histogram; 2],
    failures: Family<PolicyFailure, Counter>,
    policy: String,
    digest: String,
}

impl PolicyMetrics {
    pub(crate) fn record_call(&self, phase: Phase, seconds: f64) {
        self.calls[phase as usize].inc();
        self.duration[phase as usize].observe(seconds);
    }

    pub(crate) fn record_failure(&self, kind: &str) {
        handle(
            &self.failures,
            &PolicyFailure {
                policy: self.policy.clone(),
                digest: self.digest.clone(),
                kind: kind.into(),
            },
        )
        .inc();
    }
}

/// Pre-resolved handles of one upstream endpoint.
#[derive(Clone)]
pub(crate) struct EndpointMetrics {
    pub(crate) ok: Counter,
    pub(crate) connect_error: Counter,
    /// The upstream's certificate failed verification.
    pub(crate) tls_verify: Counter,
    /// The TLS handshake with the upstream failed otherwise.
    pub(crate) tls_handshake: Counter,
    pub(crate) timeout: Counter,
    pub(crate) error: Counter,
    pub(crate) duration: Histogram,
    /// Outlier ejections.
    pub(crate) ejections: Counter,
}

/// Pre-resolved handles of one actively checked endpoint.
#[derive(Clone)]
pub(crate) struct CheckMetrics {
    /// 1 healthy, 0 failing its checks.
    pub(crate) healthy: Gauge,
    pub(crate) passed: Counter,
    pub(crate) failed: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_runtime::EventSink;

    #[test]
    fn policy_events_add_up_and_stop_at_the_series_bound() {
        let m = Metrics::new();
        let events = m.events();
        events.count("p", "cache", "hit", 2);
        events.count("p", "cache", "hit", 3);
        for i in 0..MAX_EVENT_SERIES_PER_POLICY + 10 {
            events.count("p", &format!("e{i}"), "", 1);
        }
        events.count("q", "cache", "hit", 1);
        let text = m.encode();
        let series = |policy: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "edgegate_policy_events_total{{policy=\"{policy}\""
                    ))
                })
                .count()
        };
        assert!(text.contains(
            "edgegate_policy_events_total{policy=\"p\",event=\"cache\",label=\"hit\"} 5"
        ));
        assert_eq!(series("p"), MAX_EVENT_SERIES_PER_POLICY);
        assert_eq!(series("q"), 1, "the bound is per policy");
        // "cache" and 255 of the "e{i}" events: the dropped ones left no entry.
        let kept = events.series.read().unwrap()["p"].counters.len();
        assert_eq!(kept, MAX_EVENT_SERIES_PER_POLICY);
    }
}
