//! What the control plane answers, as types: the admin API serializes them
//! (docs/operations.md lists the fields), and the plane compares states as
//! values, not strings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::control::state::AdmitTimes;
use crate::control::versions::Version;

/// A version's place in a policy's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Serves every request (but a canary's share).
    Serving,
    /// Serves a share of requests while it is judged.
    Canary,
    /// Served before; a rollback serves it again.
    Previous,
    /// Refused at admission, or rolled back.
    Refused,
}

/// A pushed version, admitted.
#[derive(Debug, Serialize)]
pub struct Pushed {
    /// The policy name.
    pub policy: String,
    /// Content digest of the version (hex sha256 without the signature sections).
    pub digest: String,
    /// Trusted keys whose signatures verified.
    pub signers: Vec<String>,
    /// [`VersionState::Serving`] or [`VersionState::Canary`].
    pub state: VersionState,
    /// The canary share asked for, if any.
    pub canary_percent: Option<u32>,
    /// How long each admission step took.
    pub timings_ms: Timings,
}

/// How long admitting a version took, in milliseconds (0.1 ms resolution).
#[derive(Debug, Serialize)]
pub struct Timings {
    /// Signature verification.
    pub verify: f64,
    /// Compiling (or loading from the compile cache).
    pub compile: f64,
    /// `hit`, `miss` or `off` (docs/operations.md, "Compile cache").
    pub compile_cache: &'static str,
    /// Instantiation, `init` and the self-tests.
    pub admission: f64,
}

impl From<AdmitTimes> for Timings {
    fn from(t: AdmitTimes) -> Self {
        let f = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        Self {
            verify: f(t.verify),
            compile: f(t.compile),
            compile_cache: t.compile_cache.as_str(),
            admission: f(t.admission),
        }
    }
}

/// A canary that now serves everyone.
#[derive(Debug, Serialize)]
pub struct Promoted {
    /// The policy name.
    pub policy: String,
    /// Content digest of the version (hex sha256 without the signature sections).
    pub digest: String,
    /// Where this version is in its life.
    pub state: VersionState,
}

/// A rollback: what was dropped and what serves now.
#[derive(Debug, Serialize)]
pub struct RolledBack {
    /// The policy name.
    pub policy: String,
    /// Digest of the version no longer serving.
    pub dropped: String,
    /// What serves now.
    pub serving: String,
    /// Why.
    pub reason: String,
}

/// A config reload that was applied.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// The config file.
    pub reloaded: String,
    /// Pushed versions in the state folder that no longer pass admission.
    pub pushed_versions_skipped: Vec<String>,
    /// Changed keys that take effect at the next restart.
    pub needs_restart: Vec<&'static str>,
}

/// Every policy with its versions (`GET /v1/policies`, `edgegate status`).
#[derive(Debug, Serialize)]
pub struct Status {
    /// One entry per policy.
    pub policies: Vec<PolicyStatus>,
}

/// One policy in [`Status`].
#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    /// The policy name.
    pub name: String,
    /// Its `kind` in the config (`custom` without one).
    pub kind: String,
    /// What serves now.
    pub serving: VersionView,
    /// The canary, while one runs.
    pub canary: Option<VersionView>,
    /// The version a rollback serves again.
    pub previous: Option<VersionView>,
    /// The last refused or rolled-back versions, oldest first.
    pub refused: Vec<RefusedView>,
}

/// One live version in [`PolicyStatus`].
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// Where this version is in its life.
    pub state: VersionState,
    /// Content digest of the version (hex sha256 without the signature sections).
    pub digest: String,
    /// Trusted keys whose signatures verified.
    pub signers: Vec<String>,
    /// Component size in bytes.
    pub size: usize,
    /// `config` or `push`.
    pub source: &'static str,
    /// Unix seconds.
    pub admitted_at: u64,
    /// A canary's share of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// A canary chosen by client IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<bool>,
    /// How long a canary has run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_ms: Option<u64>,
    /// `None` while the version runs (docs/operations.md, "Quarantine").
    pub quarantine: Option<QuarantineView>,
    /// Its counters since admission.
    pub counters: Counters,
}

impl VersionView {
    pub(crate) fn of(v: &Version, state: VersionState) -> Self {
        let s = v.stats.snapshot();
        Self {
            state,
            digest: v.digest.clone(),
            signers: v.signers.clone(),
            size: v.size,
            source: v.source.as_str(),
            admitted_at: unix(v.admitted_at),
            percent: None,
            sticky: None,
            running_ms: None,
            quarantine: v.quarantine.held().map(|h| QuarantineView {
                since: unix(h.since),
                lifts_in_ms: ms(h.lifts_in),
                reason: h.reason,
                times: h.times,
            }),
            counters: Counters {
                calls: s.calls,
                failures: s.failures,
                requests: s.requests,
                server_errors: s.server_errors,
                p99_us: s.p99_us,
            },
        }
    }
}

/// A quarantine in force.
#[derive(Debug, Serialize)]
pub struct QuarantineView {
    /// Unix seconds.
    pub since: u64,
    /// How long until the cool-down lifts it.
    pub lifts_in_ms: u64,
    /// Why.
    pub reason: String,
    /// How many times this version was quarantined.
    pub times: u64,
}

/// A version's counters since it was admitted.
#[derive(Debug, Serialize)]
pub struct Counters {
    /// Hook calls.
    pub calls: u64,
    /// Calls that failed or were skipped in quarantine.
    pub failures: u64,
    /// Requests it took part in.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub server_errors: u64,
    /// 99th percentile call time, µs (0 without calls).
    pub p99_us: u64,
}

/// A refused or rolled-back version, with why.
#[derive(Debug, Serialize)]
pub struct RefusedView {
    /// Where this version is in its life.
    pub state: VersionState,
    /// Content digest of the version (hex sha256 without the signature sections).
    pub digest: String,
    /// Why.
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
