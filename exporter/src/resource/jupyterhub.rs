//! JupyterHub user servers (Zero to JupyterHub, KubeSpawner): which pods are user servers, and whose.
//! Reads the raw username from the annotation (the label of the same name is escaped); never guesses
//! from pod names. Pure: maps in, `HubServer` out.

use crate::resource::pods::{bounded_label_value, HubServer};
use std::collections::BTreeMap;

/// Label that KubeSpawner sets on every user server (and its `app.kubernetes.io/` twin).
pub const COMPONENT_LABELS: [&str; 2] = ["component", "app.kubernetes.io/component"];
pub const SINGLEUSER_COMPONENT: &str = "singleuser-server";
/// Raw username in the annotation; escaped (slug) form in the label of the same key.
pub const USERNAME_KEY: &str = "hub.jupyter.org/username";
/// Raw server name in the annotation (named servers only); escaped in the label.
pub const SERVERNAME_KEY: &str = "hub.jupyter.org/servername";

/// The user server a pod runs, or `None` for any pod that is not a JupyterHub user server.
/// The username comes from the annotation; a pod that lacks it (a spawner that only sets labels)
/// falls back to the escaped label value rather than losing the user. Values are bounded
/// (`MAX_LABEL_BYTES`) and control characters replaced; quotes and newlines are left for the
/// exposition to escape.
pub fn hub_server(
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
