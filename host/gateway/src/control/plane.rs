//! The control plane behind the admin API: pushed versions, canaries,
//! promotion, rollback, config reload and the state folder
//! (docs/operations.md).
//!
//! One change at a time (a mutex). Each change builds a new [`GatewayState`]
//! from the current one and stores it (arc-swap): a request in flight finishes
//! on the versions it started with, and an old version is dropped when the
//! last request holding it ends. A change that fails stores nothing, so the
//! versions serving keep serving.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use edgegate_config::GatewayConfig;
use edgegate_runtime::{KvStore, Runtime};

use crate::control::answers::{
    ms, unix, PolicyStatus, Promoted, Pushed, RefusedView, Reloaded, RolledBack, Status,
    VersionState, VersionView,
};
use crate::control::state::{admit, AdmitContext, BuildError, GatewayState};
use crate::control::versions::{Canary, PolicySet, Source, StatsSnapshot, Version};
use crate::observability::metrics::Metrics;

/// Largest component accepted by a push.
pub(crate) const MAX_PUSH_BYTES: usize = 64 << 20;
/// Refusals remembered per policy.
const REFUSALS_KEPT: usize = 8;
/// Calls each side needs before p99s are compared: below ~100 samples a p99
/// is the slowest call, and one cold start would roll a canary back.
const P99_MIN_CALLS: u64 = 100;

/// Why a control-plane request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such policy (404).
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The version or config was refused; nothing changed (422).
    #[error("{0}")]
    Refused(String),
    /// Bad request parameters (400).
    #[error("{0}")]
    BadRequest(String),
}

/// How a pushed version starts.
#[derive(Debug, Clone, Copy)]
pub struct PushMode {
    /// Percent of requests for a canary; `None` serves it at once.
    pub canary_percent: Option<u32>,
    /// Canary by client IP rather than per request.
    pub sticky: bool,
}

/// What happened to one policy besides its live versions.
#[derive(Default)]
struct Record {
    previous: Option<Arc<Version>>,
    canary_started: Option<Instant>,
    /// The serving version's counters when the canary started; the canary is
    /// compared with what the serving version did since.
    serving_base: StatsSnapshot,
    refused: VecDeque<Refusal>,
}

struct Refusal {
    digest: String,
    reason: String,
    at: SystemTime,
}

struct Inner {
    config: GatewayConfig,
    records: BTreeMap<String, Record>,
}

/// The control plane of one gateway.
pub struct Control {
    inner: tokio::sync::Mutex<Inner>,
    state: Arc<ArcSwap<GatewayState>>,
    runtime: Arc<Runtime>,
    kv: Arc<KvStore>,
    metrics: Arc<Metrics>,
    logs: Arc<crate::observability::access_log::Sinks>,
    workers: usize,
}

impl Control {
    pub(crate) fn new(
        config: GatewayConfig,
        state: Arc<ArcSwap<GatewayState>>,
        runtime: Arc<Runtime>,
        kv: Arc<KvStore>,
        metrics: Arc<Metrics>,
        logs: Arc<crate::observability::access_log::Sinks>,
        workers: usize,
    ) -> Self {
        Self {
            inner: tokio::sync::Mutex::new(Inner {
                config,
                records: BTreeMap::new(),
            }),
            state,
            runtime,
            kv,
            metrics,
            logs,
            workers,
        }
    }

    /// SIGUSR1: the access log files are opened again (after a rotation).
    pub fn reopen_logs(&self) {
        self.logs.reopen();
    }

    /// The admin token, if configured.
    pub(crate) async fn token(&self) -> Option<String> {
        self.inner.lock().await.config.admin.token.clone()
    }

    /// Verifies, compiles and admits `bytes` as a new version of `policy`, then
    /// serves it (or starts it as a canary).
    pub async fn push(
        &self,
        policy: &str,
        bytes: Vec<u8>,
        mode: PushMode,
    ) -> Result<Pushed, ControlError> {
        if let Some(p) = mode.canary_percent {
            if !(1..=99).contains(&p) {
                return Err(ControlError::BadRequest(format!(
                    "canary must be a percent from 1 to 99, not {p}"
                )));
            }
        }
        let mut inner = self.inner.lock().await;
        if !inner.config.policies.contains_key(policy) {
            return Err(ControlError::NotFound(format!(
                "no policy `{policy}` in the config"
            )));
        }
        let digest = edgegate_trust::content_digest_or_file_sha256(&bytes);
        let state = self.state.load_full();
        let cx = AdmitContext {
            config: &inner.config,
            runtime: &self.runtime,
            kv: &self.kv,
            services: &state.services,
            trust: &state.trust,
            metrics: &self.metrics,
        };
        let admitted = admit(&cx, policy, Arc::new(bytes), Source::Push).await;
        let (version, times) = match admitted {
            Ok(v) => v,
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(policy, %digest, %reason, "pushed version refused; serving version unchanged");
                self.metrics.count_swap_step(policy, "refused");
                let record = inner.records.entry(policy.to_string()).or_default();
                remember(record, &digest, &reason);
                return Err(ControlError::Refused(reason));
            }
        };
        self.metrics.count_swap_step(policy, "admitted");
        let admitted = Arc::clone(&version);
        let state = self.change(&mut inner, policy, move |set, record| {
            Ok(match mode.canary_percent {
                Some(percent) => {
                    if let Some(old) = set.canary.take() {
                        remember(
                            record,
                            &old.version.digest,
                            "canary replaced by a newer push",
                        );
                    }
                    set.canary = Some(Canary {
                        version: admitted,
                        percent,
                        sticky: mode.sticky,
                    });
                    record.canary_started = Some(Instant::now());
                    record.serving_base = set.serving.stats.snapshot();
                    Changed {
                        answer: VersionState::Canary,
                        step: "canary",
                        serving: None,
                    }
                }
                None => {
                    if let Some(old) = set.canary.take() {
                        remember(record, &old.version.digest, "canary ended by a direct push");
                    }
                    record.previous =
                        Some(std::mem::replace(&mut set.serving, Arc::clone(&admitted)));
                    record.canary_started = None;
                    Changed {
                        answer: VersionState::Serving,
                        step: "promoted",
                        serving: Some(admitted),
                    }
                }
            })
        })?;
        tracing::info!(
            policy,
            digest = %version.digest,
            state = ?state,
            verify_ms = ms(times.verify),
            compile_ms = ms(times.compile),
            admission_ms = ms(times.admission),
            "pushed version admitted"
        );
        Ok(Pushed {
            policy: policy.to_string(),
            digest: version.digest.clone(),
            signers: version.signers.clone(),
            state,
            canary_percent: mode.canary_percent,
            timings_ms: times.into(),
        })
    }

    /// One change to a policy's versions, as every change goes: the policy
    /// set is cloned, `edit` changes `policy`'s versions and record, and the
    /// result is stored as the state new requests run on. Then the version
    /// the change made serving (if any) is kept in the state folder, and the
    /// step is counted. An error from `edit`, or a state that cannot be
    /// built, stores nothing.
    fn change<T>(
        &self,
        inner: &mut Inner,
        policy: &str,
        edit: impl FnOnce(&mut PolicySet, &mut Record) -> Result<Changed<T>, ControlError>,
    ) -> Result<T, ControlError> {
        let state = self.state.load_full();
        let mut policies = state.policies.clone();
        let set = policies
            .get_mut(policy)
            .ok_or_else(|| ControlError::NotFound(format!("no policy `{policy}` on any route")))?;
        let record = inner.records.entry(policy.to_string()).or_default();
        let Changed {
            answer,
            step,
            serving,
        } = edit(set, record)?;
        let next = state
            .with_policies(&inner.config, policies, &self.metrics)
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        self.state.store(Arc::new(next));
        if let Some(serving) = serving {
            persist(&inner.config, policy, &serving);
        }
        self.metrics.count_swap_step(policy, step);
        Ok(answer)
    }

    /// Serves the canary of `policy` to everyone.
    pub async fn promote(&self, policy: &str) -> Result<Promoted, ControlError> {
        let mut inner = self.inner.lock().await;
        self.promote_locked(&mut inner, policy, "promoted")
    }

    fn promote_locked(
        &self,
        inner: &mut Inner,
        policy: &str,
        step: &'static str,
    ) -> Result<Promoted, ControlError> {
        let promoted = self.change(inner, policy, |set, record| {
            let canary = set.canary.take().ok_or_else(|| {
                ControlError::Conflict(format!("policy `{policy}` has no canary"))
            })?;
            record.previous = Some(std::mem::replace(
                &mut set.serving,
                Arc::clone(&canary.version),
            ));
            record.canary_started = None;
            Ok(Changed {
                answer: Arc::clone(&canary.version),
                step,
                serving: Some(canary.version),
            })
        })?;
        tracing::info!(policy, digest = %promoted.digest, step, "canary promoted");
        Ok(Promoted {
            policy: policy.to_string(),
            digest: promoted.digest.clone(),
            state: VersionState::Serving,
        })
    }

    /// Ends the canary of `policy`; without one, serves the previous version again.
    pub async fn rollback(&self, policy: &str) -> Result<RolledBack, ControlError> {
        let mut inner = self.inner.lock().await;
        self.rollback_locked(
            &mut inner,
            policy,
            "rolled back by the operator",
            "rolled_back",
        )
    }

    fn rollback_locked(
        &self,
        inner: &mut Inner,
        policy: &str,
        reason: &str,
        step: &'static str,
    ) -> Result<RolledBack, ControlError> {
        let (dropped, serving) = self.change(inner, policy, |set, record| {
            let (dropped, serving) = if let Some(canary) = set.canary.take() {
                record.canary_started = None;
                remember(record, &canary.version.digest, reason);
                (canary.version, Arc::clone(&set.serving))
            } else {
                let previous = record.previous.take().ok_or_else(|| {
                    ControlError::Conflict(format!(
                        "policy `{policy}` has no canary and no previous version to roll back to"
                    ))
                })?;
                let old = std::mem::replace(&mut set.serving, Arc::clone(&previous));
                record.previous = Some(Arc::clone(&old));
                (old, previous)
            };
            Ok(Changed {
                answer: (dropped, Arc::clone(&serving)),
                step,
                serving: Some(serving),
            })
        })?;
        serving.quarantine.lift(policy, reason);
        tracing::warn!(policy, dropped = %dropped.digest, serving = %serving.digest, reason, "rolled back");
        Ok(RolledBack {
            policy: policy.to_string(),
            dropped: dropped.digest.clone(),
            serving: serving.digest.clone(),
            reason: reason.to_string(),
        })
    }

    /// Judges every running canary: rolls back one that does worse than the
    /// serving version by the configured margins, promotes one that stayed
    /// healthy for the window.
    pub async fn judge_canaries(&self) {
        let mut inner = self.inner.lock().await;
        let state = self.state.load_full();
        let rules = inner.config.canary.clone();
        for (name, set) in &state.policies {
            let Some(canary) = &set.canary else { continue };
            let record = inner.records.entry(name.clone()).or_default();
            let Some(started) = record.canary_started else {
                continue;
            };
            let c = canary.version.stats.snapshot();
            let s = since(set.serving.stats.snapshot(), record.serving_base);
            if c.calls < rules.min_requests.max(1) {
                continue;
            }
            let mut worse = None;
            if c.failure_rate() > s.failure_rate() + rules.max_failure_rate_increase {
                worse = Some(format!(
                    "failure rate {:.1}% against {:.1}% serving (margin {:.1} points)",
                    c.failure_rate() * 100.0,
                    s.failure_rate() * 100.0,
                    rules.max_failure_rate_increase * 100.0
                ));
            } else if c.requests > 0
                && c.server_error_rate() > s.server_error_rate() + rules.max_5xx_rate_increase
            {
                worse = Some(format!(
                    "5xx rate {:.1}% against {:.1}% serving (margin {:.1} points)",
                    c.server_error_rate() * 100.0,
                    s.server_error_rate() * 100.0,
                    rules.max_5xx_rate_increase * 100.0
                ));
            } else if c.calls >= P99_MIN_CALLS
                && s.calls >= P99_MIN_CALLS
                && s.p99_us > 0
                && c.p99_us as f64 > s.p99_us as f64 * rules.max_p99_ratio
                && c.p99_us > s.p99_us + 1_000
            {
                worse = Some(format!(
                    "p99 {} µs against {} µs serving (limit {}×)",
                    c.p99_us, s.p99_us, rules.max_p99_ratio
                ));
            }
            let name = name.clone();
            if let Some(why) = worse {
                let reason = format!("rolled back automatically: {why}");
                if let Err(e) = self.rollback_locked(&mut inner, &name, &reason, "auto_rolled_back")
                {
                    tracing::error!(policy = %name, error = %e, "automatic rollback failed");
                }
            } else if started.elapsed() >= Duration::from_millis(rules.window_ms) {
                if let Err(e) = self.promote_locked(&mut inner, &name, "auto_promoted") {
                    tracing::error!(policy = %name, error = %e, "automatic promotion failed");
                }
            }
        }
    }

    /// Reads the config file again; a valid one replaces the running one
    /// atomically, an invalid one is refused with the reason and changes nothing.
    pub async fn reload(&self) -> Result<Reloaded, ControlError> {
        let mut inner = self.inner.lock().await;
        let source = inner.config.source.clone();
        let config = edgegate_config::load(&source).map_err(|e| {
            self.metrics.count_swap_step("(config)", "reload_refused");
            ControlError::Refused(format!("config refused, nothing changed: {e}"))
        })?;
        let pushed = load_pushed(&config);
        let built = GatewayState::build(
            &config,
            &self.runtime,
            &self.kv,
            &self.metrics,
            &self.logs,
            self.workers,
            &pushed,
        )
        .await;
        let (state, skipped) = built.map_err(|e: BuildError| {
            self.metrics.count_swap_step("(config)", "reload_refused");
            ControlError::Refused(format!(
                "{}: config refused, nothing changed: {e}",
                source.display()
            ))
        })?;
        for s in &skipped {
            tracing::error!("{s}");
        }
        let restart_needed = restart_keys(&inner.config, &config);
        // Names that do not resolve now keep their addresses, and an
        // endpoint failing its health checks stays out, across the reload.
        state.upstreams.inherit(&self.state.load().upstreams);
        self.state.store(Arc::new(state));
        inner.config = config;
        for record in inner.records.values_mut() {
            record.previous = None;
            record.canary_started = None;
        }
        self.metrics.count_swap_step("(config)", "reloaded");
        tracing::info!(file = %source.display(), "config reloaded");
        Ok(Reloaded {
            reloaded: source.display().to_string(),
            pushed_versions_skipped: skipped,
            needs_restart: restart_needed,
        })
    }

    /// Every policy with its versions, states and counters.
    pub async fn status(&self) -> Status {
        let inner = self.inner.lock().await;
        let state = self.state.load_full();
        let mut policies = Vec::new();
        for (name, set) in &state.policies {
            let record = inner.records.get(name);
            let kind = inner
                .config
                .policies
                .get(name)
                .map_or("custom", |p| p.kind.as_str());
            let canary = set.canary.as_ref().map(|c| VersionView {
                percent: Some(c.percent),
                sticky: Some(c.sticky),
                running_ms: record
                    .and_then(|r| r.canary_started)
                    .map(|started| ms(started.elapsed())),
                ..VersionView::of(&c.version, VersionState::Canary)
            });
            let refused = record
                .map(|r| {
                    r.refused
                        .iter()
                        .map(|f| RefusedView {
                            state: VersionState::Refused,
                            digest: f.digest.clone(),
                            reason: f.reason.clone(),
                            at: unix(f.at),
                        })
                        .collect()
                })
                .unwrap_or_default();
            policies.push(PolicyStatus {
                name: name.clone(),
                kind: kind.to_string(),
                serving: VersionView::of(&set.serving, VersionState::Serving),
                canary,
                previous: record
                    .and_then(|r| r.previous.as_ref())
                    .map(|v| VersionView::of(v, VersionState::Previous)),
                refused,
            });
        }
        Status { policies }
    }
}

/// What one change did: the answer, the step it counts
/// (`edgegate_policy_swap_steps_total`) and the version it made serving.
struct Changed<T> {
    answer: T,
    step: &'static str,
    serving: Option<Arc<Version>>,
}

fn remember(record: &mut Record, digest: &str, reason: &str) {
    if record.refused.len() == REFUSALS_KEPT {
        record.refused.pop_front();
    }
    record.refused.push_back(Refusal {
        digest: digest.to_string(),
        reason: reason.to_string(),
        at: SystemTime::now(),
    });
}

/// What a counter set did since `base`.
fn since(now: StatsSnapshot, base: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        calls: now.calls.saturating_sub(base.calls),
        failures: now.failures.saturating_sub(base.failures),
        requests: now.requests.saturating_sub(base.requests),
        server_errors: now.server_errors.saturating_sub(base.server_errors),
        // The histogram is not diffed: p99 over the version's life.
        p99_us: now.p99_us,
    }
}

/// Config keys a reload cannot apply to a running process.
fn restart_keys(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.server.listen != new.server.listen {
        keys.push("server.listen");
    }
    if old.server.workers != new.server.workers {
        keys.push("server.workers");
    }
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if old.admin.compile_cache != new.admin.compile_cache
        || old.admin.state_dir != new.admin.state_dir
    {
        keys.push("admin.compile_cache");
    }
    keys
}

// ------------------------------------------------------------ state folder

/// Where the pushed serving version of `policy` is kept; `None` when the name
/// cannot be a file name.
fn serving_file(config: &GatewayConfig, policy: &str) -> Option<PathBuf> {
    let safe = !policy.is_empty()
        && !policy.starts_with('.')
        && policy
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let dir = config.admin.state_dir.as_ref()?;
    safe.then(|| dir.join("policies").join(policy).join("serving.wasm"))
}

/// Remembers what `policy` serves: a pushed version's signed bytes, or nothing
/// when it serves the config's file again.
fn persist(config: &GatewayConfig, policy: &str, serving: &Version) {
    let Some(file) = serving_file(config, policy) else {
        tracing::warn!(
            policy,
            "policy name is not a safe file name; the served version is not kept across restarts"
        );
        return;
    };
    let result = match serving.source {
        Source::Config => match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Source::Push => write_atomically(&file, &serving.bytes),
    };
    if let Err(e) = result {
        tracing::error!(policy, file = %file.display(), error = %e, "cannot keep the served version in the state folder");
    }
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// The pushed versions the state folder says the config's policies serve
/// (verified again when they are admitted).
pub(crate) fn load_pushed(config: &GatewayConfig) -> BTreeMap<String, Arc<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for name in config.policies.keys() {
        let Some(file) = serving_file(config, name) else {
            continue;
        };
        match std::fs::metadata(&file) {
            Ok(meta) if meta.len() > MAX_PUSH_BYTES as u64 => {
                tracing::error!(policy = %name, file = %file.display(), "kept version is over the size limit; ignored");
            }
            Ok(_) => match std::fs::read(&file) {
                Ok(bytes) => {
                    out.insert(name.clone(), Arc::new(bytes));
                }
                Err(e) => {
                    tracing::error!(policy = %name, file = %file.display(), error = %e, "cannot read the kept version")
                }
            },
            Err(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_versions_live_under_safe_names_only() {
        let mut config: GatewayConfig = toml::from_str("version = 1").expect("minimal config");
        config.admin.state_dir = Some("/state".into());
        assert_eq!(
            serving_file(&config, "auth"),
            Some(PathBuf::from("/state/policies/auth/serving.wasm"))
        );
        assert_eq!(serving_file(&config, "../etc"), None);
        assert_eq!(serving_file(&config, "a/b"), None);
        assert_eq!(serving_file(&config, ""), None);
    }

    #[test]
    fn canary_counters_compare_from_the_start_of_the_canary() {
        let base = StatsSnapshot {
            calls: 10,
            failures: 1,
            requests: 10,
            server_errors: 1,
            p99_us: 64,
        };
        let now = StatsSnapshot {
            calls: 30,
            failures: 1,
            requests: 30,
            server_errors: 3,
            p99_us: 64,
        };
        let d = since(now, base);
        assert_eq!((d.calls, d.failures, d.server_errors), (20, 0, 2));
        assert_eq!(d.failure_rate(), 0.0);
        assert_eq!(d.server_error_rate(), 0.1);
    }
}
