//! Overhead of the eBPF program per context switch, by the kernel's own accounting (BPF run-time
//! stats: run_time_ns / run_cnt), under a context-switch-heavy load: pairs of threads ping-ponging a
//! byte through pipes. Also checks that every switch was counted (program runs = switches the
//! program saw = the kernel's `ctxt` delta, within what other processes add). Needs root.
//! Usage: `cargo run --release -p kepler-rs-benches --bin ebpf_overhead [seconds] [pairs]
//! [threads|processes]` (pairs of threads of one process, default, or thread + forked child);
//! `KEPLER_RS_BPF_OBJECT=<file>` measures another build of the object (e.g. a trimmed variant);
//! `KEPLER_RS_BPF_BASELINE=<file>[:<file>...]` also measures other builds' programs, each alone under
//! the same load, and `KEPLER_RS_BPF_ROUNDS=<n>` repeats the floor and those programs n times,
//! alternating, and prints each one's median and its median ratio to the floor of the same round;
//! `KEPLER_RS_BPF_COUNTERS=software|hardware` runs it with CPU-wide counters read at every switch.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use kepler_ebpf_common::names;
use kepler_rs::activity::ebpf::counters::{CounterKind, Counters};
use kepler_rs::activity::ebpf::program::{Drained, LoadedProgram};
use kepler_rs::activity::ebpf::OBJECT;

/// The kernel's BTF: attach ids and the offsets of the fields the program reads.
const BTF: &str = "/sys/kernel/btf/vmlinux";

fn node_ctxt() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("ctxt ").map(|v| v.trim().parse().ok()))
        })
        .flatten()
        .unwrap_or(0)
}

/// Context-switch load: `pairs` pairs ping-ponging one byte through a socket pair; each pair is two
/// threads of this process, or (`processes`) a thread of this process and a forked child, so that
/// consecutive switches on a CPU alternate between two processes.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
    children: Vec<libc::pid_t>,
}

/// The child's side of a cross-process pair: echo bytes until the socket closes. Only
/// async-signal-safe calls (it runs in a fork of a multi-threaded process).
fn echo_child(fd: libc::c_int) -> ! {
    // Close every other inherited descriptor (the parent's ends of this and earlier pairs), so each
    // child sees end-of-file as soon as its parent thread closes its end.
    for other in 3..4096 {
        if other != fd {
            // SAFETY: closing descriptors of this (child) process.
            unsafe { libc::close(other) };
        }
    }
    let mut byte = 0u8;
    loop {
        // SAFETY: reading/writing one byte of a local through a valid fd.
        let n = unsafe { libc::read(fd, std::ptr::addr_of_mut!(byte).cast(), 1) };
        if n != 1 || unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) } != 1 {
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
    }
}

impl Load {
    fn start(pairs: usize, processes: bool) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut children = Vec::new();
        for _ in 0..pairs {
            let (mut a, mut b) = UnixStream::pair()?;
            if processes {
                use std::os::fd::AsRawFd;
                // SAFETY: the child only calls echo_child (async-signal-safe syscalls).
                match unsafe { libc::fork() } {
                    -1 => anyhow::bail!("fork: {}", std::io::Error::last_os_error()),
                    0 => echo_child(b.as_raw_fd()),
                    pid => children.push(pid),
                }
            } else {
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 1];
                    while b.read_exact(&mut buf).is_ok() {
                        if b.write_all(&buf).is_err() {
                            break;
                        }
                    }
                    0
                }));
            }
            let stop_a = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1];
                let mut trips = 0u64;
                while !stop_a.load(Ordering::Relaxed) {
                    if a.write_all(&[1]).is_err() || a.read_exact(&mut buf).is_err() {
                        break;
                    }
                    trips += 1;
                }
                trips
            }));
        }
        Ok(Load {
            stop,
            threads,
            children,
        })
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let trips = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum();
        for pid in self.children {
            // SAFETY: reaping our own child (its socket closed when the thread ended).
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        trips
    }
}

/// One sched_switch program of `object` alone, under the same load: with the no-op program, what
/// any sched_switch program costs here; with another build's `kepler_sched_switch`, a baseline.
fn alone(
    object: &[u8],
    name: &str,
    seconds: u64,
    pairs: usize,
    processes: bool,
) -> anyhow::Result<f64> {
    let btf = aya::Btf::from_sys_fs()?;
    // The offsets of the kernel fields the program reads, as the exporter sets them (an older
    // build without them ignores the global).
    let (_, offsets) = kepler_rs::activity::ebpf::program::kernel_btf(Path::new(BTF))?;
    let mut ebpf = aya::EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(names::KERNEL_OFFSETS, &offsets, false)
        .load(object)?;
    let program: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("no program {name} in the object"))?
        .try_into()?;
    program.load("sched_switch", &btf)?;
    program.attach()?;
    let load = Load::start(pairs, processes)?;
    let i0 = program.info()?;
    std::thread::sleep(Duration::from_secs(seconds));
    let i1 = program.info()?;
    load.stop();
    let runs = i1.run_count() - i0.run_count();
    Ok((i1.run_time() - i0.run_time()).as_nanos() as f64 / runs.max(1) as f64)
}

/// Each of `objects`' `kepler_sched_switch` alone under the same load, `rounds` times, alternating
/// with the no-op floor (the first round reuses `first_floor_ns`); prints every figure, then per
/// object the median ns and the median of its ratios to the floor of the same round.
fn compare(
    objects: &[(String, Vec<u8>)],
    first_floor_ns: f64,
    rounds: usize,
    seconds: u64,
    pairs: usize,
    processes: bool,
) -> anyhow::Result<()> {
    let mut floors = Vec::new();
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); objects.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); objects.len()];
    for round in 0..rounds {
        let floor_ns = if round == 0 {
            first_floor_ns
        } else {
            alone(OBJECT, names::SCHED_SWITCH_FLOOR, seconds, pairs, processes)?
        };
        floors.push(floor_ns);
        println!("round {}: floor {floor_ns:.1} ns", round + 1);
        for (index, (name, object)) in objects.iter().enumerate() {
            let ns = alone(object, names::SCHED_SWITCH, seconds, pairs, processes)?;
            println!(
                "baseline {name} kepler_sched_switch alone, same load: {ns:.1} ns per run ({:.2}x floor)",
                ns / floor_ns
            );
            figures[index].push(ns);
            ratios[index].push(ns / floor_ns);
        }
    }
    if rounds > 1 {
        println!(
            "medians over {rounds} rounds: floor {:.1} ns",
            median(&mut floors)
        );
        for (index, (name, _)) in objects.iter().enumerate() {
            println!(
                "  {name}: {:.1} ns, {:.2}x floor",
                median(&mut figures[index]),
                median(&mut ratios[index])
            );
        }
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let pairs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    let processes = match args.next().as_deref() {
        None | Some("threads") => false,
        Some("processes") => true,
        Some(other) => anyhow::bail!("load kind must be threads or processes, not {other:?}"),
    };
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let floor_ns = alone(OBJECT, names::SCHED_SWITCH_FLOOR, seconds, pairs, processes)?;
    // KEPLER_RS_BPF_BASELINE=<object>[:<object>...]: other builds' programs under the same load.
    let baselines: Vec<std::path::PathBuf> = std::env::var_os("KEPLER_RS_BPF_BASELINE")
        .map(|paths| {
            std::env::split_paths(&paths)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let rounds: usize = std::env::var("KEPLER_RS_BPF_ROUNDS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("KEPLER_RS_BPF_ROUNDS must be a number of rounds")?
        .unwrap_or(1);
    if !baselines.is_empty() {
        let objects = baselines
            .iter()
            .map(|path| {
                let object = std::fs::read(path)
                    .with_context(|| format!("reading the object {}", path.display()))?;
                Ok((path.display().to_string(), object))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        compare(&objects, floor_ns, rounds, seconds, pairs, processes)?;
    }

    let variant = std::env::var_os("KEPLER_RS_BPF_OBJECT")
        .filter(|path| !path.is_empty())
        .map(std::fs::read)
        .transpose()?;
    let object = variant.as_deref().unwrap_or(OBJECT);
    // KEPLER_RS_BPF_COUNTERS=software|hardware: the program also reads CPU-wide counters per switch.
    let counters = match std::env::var("KEPLER_RS_BPF_COUNTERS").as_deref() {
        Ok("software") => Some(CounterKind::Software),
        Ok("hardware") => Some(CounterKind::Hardware),
        _ => None,
    }
    .map(|kind| Counters::open(kind, Path::new("/sys")))
    .transpose()?;
    if let Some(c) = &counters {
        println!("counters: {:?} on {} CPUs", c.kind(), c.cpus());
    }
    let mut program = LoadedProgram::load_with_counters(object, Path::new(BTF), counters)?;
    let mut drained = Drained::default();
    program.drain(&mut drained)?;
    let load = Load::start(pairs, processes)?;
    let c_cached0 = program.cpu_state()?.cached;
    let (t0, n0) = program.run_stats(names::SCHED_SWITCH)?;
    let s0 = program.cpu_state()?.switches;
    let c0 = node_ctxt();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (t1, n1) = program.run_stats(names::SCHED_SWITCH)?;
    let s1 = program.cpu_state()?.switches;
    let c_cached1 = program.cpu_state()?.cached;
    let c1 = node_ctxt();
    let elapsed = started.elapsed().as_secs_f64();
    let trips = load.stop();

    let runs = n1 - n0;
    let ns = (t1 - t0).as_nanos() as f64 / runs.max(1) as f64;
    let state = program.cpu_state()?;
    let kind = if processes { "processe" } else { "thread" };
    println!("load: {pairs} ping-pong pairs ({kind}s) for {elapsed:.1} s, {trips} round trips");
    println!(
        "kepler_sched_switch: {runs} runs ({:.0}/s), {ns:.1} ns per run (kernel run_time_ns / run_cnt)",
        runs as f64 / elapsed
    );
    println!(
        "no-op sched_switch program (floor, same load): {floor_ns:.1} ns per run; kepler above floor: {:.1} ns",
        ns - floor_ns
    );
    println!(
        "switches seen by the program: {} (runs: {}, read a moment apart); node ctxt delta: {}; dropped slices: {}",
        s1 - s0,
        runs,
        c1 - c0,
        state.dropped
    );
    println!(
        "slices through the run cache: {:.1} % (no hash lookup)",
        100.0 * (c_cached1 - c_cached0) as f64 / (s1 - s0).max(1) as f64
    );
    Ok(())
}
