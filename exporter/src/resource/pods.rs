//! Pod metadata lookup by UID and container ID: the `PodMetadata` trait the ledger asks when it builds a
//! snapshot, the names it answers with, and `NoPodMetadata` (pods carry `pod_id` alone). The
//! watcher-backed implementation is `resource::kube::PodCache`; every implementation answers from memory.

use crate::units::{ContainerId, PodUid};
use std::collections::BTreeMap;

/// Longest label value taken from the API server, in bytes (usernames and annotations are unbounded).
pub(crate) const MAX_LABEL_BYTES: usize = 256;

/// A JupyterHub user server (pods labelled `component=singleuser-server`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubServer {
    /// The raw username (annotation `hub.jupyter.org/username`), bounded by `MAX_LABEL_BYTES`.
    pub user: String,
    /// The named server, empty for the user's default server.
    pub server: String,
}

/// Names of a pod, as far as they are known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    /// Set for JupyterHub user servers only.
    pub hub: Option<HubServer>,
}

/// Whether the metadata source is in sync with the API server, for the self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSync {
    /// The cache holds a complete list and the watch is not failing.
    pub synced: bool,
    /// Pods in the cache (deleted pods kept for their retention included).
    pub pods: usize,
    /// List/watch errors by kind, cumulative.
    pub errors: BTreeMap<&'static str, u64>,
}

/// Read-only lookup used when building a snapshot. Implementations must answer from memory:
/// a tick never waits on the API server.
pub trait PodMetadata: Send + Sync {
    fn pod(&self, uid: &PodUid) -> Option<PodMeta>;
    fn container_name(&self, uid: &PodUid, id: &ContainerId) -> Option<String>;
    /// `None` when there is no metadata source at all (`--no-kube`).
    fn sync_status(&self) -> Option<MetadataSync> {
        None
    }
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

/// A label value from untrusted input: control characters other than newline (which the exposition
/// escapes) become U+FFFD, and the value is cut to at most `MAX_LABEL_BYTES` bytes at a character
/// boundary.
pub(crate) fn bounded_label_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_LABEL_BYTES));
    for c in raw.chars() {
        let c = if c.is_control() && c != '\n' {
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_LABEL_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_bounded_at_a_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let v = bounded_label_value(&long);
        assert_eq!(v.len(), 256);
        assert!(v.chars().all(|c| c == 'é'));
        let v = bounded_label_value(&format!("a{}", "é".repeat(200)));
        assert_eq!(v.len(), 255, "no half character");
    }

    #[test]
    fn control_characters_are_replaced_but_newlines_and_quotes_kept() {
        assert_eq!(
            bounded_label_value("a\"b\\c\nd\re\u{0}f"),
            "a\"b\\c\nd\u{FFFD}e\u{FFFD}f"
        );
        assert_eq!(bounded_label_value("Zoë 🚀"), "Zoë 🚀");
    }
}
