//! The real kube client and watcher against a local HTTPS API server that replays recorded
//! Zero-to-JupyterHub pods: initial list, watch events, bookmarks, 410 Gone, a dropped connection,
//! a long outage and an API server unreachable at start. Retry delays are shrunk (`WatchTuning`) so an
//! outage of minutes runs as the same sequence of failed retries in seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod fake_api;

use fake_api::{FakeApi, Request};
use kepler_rs::resource::jupyterhub::HubUserPolicy;
use kepler_rs::resource::kube::{connect, watch_pods, PodCache, RetryBackoff, WatchTuning};
use kepler_rs::resource::pods::{MetadataSync, PodMetadata};
use kepler_rs::units::{ContainerId, PodUid};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: &str = "node-a";
const ALICE: &str = "3c1e2f4a-7b8d-4e0f-9a1b-2c3d4e5f6a7b";
const BOB: &str = "9d2b7c6e-1a3f-4b5c-8d7e-6f5a4b3c2d1e";
const ZOE: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const HUB: &str = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
const CAROL: &str = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
const DAVE: &str = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e";
/// sha256 of the seeds used when the fixtures were written (see the container IDs in the JSON).
const ALICE_NOTEBOOK: &str = "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90";
const ALICE_INIT: &str = "bebf4d9e17cf866f7d4fe9036f5212fbdfd248569426c3ccf597282da02d8148";
const BOB_NOTEBOOK: &str = "81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9";
const BOB_BEFORE_OOM: &str = "e7d2d60860203e3def4c3877a08b56ecf79dc6bce32fc957d79007cae9d28c46";
const ZOE_DEBUG: &str = "4ddc81aa45898ffd83b91093c1935d808a5537919d28d4da80e8e9b6ad14b03b";
const HUB_CONTAINER: &str = "08d33503ee27d4c13055d0cefec5e730be4ef2e41cd6cfce434936ec1e7c9d4b";
const CAROL_NOTEBOOK: &str = "4c26d9074c27d89ede59270c0ac14b71e071b15239519f75474b2f3ba63481f5";

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pod_list() -> Value {
    serde_json::from_str(&fixture("pods-node-a.json")).unwrap()
}

fn watch_events() -> Vec<Value> {
    fixture("watch-node-a.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn uid(s: &str) -> PodUid {
    PodUid::parse(s).unwrap()
}

fn cid(s: &str) -> ContainerId {
    ContainerId::parse(s).unwrap()
}

/// Retry delays of 20 ms doubling to 200 ms: kube's default is 0.8 s doubling to 30 s, so a 3 s
/// outage here takes about as many failed retries as a 5-minute one in production.
fn fast() -> WatchTuning {
    WatchTuning {
        backoff: RetryBackoff::Exponential {
            first: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        deleted_retention: Duration::from_secs(60),
        prune_every: Duration::from_millis(50),
    }
}

async fn start(api: &FakeApi, tuning: WatchTuning) -> Arc<PodCache> {
    let cache = Arc::new(PodCache::with_hub_users(HubUserPolicy::raw_in(&["sai"])));
    let client = connect(Some(&api.kubeconfig()), &cache)
        .await
        .expect("client from the fake API's kubeconfig");
    tokio::spawn(watch_pods(client, NODE.to_string(), cache.clone(), tuning));
    cache
}

fn status(cache: &PodCache) -> MetadataSync {
    cache
        .sync_status()
        .expect("a pod cache always reports its sync")
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn errors(cache: &PodCache, kind: &str) -> u64 {
    status(cache).errors.get(kind).copied().unwrap_or(0)
}

fn lists(requests: &[Request]) -> usize {
    requests.iter().filter(|r| r.is_list()).count()
}

/// Every request was for this node's pods only, and authenticated.
fn assert_node_scoped(requests: &[Request]) {
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.path, "/api/v1/pods", "{r:?}");
        assert_eq!(
            r.query.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=node-a"),
            "a request without the node's field selector: {r:?}"
        );
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", fake_api::TOKEN).as_str())
        );
    }
}

#[tokio::test]
async fn initial_list_names_pods_containers_and_jupyterhub_users() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    let cache = start(&api, fast()).await;
    wait_until("initial sync", || status(&cache).synced).await;

    let alice = cache.pod(&uid(ALICE)).expect("alice's server");
    assert_eq!(alice.name, "jupyter-alice-smith-uni-edu---6c5a1f3e");
    assert_eq!(alice.namespace, "sai");
    let hub = alice.hub.expect("a singleuser-server pod");
    assert_eq!(
        hub.user, "alice.smith@uni.edu",
        "raw name, not the escaped label"
    );
    assert_eq!(hub.server, "");
    let name = |pod: &str, c: &str| cache.container_name(&uid(pod), &cid(c));
    assert_eq!(name(ALICE, ALICE_NOTEBOOK).as_deref(), Some("notebook"));
    assert_eq!(
        name(ALICE, ALICE_INIT).as_deref(),
        Some("block-cloud-metadata")
    );

    let bob = cache.pod(&uid(BOB)).unwrap();
    assert_eq!(bob.hub.as_ref().map(|h| h.server.as_str()), Some("gpu"));
    assert_eq!(
        name(BOB, BOB_NOTEBOOK).as_deref(),
        Some("notebook"),
        "cri-o:// stripped"
    );
    assert_eq!(
        name(BOB, BOB_BEFORE_OOM).as_deref(),
        Some("notebook"),
        "the instance before the restart keeps its name"
    );

    // Hostile values: quotes, a newline, a carriage return and 300 more characters, bounded.
    let zoe = cache.pod(&uid(ZOE)).unwrap().hub.unwrap();
    assert!(
        zoe.user.starts_with("Zoë \"Z\" O'Brien\nΔ-lab\u{FFFD}é"),
        "{:?}",
        zoe.user
    );
    assert!(
        zoe.user.len() <= 256 && zoe.user.len() > 250,
        "{}",
        zoe.user.len()
    );
    assert_eq!(zoe.server, "talk \"demo\"");
    assert_eq!(
        name(ZOE, ZOE_DEBUG).as_deref(),
        Some("debugger-x7k2p"),
        "ephemeral"
    );

    let hub_pod = cache.pod(&uid(HUB)).unwrap();
    assert_eq!(hub_pod.name, "hub-7d9c8b6f5-x2x7q");
    assert_eq!(hub_pod.hub, None, "the hub itself is not a user server");
    assert_eq!(
        name(HUB, HUB_CONTAINER).as_deref(),
        Some("hub"),
        "docker:// stripped"
    );

    assert!(
        cache.pod(&uid(DAVE)).is_none(),
        "pending pod without a node"
    );
    let s = status(&cache);
    assert_eq!(s.pods, 4);
    assert_eq!(s.errors.get("pod_without_node"), Some(&1));
    let requests = api.requests();
    assert_node_scoped(&requests);
    assert_eq!(lists(&requests), 1);
    let list = requests.iter().find(|r| r.is_list()).unwrap();
    assert_eq!(
        list.query.get("resourceVersion").map(String::as_str),
        Some("0"),
        "served from the API server's cache"
    );
    // A miss never triggers a request: looking up unknown pods changes nothing.
    for n in 0..100u32 {
        assert!(cache
            .pod(&uid(&format!("{n:08x}-0000-4000-8000-000000000000")))
            .is_none());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lists(&api.requests()), 1, "no re-list on a cache miss");
}

#[tokio::test]
async fn watch_events_bookmarks_and_deleted_pods() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    let tuning = WatchTuning {
        deleted_retention: Duration::from_millis(300),
        ..fast()
    };
    let cache = start(&api, tuning).await;
    wait_until("initial sync", || status(&cache).synced).await;
    wait_until("a watch", || api.open_watches() == 1).await;

    let events = watch_events();
    // Carol's server is created: known by name before its container has an ID...
    api.send(&events[0]);
    wait_until("carol", || cache.pod(&uid(CAROL)).is_some()).await;
    assert_eq!(cache.pod(&uid(CAROL)).unwrap().hub.unwrap().user, "carol");
    assert_eq!(
        cache.container_name(&uid(CAROL), &cid(CAROL_NOTEBOOK)),
        None
    );
    // ...and the container is named when the status lists it.
    api.send(&events[1]);
    wait_until("carol's container", || {
        cache
            .container_name(&uid(CAROL), &cid(CAROL_NOTEBOOK))
            .is_some()
    })
    .await;
    // A recorded bookmark, then bob's server is deleted: names stay for the retention, then go.
    api.send(&events[2]);
    api.send(&events[3]);
    wait_until("bob pruned after the retention", || {
        cache.pod(&uid(BOB)).is_none()
    })
    .await;
    assert!(cache.pod(&uid(ALICE)).is_some());

    // A bookmark moves the client's resourceVersion: the next watch resumes from it.
    let bookmark_rv = api.bookmark();
    tokio::time::sleep(Duration::from_millis(100)).await; // let the client read it
    api.cut_watches();
    wait_until("a resumed watch", || {
        api.requests()
            .iter()
            .filter(|r| r.is_watch())
            .any(|r| r.query.get("resourceVersion") == Some(&bookmark_rv.to_string()))
    })
    .await;
    let requests = api.requests();
    assert_node_scoped(&requests);
    assert_eq!(
        lists(&requests),
        1,
        "events and bookmarks never cause a re-list"
    );
    assert!(requests.iter().filter(|r| r.is_watch()).all(|r| r
        .query
        .get("allowWatchBookmarks")
        .map(String::as_str)
        == Some("true")));
    wait_until("in sync again", || status(&cache).synced).await;
}

#[tokio::test]
async fn gone_forces_a_relist_that_replaces_the_index() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    let cache = start(&api, fast()).await;
    wait_until("initial sync", || status(&cache).synced).await;
    wait_until("a watch", || api.open_watches() == 1).await;

    // While the client is not looking, bob goes and carol arrives (no events for either).
    let mut list = pod_list();
    let items = list["items"].as_array_mut().unwrap();
    items.retain(|p| p["metadata"]["uid"] != BOB);
    items.push(watch_events()[1]["object"].clone());
    api.load_list(&list);
    api.expire_history();

    wait_until("a re-list", || lists(&api.requests()) == 2).await;
    wait_until("carol from the re-list", || {
        cache.pod(&uid(CAROL)).is_some()
    })
    .await;
    wait_until("in sync", || status(&cache).synced).await;
    assert!(errors(&cache, "gone") >= 1);
    // Bob is missing from the new list: counted as deleted, his names kept for the retention.
    assert!(cache.pod(&uid(BOB)).is_some());
    assert_eq!(
        cache
            .container_name(&uid(CAROL), &cid(CAROL_NOTEBOOK))
            .as_deref(),
        Some("notebook")
    );
    assert_node_scoped(&api.requests());
}

#[tokio::test]
async fn dropped_connection_resumes_the_watch_without_relisting() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    let cache = start(&api, fast()).await;
    wait_until("initial sync", || status(&cache).synced).await;
    wait_until("a watch", || api.open_watches() == 1).await;
    let watches_before = api.requests().iter().filter(|r| r.is_watch()).count();

    // Cut mid-event, and create carol's server while the client is disconnected.
    api.cut_watches();
    api.send(&watch_events()[1]);
    wait_until("carol, replayed on the resumed watch", || {
        cache
            .container_name(&uid(CAROL), &cid(CAROL_NOTEBOOK))
            .is_some()
    })
    .await;
    let requests = api.requests();
    assert_eq!(lists(&requests), 1, "a resumed watch, not a re-list");
    assert!(requests.iter().filter(|r| r.is_watch()).count() > watches_before);
    wait_until("in sync", || status(&cache).synced).await;
}

#[tokio::test]
async fn long_outage_keeps_names_then_catches_up() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    let cache = start(&api, fast()).await;
    wait_until("initial sync", || status(&cache).synced).await;
    wait_until("a watch", || api.open_watches() == 1).await;

    api.set_down(true);
    wait_until("out of sync", || !status(&cache).synced).await;
    let errors_at_start: u64 = status(&cache).errors.values().sum();
    // The outage: the scaled equivalent of 5 minutes (see `fast`). Meanwhile carol's server starts
    // and the API server's history is compacted, as it would be after 5 minutes.
    api.send(&watch_events()[1]);
    api.expire_history();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&cache);
    assert!(!s.synced);
    let failed: u64 = s.errors.values().sum::<u64>() - errors_at_start;
    assert!(
        failed >= 8,
        "only {failed} failed retries in the outage: {s:?}"
    );
    assert_eq!(
        cache.pod(&uid(ALICE)).map(|m| m.name),
        Some("jupyter-alice-smith-uni-edu---6c5a1f3e".to_string()),
        "names are kept through the outage"
    );

    let back = Instant::now();
    api.set_down(false);
    wait_until("carol after the outage", || {
        cache.pod(&uid(CAROL)).is_some()
    })
    .await;
    wait_until("in sync", || status(&cache).synced).await;
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "took {:?} to catch up (backoff max is 200 ms)",
        back.elapsed()
    );
    assert_node_scoped(&api.requests());
}

#[tokio::test]
async fn unreachable_at_start_then_reachable() {
    let api = FakeApi::start(NODE);
    api.load_list(&pod_list());
    api.set_down(true);
    let cache = start(&api, fast()).await;
    wait_until("failed lists", || errors(&cache, "list_failed") >= 3).await;
    let s = status(&cache);
    assert!(!s.synced);
    assert_eq!(s.pods, 0);
    api.set_down(false);
    wait_until("in sync", || status(&cache).synced).await;
    assert!(cache.pod(&uid(ALICE)).is_some());
}

#[tokio::test]
async fn a_server_whose_certificate_the_kubeconfig_does_not_trust_is_refused() {
    let trusted = FakeApi::start(NODE);
    let impostor = FakeApi::start(NODE);
    impostor.load_list(&pod_list());
    // The trusted server's kubeconfig (its CA, its token), pointed at the impostor's port.
    let kubeconfig = std::fs::read_to_string(trusted.kubeconfig())
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", trusted.port),
            &format!("127.0.0.1:{}", impostor.port),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    let cache = Arc::new(PodCache::with_hub_users(HubUserPolicy::raw_in(&["sai"])));
    let client = connect(Some(&path), &cache).await.unwrap();
    tokio::spawn(watch_pods(client, NODE.to_string(), cache.clone(), fast()));
    wait_until("failed lists", || errors(&cache, "list_failed") >= 2).await;
    assert!(!status(&cache).synced);
    assert!(
        impostor.requests().is_empty(),
        "the TLS handshake must fail before any request"
    );
}
