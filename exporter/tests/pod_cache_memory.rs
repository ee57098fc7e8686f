//! Memory of the pod cache with 500 realistic Zero-to-JupyterHub pods (2,000 container IDs), measured
//! by counting the bytes this test binary holds allocated (a counting global allocator) before and
//! after building the index from real `Pod` objects. One test in this binary, so nothing else allocates
//! meanwhile. The bound is 5 MiB; the number is printed for benches/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use k8s_openapi::api::core::v1::Pod;
use kepler_rs::resource::index::PodIndex;
use kepler_rs::resource::jupyterhub::HubUserPolicy;
use kepler_rs::resource::record::pod_record;
use serde_json::Value;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 500 pods like the recorded user server, each with an init container, the notebook, two sidecars
/// (4 container IDs), distinct UIDs, names and users.
fn pods() -> Vec<Pod> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube/pods-node-a.json");
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let template = list["items"][0].clone();
    (0..500u32)
        .map(|n| {
            let mut p = template.clone();
            p["metadata"]["uid"] = format!("{n:08x}-7b8d-4e0f-9a1b-2c3d4e5f6a7b").into();
            p["metadata"]["name"] = format!("jupyter-user-{n:04}---6c5a1f3e").into();
            p["metadata"]["annotations"]["hub.jupyter.org/username"] =
                format!("user.{n:04}@uni.edu").into();
            let status = |i: u32| {
                serde_json::json!({"name": format!("container-{i}"), "image": "busybox",
                    "imageID": "", "ready": true, "restartCount": 0,
                    "containerID": format!("containerd://{:08x}{:056x}", n, i)})
            };
            p["status"]["initContainerStatuses"] = Value::Array(vec![status(0)]);
            p["status"]["containerStatuses"] = Value::Array((1..4).map(status).collect());
            serde_json::from_value(p).unwrap()
        })
        .collect()
}

#[test]
fn cache_of_500_pods_stays_under_5_mib() {
    let before = LIVE.load(Ordering::Relaxed);
    let index = {
        let pods = pods();
        let mut index = PodIndex::new();
        for pod in &pods {
            index.apply(pod_record(pod, "node-a", &HubUserPolicy::raw_in(&["sai"])).unwrap());
        }
        index
    }; // the Pod objects are dropped here, as the watcher drops each one after conversion
    let held = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!((index.len(), index.container_count()), (500, 2000));

    // For comparison: the same 500 pods stored whole, managedFields stripped (a reflector's store).
    let before_pods = LIVE.load(Ordering::Relaxed);
    let mut whole = pods();
    for p in &mut whole {
        p.metadata.managed_fields = None;
    }
    let whole_bytes = LIVE.load(Ordering::Relaxed) - before_pods;
    eprintln!(
        "pod index, 500 pods / 2000 containers: {:.1} KiB; whole Pod objects without managedFields: {:.1} KiB",
        held as f64 / 1024.0,
        whole_bytes as f64 / 1024.0
    );
    assert!(held > 0);
    assert!(held < 5 * 1024 * 1024, "pod index holds {held} bytes");
    drop(whole);
    drop(index);
}
