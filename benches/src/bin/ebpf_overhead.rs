//! Overhead of the eBPF program per context switch, by the kernel's own accounting (BPF run-time
//! stats: run_time_ns / run_cnt), under a context-switch-heavy load: pairs of threads ping-ponging a
//! byte through pipes. Also checks that every switch was counted (program runs = switches the
//! program saw = the kernel's `ctxt` delta, within what other processes add). Needs root.
//! Usage: `cargo run --release -p kepler-rs-benches --bin ebpf_overhead [seconds] [pairs]`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kepler_ebpf_common::names;
use kepler_rs::activity::ebpf::program::{Drained, LoadedProgram};
use kepler_rs::activity::ebpf::OBJECT;

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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let pairs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    let mut program = LoadedProgram::load(OBJECT, Path::new("/sys/kernel/btf/vmlinux"))?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let mut drained = Drained::default();
    program.drain(&mut drained)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..pairs {
        let (mut a, mut b) = UnixStream::pair()?;
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
            drop(a);
            trips
        }));
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

    let (t0, n0) = program.run_stats(names::SCHED_SWITCH)?;
    let s0 = program.cpu_state()?.switches;
    let c0 = node_ctxt();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (t1, n1) = program.run_stats(names::SCHED_SWITCH)?;
    let s1 = program.cpu_state()?.switches;
    let c1 = node_ctxt();
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let trips: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();

    let runs = n1 - n0;
    let ns = (t1 - t0).as_nanos() as f64;
    let state = program.cpu_state()?;
    println!("load: {pairs} ping-pong pairs for {elapsed:.1} s, {trips} round trips");
    println!(
        "sched_switch program: {runs} runs ({:.0}/s), {:.1} ns per run (kernel run_time_ns / run_cnt)",
        runs as f64 / elapsed,
        ns / runs.max(1) as f64
    );
    println!(
        "switches seen by the program: {} (= runs: {}); node ctxt delta: {}; dropped slices: {}",
        s1 - s0,
        s1 - s0 == runs,
        c1 - c0,
        state.dropped
    );
    Ok(())
}
