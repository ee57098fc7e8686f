//! The in-memory pod index: pod UID -> names (and JupyterHub user), container ID -> pod and container
//! name. Updated from watch events, read on every tick. Pure: no I/O, time passed in.
//!
//! Deleted pods are kept, marked, for a retention period: the ledger keeps an ended pod's series for
//! its grace period, and its names must not vanish meanwhile (an empty `pod_name` would start a new
//! series). Container IDs of a pod are kept while the pod is (bounded per pod), so a restarted
//! container's previous instance keeps its name too.

use crate::resource::pods::PodMeta;
use crate::resource::record::PodRecord;
use crate::units::{ContainerId, PodUid};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Container IDs remembered per pod (current ones always; restarted instances up to this many).
pub(crate) const MAX_CONTAINER_IDS_PER_POD: usize = 64;

#[derive(Debug, Clone)]
struct PodEntry {
    meta: PodMeta,
    /// Oldest first.
    containers: Vec<ContainerId>,
    deleted_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct ContainerEntry {
    pod: PodUid,
    name: String,
}

/// Pods of this node by UID, and their containers by ID.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    pods: HashMap<PodUid, PodEntry>,
    containers: HashMap<ContainerId, ContainerEntry>,
}

impl PodIndex {
    pub fn new() -> PodIndex {
        PodIndex::default()
    }

    /// Add or update a pod (a watch `Apply`). A deleted pod that reappears is live again.
    pub fn apply(&mut self, record: PodRecord) {
        let PodRecord {
            uid,
            meta,
            containers,
        } = record;
        let entry = self.pods.entry(uid.clone()).or_insert_with(|| PodEntry {
            meta: PodMeta::default(),
            containers: Vec::new(),
            deleted_at: None,
        });
        entry.meta = meta;
        entry.deleted_at = None;
        for (id, name) in &containers {
            if !entry.containers.contains(id) {
                entry.containers.push(id.clone());
            }
            self.containers.insert(
                id.clone(),
                ContainerEntry {
                    pod: uid.clone(),
                    name: name.clone(),
                },
            );
        }
        // Bound the history: forget the oldest IDs that the current status no longer lists.
        while entry.containers.len() > MAX_CONTAINER_IDS_PER_POD {
            let Some(pos) = entry
                .containers
                .iter()
                .position(|id| !containers.iter().any(|(c, _)| c == id))
            else {
                break;
            };
            let old = entry.containers.remove(pos);
            remove_container(&mut self.containers, &old, &uid);
        }
    }

    /// Mark a pod deleted (a watch `Delete`); it is kept until `prune` drops it.
    pub(crate) fn delete(&mut self, uid: &PodUid, now: Instant) {
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// Replace the contents with a complete list (after a (re-)list): listed pods are applied, pods
    /// missing from the list count as deleted now.
    pub fn replace_all(&mut self, listed: Vec<PodRecord>, now: Instant) {
        let uids: HashSet<&PodUid> = listed.iter().map(|r| &r.uid).collect();
        for (uid, entry) in self.pods.iter_mut() {
            if !uids.contains(uid) {
                entry.deleted_at.get_or_insert(now);
            }
        }
        for record in listed {
            self.apply(record);
        }
    }

    /// Drop pods deleted more than `retention` ago; returns how many went.
    pub(crate) fn prune(&mut self, now: Instant, retention: Duration) -> usize {
        let expired: Vec<PodUid> = self
            .pods
            .iter()
            .filter(|(_, e)| {
                e.deleted_at
                    .is_some_and(|t| now.saturating_duration_since(t) > retention)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &expired {
            if let Some(entry) = self.pods.remove(uid) {
                for id in &entry.containers {
                    remove_container(&mut self.containers, id, uid);
                }
            }
        }
        if !expired.is_empty() {
            crate::heap::release_room(&mut self.pods);
            crate::heap::release_room(&mut self.containers);
        }
        expired.len()
    }

    pub fn pod(&self, uid: &PodUid) -> Option<&PodMeta> {
        self.pods.get(uid).map(|e| &e.meta)
    }

    /// The pod and name of a container, by ID alone.
    /// The UID of the live pod `namespace/name` (kubelet PodResources names pods, not UIDs). A
    /// deleted pod answers only while no live pod has taken its name (StatefulSets reuse names).
    pub(crate) fn uid_by_name(&self, namespace: &str, name: &str) -> Option<&PodUid> {
        self.pods
            .iter()
            .filter(|(_, e)| e.meta.namespace == namespace && e.meta.name == name)
            .min_by_key(|(_, e)| e.deleted_at.is_some())
            .map(|(uid, _)| uid)
    }

    #[cfg(test)]
    pub(crate) fn container(&self, id: &ContainerId) -> Option<(&PodUid, &str)> {
        self.containers.get(id).map(|c| (&c.pod, c.name.as_str()))
    }

    /// A container's name, if the container belongs to that pod.
    pub fn container_name(&self, uid: &PodUid, id: &ContainerId) -> Option<&str> {
        self.containers
            .get(id)
            .filter(|c| c.pod == *uid)
            .map(|c| c.name.as_str())
    }

    /// Pods held, deleted ones within their retention included.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Containers held.
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }
}

fn remove_container(
    containers: &mut HashMap<ContainerId, ContainerEntry>,
    id: &ContainerId,
    uid: &PodUid,
) {
    if containers.get(id).is_some_and(|c| c.pod == *uid) {
        containers.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::pods::HubServer;

    fn uid(n: u32) -> PodUid {
        PodUid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }
    fn cid(n: u32) -> ContainerId {
        ContainerId::parse(&format!("{n:064x}")).unwrap()
    }
    fn record(n: u32, containers: &[(u32, &str)]) -> PodRecord {
        PodRecord {
            uid: uid(n),
            meta: PodMeta {
                name: format!("pod-{n}"),
                namespace: "ns".into(),
                hub: (n == 1).then(|| HubServer {
                    user: "alice".into(),
                    server: String::new(),
                }),
            },
            containers: containers
                .iter()
                .map(|(c, name)| (cid(*c), name.to_string()))
                .collect(),
        }
    }

    #[test]
    fn lookups_by_uid_and_container_id() {
        let mut ix = PodIndex::new();
        ix.apply(record(1, &[(10, "notebook"), (11, "init")]));
        ix.apply(record(2, &[(20, "app")]));
        assert_eq!(ix.pod(&uid(1)).unwrap().name, "pod-1");
        assert_eq!(ix.pod(&uid(1)).unwrap().hub.as_ref().unwrap().user, "alice");
        assert_eq!(ix.container_name(&uid(1), &cid(10)), Some("notebook"));
        assert_eq!(ix.container_name(&uid(2), &cid(10)), None, "wrong pod");
        assert_eq!(ix.container(&cid(20)), Some((&uid(2), "app")));
        assert_eq!(ix.pod(&uid(3)), None);
        assert_eq!((ix.len(), ix.container_count()), (2, 3));
    }

    #[test]
    fn uid_by_name_prefers_the_live_pod_of_a_reused_name() {
        let mut ix = PodIndex::new();
        ix.apply(record(5, &[]));
        assert_eq!(ix.uid_by_name("ns", "pod-5"), Some(&uid(5)));
        assert_eq!(ix.uid_by_name("other", "pod-5"), None);
        // The pod is deleted and a new one takes its name (a StatefulSet's next incarnation).
        ix.delete(&uid(5), Instant::now());
        assert_eq!(
            ix.uid_by_name("ns", "pod-5"),
            Some(&uid(5)),
            "deleted but only one"
        );
        let mut again = record(6, &[]);
        again.meta.name = "pod-5".into();
        ix.apply(again);
        assert_eq!(ix.uid_by_name("ns", "pod-5"), Some(&uid(6)));
    }

    #[test]
    fn a_container_seen_before_its_status_is_named_when_the_status_arrives() {
        let mut ix = PodIndex::new();
        ix.apply(record(1, &[]));
        assert_eq!(ix.container_name(&uid(1), &cid(10)), None);
        ix.apply(record(1, &[(10, "notebook")]));
        assert_eq!(ix.container_name(&uid(1), &cid(10)), Some("notebook"));
    }

    #[test]
    fn restarted_containers_keep_their_previous_ids() {
        let mut ix = PodIndex::new();
        ix.apply(record(1, &[(10, "notebook")]));
        ix.apply(record(1, &[(11, "notebook")]));
        assert_eq!(ix.container_name(&uid(1), &cid(10)), Some("notebook"));
        assert_eq!(ix.container_name(&uid(1), &cid(11)), Some("notebook"));
        // A crash-looping container does not grow the index without bound.
        for n in 12..12 + 2 * MAX_CONTAINER_IDS_PER_POD as u32 {
            ix.apply(record(1, &[(n, "notebook")]));
        }
        assert_eq!(ix.container_count(), MAX_CONTAINER_IDS_PER_POD);
        let last = 11 + 2 * MAX_CONTAINER_IDS_PER_POD as u32;
        assert!(ix.container_name(&uid(1), &cid(last)).is_some());
        assert!(ix.container_name(&uid(1), &cid(10)).is_none());
    }

    #[test]
    fn deleted_pods_keep_their_names_for_the_retention() {
        let t0 = Instant::now();
        let retention = Duration::from_secs(300);
        let mut ix = PodIndex::new();
        ix.apply(record(1, &[(10, "notebook")]));
        ix.delete(&uid(1), t0);
        assert_eq!(ix.prune(t0 + Duration::from_secs(299), retention), 0);
        assert_eq!(ix.pod(&uid(1)).unwrap().name, "pod-1");
        // Deleting again does not restart the clock.
        ix.delete(&uid(1), t0 + Duration::from_secs(200));
        assert_eq!(ix.prune(t0 + Duration::from_secs(301), retention), 1);
        assert_eq!(ix.pod(&uid(1)), None);
        assert_eq!(ix.container_count(), 0);
    }

    #[test]
    fn relist_marks_missing_pods_deleted_and_revives_listed_ones() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new();
        ix.apply(record(1, &[(10, "a")]));
        ix.apply(record(2, &[(20, "b")]));
        ix.delete(&uid(2), t0);
        ix.replace_all(vec![record(2, &[(21, "b")]), record(3, &[(30, "c")])], t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(ix.prune(later, Duration::from_secs(5)), 1, "pod 1 went");
        assert!(ix.pod(&uid(1)).is_none());
        assert!(ix.pod(&uid(2)).is_some(), "pod 2 is live again");
        assert_eq!(ix.container_name(&uid(2), &cid(20)), Some("b"));
        assert_eq!(ix.container_name(&uid(3), &cid(30)), Some("c"));
    }
}
