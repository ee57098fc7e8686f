//! The Kubernetes pod cache: a watcher on this node's pods only (`spec.nodeName=<node>`, kube's default
//! backoff) keeps a `PodIndex` current, and `PodCache` answers the monitor's lookups from memory.
//! The only module that talks to the API server. It never lists the cluster's pods, never re-lists on a
//! cache miss, and never makes a tick wait: a tick takes a read lock that writers hold for microseconds.

use crate::resource::index::PodIndex;
use crate::resource::jupyterhub::HubUserPolicy;
use crate::resource::pods::{MetadataSync, PodMeta, PodMetadata};
use crate::resource::record::{pod_record, pod_uid, PodRecord};
use crate::units::{ContainerId, PodUid};
use ::kube::client::{Body, ClientBuilder};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::utils::Backoff;
use ::kube::runtime::watcher;
use ::kube::runtime::watcher::{DefaultBackoff, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Api, Client, Config};
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Why no client could be made. Printed once; the exporter keeps measuring without names.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no in-cluster Kubernetes configuration: {0}")]
    InCluster(#[source] ::kube::config::InClusterError),
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

impl KubeError {
    pub fn kind(&self) -> &'static str {
        match self {
            KubeError::InCluster(_) => "incluster_config",
            KubeError::Kubeconfig { .. } => "kubeconfig",
            KubeError::Client(_) => "client",
        }
    }
}

/// Short, stable name of a list/watch error for the errors self-metric (never the error text).
pub(crate) fn watch_error_kind(err: &watcher::Error) -> &'static str {
    match err {
        watcher::Error::InitialListFailed(_) => "list_failed",
        watcher::Error::WatchStartFailed(::kube::Error::Api(s)) if s.code == 410 => "gone",
        watcher::Error::WatchStartFailed(_) => "watch_start_failed",
        watcher::Error::WatchError(s) if s.code == 410 => "gone",
        watcher::Error::WatchError(_) => "watch_error",
        watcher::Error::WatchFailed(_) => "watch_failed",
        watcher::Error::NoResourceVersion => "no_resource_version",
    }
}

/// Retry delays after a list/watch error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBackoff {
    /// kube's default (client-go's): 0.8 s doubling to 30 s, with jitter, reset after 120 s of calm.
    Default,
    /// Exponential without jitter, for tests that compress minutes of outage into seconds.
    Exponential { first: Duration, max: Duration },
}

/// Durations of the watch loop. Production uses `Default`; tests shrink them (an outage of minutes
/// is the same state machine as one of seconds, with every delay scaled down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTuning {
    pub backoff: RetryBackoff,
    /// How long a deleted pod's names stay (longer than the ledger's grace period).
    pub deleted_retention: Duration,
    /// How often deleted pods past their retention are dropped.
    pub prune_every: Duration,
}

impl Default for WatchTuning {
    fn default() -> Self {
        WatchTuning {
            backoff: RetryBackoff::Default,
            deleted_retention: Duration::from_secs(600),
            prune_every: Duration::from_secs(30),
        }
    }
}

/// Pod metadata of this node, shared between the watcher task (writer) and the monitor (reader).
#[derive(Debug, Default)]
pub struct PodCache {
    index: RwLock<PodIndex>,
    /// Pods of a (re-)list in progress; only the watcher task touches it.
    relist: Mutex<Option<Vec<PodRecord>>>,
    /// A complete list has been applied since the last `Init`.
    listed: AtomicBool,
    /// The last API response was a success and no list/watch error came after it.
    link_ok: AtomicBool,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Which pods name a JupyterHub user (`--jupyterhub-namespace`, `--hub-user-label`).
    hub_users: HubUserPolicy,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodCache {
    #[cfg(test)]
    /// A cache whose pods name no JupyterHub user (see `with_hub_users`).
    pub(crate) fn new() -> PodCache {
        PodCache::default()
    }

    /// A cache whose pods in the policy's namespaces name their JupyterHub user.
    pub fn with_hub_users(hub_users: HubUserPolicy) -> PodCache {
        PodCache {
            hub_users,
            ..PodCache::default()
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, PodIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, PodIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the index (tests, benchmarks).
    pub(crate) fn with_index<R>(&self, f: impl FnOnce(&PodIndex) -> R) -> R {
        f(&self.read())
    }

    /// Count an error of `kind` and mark the link down.
    pub fn note_error(&self, kind: &'static str) {
        self.link_ok.store(false, Ordering::Relaxed);
        *lock(&self.errors).entry(kind).or_insert(0) += 1;
    }

    fn note_response(&self, success: bool) {
        self.link_ok.store(success, Ordering::Relaxed);
    }

    /// Apply one watcher event at monotonic time `now`. Pods this node should not have are counted
    /// and skipped; a complete (re-)list replaces the index in one step at `InitDone`.
    pub(crate) fn apply_event(&self, event: Event<Pod>, node: &str, now: Instant) {
        let record = |pod: &Pod| match pod_record(pod, node, &self.hub_users) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!(error = %e, "pod skipped");
                self.count(e.kind());
                None
            }
        };
        match event {
            Event::Init => {
                self.listed.store(false, Ordering::Relaxed);
                *lock(&self.relist) = Some(Vec::new());
            }
            Event::InitApply(pod) => {
                if let Some(r) = record(&pod) {
                    lock(&self.relist).get_or_insert_with(Vec::new).push(r);
                }
            }
            Event::InitDone => {
                let listed = lock(&self.relist).take().unwrap_or_default();
                let n = listed.len();
                self.write().replace_all(listed, now);
                self.link_ok.store(true, Ordering::Relaxed);
                self.listed.store(true, Ordering::Relaxed);
                tracing::info!(pods = n, node, "pod metadata in sync");
            }
            Event::Apply(pod) => {
                self.link_ok.store(true, Ordering::Relaxed);
                if let Some(r) = record(&pod) {
                    self.write().apply(r);
                }
            }
            Event::Delete(pod) => {
                self.link_ok.store(true, Ordering::Relaxed);
                match pod_uid(&pod) {
                    Ok(uid) => self.write().delete(&uid, now),
                    Err(e) => self.count(e.kind()),
                }
            }
        }
    }

    fn count(&self, kind: &'static str) {
        *lock(&self.errors).entry(kind).or_insert(0) += 1;
    }

    /// Drop deleted pods past their retention.
    pub(crate) fn prune(&self, now: Instant, retention: Duration) -> usize {
        self.write().prune(now, retention)
    }
}

impl PodMetadata for PodCache {
    fn pod(&self, uid: &PodUid) -> Option<PodMeta> {
        self.read().pod(uid).cloned()
    }

    fn container_name(&self, uid: &PodUid, id: &ContainerId) -> Option<String> {
        self.read().container_name(uid, id).map(str::to_string)
    }

    fn sync_status(&self) -> Option<MetadataSync> {
        Some(MetadataSync {
            synced: self.listed.load(Ordering::Relaxed) && self.link_ok.load(Ordering::Relaxed),
            pods: self.read().len(),
            errors: lock(&self.errors).clone(),
        })
    }
}

/// A client from `kubeconfig`, or from the pod's service account (`None`). kube re-reads a rotated
/// service-account token by itself. Every API response passes through a layer that tells the cache
/// whether the API server answered, so `synced` turns 1 as soon as a watch is re-established.
/// Must run inside the tokio runtime (the client spawns its buffer task).
pub async fn connect(
    kubeconfig: Option<&Path>,
    cache: &Arc<PodCache>,
) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        None => Config::incluster().map_err(KubeError::InCluster)?,
        Some(path) => {
            let wrap = |source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(wrap)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(wrap)?
        }
    };
    let builder = ClientBuilder::try_from(config).map_err(KubeError::Client)?;
    let cache = cache.clone();
    let observe = tower_layer::layer_fn(move |inner| Observe {
        inner,
        cache: cache.clone(),
    });
    Ok(builder.with_layer(&observe).build())
}

/// Keep `cache` in sync with this node's pods until the task is dropped. Errors are counted and
/// retried with backoff; they never end the loop.
pub async fn watch_pods(client: Client, node: String, cache: Arc<PodCache>, tuning: WatchTuning) {
    let api: Api<Pod> = Api::all(client);
    // Lists with resourceVersion=0 are served from the API server's watch cache (as client-go's
    // informers and the kubelet do), not by a quorum read of etcd: kinder when every node re-lists.
    // No pages: one node's pods fit one response, and kube drops resourceVersion=0 when paginating.
    let mut config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .any_semantic();
    config.page_size = None;
    let backoff: Box<dyn Backoff> = match tuning.backoff {
        RetryBackoff::Default => Box::new(DefaultBackoff::default()),
        RetryBackoff::Exponential { first, max } => Box::new(Doubling::new(first, max)),
    };
    let mut events = watcher(api, config).backoff(backoff).boxed();
    let mut prune = tokio::time::interval(tuning.prune_every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(event)) => cache.apply_event(event, &node, Instant::now()),
                Some(Err(err)) => {
                    let kind = watch_error_kind(&err);
                    let was_ok = cache.sync_status().is_some_and(|s| s.synced);
                    cache.note_error(kind);
                    if was_ok {
                        tracing::warn!(kind, error = %err, "pod metadata watch failed; retrying with backoff (pods keep their last known names)");
                    } else {
                        tracing::debug!(kind, error = %err, "pod metadata watch still failing");
                    }
                }
                None => {
                    tracing::error!("pod watcher ended; pod metadata will no longer be updated");
                    return;
                }
            },
            _ = prune.tick() => {
                let gone = cache.prune(Instant::now(), tuning.deleted_retention);
                if gone > 0 {
                    tracing::debug!(pods = gone, "dropped deleted pods past their retention");
                }
            }
        }
    }
}

/// Exponential backoff without jitter (tests).
struct Doubling {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Doubling {
    fn new(first: Duration, max: Duration) -> Doubling {
        Doubling {
            first,
            max,
            next: first,
        }
    }
}

impl Iterator for Doubling {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(now)
    }
}

impl Backoff for Doubling {
    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Reports each API response's success to the cache (the client's tower layer).
struct Observe<S> {
    inner: S,
    cache: Arc<PodCache>,
}

impl<S, B> tower_service::Service<http::Request<Body>> for Observe<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let response = self.inner.call(req);
        let cache = self.cache.clone();
        Box::pin(async move {
            let result = response.await;
            cache.note_response(matches!(&result, Ok(r) if r.status().is_success()));
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};

    fn pod(n: u32, node: Option<&str>, container: Option<u32>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("pod-{n}"));
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(format!("{n:08x}-0000-4000-8000-000000000000"));
        p.spec = Some(PodSpec {
            node_name: node.map(String::from),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            container_statuses: container.map(|c| {
                vec![ContainerStatus {
                    name: "main".into(),
                    container_id: Some(format!("containerd://{c:064x}")),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    #[test]
    fn relist_is_applied_at_init_done_and_sync_follows_the_link() {
        let cache = PodCache::new();
        let t = Instant::now();
        assert!(!cache.sync_status().unwrap().synced);
        cache.apply_event(Event::Init, "n", t);
        cache.apply_event(Event::InitApply(pod(1, Some("n"), Some(7))), "n", t);
        cache.apply_event(Event::InitApply(pod(2, None, None)), "n", t);
        assert!(cache.pod(&uid(1)).is_none(), "not before InitDone");
        cache.apply_event(Event::InitDone, "n", t);
        let s = cache.sync_status().unwrap();
        assert!(s.synced);
        assert_eq!(s.pods, 1);
        assert_eq!(s.errors.get("pod_without_node"), Some(&1));
        let c = ContainerId::parse(&format!("{:064x}", 7)).unwrap();
        assert_eq!(cache.container_name(&uid(1), &c).as_deref(), Some("main"));

        cache.note_error("watch_failed");
        assert!(!cache.sync_status().unwrap().synced);
        cache.note_response(true);
        assert!(cache.sync_status().unwrap().synced, "watch re-established");
        // A re-list in progress is not in sync, but keeps serving the old names.
        cache.apply_event(Event::Init, "n", t);
        assert!(!cache.sync_status().unwrap().synced);
        assert_eq!(cache.pod(&uid(1)).unwrap().name, "pod-1");
    }

    #[test]
    fn deletes_keep_names_until_pruned() {
        let cache = PodCache::new();
        let t = Instant::now();
        cache.apply_event(Event::Apply(pod(1, Some("n"), None)), "n", t);
        cache.apply_event(Event::Delete(pod(1, Some("n"), None)), "n", t);
        assert!(cache.pod(&uid(1)).is_some());
        assert_eq!(
            cache.prune(t + Duration::from_secs(2), Duration::from_secs(1)),
            1
        );
        assert!(cache.pod(&uid(1)).is_none());
    }

    #[test]
    fn doubling_backoff_caps_and_resets() {
        let mut b = Doubling::new(Duration::from_millis(10), Duration::from_millis(35));
        let got: Vec<u128> = (&mut b).take(4).map(|d| d.as_millis()).collect();
        assert_eq!(got, vec![10, 20, 35, 35]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(10)));
    }
}
