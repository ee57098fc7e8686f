//! Who a process or cgroup belongs to: cgroup path parsing (pure) and pod metadata lookup.
//! The Kubernetes issue adds the `kube`-backed pod cache behind `PodMetadata`.

pub mod cgroup_path;
pub mod pods;
