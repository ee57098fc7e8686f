//! Shared helpers for the integration tests: run the real binary, scrape it over HTTP, parse the
//! exposition, and decide whether a privileged test may skip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
#![allow(dead_code)]

pub mod cgroups;
pub mod fake_nvml;
pub mod prometheus;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns true when the test may run. Without root it prints why it skips, and fails instead when
/// `KEPLER_RS_REQUIRE_PRIVILEGED=1` (CI) is set.
pub fn privileged(test: &str, needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    skip(test, &format!("needs root ({needs})"));
    false
}

/// Print a skip, or panic when skips are forbidden. The line goes to the process's stderr itself,
/// not through the test harness's capture, so the summary of a passing run shows it; it is also
/// appended to the file `KEPLER_RS_SKIP_LOG` names, which `scripts/test.sh` lists at the end.
pub fn skip(test: &str, why: &str) {
    if std::env::var("KEPLER_RS_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: cannot skip under KEPLER_RS_REQUIRE_PRIVILEGED=1: {why}");
    }
    report_skip(test, why);
}

/// A skip that no host setting can avoid (e.g. a test of the no-GPU path on a GPU machine): printed
/// and logged like `skip`, but allowed under `KEPLER_RS_REQUIRE_PRIVILEGED=1`.
pub fn report_skip(test: &str, why: &str) {
    let line = format!("SKIP {test}: {why}");
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(path) = std::env::var_os("KEPLER_RS_SKIP_LOG") {
        // One write of one line in append mode: lines of tests running in parallel do not interleave.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr().lock(),
                "cannot append to KEPLER_RS_SKIP_LOG: {e}"
            );
        }
    }
}

/// Arguments of an exporter over a fixture tree (`<root>/sys`, `<root>/proc`): RAPL and cgroup
/// sources, no Kubernetes, no GPU, then `extra`.
pub fn fixture_args(root: &Path, interval: &str, node_name: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--sysfs",
        root.join("sys").to_str().unwrap(),
        "--procfs",
        root.join("proc").to_str().unwrap(),
        "--interval",
        interval,
        "--node-name",
        node_name,
        "--energy-source",
        "rapl",
        "--cpu-source",
        "cgroup",
        "--no-kube",
        "--gpu",
        "off",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kepler-rs run`, killed on drop.
pub struct Exporter {
    pub child: Child,
    pub port: u16,
}

impl Exporter {
    pub fn start(args: &[&str]) -> Exporter {
        Exporter::start_under(&[], free_port(), args)
    }

    /// Start on a given port (e.g. to restart an exporter where a client expects it).
    pub fn start_on(port: u16, args: &[&str]) -> Exporter {
        Exporter::start_under(&[], port, args)
    }

    /// Start with extra environment variables (e.g. `LD_LIBRARY_PATH` for the fake NVML library).
    pub fn start_env(env: &[(&str, &str)], args: &[&str]) -> Exporter {
        Exporter::start_full(&[], free_port(), env, args)
    }

    /// Runs the exporter through `wrapper` (e.g. `setpriv --reuid=... --`); empty runs it directly.
    pub fn start_under(wrapper: &[&str], port: u16, args: &[&str]) -> Exporter {
        Exporter::start_full(wrapper, port, &[], args)
    }

    /// `start_under` with extra environment variables.
    pub fn start_full(
        wrapper: &[&str],
        port: u16,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Exporter {
        let listen = format!("127.0.0.1:{port}");
        let bin = env!("CARGO_BIN_EXE_kepler-rs");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        // The exporter reads its options from KEPLER_RS_* too: only what the test passes counts.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEPLER_RS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("run")
            .args(["--listen", &listen])
            .args(args)
            .env("KEPLER_RS_LOG_LEVEL", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kepler-rs");
        Exporter { child, port }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, "")
    }

    /// Wait until /readyz answers 200 (the first complete interval).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .ok();
                panic!("exporter exited with {status} before ready:\n{err}");
            }
            if let Ok((200, _)) = try_http(self.port, "GET", "/readyz", "") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("exporter not ready after {timeout:?}");
    }

    /// Send SIGTERM and wait for the exit status (None if it did not exit in time).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).ok();
        }
        err
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    extra: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn http(port: u16, method: &str, path: &str, extra: &str) -> (u16, String) {
    try_http(port, method, path, extra).expect("http request")
}

/// One sample: metric name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Parse the Prometheus text format (enough for our own output: no escapes inside values needed
/// beyond \" \\ \n).
pub fn parse(text: &str) -> Vec<(Key, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push((Key { name, labels }, value));
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// Sum of all samples of `name` whose labels include every pair of `filter`.
pub fn sum(samples: &[(Key, f64)], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            k.name == name
                && filter
                    .iter()
                    .all(|(l, v)| k.labels.get(*l).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

pub fn label_values(samples: &[(Key, f64)], name: &str, label: &str) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .filter(|(k, _)| k.name == name)
        .filter_map(|(k, _)| k.labels.get(label).cloned())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Run `promtool check metrics` on an exposition; Err with its output when it complains.
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && msg.trim().is_empty() {
        Some(Ok(()))
    } else {
        Some(Err(msg))
    }
}

/// Check promtool, or skip/fail when it is missing.
pub fn assert_promtool_clean(test: &str, text: &str) {
    match promtool_check(text) {
        Some(Ok(())) => {}
        Some(Err(msg)) => panic!("promtool check metrics complained:\n{msg}"),
        None => skip(test, "promtool not installed (apt-get install prometheus)"),
    }
}

/// Write a powercap zone directory.
pub fn write_zone(dir: &Path, name: &str, energy_uj: u64, max_uj: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(dir.join("energy_uj"), format!("{energy_uj:020}\n")).unwrap();
    std::fs::write(dir.join("max_energy_range_uj"), format!("{max_uj}\n")).unwrap();
}

/// The cgroup v1 `cpu` and `cpuacct` mount points, from mountinfo (hybrid and v1 hosts).
pub fn v1_mounts() -> Option<(PathBuf, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (mut cpu, mut cpuacct) = (None, None);
    for line in info.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split(' ');
        if post.next() != Some("cgroup") {
            continue;
        }
        let opts = post.nth(1).unwrap_or("");
        let mount = PathBuf::from(pre.split(' ').nth(4)?);
        let controllers: Vec<&str> = opts.split(',').collect();
        if controllers.contains(&"cpuacct") {
            cpuacct = Some(mount.clone());
        }
        if controllers.contains(&"cpu") {
            cpu = Some(mount);
        }
    }
    Some((cpu?, cpuacct?))
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` or, on hybrid hosts, `/sys/fs/cgroup/unified`).
pub fn v2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next() != Some("cgroup2") {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A busy loop held at `duty` of one CPU by a CFS quota (period `period_us`) on the v1 `cpu` cgroup
/// `cpu_dir`, then moved into every cgroup directory of `join` (which should include `cpu_dir`).
pub fn duty_cycled_loop(cpu_dir: &Path, period_us: u64, duty: f64, join: &[PathBuf]) -> Child {
    std::fs::write(cpu_dir.join("cpu.cfs_period_us"), period_us.to_string()).unwrap();
    let quota = (duty * period_us as f64) as u64;
    std::fs::write(cpu_dir.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
    busy_loop_in(join)
}

/// Pins process `pid` to CPU `cpu` (`sched_setaffinity`).
pub fn pin_to_cpu(pid: u32, cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, `cpu` below CPU_SETSIZE on any machine these tests run on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid pid, a cpu_set_t of the size given.
    let rc = unsafe {
        libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    assert_eq!(
        rc,
        0,
        "pin {pid} to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

/// The number of online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A busy loop moved into every cgroup directory of `join`.
pub fn busy_loop_in(join: &[PathBuf]) -> Child {
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for dir in join {
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
    child
}
