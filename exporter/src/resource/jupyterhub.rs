//! JupyterHub user servers (Zero to JupyterHub, KubeSpawner): which pods are user servers, and whose.
//! Reads the raw username from the annotation (the label of the same name is escaped); never guesses
//! from pod names. Only pods in the hub's namespaces count (`HubUserPolicy`), and the user name is
//! exported raw, as a keyed hash, or not at all. Pure: maps in, `HubServer` out.

use crate::resource::pods::{bounded_label_value, HubServer};
use std::collections::{BTreeMap, BTreeSet};

/// A key for `--hub-user-label hash` (from `--hub-user-hash-key-file`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HubUserKey(Vec<u8>);

impl HubUserKey {
    /// Shorter keys make the hash guessable by trying every login.
    pub(crate) const MIN_BYTES: usize = 16;

    pub(crate) fn new(bytes: Vec<u8>) -> Option<HubUserKey> {
        (bytes.len() >= Self::MIN_BYTES).then_some(HubUserKey(bytes))
    }
}

impl std::fmt::Debug for HubUserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubUserKey(..)")
    }
}

/// How the `hub_user` label carries a user (`--hub-user-label`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HubUserLabel {
    /// The JupyterHub user name as it is (on the target cluster: a GitHub login).
    #[default]
    Raw,
    /// `u-` and 16 hex digits of HMAC-SHA256(key, user name): stable per user, not reversible without
    /// the key.
    Hashed(HubUserKey),
    /// No `hub_user` or `hub_server` labels.
    Off,
}

/// Which pods may name a JupyterHub user, and how the name is exported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HubUserPolicy {
    /// `--jupyterhub-namespace`: only pods here are user servers. Empty: no pod is (a pod elsewhere
    /// cannot bill energy to a user by copying the annotation).
    pub namespaces: BTreeSet<String>,
    pub label: HubUserLabel,
}

impl HubUserPolicy {
    /// Raw user names from pods in these namespaces.
    pub fn raw_in(namespaces: &[&str]) -> HubUserPolicy {
        HubUserPolicy {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            label: HubUserLabel::Raw,
        }
    }

    /// The user server a pod in `namespace` runs, as this policy exports it.
    pub(crate) fn hub_server(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Option<HubServer> {
        if !self.namespaces.contains(namespace) {
            return None;
        }
        let server = hub_server(labels, annotations)?;
        match &self.label {
            HubUserLabel::Raw => Some(server),
            HubUserLabel::Off => None,
            HubUserLabel::Hashed(key) => Some(HubServer {
                user: hashed_user(key, &server.user),
                server: server.server,
            }),
        }
    }
}

/// `u-` and the first 64 bits of HMAC-SHA256(key, user), in hex.
pub(crate) fn hashed_user(key: &HubUserKey, user: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.0);
    let tag = ring::hmac::sign(&key, user.as_bytes());
    let mut out = String::from("u-");
    for b in &tag.as_ref()[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Label that KubeSpawner sets on every user server (and its `app.kubernetes.io/` twin).
pub(crate) const COMPONENT_LABELS: [&str; 2] = ["component", "app.kubernetes.io/component"];
pub(crate) const SINGLEUSER_COMPONENT: &str = "singleuser-server";
/// Raw username in the annotation; escaped (slug) form in the label of the same key.
pub(crate) const USERNAME_KEY: &str = "hub.jupyter.org/username";
/// Raw server name in the annotation (named servers only); escaped in the label.
pub(crate) const SERVERNAME_KEY: &str = "hub.jupyter.org/servername";

/// The user server a pod runs, or `None` for any pod that is not a JupyterHub user server.
/// The username comes from the annotation; a pod that lacks it (a spawner that only sets labels)
/// falls back to the escaped label value rather than losing the user. Values are bounded
/// (`MAX_LABEL_BYTES`) and control characters replaced; quotes and newlines are left for the
/// exposition to escape.
pub(crate) fn hub_server(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<HubServer> {
    let singleuser = COMPONENT_LABELS
        .iter()
        .any(|key| labels.get(*key).map(String::as_str) == Some(SINGLEUSER_COMPONENT));
    if !singleuser {
        return None;
    }
    let pick = |key: &str| {
        annotations
            .get(key)
            .or_else(|| labels.get(key))
            .map(|v| bounded_label_value(v))
            .unwrap_or_default()
    };
    Some(HubServer {
        user: pick(USERNAME_KEY),
        server: pick(SERVERNAME_KEY),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn user_comes_from_the_annotation_not_the_escaped_label() {
        let labels = map(&[
            ("component", "singleuser-server"),
            ("hub.jupyter.org/username", "alice-smith-uni-edu---6c5a1f3e"),
        ]);
        let annotations = map(&[("hub.jupyter.org/username", "alice.smith@uni.edu")]);
        assert_eq!(
            hub_server(&labels, &annotations),
            Some(HubServer {
                user: "alice.smith@uni.edu".into(),
                server: String::new(),
            })
        );
    }

    #[test]
    fn named_server_and_app_kubernetes_io_component() {
        let labels = map(&[("app.kubernetes.io/component", "singleuser-server")]);
        let annotations = map(&[
            ("hub.jupyter.org/username", "bob"),
            ("hub.jupyter.org/servername", "gpu"),
        ]);
        let hub = hub_server(&labels, &annotations).unwrap();
        assert_eq!((hub.user.as_str(), hub.server.as_str()), ("bob", "gpu"));
    }

    #[test]
    fn other_pods_are_not_user_servers() {
        let labels = map(&[("component", "hub"), ("app", "jupyterhub")]);
        let annotations = map(&[("hub.jupyter.org/username", "mallory")]);
        assert_eq!(hub_server(&labels, &annotations), None);
        assert_eq!(hub_server(&BTreeMap::new(), &BTreeMap::new()), None);
    }

    #[test]
    fn only_pods_in_the_hub_namespaces_name_a_user() {
        let labels = map(&[("component", "singleuser-server")]);
        let annotations = map(&[("hub.jupyter.org/username", "alice")]);
        let policy = HubUserPolicy::raw_in(&["sai"]);
        assert_eq!(
            policy
                .hub_server("sai", &labels, &annotations)
                .unwrap()
                .user,
            "alice"
        );
        // The same labels and annotation copied into another namespace bill nobody.
        assert_eq!(policy.hub_server("mallory-ns", &labels, &annotations), None);
        assert_eq!(
            HubUserPolicy::default().hub_server("sai", &labels, &annotations),
            None
        );
        let off = HubUserPolicy {
            label: HubUserLabel::Off,
            ..policy.clone()
        };
        assert_eq!(off.hub_server("sai", &labels, &annotations), None);
    }

    #[test]
    fn hashed_users_are_stable_keyed_and_distinct() {
        let key = HubUserKey::new(b"0123456789abcdef-cluster-key".to_vec()).unwrap();
        let other = HubUserKey::new(b"another-key-0123456789".to_vec()).unwrap();
        assert!(HubUserKey::new(b"short".to_vec()).is_none());
        let a = hashed_user(&key, "alice");
        assert_eq!(a, hashed_user(&key, "alice"));
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("u-") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, hashed_user(&key, "bob"));
        assert_ne!(a, hashed_user(&other, "alice"));
        assert!(!format!("{key:?}").contains("0123"));
        let policy = HubUserPolicy {
            namespaces: ["sai".to_string()].into(),
            label: HubUserLabel::Hashed(key),
        };
        let labels = map(&[("component", "singleuser-server")]);
        let annotations = map(&[
            ("hub.jupyter.org/username", "alice"),
            ("hub.jupyter.org/servername", "gpu"),
        ]);
        let got = policy.hub_server("sai", &labels, &annotations).unwrap();
        assert_eq!(
            (got.user.as_str(), got.server.as_str()),
            (a.as_str(), "gpu")
        );
    }

    #[test]
    fn label_fallback_and_hostile_values() {
        let labels = map(&[
            ("component", "singleuser-server"),
            ("hub.jupyter.org/username", "carol"),
        ]);
        assert_eq!(hub_server(&labels, &BTreeMap::new()).unwrap().user, "carol");
        let huge = "x".repeat(100_000);
        let annotations = map(&[("hub.jupyter.org/username", &huge)]);
        assert_eq!(hub_server(&labels, &annotations).unwrap().user.len(), 256);
        let annotations = map(&[("hub.jupyter.org/username", "Zoë \"the\"\nuser\r")]);
        assert_eq!(
            hub_server(&labels, &annotations).unwrap().user,
            "Zoë \"the\"\nuser\u{FFFD}"
        );
    }
}
