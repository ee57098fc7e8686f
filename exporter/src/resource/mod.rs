//! Who a process or cgroup belongs to: cgroup path parsing (pure), a process's owner from its
//! `/proc/<pid>/cgroup` (`process_owner`), pod metadata lookup (`pods`), and the Kubernetes pod cache
//! behind it (`kube`: watcher -> `record` -> `index`, plus `jupyterhub`).

pub mod cgroup_path;
pub mod index;
pub mod jupyterhub;
pub mod kube;
pub mod pods;
pub(crate) mod process_owner;
pub mod record;
