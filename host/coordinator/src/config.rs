//! `edgegate coordinator --config FILE`: the coordinator's config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edgegate_graph::analysis::Thresholds;
use serde::Deserialize;

/// The coordinator config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// API and dashboard address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token edges must send with reports (`node.coordinator_token`); none: any client.
    #[serde(default)]
    pub token: Option<String>,
    /// An edge that has not reported for this long is marked down.
    #[serde(default = "default_ttl")]
    pub edge_ttl_ms: u64,
    /// A down edge is removed from the graph after this long without a report.
    #[serde(default = "default_remove_after")]
    pub remove_after_ms: u64,
    /// Where reports are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Health colour thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Folder of the config file (set by `load`).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[store]`: which `HealthStore` backend keeps the reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// In this process, with a snapshot file so a restart loses no site.
    Embedded {
        /// Snapshot file, relative to the config file.
        #[serde(default = "default_snapshot")]
        path: PathBuf,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded {
            path: default_snapshot(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_ttl() -> u64 {
    10_000
}
fn default_remove_after() -> u64 {
    300_000
}
fn default_snapshot() -> PathBuf {
    "coordinator-state.json".into()
}

/// Why a config was refused: file, key and reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Dotted key path.
    pub key: String,
    /// Why.
    pub message: String,
}

impl CoordinatorConfig {
    /// Reads and checks a config file; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
        let de = toml::Deserializer::new(&text);
        let mut config: CoordinatorConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            err(
                if key == "." { "" } else { &key },
                e.into_inner().message().to_string(),
            )
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if config.edge_ttl_ms < 100 {
            return Err(err("edge_ttl_ms", "must be at least 100".into()));
        }
        if config.remove_after_ms < config.edge_ttl_ms {
            return Err(err(
                "remove_after_ms",
                "must be at least edge_ttl_ms".into(),
            ));
        }
        if config.token.as_deref().is_some_and(|t| t.trim().len() < 16) {
            return Err(err("token", "must be at least 16 characters".into()));
        }
        let StoreConfig::Embedded { path: snapshot } = &mut config.store;
        if snapshot.is_relative() {
            *snapshot = config.base_dir.join(&*snapshot);
        }
        Ok(config)
    }
}
