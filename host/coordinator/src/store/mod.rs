//! [`HealthStore`]: where the coordinator keeps the latest report of every
//! edge.
//!
//! - [`EmbeddedStore`] (the default) keeps them in this process and writes a
//!   snapshot file, so a restart loses no site.
//! - [`EtcdStore`] keeps them in etcd, each edge's report under its own key
//!   with a lease, so a dead edge disappears on its own and several
//!   coordinator replicas share one view through a watch.

mod embedded;
mod etcd;

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use edgegate_graph::EdgeReport;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedStore;
pub use etcd::{EtcdAccess, EtcdStore};

/// An edge's latest report and when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The report.
    pub report: EdgeReport,
    /// Coordinator clock, ms since the Unix epoch.
    pub received_at_ms: u64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the backend failed.
    #[error("{0}")]
    Backend(String),
}

/// Keeps the latest report per edge node.
pub trait HealthStore: Send + Sync + 'static {
    /// Stores `r` as the latest report of its node.
    fn put(&self, r: StoredReport) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every node's latest report.
    fn all(&self) -> impl Future<Output = Result<Vec<StoredReport>, StoreError>> + Send;
    /// Forgets a node.
    fn remove(&self, node: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Makes what was stored durable (the embedded store's snapshot); a no-op
    /// for backends that write through.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How long this replica has been unable to see every write (its watch
    /// is broken or its own writes fail), in ms; 0 when it sees them all.
    /// Report ages may be overstated by that much, so no edge is judged down
    /// on them (the embedded store always sees everything).
    fn blind_ms(&self) -> u64 {
        0
    }
}

/// Locks `m`; a panic elsewhere while it was held does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
