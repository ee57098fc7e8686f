//! Cgroup path parsing: which pod, container or host service a cgroup path belongs to, for kubelet's
//! cgroupfs and systemd drivers, containerd, CRI-O, Docker and Podman, on cgroup v1, v2 and hybrid hosts.
//! Pure string work: no I/O, and it must never panic, whatever the input.

use crate::units::{ContainerId, PodUid};

crate::issue::labelled! {
    /// The container runtime a container cgroup's name shows; `as_str` is Kepler's `runtime` label.
    pub enum ContainerRuntime {
        Containerd => "containerd",
        CriO => "cri-o",
        Docker => "docker",
        Podman => "podman",
    }
}

impl ContainerRuntime {
    /// The runtime of a cgroup-name prefix (`cri-containerd-`) or colon-form runtime field
    /// (`cri-containerd`, `crio`, `docker`, `libpod`).
    fn of_prefix(prefix: &str) -> Option<ContainerRuntime> {
        match prefix.trim_end_matches('-') {
            "cri-containerd" | "containerd" => Some(ContainerRuntime::Containerd),
            "crio" | "cri-o" => Some(ContainerRuntime::CriO),
            "docker" => Some(ContainerRuntime::Docker),
            "libpod" | "libpod-payload" => Some(ContainerRuntime::Podman),
            _ => None,
        }
    }
}

/// Who a cgroup (and so the processes in it) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupOwner {
    /// A container of a Kubernetes pod (pause/sandbox containers included); `runtime` where the
    /// cgroup name shows it (not under kubelet's cgroupfs driver, which names a container by its ID).
    Container {
        pod: PodUid,
        container: ContainerId,
        runtime: Option<ContainerRuntime>,
    },
    /// The pod cgroup itself, or something of the pod that is not a container (CRI-O's conmon).
    PodLevel { pod: PodUid },
    /// A container outside Kubernetes: plain Docker, Podman.
    OtherContainer { container: ContainerId },
    /// Kernel threads, host daemons, user sessions, anything else.
    System,
}

impl CgroupOwner {
    pub(crate) fn pod(&self) -> Option<&PodUid> {
        match self {
            CgroupOwner::Container { pod, .. } | CgroupOwner::PodLevel { pod } => Some(pod),
            CgroupOwner::OtherContainer { .. } | CgroupOwner::System => None,
        }
    }

    pub(crate) fn container(&self) -> Option<&ContainerId> {
        match self {
            CgroupOwner::Container { container, .. }
            | CgroupOwner::OtherContainer { container } => Some(container),
            CgroupOwner::PodLevel { .. } | CgroupOwner::System => None,
        }
    }

    /// Higher is more specific; used to pick one owner among the lines of a v1/hybrid `/proc/<pid>/cgroup`.
    fn specificity(&self) -> u8 {
        match self {
            CgroupOwner::Container { .. } => 3,
            CgroupOwner::PodLevel { .. } => 2,
            CgroupOwner::OtherContainer { .. } => 1,
            CgroupOwner::System => 0,
        }
    }
}

/// What a single path component says about containers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContainerMark {
    Container(ContainerId, Option<ContainerRuntime>),
    /// A runtime's monitor process (`crio-conmon-<id>`, `libpod-conmon-<id>`): not the container.
    Monitor,
}

/// Runtime prefixes of container cgroup names (`<prefix><64 hex>[.scope]`). Monitor prefixes are
/// checked before these, since `crio-` is a prefix of `crio-conmon-`.
const CONTAINER_PREFIXES: [&str; 5] = [
    "cri-containerd-",
    "crio-",
    "docker-",
    "libpod-payload-",
    "libpod-",
];
const MONITOR_PREFIXES: [&str; 2] = ["crio-conmon-", "libpod-conmon-"];
const MONITOR_RUNTIMES: [&str; 2] = ["crio-conmon", "libpod-conmon"];

fn container_mark(name: &str) -> Option<ContainerMark> {
    // Colon form `<slice>:<runtime>:<id>`, which containerd writes literally when its systemd cgroup
    // setting disagrees with kubelet's driver.
    if let Some((head, raw_id)) = name.rsplit_once(':') {
        let id = ContainerId::parse(raw_id)?;
        let runtime = head.rsplit_once(':').map_or(head, |(_, runtime)| runtime);
        if MONITOR_RUNTIMES.contains(&runtime) {
            return Some(ContainerMark::Monitor);
        }
        return Some(ContainerMark::Container(
            id,
            ContainerRuntime::of_prefix(runtime),
        ));
    }
    let base = name.strip_suffix(".scope").unwrap_or(name);
    for prefix in MONITOR_PREFIXES {
        if let Some(raw_id) = base.strip_prefix(prefix) {
            return ContainerId::parse(raw_id).map(|_| ContainerMark::Monitor);
        }
    }
    for prefix in CONTAINER_PREFIXES {
        if let Some(raw_id) = base.strip_prefix(prefix) {
            return ContainerId::parse(raw_id)
                .map(|id| ContainerMark::Container(id, ContainerRuntime::of_prefix(prefix)));
        }
    }
    ContainerId::parse(base).map(|id| ContainerMark::Container(id, None))
}

/// The pod UID of a pod cgroup directory name: `pod<uid>` (cgroupfs driver) or
/// `[kubelet-]kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver). None for anything else.
pub(crate) fn pod_dir_uid(name: &str) -> Option<PodUid> {
    if name.contains(':') {
        // A colon-form container directory, not a pod.
        return None;
    }
    let base = name.strip_suffix(".slice").unwrap_or(name);
    if let Some(raw) = base.strip_prefix("pod") {
        return PodUid::parse(raw);
    }
    let (slice_prefix, raw) = base.rsplit_once("-pod")?;
    if !slice_prefix.contains("kubepods") {
        return None;
    }
    PodUid::parse(raw)
}

/// The container ID of a container cgroup directory name (`<64 hex>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`, colon form). None for runtime monitors
/// (`crio-conmon-<id>`), whose time stays with the pod, and for anything else.
#[cfg(test)]
pub(crate) fn container_dir_id(name: &str) -> Option<ContainerId> {
    container_dir(name).map(|(id, _)| id)
}

/// The container ID of a container cgroup directory name, with the runtime its name shows.
pub(crate) fn container_dir(name: &str) -> Option<(ContainerId, Option<ContainerRuntime>)> {
    match container_mark(name)? {
        ContainerMark::Container(id, runtime) => Some((id, runtime)),
        ContainerMark::Monitor => None,
    }
}

/// Classifies a cgroup path relative to the hierarchy root, as it appears in `/proc/<pid>/cgroup`.
/// The deepest pod and container components win, so nested layouts (kind nodes, Docker-in-Docker)
/// resolve to the innermost pod. A pod is only recognised below a component naming `kubepods`.
pub(crate) fn classify(path: &str) -> CgroupOwner {
    let mut below_kubepods = false;
    // Positions are 2 * component index, +1 for a container found in the same component as a pod
    // (colon form), so that "deeper" is a plain comparison.
    let mut pod: Option<(usize, PodUid)> = None;
    let mut container: Option<(usize, ContainerMark)> = None;
    for (index, component) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
        let position = index.saturating_mul(2);
        if component.contains("kubepods") {
            below_kubepods = true;
        }
        if below_kubepods {
            let slice_part = component.split(':').next().unwrap_or(component);
            if let Some(uid) = pod_dir_uid(slice_part) {
                pod = Some((position, uid));
            }
        }
        if let Some(mark) = container_mark(component) {
            container = Some((position.saturating_add(1), mark));
        }
    }
    match (pod, container) {
        (
            Some((pod_at, pod)),
            Some((container_at, ContainerMark::Container(container, runtime))),
        ) if container_at > pod_at => CgroupOwner::Container {
            pod,
            container,
            runtime,
        },
        (Some((_, pod)), _) => CgroupOwner::PodLevel { pod },
        (None, Some((_, ContainerMark::Container(container, _)))) => {
            CgroupOwner::OtherContainer { container }
        }
        (None, _) => CgroupOwner::System,
    }
}

/// Classifies a whole `/proc/<pid>/cgroup` file. On v1 and hybrid hosts it has one line per hierarchy;
/// the most specific owner wins, and among equally specific ones the `cpuacct` or v2 (`0::`) line.
pub fn parse_proc_cgroup(content: &str) -> CgroupOwner {
    let mut best: Option<(u8, CgroupOwner)> = None;
    for line in content.lines() {
        // `hierarchy-id:controllers:path`; the path itself may contain ':' (colon form).
        let mut fields = line.splitn(3, ':');
        let (Some(_hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let owner = classify(path);
        let preferred_line =
            controllers.is_empty() || controllers.split(',').any(|c| c == "cpuacct");
        let score = owner.specificity() * 2 + u8::from(preferred_line);
        if best
            .as_ref()
            .is_none_or(|(best_score, _)| score > *best_score)
        {
            best = Some((score, owner));
        }
    }
    best.map_or(CgroupOwner::System, |(_, owner)| owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c9a4e-2b9d-4b7e-9a51-0c3f0e2d7a11";
    const UID_US: &str = "6f1c9a4e_2b9d_4b7e_9a51_0c3f0e2d7a11";
    const ID: &str = "0f9c6d1e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
    const ID2: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    fn pod() -> PodUid {
        PodUid::parse(UID).unwrap()
    }
    fn cid(raw: &str) -> ContainerId {
        ContainerId::parse(raw).unwrap()
    }
    fn container(raw: &str) -> CgroupOwner {
        CgroupOwner::Container {
            pod: pod(),
            container: cid(raw),
            runtime: None,
        }
    }
    /// The owner with its runtime forgotten, for tables that test the pod and container only.
    fn no_runtime(owner: CgroupOwner) -> CgroupOwner {
        match owner {
            CgroupOwner::Container { pod, container, .. } => CgroupOwner::Container {
                pod,
                container,
                runtime: None,
            },
            other => other,
        }
    }
    fn pod_level() -> CgroupOwner {
        CgroupOwner::PodLevel { pod: pod() }
    }
    fn other(raw: &str) -> CgroupOwner {
        CgroupOwner::OtherContainer {
            container: cid(raw),
        }
    }

    #[test]
    fn classify_table() {
        assert_eq!(ID.len(), 64);
        let cases: Vec<(String, CgroupOwner)> = vec![
            // cgroupfs driver, v2 paths and v1 paths (relative to the controller mount).
            (format!("/kubepods/burstable/pod{UID}/{ID}"), container(ID)),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), container(ID)),
            (format!("/kubepods/pod{UID}/{ID}"), container(ID)),
            (format!("/kubepods/burstable/pod{UID}"), pod_level()),
            (format!("/kubepods/pod{UID}/"), pod_level()),
            (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), container(ID)),
            (format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"), pod_level()),
            ("/kubepods/burstable".to_string(), CgroupOwner::System),
            ("/kubepods".to_string(), CgroupOwner::System),
            // uppercase hex is normalised
            (format!("/kubepods/pod{}/{}", UID.to_uppercase(), ID.to_uppercase()), container(ID)),
            // systemd driver
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                container(ID),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{ID}.scope"),
                container(ID),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-conmon-{ID}.scope"),
                pod_level(),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{ID}.scope"),
                container(ID),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice"),
                pod_level(),
            ),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/{ID}"),
                container(ID),
            ),
            // a sub-cgroup inside a container still belongs to it
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope/init.scope"),
                container(ID),
            ),
            // colon form, as a full component and as a child of the pod dir
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}"),
                container(ID),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}"),
                container(ID),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice:crio-conmon:{ID}"),
                pod_level(),
            ),
            // kind nodes and other nested prefixes
            (
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                container(ID),
            ),
            (format!("/kubelet/kubepods/burstable/pod{UID}/{ID}"), container(ID)),
            (
                format!("/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                container(ID),
            ),
            (format!("/docker/{ID2}/kubepods/burstable/pod{UID}/{ID}"), container(ID)),
            (format!("/docker/{ID2}/kubepods/burstable/pod{UID}"), pod_level()),
            (format!("/docker/{ID2}/kubepods/burstable"), other(ID2)),
            // not Kubernetes
            (format!("/docker/{ID}"), other(ID)),
            (format!("/system.slice/docker-{ID}.scope"), other(ID)),
            (format!("/machine.slice/libpod-{ID}.scope"), other(ID)),
            (format!("/machine.slice/libpod-{ID}.scope/container"), other(ID)),
            (format!("/machine.slice/libpod-payload-{ID}"), other(ID)),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), CgroupOwner::System),
            (format!("/user.slice/pod{UID}"), CgroupOwner::System),
            ("/".to_string(), CgroupOwner::System),
            ("".to_string(), CgroupOwner::System),
            ("/init.scope".to_string(), CgroupOwner::System),
            ("/system.slice/containerd.service".to_string(), CgroupOwner::System),
            ("/user.slice/user-1000.slice/session-3.scope".to_string(), CgroupOwner::System),
        ];
        for (path, want) in cases {
            assert_eq!(no_runtime(classify(&path)), want, "path {path}");
        }
    }

    #[test]
    fn classify_hostile_input_never_matches_garbage() {
        let id63 = &ID[..63];
        let long = "/kubepods".repeat(10_000);
        let cases: Vec<String> = vec![
            "".into(),
            "/".into(),
            "//////".into(),
            long.clone(),
            "/kubepods/burstable/pod".into(),
            "/kubepods/burstable/podxyz/abc".into(),
            "/kubepods/burstable/pod\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}".into(),
            "/kubepods/burstable/podéééééééééééééééééé/é".into(),
            format!("/kubepods/burstable/pod{UID}x"),
            format!("/kubepods/burstable/pod{}", &UID[..35]),
            format!("/docker/{id63}"),
            format!("/system.slice/docker-{id63}.scope"),
            format!("/docker/{ID}0"),
            format!("/docker/{}g", &ID[..63]),
            "::::".into(),
            ":cri-containerd:".into(),
            "-pod".into(),
            "kubepods-pod".into(),
            ".slice.scope".into(),
        ];
        for path in &cases {
            assert_eq!(classify(path), CgroupOwner::System, "path {path:.80}");
        }
        assert_eq!(classify(&format!("{long}/pod{UID}/{ID}x")), pod_level());
        assert_eq!(
            no_runtime(classify(&format!("{long}/pod{UID}/{ID}"))),
            container(ID)
        );
        // A 63-hex id under a pod leaves only the pod.
        assert_eq!(classify(&format!("/kubepods/pod{UID}/{id63}")), pod_level());
        assert_eq!(
            classify(&format!("/kubepods/pod{UID}/cri-containerd-{id63}.scope")),
            pod_level()
        );
    }

    #[test]
    fn pod_dir_names() {
        assert_eq!(pod_dir_uid(&format!("pod{UID}")), Some(pod()));
        assert_eq!(
            pod_dir_uid(&format!("kubepods-burstable-pod{UID_US}.slice")),
            Some(pod())
        );
        assert_eq!(
            pod_dir_uid(&format!("kubepods-besteffort-pod{UID_US}.slice")),
            Some(pod())
        );
        assert_eq!(
            pod_dir_uid(&format!("kubepods-pod{UID_US}.slice")),
            Some(pod())
        );
        assert_eq!(
            pod_dir_uid(&format!("kubelet-kubepods-pod{UID_US}.slice")),
            Some(pod())
        );
        assert_eq!(pod_dir_uid("burstable"), None);
        assert_eq!(pod_dir_uid("kubepods.slice"), None);
        assert_eq!(pod_dir_uid("kubepods-burstable.slice"), None);
        assert_eq!(pod_dir_uid("pod"), None);
        assert_eq!(pod_dir_uid("podgarbage"), None);
        assert_eq!(pod_dir_uid(&format!("machine-pod{UID_US}.slice")), None);
        assert_eq!(
            pod_dir_uid(&format!("kubepods-pod{UID_US}.slice:cri-containerd:{ID}")),
            None
        );
        assert_eq!(pod_dir_uid(ID), None);
        assert_eq!(pod_dir_uid(""), None);
    }

    #[test]
    fn container_dir_names() {
        let want = Some(cid(ID));
        assert_eq!(container_dir_id(ID), want);
        assert_eq!(
            container_dir_id(&format!("cri-containerd-{ID}.scope")),
            want
        );
        assert_eq!(container_dir_id(&format!("crio-{ID}.scope")), want);
        assert_eq!(container_dir_id(&format!("crio-{ID}")), want);
        assert_eq!(container_dir_id(&format!("docker-{ID}.scope")), want);
        assert_eq!(container_dir_id(&format!("libpod-{ID}.scope")), want);
        assert_eq!(
            container_dir_id(&format!(
                "kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}"
            )),
            want
        );
        assert_eq!(container_dir_id(&format!("crio-conmon-{ID}.scope")), None);
        assert_eq!(container_dir_id(&format!("crio-conmon-{ID}")), None);
        assert_eq!(
            container_dir_id(&format!("kubepods-pod{UID_US}.slice:crio-conmon:{ID}")),
            None
        );
        assert_eq!(container_dir_id(&ID[..63]), None);
        assert_eq!(container_dir_id(&format!("{ID}.slice")), None);
        assert_eq!(container_dir_id("cpu.stat"), None);
        assert_eq!(container_dir_id(""), None);
        assert_eq!(container_dir_id(&format!("pod{UID}")), None);
    }

    #[test]
    fn runtime_comes_from_the_container_cgroup_name() {
        let runtime = |path: String| match classify(&path) {
            CgroupOwner::Container { runtime, .. } => runtime,
            other => panic!("{path}: {other:?}"),
        };
        let systemd = format!("/kubepods.slice/kubepods-pod{UID_US}.slice");
        assert_eq!(
            runtime(format!("{systemd}/cri-containerd-{ID}.scope")),
            Some(ContainerRuntime::Containerd)
        );
        assert_eq!(
            runtime(format!("{systemd}/crio-{ID}.scope")),
            Some(ContainerRuntime::CriO)
        );
        assert_eq!(
            runtime(format!("{systemd}/docker-{ID}.scope")),
            Some(ContainerRuntime::Docker)
        );
        assert_eq!(
            runtime(format!("{systemd}:cri-containerd:{ID}")),
            Some(ContainerRuntime::Containerd)
        );
        assert_eq!(runtime(format!("/kubepods/pod{UID}/{ID}")), None);
        assert_eq!(
            container_dir(&format!("libpod-{ID}.scope")).map(|(_, r)| r),
            Some(Some(ContainerRuntime::Podman))
        );
        assert_eq!(ContainerRuntime::CriO.as_str(), "cri-o");
    }

    #[test]
    fn proc_cgroup_v2_and_hybrid() {
        let v2 = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(no_runtime(parse_proc_cgroup(&v2)), container(ID));

        // v1: only some hierarchies carry the pod path; name=systemd may say something else.
        let v1 = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n\
             11:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             4:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/system.slice/containerd.service\n"
        );
        assert_eq!(no_runtime(parse_proc_cgroup(&v1)), container(ID));

        // hybrid: the v2 line at the end is "/" (cgroupfs driver writes v1 only).
        let hybrid = format!(
            "4:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n\
             1:name=systemd:/\n\
             0::/\n"
        );
        assert_eq!(no_runtime(parse_proc_cgroup(&hybrid)), container(ID));

        // conflicting containers: the cpuacct line wins over another hierarchy.
        let conflict = format!(
            "5:memory:/kubepods/pod{UID}/{ID2}\n\
             4:cpu,cpuacct:/kubepods/pod{UID}/{ID}\n"
        );
        assert_eq!(no_runtime(parse_proc_cgroup(&conflict)), container(ID));

        // the conmon of a CRI-O container is pod-level
        let conmon =
            format!("0::/kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(no_runtime(parse_proc_cgroup(&conmon)), pod_level());

        // colon form inside a v2 line: the path's own colons must survive splitting
        let colon = format!("0::/kubepods.slice/kubepods-pod{UID_US}.slice:cri-containerd:{ID}\n");
        assert_eq!(no_runtime(parse_proc_cgroup(&colon)), container(ID));

        assert_eq!(
            parse_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope")),
            other(ID)
        );
        assert_eq!(parse_proc_cgroup("0::/\n"), CgroupOwner::System);
        assert_eq!(parse_proc_cgroup(""), CgroupOwner::System);
        assert_eq!(
            parse_proc_cgroup("garbage\nmore garbage\n::\n"),
            CgroupOwner::System
        );
    }

    #[test]
    fn owner_accessors() {
        assert_eq!(container(ID).pod(), Some(&pod()));
        assert_eq!(container(ID).container(), Some(&cid(ID)));
        assert_eq!(pod_level().container(), None);
        assert_eq!(other(ID).pod(), None);
        assert_eq!(CgroupOwner::System.pod(), None);
    }

    proptest::proptest! {
        #[test]
        fn classify_never_panics(path in "\\PC*") {
            let _ = classify(&path);
            let _ = parse_proc_cgroup(&path);
            let _ = pod_dir_uid(&path);
            let _ = container_dir_id(&path);
        }

        #[test]
        fn classify_never_panics_on_near_misses(
            prefix in "(/kubepods(\\.slice)?|/kubelet|/docker|/system\\.slice)?(/[a-z_-]{0,12}(pod)?)?",
            middle in "[0-9a-fA-F_:.-]{0,70}",
            suffix in "(\\.scope|\\.slice|/[a-z0-9]{0,8})?",
        ) {
            let path = format!("{prefix}/pod{middle}{suffix}/cri-containerd-{middle}{suffix}");
            let owner = classify(&path);
            if let Some(c) = owner.container() {
                proptest::prop_assert_eq!(c.as_str().len(), 64);
            }
        }
    }
}
