//! Managed handles and their [`HandleManager`]: long-lived things a replica opens on
//! behalf of tool calls (file handles, dedicated Redis connections), created once per
//! kind and id by a registered [`Factory`], shared by reference count, cleaned up when
//! idle and at shutdown, each exactly once. (Not MCP resources, which are
//! `crate::mcp::handler`'s; the `resources.*` settings and `resources_*` figures keep
//! their names.)
//!
//! A caller holds a handle through a [`Borrowed`]: dropping it (also on an error,
//! a cancelled future or a panic in the caller) gives the reference back. The idle sweep
//! ([`HandleManager::sweep`], run by [`HandleManager::run_sweeper`]) cleans handles
//! nobody references that were idle longer than the configured timeout; shutdown cleans
//! the rest. The kinds of this crate are in [`mod@file`] and [`redis`].
//!
//! Ids come from clients, so they are bounded: ids longer than [`MAX_ID_BYTES`] are
//! refused, and the kind's [`Factory::key`] turns an id into the key of what it names
//! (every spelling of one file is one handle). At most `max_per_kind` handles of one
//! kind exist at once, and at most `max_per_principal` of them are charged to one
//! principal (the one whose call opened it; anyone may then share it), so one caller
//! cannot take every place. A call beyond either bound first closes the least recently
//! used idle handle in its way (its principal's own, or any of the kind); only when
//! every one in its way is in use is it refused.

mod figures;
pub mod file;
pub mod redis;

use std::{
    any::Any,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::OnceCell, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Longest handle id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Why a managed handle could not be had.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    /// No factory is registered for the kind.
    #[error("unknown resource kind `{0}`")]
    UnknownKind(String),
    /// The id is not acceptable for the kind (too long, outside a root, ...).
    #[error("invalid {kind} id: {reason}")]
    InvalidId {
        /// The resource kind.
        kind: &'static str,
        /// What is wrong with the id.
        reason: String,
    },
    /// The factory failed to initialize the resource.
    #[error("{kind} `{id}` could not be opened: {reason}")]
    Init {
        /// The resource kind.
        kind: &'static str,
        /// The id asked for (bounded by [`MAX_ID_BYTES`]).
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// `max_per_kind` resources of this kind are open and referenced.
    #[error("too many open {0} resources; try again when some are released")]
    Exhausted(&'static str),
    /// The caller's principal holds its share (`max_per_principal`) of this kind, all of
    /// them in use.
    #[error(
        "this caller holds its share of open {0} resources, all in use; try again when \
         some are released"
    )]
    ShareExhausted(&'static str),
    /// The resource exists but is of another type than the caller asked for.
    #[error("resource kind `{0}` holds another type")]
    WrongType(&'static str),
    /// The manager is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A managed handle: what the manager can hold.
#[async_trait]
pub trait Handle: Send + Sync + 'static {
    /// Releases what the handle holds (closes a file, a connection). Called exactly
    /// once, by the idle sweep or at shutdown, when no [`Borrowed`] refers to it any more
    /// (or at shutdown, whatever the references).
    async fn cleanup(&self);
}

/// Makes the handles of one kind.
#[async_trait]
pub trait Factory: Send + Sync + 'static {
    /// What it makes.
    type Output: Handle;

    /// The kind's name: bounded, a metric label.
    fn kind(&self) -> &'static str;

    /// The key of what `id` names: ids with one key share one resource, created from the
    /// key. The default is the id itself.
    ///
    /// # Errors
    /// [`HandleError::InvalidId`] for an id the kind refuses.
    fn key(&self, id: &str) -> Result<String, HandleError> {
        Ok(id.to_owned())
    }

    /// Opens the handle `id`.
    ///
    /// # Errors
    /// [`HandleError::InvalidId`] for an id the kind refuses, [`HandleError::Init`]
    /// when opening fails; nothing is kept either way.
    async fn create(&self, id: &str) -> Result<Self::Output, HandleError>;
}

/// A factory with its output type erased.
#[async_trait]
trait ErasedFactory: Send + Sync {
    fn key(&self, id: &str) -> Result<String, HandleError>;
    async fn create(&self, id: &str) -> Result<Arc<dyn ErasedHandle>, HandleError>;
}

#[async_trait]
impl<F: Factory> ErasedFactory for F {
    fn key(&self, id: &str) -> Result<String, HandleError> {
        Factory::key(self, id)
    }
    async fn create(&self, id: &str) -> Result<Arc<dyn ErasedHandle>, HandleError> {
        Ok(Arc::new(Factory::create(self, id).await?))
    }
}

/// A handle seen as [`Any`] (for the typed lease) and as a [`Handle`].
trait ErasedHandle: Send + Sync {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn cleanup(&self) -> futures::future::BoxFuture<'_, ()>;
}

impl<R: Handle> ErasedHandle for R {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn cleanup(&self) -> futures::future::BoxFuture<'_, ()> {
        Handle::cleanup(self)
    }
}

/// One handle's slot: created once, then shared.
struct Entry {
    kind: &'static str,
    /// The principal whose call opened it: its share is charged.
    principal: Arc<str>,
    cell: OnceCell<Arc<dyn ErasedHandle>>,
    refs: AtomicUsize,
    /// Milliseconds since the manager's epoch of the last lease's end.
    last_access: AtomicU64,
    cleaned: AtomicBool,
}

impl Entry {
    /// Open, and nobody references it: it may be closed to make room.
    fn idle(&self) -> bool {
        self.refs.load(Ordering::Acquire) == 0 && self.cell.initialized()
    }

    /// Cleans the resource if it was created and nobody cleaned it yet; whether this
    /// call did.
    async fn cleanup(&self, counters: &KindCounters) -> bool {
        let Some(resource) = self.cell.get() else {
            return false;
        };
        if self.cleaned.swap(true, Ordering::AcqRel) {
            return false;
        }
        resource.cleanup().await;
        counters.cleaned.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[derive(Default)]
struct KindCounters {
    created: AtomicU64,
    cleaned: AtomicU64,
    failed: AtomicU64,
}

struct Kind {
    factory: Arc<dyn ErasedFactory>,
    counters: Arc<KindCounters>,
}

struct Inner {
    kinds: HashMap<&'static str, Kind>,
    entries: Mutex<Entries>,
    idle_timeout: Duration,
    max_per_kind: usize,
    max_per_principal: usize,
    epoch: Instant,
    closed: AtomicBool,
}

/// The map of open resources, by kind and key.
type Entries = HashMap<(&'static str, String), Arc<Entry>>;

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Makes room for one more resource of `kind` charged to `principal`: within its
    /// share and within the kind's bound, closing (removing from `entries`, into
    /// `evicted`) the least recently used idle resource in the way of each.
    fn make_room(
        &self,
        entries: &mut Entries,
        kind: &'static str,
        principal: &str,
        evicted: &mut Vec<Arc<Entry>>,
    ) -> Result<(), HandleError> {
        let of_kind = |e: &Entry| e.kind == kind;
        let charged = |e: &Entry| e.kind == kind && *e.principal == *principal;
        if entries.values().filter(|e| charged(e)).count() >= self.max_per_principal {
            // Without a share of its own (the whole bound), the kind is what is full.
            let full = if self.max_per_principal < self.max_per_kind {
                HandleError::ShareExhausted(kind)
            } else {
                HandleError::Exhausted(kind)
            };
            evicted.push(Self::evict_oldest_idle(entries, charged).ok_or(full)?);
        }
        if entries.values().filter(|e| of_kind(e)).count() >= self.max_per_kind {
            evicted.push(
                Self::evict_oldest_idle(entries, of_kind).ok_or(HandleError::Exhausted(kind))?,
            );
        }
        Ok(())
    }

    /// Removes the least recently used idle entry that `eligible` accepts. Under the map's
    /// lock, as references are taken, so no caller is acquiring it.
    fn evict_oldest_idle(
        entries: &mut Entries,
        eligible: impl Fn(&Entry) -> bool,
    ) -> Option<Arc<Entry>> {
        let key = entries
            .iter()
            .filter(|(_, e)| eligible(e) && e.idle())
            .min_by_key(|(_, e)| e.last_access.load(Ordering::Acquire))
            .map(|(key, _)| key.clone())?;
        entries.remove(&key)
    }

    /// Removes `key`'s entry if it is still `entry` and unreferenced.
    fn forget(&self, key: &(&'static str, String), entry: &Arc<Entry>) -> bool {
        let mut entries = self.entries.lock().expect("resource map");
        let ours = entries.get(key).is_some_and(|e| Arc::ptr_eq(e, entry));
        if ours && entry.refs.load(Ordering::Acquire) == 0 {
            entries.remove(key);
            true
        } else {
            false
        }
    }
}

/// Registers factories, then hands out managed handles by kind and id. Cheap to clone.
#[derive(Clone)]
pub struct HandleManager {
    inner: Arc<Inner>,
}

/// Builds a [`HandleManager`].
pub struct HandleManagerBuilder {
    kinds: HashMap<&'static str, Kind>,
    idle_timeout: Duration,
    max_per_kind: usize,
    max_per_principal: Option<usize>,
}

impl HandleManagerBuilder {
    /// Registers `factory` for its kind (a later registration of the same kind wins).
    #[must_use]
    pub fn register<F: Factory>(mut self, factory: F) -> Self {
        let kind = factory.kind();
        self.kinds.insert(
            kind,
            Kind {
                factory: Arc::new(factory),
                counters: Arc::default(),
            },
        );
        self
    }

    /// At most `max` resources of one kind charged to one principal (default: the
    /// kind's whole bound).
    #[must_use]
    pub fn per_principal(mut self, max: usize) -> Self {
        self.max_per_principal = Some(max);
        self
    }

    /// The manager.
    pub fn build(self) -> HandleManager {
        let max_per_kind = self.max_per_kind.max(1);
        HandleManager {
            inner: Arc::new(Inner {
                kinds: self.kinds,
                entries: Mutex::default(),
                idle_timeout: self.idle_timeout,
                max_per_kind,
                max_per_principal: self
                    .max_per_principal
                    .unwrap_or(max_per_kind)
                    .clamp(1, max_per_kind),
                epoch: Instant::now(),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

/// A reference to a handle of type `R`; dropping it releases the reference.
pub struct Borrowed<R> {
    resource: Arc<R>,
    entry: Arc<Entry>,
    inner: Arc<Inner>,
}

impl<R> std::ops::Deref for Borrowed<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.resource
    }
}

impl<R> Drop for Borrowed<R> {
    fn drop(&mut self) {
        release(&self.inner, &self.entry);
    }
}

fn release(inner: &Inner, entry: &Entry) {
    entry.last_access.store(inner.now_ms(), Ordering::Release);
    entry.refs.fetch_sub(1, Ordering::AcqRel);
}

/// Gives a reference back if the lease is never built (the creating future failed or
/// was dropped).
struct Pending<'a> {
    inner: &'a Arc<Inner>,
    entry: Option<Arc<Entry>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            release(self.inner, &entry);
        }
    }
}

/// Figures of one kind, for `resource_stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct KindStats {
    /// Resources open now.
    pub active: u64,
    /// Borrows held now, over all of them.
    pub references: u64,
    /// Open resources nobody references (the sweep cleans them once idle long enough).
    pub idle: u64,
    /// Resources created since start.
    pub created_total: u64,
    /// Resources cleaned up since start.
    pub cleaned_total: u64,
    /// Creations that failed since start.
    pub failed_total: u64,
}

impl HandleManager {
    /// A builder: resources idle (unreferenced) longer than `idle_timeout` are cleaned by
    /// the sweep; at most `max_per_kind` of each kind exist at once.
    pub fn builder(idle_timeout: Duration, max_per_kind: usize) -> HandleManagerBuilder {
        HandleManagerBuilder {
            kinds: HashMap::new(),
            idle_timeout,
            max_per_kind,
            max_per_principal: None,
        }
    }

    /// [`HandleManager::get_for`] on the replica's own behalf (a principal no caller
    /// can be: principals are never empty).
    ///
    /// # Errors
    /// See [`HandleError`].
    ///
    /// # Cancel safety
    /// As [`HandleManager::get_for`].
    pub async fn get<R: Handle>(&self, kind: &str, id: &str) -> Result<Borrowed<R>, HandleError> {
        self.get_for("", kind, id).await
    }

    /// The resource `id` of `kind` for a call of `principal`: the open one (whoever
    /// opened it), or a new one from the kind's factory, charged to `principal`'s share.
    /// Ids with one [key](Factory::key) share one resource; concurrent first uses create
    /// it once; a failed creation keeps nothing. Beyond the principal's share or the
    /// kind's bound, the least recently used idle resource in the way is closed first.
    ///
    /// # Errors
    /// See [`HandleError`].
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call releases its reference; a creation it started is
    /// finished by another caller of the same id, or not at all.
    pub async fn get_for<R: Handle>(
        &self,
        principal: &str,
        kind: &str,
        id: &str,
    ) -> Result<Borrowed<R>, HandleError> {
        let inner = &self.inner;
        let Some((&kind, registered)) = inner.kinds.get_key_value(kind) else {
            let shown: String = kind.chars().take(64).collect();
            return Err(HandleError::UnknownKind(shown));
        };
        if id.len() > MAX_ID_BYTES {
            return Err(HandleError::InvalidId {
                kind,
                reason: format!("longer than {MAX_ID_BYTES} bytes"),
            });
        }
        let key = (kind, registered.factory.key(id)?);
        let mut evicted = Vec::new();
        let entry = (|| {
            let mut entries = inner.entries.lock().expect("resource map");
            if inner.closed.load(Ordering::SeqCst) {
                return Err(HandleError::ShuttingDown);
            }
            let entry = match entries.get(&key) {
                Some(entry) => entry.clone(),
                None => {
                    inner.make_room(&mut entries, kind, principal, &mut evicted)?;
                    let entry = Arc::new(Entry {
                        kind,
                        principal: principal.into(),
                        cell: OnceCell::new(),
                        refs: AtomicUsize::new(0),
                        last_access: AtomicU64::new(inner.now_ms()),
                        cleaned: AtomicBool::new(false),
                    });
                    entries.insert(key.clone(), entry.clone());
                    entry
                }
            };
            // Taken while the map is locked: the sweep and the eviction check references
            // under the same lock, so they never take an entry a caller is acquiring.
            entry.refs.fetch_add(1, Ordering::AcqRel);
            Ok(entry)
        })();
        // Closed whether or not this call got its place.
        for closed in &evicted {
            closed.cleanup(&registered.counters).await;
        }
        let entry = entry?;
        let mut pending = Pending {
            inner,
            entry: Some(entry.clone()),
        };
        let created = entry
            .cell
            .get_or_try_init(|| async {
                let made = registered.factory.create(&key.1).await;
                let counter = match made {
                    Ok(_) => &registered.counters.created,
                    Err(_) => &registered.counters.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                made
            })
            .await;
        let resource = match created {
            Ok(resource) => resource.clone(),
            Err(e) => {
                drop(pending);
                inner.forget(&key, &entry);
                return Err(e);
            }
        };
        pending.entry = None;
        let resource = resource.as_any().downcast::<R>().map_err(|_| {
            release(inner, &entry);
            HandleError::WrongType(kind)
        })?;
        if inner.closed.load(Ordering::SeqCst) {
            // Shutdown began while this call waited for the creation, and may have
            // found the entry still empty: clean it here (once, whoever comes first).
            entry.cleanup(&registered.counters).await;
            release(inner, &entry);
            return Err(HandleError::ShuttingDown);
        }
        Ok(Borrowed {
            resource,
            entry,
            inner: inner.clone(),
        })
    }

    /// Cleans every resource nobody references that was idle longer than the timeout, as
    /// of now; returns how many it cleaned. Run it on a schedule ([`run_sweeper`]) or by
    /// hand.
    ///
    /// [`run_sweeper`]: HandleManager::run_sweeper
    pub async fn sweep(&self) -> usize {
        let inner = &self.inner;
        let now = inner.now_ms();
        let timeout = inner.idle_timeout.as_millis() as u64;
        let idle: Vec<Arc<Entry>> = {
            let mut entries = inner.entries.lock().expect("resource map");
            let mut idle = Vec::new();
            entries.retain(|_, entry| {
                let unused = entry.refs.load(Ordering::Acquire) == 0
                    && entry.cell.initialized()
                    && now.saturating_sub(entry.last_access.load(Ordering::Acquire)) >= timeout;
                if unused {
                    idle.push(entry.clone());
                }
                !unused
            });
            idle
        };
        for entry in &idle {
            entry.cleanup(&inner.kinds[entry.kind].counters).await;
        }
        idle.len()
    }

    /// Sweeps every `interval` until `stop` fires, then cleans everything
    /// ([`shutdown`](HandleManager::shutdown)).
    pub async fn run_sweeper(self, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {
                    let cleaned = self.sweep().await;
                    if cleaned > 0 {
                        tracing::debug!(cleaned, "idle resources cleaned");
                    }
                }
            }
        }
        self.shutdown().await;
    }

    /// Refuses new leases and cleans every resource once, referenced or not; returns
    /// how many it cleaned. Calling it again cleans nothing more.
    pub async fn shutdown(&self) -> usize {
        let inner = &self.inner;
        let all: Vec<Arc<Entry>> = {
            let mut entries = inner.entries.lock().expect("resource map");
            inner.closed.store(true, Ordering::SeqCst);
            entries.drain().map(|(_, e)| e).collect()
        };
        let mut cleaned = 0;
        for entry in &all {
            cleaned += usize::from(entry.cleanup(&inner.kinds[entry.kind].counters).await);
        }
        cleaned
    }

    /// Figures by kind (every registered kind, in name order).
    pub fn stats(&self) -> BTreeMap<&'static str, KindStats> {
        let inner = &self.inner;
        let mut stats: BTreeMap<&'static str, KindStats> = inner
            .kinds
            .iter()
            .map(|(&kind, k)| {
                let c = &k.counters;
                let figures = KindStats {
                    created_total: c.created.load(Ordering::Relaxed),
                    cleaned_total: c.cleaned.load(Ordering::Relaxed),
                    failed_total: c.failed.load(Ordering::Relaxed),
                    ..KindStats::default()
                };
                (kind, figures)
            })
            .collect();
        let entries = inner.entries.lock().expect("resource map");
        for entry in entries.values().filter(|e| e.cell.initialized()) {
            let s = stats.entry(entry.kind).or_default();
            let refs = entry.refs.load(Ordering::Acquire) as u64;
            s.active += 1;
            s.references += refs;
            if refs == 0 {
                s.idle += 1;
            }
        }
        stats
    }

    /// Registers the `resources_*` series (one per kind) with `metrics`, read from
    /// [`HandleManager::stats`] at each scrape.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.register_collector(figures::HandleFigures(self.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// A resource that counts its cleanups; ids starting with `bad` fail to open.
    struct Probe {
        cleanups: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Handle for Probe {
        async fn cleanup(&self) {
            self.cleanups.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Another resource type, which no factory makes.
    struct Other;

    #[async_trait]
    impl Handle for Other {
        async fn cleanup(&self) {}
    }

    #[derive(Default, Clone)]
    struct ProbeFactory {
        created: Arc<AtomicU32>,
        cleanups: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Factory for ProbeFactory {
        type Output = Probe;
        fn kind(&self) -> &'static str {
            "probe"
        }
        async fn create(&self, id: &str) -> Result<Probe, HandleError> {
            // A real await point, so concurrent first uses overlap.
            tokio::time::sleep(Duration::from_millis(10)).await;
            if id.starts_with("bad") {
                return Err(HandleError::Init {
                    kind: "probe",
                    id: id.to_owned(),
                    reason: "refused".to_owned(),
                });
            }
            self.created.fetch_add(1, Ordering::SeqCst);
            Ok(Probe {
                cleanups: self.cleanups.clone(),
            })
        }
    }

    fn manager(max: usize) -> (HandleManager, ProbeFactory) {
        let factory = ProbeFactory::default();
        let manager = HandleManager::builder(Duration::from_secs(60), max)
            .register(factory.clone())
            .build();
        (manager, factory)
    }

    #[tokio::test(start_paused = true)]
    async fn register_metrics_exposes_one_series_per_kind() {
        let empty = Metrics::new("r", "memory");
        HandleManager::builder(Duration::from_secs(60), 8)
            .build()
            .register_metrics(&empty);
        let text = empty.render();
        assert!(!text.contains("resources_"), "no kind, no series: {text}");

        let (manager, _) = manager(8);
        let metrics = Metrics::new("r", "memory");
        manager.register_metrics(&metrics);
        let _lease = manager.get::<Probe>("probe", "a").await.unwrap();
        assert!(manager.get::<Probe>("probe", "bad").await.is_err());
        let text = metrics.render();
        for line in [
            "# TYPE stateful_mcp_resources_active gauge\n",
            "stateful_mcp_resources_active{replica=\"r\",kind=\"probe\"} 1.0\n",
            "stateful_mcp_resources_references{replica=\"r\",kind=\"probe\"} 1.0\n",
            "stateful_mcp_resources_idle{replica=\"r\",kind=\"probe\"} 0.0\n",
            "# TYPE stateful_mcp_resources_created counter\n",
            "stateful_mcp_resources_created_total{replica=\"r\",kind=\"probe\"} 1\n",
            "stateful_mcp_resources_failed_total{replica=\"r\",kind=\"probe\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_uses_create_once_and_count_references() {
        let (manager, factory) = manager(8);
        let leases =
            futures::future::join_all((0..5).map(|_| manager.get::<Probe>("probe", "a"))).await;
        assert_eq!(factory.created.load(Ordering::SeqCst), 1);
        let stats = &manager.stats()["probe"];
        assert_eq!((stats.active, stats.references, stats.idle), (1, 5, 0));
        drop(leases);
        let stats = &manager.stats()["probe"];
        assert_eq!((stats.active, stats.references, stats.idle), (1, 0, 1));
        // Reused, not created again.
        let _again = manager.get::<Probe>("probe", "a").await.unwrap();
        assert_eq!(factory.created.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_cleans_only_unreferenced_resources_idle_past_the_timeout() {
        let (manager, factory) = manager(8);
        let held = manager.get::<Probe>("probe", "held").await.unwrap();
        drop(manager.get::<Probe>("probe", "idle").await.unwrap());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(manager.sweep().await, 0, "not idle long enough");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(manager.sweep().await, 1, "the idle one only");
        assert_eq!(factory.cleanups.load(Ordering::SeqCst), 1);
        drop(held);
        assert_eq!(manager.sweep().await, 0, "just released: not idle yet");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(manager.sweep().await, 1);
        let stats = &manager.stats()["probe"];
        assert_eq!(
            (stats.active, stats.created_total, stats.cleaned_total),
            (0, 2, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cleans_every_resource_exactly_once() {
        let (manager, factory) = manager(8);
        let held = manager.get::<Probe>("probe", "held").await.unwrap();
        drop(manager.get::<Probe>("probe", "idle").await.unwrap());
        tokio::time::advance(Duration::from_secs(61)).await;
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(
            manager
                .clone()
                .run_sweeper(Duration::from_secs(1), stop.clone()),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            factory.cleanups.load(Ordering::SeqCst),
            1,
            "the idle one, swept"
        );
        stop.cancel();
        sweeper.await.unwrap();
        assert_eq!(
            factory.cleanups.load(Ordering::SeqCst),
            2,
            "the held one, at shutdown"
        );
        assert_eq!(manager.shutdown().await, 0, "nothing twice");
        drop(held);
        assert_eq!(factory.cleanups.load(Ordering::SeqCst), 2);
        assert!(matches!(
            manager.get::<Probe>("probe", "new").await,
            Err(HandleError::ShuttingDown)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_released_on_error_cancellation_and_panic() {
        let (manager, _) = manager(8);
        let refs = |m: &HandleManager| m.stats()["probe"].references;
        // Error: the caller returns early with `?` while holding a lease.
        let failing = async {
            let _lease = manager.get::<Probe>("probe", "a").await?;
            Err::<(), _>(HandleError::ShuttingDown)
        };
        assert!(failing.await.is_err());
        assert_eq!(refs(&manager), 0);
        // Cancellation: during the creation, and while holding the lease.
        let slow = manager.get::<Probe>("probe", "b");
        assert!(
            tokio::time::timeout(Duration::from_millis(1), slow)
                .await
                .is_err()
        );
        let held = {
            let m = manager.clone();
            tokio::spawn(async move {
                let _lease = m.get::<Probe>("probe", "a").await.unwrap();
                std::future::pending::<()>().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(refs(&manager), 1);
        held.abort();
        let _ = held.await;
        assert_eq!(refs(&manager), 0);
        // Panic in the caller.
        let m = manager.clone();
        let panicked = tokio::spawn(async move {
            let _lease = m.get::<Probe>("probe", "a").await.unwrap();
            panic!("the caller fails");
        });
        assert!(panicked.await.is_err());
        assert_eq!(refs(&manager), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_principal_cannot_take_every_place_and_idle_ones_make_room() {
        let factory = ProbeFactory::default();
        let manager = HandleManager::builder(Duration::from_secs(60), 4)
            .per_principal(2)
            .register(factory.clone())
            .build();
        let get = |who: &'static str, id: &'static str| manager.get_for::<Probe>(who, "probe", id);
        let a = get("alice", "a").await.unwrap();
        let b = get("alice", "b").await.unwrap();
        assert_eq!(
            get("alice", "c").await.err(),
            Some(HandleError::ShareExhausted("probe")),
            "both of hers are in use"
        );
        // Sharing what is open is free, whoever opened it.
        let shared = get("bob", "a").await.unwrap();
        drop((a, shared));
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(b);
        // Her least recently used idle one makes room for her next.
        let _c = get("alice", "c").await.unwrap();
        assert_eq!(factory.cleanups.load(Ordering::SeqCst), 1, "`a` closed");
        let _x = get("bob", "x").await.unwrap();
        let _y = get("bob", "y").await.unwrap();
        // The kind is full (b idle, c, x, y): an idle one of anyone's makes room.
        let _z = get("carol", "z").await.unwrap();
        assert_eq!(factory.cleanups.load(Ordering::SeqCst), 2, "`b` closed");
        assert_eq!(
            get("dave", "w").await.err(),
            Some(HandleError::Exhausted("probe")),
            "every open one is in use"
        );
        assert_eq!(manager.stats()["probe"].active, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_keep_nothing_and_the_bounds_hold() {
        let (manager, factory) = manager(2);
        let err = manager.get::<Probe>("probe", "bad-1").await.err().unwrap();
        assert!(
            err.to_string().contains("could not be opened: refused"),
            "{err}"
        );
        let stats = &manager.stats()["probe"];
        assert_eq!((stats.active, stats.failed_total), (0, 1));
        let _a = manager.get::<Probe>("probe", "a").await.unwrap();
        let _b = manager.get::<Probe>("probe", "b").await.unwrap();
        assert_eq!(
            manager.get::<Probe>("probe", "c").await.err(),
            Some(HandleError::Exhausted("probe"))
        );
        assert!(matches!(
            manager
                .get::<Probe>("probe", &"x".repeat(MAX_ID_BYTES + 1))
                .await,
            Err(HandleError::InvalidId { .. })
        ));
        assert!(matches!(
            manager.get::<Probe>("nope", "a").await,
            Err(HandleError::UnknownKind(_))
        ));
        assert!(matches!(
            manager.get::<Other>("probe", "a").await,
            Err(HandleError::WrongType("probe"))
        ));
        assert_eq!(factory.created.load(Ordering::SeqCst), 2);
    }
}
