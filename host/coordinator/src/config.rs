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
    /// Serve the API and dashboard over TLS; edges then use an `https://`
    /// `node.coordinator` URL (with `node.coordinator_ca_file` for a private CA).
    #[serde(default)]
    pub tls: Option<CoordinatorTls>,
    /// Where reports are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Health colour thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// What every edge should run; sent with each answer, and edges that
    /// differ are flagged.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Folder of the config file (set by `load`).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Largest certificate, key or password file the config names.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// Reads a file the config names (`what` is its key), bounded in size; the
/// error names the key, the file and what went wrong.
pub(crate) fn read_key_file(what: &str, p: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(p)
        .map_err(|e| format!("{what} {}: {e}", p.display()))?
        .len();
    if len > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{what} {}: {len} bytes; the limit is {MAX_KEY_FILE_BYTES}",
            p.display()
        ));
    }
    std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

/// `[tls]`: the coordinator's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorTls {
    /// PEM certificate chain, leaf first; relative to the config file.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
}

/// `[store.tls]`: how the coordinator reaches etcd over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM CA bundle etcd's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate presented to etcd.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Name checked against etcd's certificate; default the endpoint's host.
    #[serde(default)]
    pub domain: Option<String>,
}

/// `[fleet]`: the desired state sent to every edge.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Revocation list version every edge should hold.
    #[serde(default)]
    pub revocation_list_version: Option<u64>,
    /// Content digest (hex sha256 of the component without its signature
    /// sections, as `edgegate verify` prints it) each policy should serve, by policy name.
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, String>,
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
    /// In etcd (v3 API): each edge's report under its own key with a lease,
    /// shared by every coordinator replica that uses the same etcd and prefix.
    Etcd {
        /// etcd client URLs: `http://host:port`, or `https://host:port` with `tls`.
        endpoints: Vec<String>,
        /// TLS to etcd: the CA, and the client certificate etcd's
        /// `--client-cert-auth` asks for. Required for `https://` endpoints.
        #[serde(default)]
        tls: Option<EtcdTls>,
        /// etcd user (`etcdctl user add`), for etcd's password auth.
        #[serde(default)]
        user: Option<String>,
        /// File holding the user's password (its first line), relative to
        /// the config file; kept out of the config so the config can be shared.
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Keys are `{prefix}/edges/{node}`.
        #[serde(default = "default_etcd_prefix")]
        prefix: String,
        /// Deadline of one etcd request, and of connecting at start.
        #[serde(default = "default_etcd_timeout")]
        timeout_ms: u64,
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
fn default_etcd_prefix() -> String {
    "/edgegate".into()
}
fn default_etcd_timeout() -> u64 {
    2_000
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
        for (policy, digest) in &mut config.fleet.components {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    &format!("fleet.components.{policy}"),
                    "must be the hex sha256 of the signed content (64 hex digits; `edgegate verify` prints it)".into(),
                ));
            }
            digest.make_ascii_lowercase();
        }
        let base = config.base_dir.clone();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut config.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        match &mut config.store {
            StoreConfig::Embedded { path: snapshot } => resolve(snapshot),
            StoreConfig::Etcd {
                endpoints,
                prefix,
                timeout_ms,
                tls,
                user,
                password_file,
            } => {
                if endpoints.is_empty() {
                    return Err(err("store.endpoints", "name at least one etcd URL".into()));
                }
                let scheme = if tls.is_some() { "https://" } else { "http://" };
                if let Some(bad) = endpoints.iter().find(|e| {
                    !e.starts_with(scheme)
                        || e[scheme.len()..].parse::<http::uri::Authority>().is_err()
                }) {
                    let why = if tls.is_some() {
                        format!("`{bad}` is not an https://host:port URL (with [store.tls], every endpoint is TLS)")
                    } else {
                        format!("`{bad}` is not an http://host:port URL (https:// needs [store.tls] with its ca_file)")
                    };
                    return Err(err("store.endpoints", why));
                }
                if let Some(t) = tls {
                    if t.client_cert.is_some() != t.client_key.is_some() {
                        return Err(err(
                            "store.tls",
                            "client_cert and client_key go together".into(),
                        ));
                    }
                    for p in [
                        Some(&mut t.ca_file),
                        t.client_cert.as_mut(),
                        t.client_key.as_mut(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        resolve(p);
                    }
                }
                if user.is_some() != password_file.is_some() {
                    return Err(err(
                        "store.user",
                        "user and password_file go together".into(),
                    ));
                }
                if let Some(p) = password_file {
                    resolve(p);
                }
                if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
                    return Err(err(
                        "store.prefix",
                        "must start with `/`, name something, and not end with `/`".into(),
                    ));
                }
                if *timeout_ms < 10 {
                    return Err(err("store.timeout_ms", "must be at least 10".into()));
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<CoordinatorConfig, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        CoordinatorConfig::load(&path)
            .map_err(|e| e.to_string().replace(&path.display().to_string(), "c.toml"))
    }

    #[test]
    fn the_embedded_store_is_the_default_and_its_snapshot_sits_beside_the_config() {
        let c = load("").expect("empty config");
        assert_eq!(c.listen, default_listen());
        let StoreConfig::Embedded { path } = &c.store else {
            panic!("not embedded: {:?}", c.store)
        };
        assert!(path.ends_with("coordinator-state.json"));
        assert!(path.is_absolute() || path.starts_with(&c.base_dir));
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/coordinator.toml");
        let c = CoordinatorConfig::load(&path).expect("policies/coordinator.toml");
        assert_eq!(c.listen, default_listen());
        assert!(matches!(c.store, StoreConfig::Embedded { .. }));
        assert_eq!(c.thresholds, Thresholds::default());
    }

    #[test]
    fn etcd_keys_are_read_and_checked() {
        let c = load("[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\", \"http://10.0.0.2:2379\"]\n")
            .expect("etcd config");
        let StoreConfig::Etcd {
            endpoints,
            prefix,
            timeout_ms,
            ..
        } = &c.store
        else {
            panic!("not etcd: {:?}", c.store)
        };
        assert_eq!(endpoints.len(), 2);
        assert_eq!(prefix, "/edgegate");
        assert_eq!(*timeout_ms, 2000);

        let cases = [
            (
                "[store]\nbackend = \"etcd\"\nendpoints = []\n",
                "c.toml: key `store.endpoints`: name at least one etcd URL",
            ),
            (
                "[store]\nbackend = \"etcd\"\nendpoints = [\"https://e:2379\"]\n",
                "c.toml: key `store.endpoints`: `https://e:2379` is not an http://host:port URL (https:// needs [store.tls] with its ca_file)",
            ),
            (
                "[store]\nbackend = \"etcd\"\nendpoints = [\"http://e:2379\"]\nprefix = \"/a/\"\n",
                "c.toml: key `store.prefix`: must start with `/`, name something, and not end with `/`",
            ),
            (
                "[store]\nbackend = \"etcd\"\nendpoints = [\"http://e:2379\"]\ntimeout_ms = 1\n",
                "c.toml: key `store.timeout_ms`: must be at least 10",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).err().as_deref(), Some(expected), "{text}");
        }
        let unknown = load("[store]\nbackend = \"etcd\"\nendpoints = [\"http://e:1\"]\nttl = 3\n")
            .expect_err("unknown key refused");
        assert!(unknown.contains("unknown field `ttl`"), "{unknown}");
        let backend = load("[store]\nbackend = \"redis\"\n").expect_err("refused");
        assert!(backend.contains("unknown variant `redis`"), "{backend}");
    }
}
