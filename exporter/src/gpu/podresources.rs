//! Kubelet device assignments (the PodResources API, `v1.PodResourcesLister/List`): which pod holds
//! which GPU or MIG device. The `DeviceAssignments` trait, the decoding of the List response (a pure
//! protobuf reader: no generated code), and the reduction to "assigned to exactly one pod".
//! The transport (gRPC over the kubelet's unix socket) is `PodResourcesSocket`.

use crate::issue::IssueKind;
use crate::units::PodUid;
use std::collections::{BTreeMap, BTreeSet};

/// A pod by name, as the PodResources API names it (it carries no UID).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PodRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// One device the kubelet assigned to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceAssignment {
    /// `nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`, ...
    pub(crate) resource: String,
    /// As the device plugin reports it: `GPU-<uuid>`, `MIG-<uuid>`, an index, or a time-slicing
    /// replica `GPU-<uuid>::<n>`.
    pub(crate) device_id: String,
    pub(crate) pod: PodRef,
    pub(crate) container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PodResourcesError {
    #[error("pod-resources socket {path}: {detail}")]
    Connect { path: String, detail: String },
    #[error("pod-resources List: {detail}")]
    Rpc { detail: String },
    #[error("pod-resources List response: {detail} at byte {offset}")]
    Decode { detail: &'static str, offset: usize },
}

impl PodResourcesError {
    pub(crate) fn kind(&self) -> IssueKind {
        match self {
            PodResourcesError::Connect { .. } => IssueKind::Connect,
            PodResourcesError::Rpc { .. } => IssueKind::Rpc,
            PodResourcesError::Decode { .. } => IssueKind::Parse,
        }
    }
}

/// Where device assignments come from. `Ok(None)`: not available on this node (no socket), which is
/// not an error.
pub(crate) trait DeviceAssignments: Send {
    fn list(&mut self) -> Result<Option<Vec<DeviceAssignment>>, PodResourcesError>;
}

/// No kubelet: no assignments.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoAssignments;

impl DeviceAssignments for NoAssignments {
    fn list(&mut self) -> Result<Option<Vec<DeviceAssignment>>, PodResourcesError> {
        Ok(None)
    }
}

/// Pod UID by namespace and name: PodResources names pods, the ledger keys them by UID. The
/// Kubernetes-metadata cache can answer this from memory; without it, assignments cannot be used.
pub(crate) trait PodUidByName: Send + Sync {
    fn uid(&self, pod: &PodRef) -> Option<PodUid>;
    /// False when no UID can ever be known: the kubelet is then not asked at all.
    fn available(&self) -> bool {
        true
    }
}

/// The Kubernetes pod cache knows every pod of this node by namespace and name.
impl PodUidByName for crate::resource::kube::PodCache {
    fn uid(&self, pod: &PodRef) -> Option<PodUid> {
        self.with_index(|index| index.uid_by_name(&pod.namespace, &pod.name).cloned())
    }
}

/// No metadata: no UID is known.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoPodUids;

impl PodUidByName for NoPodUids {
    fn uid(&self, _pod: &PodRef) -> Option<PodUid> {
        None
    }
    fn available(&self) -> bool {
        false
    }
}

/// Device IDs (normalised: time-slicing replica suffix `::<n>` removed) held by exactly one pod.
/// A device shared by several pods (time-slicing) is left out: its processes decide.
pub(crate) fn exclusive_devices(assignments: &[DeviceAssignment]) -> BTreeMap<String, PodRef> {
    let mut holders: BTreeMap<String, BTreeSet<&PodRef>> = BTreeMap::new();
    for a in assignments {
        let id = a
            .device_id
            .split_once("::")
            .map_or(a.device_id.as_str(), |(id, _)| id);
        holders.entry(id.to_string()).or_default().insert(&a.pod);
    }
    holders
        .into_iter()
        .filter(|(_, pods)| pods.len() == 1)
        .filter_map(|(id, pods)| pods.first().map(|p| (id, (*p).clone())))
        .collect()
}

/// Decode a `v1.ListPodResourcesResponse` (the protobuf message, without the gRPC frame header).
/// Only devices are kept; CPU IDs, memory and dynamic resources are skipped.
pub(crate) fn decode_list_response(
    bytes: &[u8],
) -> Result<Vec<DeviceAssignment>, PodResourcesError> {
    let mut out = Vec::new();
    for field in Fields::new(bytes, 0) {
        let (number, value) = field?;
        if let (1, Some((pod, at))) = (number, value) {
            decode_pod(pod, at, &mut out)?;
        }
    }
    Ok(out)
}

fn decode_pod(
    bytes: &[u8],
    base: usize,
    out: &mut Vec<DeviceAssignment>,
) -> Result<(), PodResourcesError> {
    let mut pod = PodRef::default();
    let mut containers = Vec::new();
    for field in Fields::new(bytes, base) {
        match field? {
            (1, Some((b, at))) => pod.name = utf8(b, at)?,
            (2, Some((b, at))) => pod.namespace = utf8(b, at)?,
            (3, Some(container)) => containers.push(container),
            _ => {}
        }
    }
    for (container, at) in containers {
        let mut name = String::new();
        let mut devices = Vec::new();
        for field in Fields::new(container, at) {
            match field? {
                (1, Some((b, at))) => name = utf8(b, at)?,
                (2, Some(device)) => devices.push(device),
                _ => {}
            }
        }
        for (device, at) in devices {
            let mut resource = String::new();
            let mut ids = Vec::new();
            for field in Fields::new(device, at) {
                match field? {
                    (1, Some((b, at))) => resource = utf8(b, at)?,
                    (2, Some((b, at))) => ids.push(utf8(b, at)?),
                    _ => {}
                }
            }
            for device_id in ids {
                out.push(DeviceAssignment {
                    resource: resource.clone(),
                    device_id,
                    pod: pod.clone(),
                    container: name.clone(),
                });
            }
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8], offset: usize) -> Result<String, PodResourcesError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| PodResourcesError::Decode {
        detail: "string is not UTF-8",
        offset,
    })
}

/// A decoded protobuf field value: a length-delimited one with its absolute offset; `None` for the
/// others (varints and fixed-size numbers), which are skipped.
type Field<'a> = Option<(&'a [u8], usize)>;

/// Iterator over the fields of one protobuf message.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Fields<'a> {
        Fields {
            bytes,
            pos: 0,
            base,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, PodResourcesError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn error(&self, detail: &'static str) -> PodResourcesError {
        PodResourcesError::Decode {
            detail,
            offset: self.base + self.pos,
        }
    }

    fn take(&mut self, n: usize) -> Result<(&'a [u8], usize), PodResourcesError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("field runs past the end of the message"))?;
        let at = self.base + self.pos;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok((slice, at))
    }

    fn next_field(&mut self) -> Result<(u64, Field<'a>), PodResourcesError> {
        let key = self.varint()?;
        match key & 7 {
            0 => self.varint().map(drop)?,
            1 => self.take(8).map(drop)?,
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.error("length does not fit in memory"))?;
                return Ok((key >> 3, Some(self.take(len)?)));
            }
            5 => self.take(4).map(drop)?,
            _ => return Err(self.error("unsupported wire type")),
        }
        Ok((key >> 3, None))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>), PodResourcesError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Protobuf writer for tests: length-delimited field.
    pub(crate) fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = varint((number << 3) | 2);
        out.extend(varint(bytes.len() as u64));
        out.extend_from_slice(bytes);
        out
    }
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A `ListPodResourcesResponse` with one pod per (namespace, name, container, resource, ids).
    pub(crate) fn response(pods: &[(&str, &str, &str, &str, &[&str])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (ns, name, container, resource, ids) in pods {
            let mut devices = field(1, resource.as_bytes());
            for id in *ids {
                devices.extend(field(2, id.as_bytes()));
            }
            // topology (field 3) and cpu_ids (field 3 of the container, packed varints) are skipped.
            devices.extend(field(3, &field(1, &[8, 0])));
            let mut c = field(1, container.as_bytes());
            c.extend(field(2, &devices));
            c.extend(field(3, &[1, 2, 3]));
            c.extend([0x20, 0x05]); // an unknown varint field 4
            let mut pod = field(1, name.as_bytes());
            pod.extend(field(2, ns.as_bytes()));
            pod.extend(field(3, &c));
            out.extend(field(1, &pod));
        }
        out
    }

    #[test]
    fn decodes_pods_containers_and_device_ids() {
        let bytes = response(&[
            (
                "jhub",
                "jupyter-alice",
                "notebook",
                "nvidia.com/gpu",
                &["GPU-aaaa"],
            ),
            (
                "ml",
                "train-0",
                "main",
                "nvidia.com/mig-1g.10gb",
                &["MIG-1", "MIG-2"],
            ),
        ]);
        let got = decode_list_response(&bytes).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].pod.namespace, "jhub");
        assert_eq!(got[0].pod.name, "jupyter-alice");
        assert_eq!(got[0].container, "notebook");
        assert_eq!(got[0].resource, "nvidia.com/gpu");
        assert_eq!(got[0].device_id, "GPU-aaaa");
        assert_eq!(got[2].device_id, "MIG-2");
        assert!(decode_list_response(&[]).unwrap().is_empty());
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        let bytes = response(&[("a", "b", "c", "nvidia.com/gpu", &["GPU-1"])]);
        for cut in 1..bytes.len() {
            let r = decode_list_response(&bytes[..cut]);
            assert!(r.is_err() || r.unwrap().len() <= 1);
        }
        let e = decode_list_response(&[0x0a, 0xff]).unwrap_err();
        assert_eq!(e.kind(), IssueKind::Parse);
        assert!(decode_list_response(&[0x0f]).is_err(), "wire type 7");
        assert!(decode_list_response(&[0x0a, 0x02, 0xff, 0xfe])
            .map(|v| v.is_empty())
            .unwrap_or(true));
    }

    #[test]
    fn only_devices_held_by_exactly_one_pod_are_exclusive() {
        let a = |ns: &str, pod: &str, id: &str| DeviceAssignment {
            resource: "nvidia.com/gpu".into(),
            device_id: id.into(),
            pod: PodRef {
                namespace: ns.into(),
                name: pod.into(),
            },
            container: "c".into(),
        };
        let got = exclusive_devices(&[
            a("x", "one", "GPU-1"),
            a("x", "one", "GPU-1"),
            // time-slicing: two replicas of GPU-2 held by two pods
            a("x", "p", "GPU-2::0"),
            a("x", "q", "GPU-2::1"),
            // two replicas held by the same pod: still exclusive
            a("x", "r", "GPU-3::0"),
            a("x", "r", "GPU-3::1"),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got["GPU-1"].name, "one");
        assert_eq!(got["GPU-3"].name, "r");
    }
}
