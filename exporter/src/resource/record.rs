//! A Kubernetes `Pod` -> the compact `PodRecord` the index keeps (names, JupyterHub user, container IDs
//! of normal, init and ephemeral containers). The `Pod` itself is dropped after conversion, so nothing
//! else of it (managedFields, spec, env) is ever stored. Pure: no I/O.

use crate::resource::jupyterhub::HubUserPolicy;
use crate::resource::pods::{bounded_label_value, PodMeta};
use crate::units::{ContainerId, PodUid};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What the index keeps of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub uid: PodUid,
    pub meta: PodMeta,
    /// Container ID (runtime prefix stripped) and container name: current containers, and the
    /// previous instance of each restarted container (`lastState.terminated`), whose cgroup the
    /// exporter may still be reporting.
    pub containers: Vec<(ContainerId, String)>,
}

/// Why a pod object cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("pod {namespace}/{name} has no metadata.uid")]
    NoUid { namespace: String, name: String },
    #[error("pod {namespace}/{name} has a malformed metadata.uid {uid:?}")]
    BadUid {
        namespace: String,
        name: String,
        uid: String,
    },
    #[error("pod {namespace}/{name} has no spec.nodeName (not scheduled)")]
    NoNode { namespace: String, name: String },
    #[error("pod {namespace}/{name} runs on node {node:?}, not on this node")]
    OtherNode {
        namespace: String,
        name: String,
        node: String,
    },
}

impl RecordError {
    /// Short, stable name for the errors self-metric.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RecordError::NoUid { .. } => "pod_without_uid",
            RecordError::BadUid { .. } => "pod_bad_uid",
            RecordError::NoNode { .. } => "pod_without_node",
            RecordError::OtherNode { .. } => "pod_other_node",
        }
    }
}

fn names(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// The pod's UID, for deletes (which need nothing else).
pub(crate) fn pod_uid(pod: &Pod) -> Result<PodUid, RecordError> {
    let Some(raw) = pod.metadata.uid.as_deref() else {
        let (namespace, name) = names(pod);
        return Err(RecordError::NoUid { namespace, name });
    };
    PodUid::parse(raw).ok_or_else(|| {
        let (namespace, name) = names(pod);
        RecordError::BadUid {
            namespace,
            name,
            uid: bounded_label_value(raw),
        }
    })
}

/// A container ID from pod status (`containerd://<64 hex>`, `cri-o://...`, `docker://...`) without
/// its runtime prefix; `None` for an empty or malformed ID (a container still waiting has none).
pub(crate) fn container_id(raw: &str) -> Option<ContainerId> {
    let id = raw.rsplit_once("://").map_or(raw, |(_, id)| id);
    ContainerId::parse(id.trim())
}

/// Convert a pod scheduled on `node` into its record; `hub_users` decides whether it names a user.
pub fn pod_record(
    pod: &Pod,
    node: &str,
    hub_users: &HubUserPolicy,
) -> Result<PodRecord, RecordError> {
    let uid = pod_uid(pod)?;
    let (namespace, name) = names(pod);
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") => return Err(RecordError::NoNode { namespace, name }),
        Some(other) if other != node => {
            return Err(RecordError::OtherNode {
                namespace,
                name,
                node: bounded_label_value(other),
            })
        }
        Some(_) => {}
    }
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        let all: [&Option<Vec<ContainerStatus>>; 3] = [
            &status.init_container_statuses,
            &status.container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for statuses in all.into_iter().flatten() {
            for s in statuses {
                let name = bounded_label_value(&s.name);
                let previous = s
                    .last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .and_then(|t| t.container_id.as_deref());
                for raw in [s.container_id.as_deref(), previous].into_iter().flatten() {
                    if let Some(id) = container_id(raw) {
                        if !containers.iter().any(|(c, _)| *c == id) {
                            containers.push((id, name.clone()));
                        }
                    }
                }
            }
        }
    }
    Ok(PodRecord {
        uid,
        meta: PodMeta {
            name: bounded_label_value(&name),
            namespace: bounded_label_value(&namespace),
            hub: hub_users.hub_server(&namespace, labels, annotations),
        },
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodSpec, PodStatus,
    };

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";

    fn status(name: &str, id: Option<&str>, previous: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: id.map(String::from),
            last_state: previous.map(|p| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: Some(p.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(node: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("jupyter-bob--gpu".into());
        pod.metadata.namespace = Some("sai".into());
        pod.metadata.uid = Some(UID.into());
        pod.spec = Some(PodSpec {
            node_name: node.map(String::from),
            ..Default::default()
        });
        pod.status = Some(PodStatus {
            init_container_statuses: Some(vec![status(
                "block-cloud-metadata",
                Some(&format!("containerd://{}", "1".repeat(64))),
                None,
            )]),
            container_statuses: Some(vec![
                status(
                    "notebook",
                    Some(&format!("cri-o://{}", "A".repeat(64))),
                    Some(&format!("docker://{}", "b".repeat(64))),
                ),
                status("waiting", Some(""), None),
                status("never-started", None, None),
            ]),
            ephemeral_container_statuses: Some(vec![status(
                "debugger",
                Some(&"c".repeat(64)),
                None,
            )]),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn runtime_prefixes_are_stripped_and_empty_ids_skipped() {
        let r = pod_record(&pod(Some("node-a")), "node-a", &HubUserPolicy::default()).unwrap();
        let got: Vec<(String, &str)> = r
            .containers
            .iter()
            .map(|(id, n)| (id.to_string(), n.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("1".repeat(64), "block-cloud-metadata"),
                ("a".repeat(64), "notebook"),
                ("b".repeat(64), "notebook"),
                ("c".repeat(64), "debugger"),
            ]
        );
        assert_eq!(r.meta.name, "jupyter-bob--gpu");
        assert_eq!(r.meta.namespace, "sai");
        assert_eq!(r.meta.hub, None);
        assert_eq!(r.uid.as_str(), UID);
    }

    #[test]
    fn container_ids_in_every_runtime_form() {
        let hex = "0123456789abcdef".repeat(4);
        for raw in [
            format!("containerd://{hex}"),
            format!("cri-o://{hex}"),
            format!("docker://{hex}"),
            hex.clone(),
        ] {
            assert_eq!(container_id(&raw).unwrap().to_string(), hex, "{raw}");
        }
        for bad in [
            "",
            "containerd://",
            "containerd://abc",
            "docker://../../etc",
        ] {
            assert_eq!(container_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pods_without_node_uid_or_on_another_node_are_refused() {
        assert_eq!(
            pod_record(&pod(None), "node-a", &HubUserPolicy::default())
                .unwrap_err()
                .kind(),
            "pod_without_node"
        );
        assert_eq!(
            pod_record(&pod(Some("")), "node-a", &HubUserPolicy::default())
                .unwrap_err()
                .kind(),
            "pod_without_node"
        );
        assert_eq!(
            pod_record(&pod(Some("node-b")), "node-a", &HubUserPolicy::default())
                .unwrap_err()
                .kind(),
            "pod_other_node"
        );
        let mut p = pod(Some("node-a"));
        p.metadata.uid = None;
        assert_eq!(
            pod_record(&p, "node-a", &HubUserPolicy::default())
                .unwrap_err()
                .kind(),
            "pod_without_uid"
        );
        p.metadata.uid = Some("not-a-uid".into());
        let e = pod_record(&p, "node-a", &HubUserPolicy::default()).unwrap_err();
        assert_eq!(e.kind(), "pod_bad_uid");
        assert!(e.to_string().contains("sai/jupyter-bob--gpu"), "{e}");
    }
}
