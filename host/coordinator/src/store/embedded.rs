//! The `embedded` store: reports in this process, with a snapshot file so a
//! restart loses no site.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{lock, HealthStore, StoreError, StoredReport};

/// Reports in memory, with a snapshot file.
pub struct EmbeddedStore {
    path: PathBuf,
    reports: Mutex<BTreeMap<String, StoredReport>>,
    dirty: AtomicBool,
}

impl EmbeddedStore {
    /// Opens the store, loading the snapshot at `path` when there is one.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let reports = match std::fs::read(path) {
            Ok(bytes) => {
                let list: Vec<StoredReport> = serde_json::from_slice(&bytes).map_err(|e| {
                    StoreError::Backend(format!(
                        "snapshot {} is not readable ({e}); move it away to start empty",
                        path.display()
                    ))
                })?;
                list.into_iter()
                    .map(|r| (r.report.node.clone(), r))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "cannot read snapshot {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            reports: Mutex::new(reports),
            dirty: AtomicBool::new(false),
        })
    }
}

impl HealthStore for EmbeddedStore {
    async fn put(&self, r: StoredReport) -> Result<(), StoreError> {
        lock(&self.reports).insert(r.report.node.clone(), r);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn all(&self) -> Result<Vec<StoredReport>, StoreError> {
        Ok(lock(&self.reports).values().cloned().collect())
    }

    async fn remove(&self, node: &str) -> Result<(), StoreError> {
        if lock(&self.reports).remove(node).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let list: Vec<StoredReport> = lock(&self.reports).values().cloned().collect();
        let bytes = serde_json::to_vec(&list).map_err(|e| StoreError::Backend(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            self.dirty.store(true, Ordering::Relaxed);
            StoreError::Backend(format!("writing snapshot {}: {e}", self.path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgegate_graph::{EdgeReport, Graph};

    fn report(node: &str, seq: u64) -> StoredReport {
        StoredReport {
            report: EdgeReport {
                node: node.into(),
                site: "s".into(),
                seq,
                boot: "b".into(),
                sent_at_ms: 1,
                graph: Graph::default(),
                revocation_list_version: None,
                components: Default::default(),
            },
            received_at_ms: 2,
        }
    }

    #[tokio::test]
    async fn a_restart_loses_no_site() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = EmbeddedStore::open(&path).expect("open");
        store.put(report("a", 1)).await.expect("put");
        store.put(report("b", 1)).await.expect("put");
        store.put(report("a", 2)).await.expect("put");
        store.flush().await.expect("flush");
        let again = EmbeddedStore::open(&path).expect("reopen");
        let all = again.all().await.expect("all");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].report.seq, 2);
        again.remove("a").await.expect("remove");
        again.flush().await.expect("flush");
        assert_eq!(
            EmbeddedStore::open(&path)
                .expect("reopen")
                .all()
                .await
                .expect("all")
                .len(),
            1
        );

        std::fs::write(&path, b"{not json").expect("write");
        let err = EmbeddedStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("is not readable"), "{err}");
    }
}
