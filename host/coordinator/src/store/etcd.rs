//! The `etcd` store: every edge's latest report under its own key
//! (`{prefix}/edges/{node}`), attached to a lease per edge. A report renews
//! its edge's lease, so an edge that stops reporting disappears from etcd
//! when its lease runs out, whether or not a coordinator is running. Each
//! coordinator replica keeps a copy of the keys, filled by one listing and
//! then kept current by a watch, so every replica sees every report, and
//! reading the graph costs etcd nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, CompactionOptions, ConnectOptions, EventType, GetOptions, KeyValue, KvClient,
    PutOptions, WatchOptions,
};
use tokio::task::JoinHandle;

use super::{lock, HealthStore, StoreError, StoredReport};
use crate::config::read_key_file;

/// Keys listed per request when the copy is (re)built.
const PAGE: i64 = 64;
/// Largest gRPC message read (a page of reports, a batch of watch events).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// A lease is renewed at most this often per edge (etcd counts TTLs in seconds).
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Longest wait before the watch is tried again after etcd went away.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(1);
/// Deadline of one attempt of a write; a write is tried again (on another
/// member, as the channel balances) until the store's timeout. A member that
/// died holds a request only this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two attempts of a write.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// History older than this is compacted, so etcd's database does not grow
/// with every report; a watch that falls further behind lists again.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// One edge's entry in the copy: the report and the etcd revision that wrote it.
type Entries = BTreeMap<String, (i64, StoredReport)>;

/// Reports in etcd, with a watched copy in this process.
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    /// `{prefix}/edges/`.
    keys: String,
    lease_ttl_s: i64,
    copy: Arc<Mutex<Entries>>,
    leases: Mutex<HashMap<String, Lease>>,
    tasks: Vec<JoinHandle<()>>,
    /// Deadline of a whole write, retries included.
    timeout: Duration,
    /// Since when this replica cannot see every write, when it cannot.
    blind: Arc<Blind>,
}

/// When a replica stopped seeing every write: its watch broke, or its own
/// writes fail. Cleared when the watch is back and a write succeeded.
#[derive(Default)]
pub(crate) struct Blind {
    watch_down_since: Mutex<Option<Instant>>,
    writes_failing_since: Mutex<Option<Instant>>,
}

impl Blind {
    fn since(&self) -> Option<Instant> {
        let a = *lock(&self.watch_down_since);
        let b = *lock(&self.writes_failing_since);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn set(slot: &Mutex<Option<Instant>>, down: bool) {
        let mut s = lock(slot);
        match (down, *s) {
            (true, None) => *s = Some(Instant::now()),
            (false, _) => *s = None,
            _ => {}
        }
    }
}

/// Whether an error may go away on another attempt: the member died, has no
/// leader (an election is on), or did not answer in time.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ) || s.message().contains("no leader")
                || s.message().contains("leader changed")
                || s.message().contains("timed out")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// The lease this replica attaches to an edge's key.
#[derive(Clone, Copy)]
struct Lease {
    id: i64,
    renewed: Instant,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {what}: {e}"))
}

/// The end of the key range that holds every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How the coordinator proves itself to etcd and checks etcd: TLS (CA and
/// client certificate) and password auth, read from their files at start.
#[derive(Default)]
pub struct EtcdAccess {
    tls: Option<etcd_client::TlsOptions>,
    user: Option<(String, String)>,
}

impl EtcdAccess {
    /// Reads `[store.tls]` and the password file; the error names the file.
    pub fn read(
        tls: Option<&crate::config::EtcdTls>,
        user: Option<&str>,
        password_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let ca = read_key_file("store.tls.ca_file", &t.ca_file)?;
                let mut options = etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(ca));
                if let (Some(cert), Some(key)) = (&t.client_cert, &t.client_key) {
                    options = options.identity(etcd_client::Identity::from_pem(
                        read_key_file("store.tls.client_cert", cert)?,
                        read_key_file("store.tls.client_key", key)?,
                    ));
                }
                if let Some(domain) = &t.domain {
                    options = options.domain_name(domain.clone());
                }
                Some(options)
            }
        };
        let user = match (user, password_file) {
            (Some(user), Some(file)) => {
                let text = String::from_utf8(read_key_file("store.password_file", file)?)
                    .map_err(|_| format!("store.password_file {}: not UTF-8", file.display()))?;
                let password = text.lines().next().unwrap_or("").to_string();
                if password.is_empty() {
                    return Err(format!(
                        "store.password_file {}: the first line is empty",
                        file.display()
                    ));
                }
                Some((user.to_string(), password))
            }
            _ => None,
        };
        Ok(Self { tls, user })
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints`, reads every report under `prefix` and
    /// starts the watch that keeps the copy current. An edge's key outlives
    /// its last report by `remove_after` (rounded up to whole seconds).
    /// Fails when etcd does not answer within `timeout`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
        remove_after: Duration,
        access: EtcdAccess,
    ) -> Result<Self, StoreError> {
        let unreachable = |e: etcd_client::Error| {
            StoreError::Backend(format!(
                "etcd at {} is not reachable: {e}",
                endpoints.join(", ")
            ))
        };
        // A member without a leader refuses at once instead of holding the
        // request through an election; keep-alives find a dead member fast.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true)
            .with_keep_alive(Duration::from_millis(500), Duration::from_millis(1000))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = access.tls {
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = access.user {
            options = options.with_user(user, password);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(unreachable)?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let keys = format!("{}/edges/", prefix.trim_end_matches('/'));
        let (entries, revision) = list(kv.clone(), &keys).await.map_err(unreachable)?;
        tracing::info!(
            edges = entries.len(),
            revision,
            "etcd store: read the reports; watching for changes"
        );
        let copy = Arc::new(Mutex::new(entries));
        let blind = Arc::new(Blind::default());
        let watcher = tokio::spawn(watch(
            client.clone(),
            kv.clone(),
            keys.clone(),
            Arc::clone(&copy),
            revision,
            Arc::clone(&blind),
        ));
        let compactor = tokio::spawn(compact(kv.clone()));
        let ttl = remove_after.as_millis().div_ceil(1000) + 1;
        Ok(Self {
            client,
            kv,
            keys,
            lease_ttl_s: i64::try_from(ttl).unwrap_or(i64::MAX),
            copy,
            leases: Mutex::new(HashMap::new()),
            tasks: vec![watcher, compactor],
            timeout,
            blind,
        })
    }

    /// Runs `op` until it succeeds, fails for good, or the store's timeout
    /// passes; each attempt gets [`ATTEMPT_TIMEOUT`]. Writes that give up on
    /// an unreachable etcd make the replica blind until one succeeds; a
    /// refusal on its merits (a value too large, a permission) does not.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(ATTEMPT_TIMEOUT.min(left), op()).await {
                Ok(Ok(v)) => {
                    Blind::set(&self.blind.writes_failing_since, false);
                    return Ok(v);
                }
                Ok(Err(e)) if !retryable(&e) => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => {
                    etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(format!(
                        "no answer within {} ms",
                        ATTEMPT_TIMEOUT.min(left).as_millis()
                    )))
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                Blind::set(&self.blind.writes_failing_since, true);
                return Err(error);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The lease for `node`'s key: the one this replica holds, or a new one.
    async fn lease(&self, node: &str) -> Result<Lease, StoreError> {
        if let Some(lease) = lock(&self.leases).get(node).copied() {
            return Ok(lease);
        }
        let ttl = self.lease_ttl_s;
        let granted = self
            .retrying(|| {
                let mut leases = self.client.lease_client();
                async move { leases.grant(ttl, None).await }
            })
            .await
            .map_err(|e| backend("granting a lease", e))?;
        let lease = Lease {
            id: granted.id(),
            renewed: Instant::now(),
        };
        lock(&self.leases).insert(node.to_string(), lease);
        Ok(lease)
    }

    /// Applies one write of this replica to the copy at once (the watch
    /// brings the same write later and finds nothing to do).
    fn remember(&self, node: &str, revision: i64, report: StoredReport) {
        let mut copy = lock(&self.copy);
        match copy.get(node) {
            Some((known, _)) if *known >= revision => {}
            _ => {
                copy.insert(node.to_string(), (revision, report));
            }
        }
    }
}

fn lease_gone(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}

impl HealthStore for EtcdStore {
    async fn put(&self, r: StoredReport) -> Result<(), StoreError> {
        let node = r.report.node.clone();
        let key = format!("{}{node}", self.keys);
        let value = serde_json::to_vec(&r).map_err(|e| backend("encoding a report", e))?;
        let mut lease = self.lease(&node).await?;
        let (key_ref, value_ref) = (&key, &value);
        let put = |lease: i64| {
            self.retrying(move || {
                let mut kv = self.kv.clone();
                let (key, value) = (key_ref.clone(), value_ref.clone());
                let options = PutOptions::new().with_lease(lease);
                async move { kv.put(key, value, Some(options)).await }
            })
        };
        let answer = match put(lease.id).await {
            // The lease ran out (this replica was away longer than the TTL)
            // or a replica's revoke took it: start a new one.
            Err(e) if lease_gone(&e) => {
                lock(&self.leases).remove(&node);
                lease = self.lease(&node).await?;
                put(lease.id).await
            }
            other => other,
        }
        .map_err(|e| backend(&format!("writing {key}"), e))?;
        let revision = answer.header().map_or(0, |h| h.revision());
        if lease.renewed.elapsed() >= RENEW_EVERY {
            // A put attaches the key to the lease but does not renew it.
            let id = lease.id;
            let renewed = self
                .retrying(|| {
                    let mut leases = self.client.lease_client();
                    async move { leases.keep_alive(id).await }
                })
                .await;
            match renewed {
                Ok(_) => {
                    if let Some(l) = lock(&self.leases).get_mut(&node) {
                        l.renewed = Instant::now();
                    }
                }
                Err(e) if lease_gone(&e) => {
                    lock(&self.leases).remove(&node);
                }
                Err(e) => return Err(backend("renewing a lease", e)),
            }
        }
        self.remember(&node, revision, r);
        Ok(())
    }

    async fn all(&self) -> Result<Vec<StoredReport>, StoreError> {
        Ok(lock(&self.copy).values().map(|(_, r)| r.clone()).collect())
    }

    fn blind_ms(&self) -> u64 {
        self.blind.since().map_or(0, |t| {
            u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }
    async fn remove(&self, node: &str) -> Result<(), StoreError> {
        let key = format!("{}{node}", self.keys);
        self.kv
            .clone()
            .delete(key.clone(), None)
            .await
            .map_err(|e| backend(&format!("deleting {key}"), e))?;
        let lease = lock(&self.leases).remove(node);
        if let Some(lease) = lease {
            // Nothing else is attached to it; a failed revoke only means it
            // runs out on its own.
            let _ = self.client.lease_client().revoke(lease.id).await;
        }
        lock(&self.copy).remove(node);
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One key-value pair of the prefix as (node, revision, report); a value
/// that is not a report (written by something else) is skipped with a warning.
fn read_entry(keys: &str, kv: &KeyValue) -> Option<(String, i64, StoredReport)> {
    let node = kv.key_str().ok()?.strip_prefix(keys)?.to_string();
    match serde_json::from_slice::<StoredReport>(kv.value()) {
        Ok(report) => Some((node, kv.mod_revision(), report)),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "etcd store: a value under the prefix is not a report; skipped");
            None
        }
    }
}

/// Every report under `keys`, page by page at one revision; and that revision.
async fn list(mut kv: KvClient, keys: &str) -> Result<(Entries, i64), etcd_client::Error> {
    let end = range_end(keys);
    let mut entries = Entries::new();
    let mut start = keys.as_bytes().to_vec();
    let mut revision = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = kv.get(start.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for (node, at, report) in page.kvs().iter().filter_map(|kv| read_entry(keys, kv)) {
            entries.insert(node, (at, report));
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok((entries, revision)),
        }
    }
}

/// Keeps `copy` current: watches the prefix from `revision` on; when the
/// watch breaks (etcd restarted, history compacted past it) lists again and
/// watches from there, with backoff.
async fn watch(
    client: Client,
    kv: KvClient,
    keys: String,
    copy: Arc<Mutex<Entries>>,
    mut revision: i64,
    blind: Arc<Blind>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        let why = watch_from(&client, &keys, &copy, &mut revision, &blind).await;
        Blind::set(&blind.watch_down_since, true);
        tracing::warn!(error = %why, "etcd store: watch ended; listing again");
        if started.elapsed() > MAX_WATCH_BACKOFF {
            backoff = Duration::from_millis(50);
        }
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
            match tokio::time::timeout(ATTEMPT_TIMEOUT, list(kv.clone(), &keys)).await {
                Ok(Ok((entries, at))) => {
                    *lock(&copy) = entries;
                    revision = at;
                    break;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "etcd store: listing failed; retrying"),
                Err(_) => tracing::warn!("etcd store: listing timed out; retrying"),
            }
        }
    }
}

/// Applies watch events to `copy` until the watch ends; why it ended.
async fn watch_from(
    client: &Client,
    keys: &str,
    copy: &Mutex<Entries>,
    revision: &mut i64,
    blind: &Blind,
) -> String {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*revision + 1);
    let mut stream = match client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .watch(keys, Some(options))
        .await
    {
        Ok(s) => s,
        Err(e) => return format!("starting the watch: {e}"),
    };
    // Listed and watching again: this replica sees every write from here.
    Blind::set(&blind.watch_down_since, false);
    loop {
        let answer = match stream.message().await {
            Ok(Some(a)) => a,
            Ok(None) => return "the watch stream closed".to_string(),
            Err(e) => return e.to_string(),
        };
        if answer.canceled() {
            return format!(
                "etcd cancelled the watch: {} (compacted at revision {})",
                answer.cancel_reason(),
                answer.compact_revision()
            );
        }
        let mut copy = lock(copy);
        for event in answer.events() {
            let Some(pair) = event.kv() else { continue };
            *revision = (*revision).max(pair.mod_revision());
            match event.event_type() {
                EventType::Put => {
                    if let Some((node, at, report)) = read_entry(keys, pair) {
                        if copy.get(&node).is_none_or(|(known, _)| *known < at) {
                            copy.insert(node, (at, report));
                        }
                    }
                }
                EventType::Delete => {
                    if let Some(node) = pair.key_str().ok().and_then(|k| k.strip_prefix(keys)) {
                        if copy
                            .get(node)
                            .is_some_and(|(known, _)| *known < pair.mod_revision())
                        {
                            copy.remove(node);
                        }
                    }
                }
            }
        }
    }
}

/// Compacts etcd's history every [`COMPACT_EVERY`] up to the revision seen
/// one period earlier (replicas doing the same is harmless).
async fn compact(mut kv: KvClient) {
    let mut previous: Option<i64> = None;
    let mut tick = tokio::time::interval(COMPACT_EVERY);
    loop {
        tick.tick().await;
        let now = match kv
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
        {
            Ok(answer) => answer.header().map_or(0, |h| h.revision()),
            Err(e) => {
                tracing::debug!(error = %e, "etcd store: reading the revision failed");
                continue;
            }
        };
        if let Some(at) = previous.filter(|&at| at > 0) {
            match kv.compact(at, Some(CompactionOptions::new())).await {
                Ok(_) => tracing::debug!(revision = at, "etcd store: compacted history"),
                Err(e) if e.to_string().contains("compacted") => {}
                Err(e) => tracing::warn!(error = %e, "etcd store: compaction failed"),
            }
        }
        previous = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_end_covers_the_prefix_and_nothing_after() {
        assert_eq!(range_end("/a/edges/"), b"/a/edges0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(range_end(""), vec![0]);
    }
}
