//! Pod metadata lookup by UID and container ID. Today only the no-Kubernetes implementation exists:
//! pods carry `pod_id` alone. The Kubernetes issue adds a watcher-backed cache behind this trait.

use crate::units::{ContainerId, PodUid};

/// Names of a pod, as far as they are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
}

/// Read-only lookup used when building a snapshot. Implementations must answer from memory:
/// a tick never waits on the API server.
pub trait PodMetadata: Send + Sync {
    fn pod(&self, uid: &PodUid) -> Option<PodMeta>;
    fn container_name(&self, uid: &PodUid, id: &ContainerId) -> Option<String>;
}

/// No Kubernetes: every lookup is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPodMetadata;

impl PodMetadata for NoPodMetadata {
    fn pod(&self, _uid: &PodUid) -> Option<PodMeta> {
        None
    }
    fn container_name(&self, _uid: &PodUid, _id: &ContainerId) -> Option<String> {
        None
    }
}
