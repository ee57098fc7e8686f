//! What hostile and crowded clients cost the exporter's HTTP server, measured on the real binary:
//! 1. slowloris: N connections that send part of a request head and then a byte every few seconds,
//!    reconnecting when the server closes them; meanwhile normal scrapes (new connection each) are
//!    timed and the exporter's RSS is sampled;
//! 2. after the attack, RSS again;
//! 3. S concurrent keep-alive scrapers for T seconds: answers, errors, p50/p99 latency. Like
//!    Prometheus's Go client, a scraper whose kept-alive connection was closed before any byte of
//!    the answer came back reconnects and sends again once (counted as `retried`);
//! 4. RSS after the crowd left.
//!
//! Usage: `cargo run --release -p kepler-rs-benches --bin web_load -- --bin target/release/kepler-rs
//! [--slowloris 1000] [--scrapers 500] [--seconds 30] [--max-connections 64] [--short]`.
//! `--short` (CI): 200 slow connections, 50 scrapers for 3 s. Exits 1 when a scrape went
//! unanswered or a scraper saw an error; prints the figures as a markdown table either way.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Options {
    bin: PathBuf,
    slowloris: usize,
    scrapers: usize,
    seconds: u64,
    max_connections: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        bin: PathBuf::from("target/release/kepler-rs"),
        slowloris: 1000,
        scrapers: 500,
        seconds: 30,
        max_connections: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => o.bin = PathBuf::from(value()?),
            "--slowloris" => o.slowloris = value()?.parse().map_err(|e| format!("{e}"))?,
            "--scrapers" => o.scrapers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--max-connections" => {
                o.max_connections = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--short" => {
                o.slowloris = 200;
                o.scrapers = 50;
                o.seconds = 3;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

struct Exporter {
    child: Child,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One request on `stream`; the status and the time to the last byte. Reads the whole answer.
async fn request(stream: &mut TcpStream, close: bool) -> Result<(u16, bool), (String, bool)> {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!("GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| (e.to_string(), false))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let (status, body_start, length) = loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (e.to_string(), !buf.is_empty()))?;
        if n == 0 {
            return Err(("closed before the answer".into(), !buf.is_empty()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (status, end + 4, length);
        }
    };
    while buf.len() < body_start + length {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (e.to_string(), true))?;
        if n == 0 {
            return Err(("answer cut off".into(), true));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, true))
}

async fn one_scrape(port: u16) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(30), request(&mut s, true)).await {
        Ok(Ok((200, _))) => Ok(start.elapsed()),
        Ok(Ok((status, _))) => Err(format!("HTTP {status}")),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err("no answer within 30 s".into()),
    }
}

/// Keep `n` slow connections open until `stop`; reconnect those the server closes.
async fn slowloris(port: u16, n: usize, stop: Arc<AtomicBool>, reconnects: Arc<AtomicU64>) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let stop = stop.clone();
        let reconnects = reconnects.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = s
                    .write_all(
                        format!("GET /metrics HTTP/1.1\r\nHost: bench\r\nX-Slow-{i}: ").as_bytes(),
                    )
                    .await;
                let mut one = [0u8; 1];
                // Dribble a byte every 2 s until the server closes the connection.
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut one)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                        Err(_) => {
                            if s.write_all(b"a").await.is_err() {
                                break;
                            }
                        }
                    }
                }
                reconnects.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[derive(Default)]
struct CrowdResult {
    latencies_us: Vec<u64>,
    errors: u64,
    retried: u64,
    first_error: Option<String>,
}

async fn scraper(port: u16, until: Instant) -> CrowdResult {
    let mut r = CrowdResult::default();
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < until {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let reused = conn.is_some();
            let mut s = match conn.take() {
                Some(s) => s,
                None => match TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(s) => s,
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(format!("connect: {e}"));
                        break;
                    }
                },
            };
            match tokio::time::timeout(Duration::from_secs(30), request(&mut s, false)).await {
                Ok(Ok((200, _))) => {
                    r.latencies_us.push(start.elapsed().as_micros() as u64);
                    conn = Some(s);
                    break;
                }
                Ok(Err((_, false))) if reused && attempt == 0 => {
                    // The kept-alive connection was closed before any answer: send again once.
                    r.retried += 1;
                    attempt += 1;
                }
                Ok(Ok((status, _))) => {
                    r.errors += 1;
                    r.first_error.get_or_insert(format!("HTTP {status}"));
                    break;
                }
                Ok(Err((e, _))) => {
                    r.errors += 1;
                    r.first_error.get_or_insert(e);
                    break;
                }
                Err(_) => {
                    r.errors += 1;
                    r.first_error.get_or_insert("timeout".into());
                    break;
                }
            }
        }
    }
    r
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("web_load: {e}");
            std::process::exit(2);
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(28398);
    let child = Command::new(&o.bin)
        .args([
            "run",
            "--no-kube",
            "--gpu",
            "off",
            "--cpu-source",
            "procfs",
            "--interval",
            "1s",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--web.max-connections", &o.max_connections.to_string()])
        .env("KEPLER_RS_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let exporter = match child {
        Ok(child) => Exporter { child },
        Err(e) => {
            eprintln!("web_load: cannot start {}: {e}", o.bin.display());
            std::process::exit(2);
        }
    };
    let pid = exporter.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut failed = false;
    runtime.block_on(async {
        // Ready and warm (one exposition encoded and cached).
        let start = Instant::now();
        while one_scrape(port).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "exporter did not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for _ in 0..5 {
            let _ = one_scrape(port).await;
        }
        let rss_start = rss_kib(pid);

        // 1. slowloris
        let stop = Arc::new(AtomicBool::new(false));
        let reconnects = Arc::new(AtomicU64::new(0));
        let attack = tokio::spawn(slowloris(port, o.slowloris, stop.clone(), reconnects.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut rss_peak = rss_kib(pid);
        let mut scrape_ms = Vec::new();
        for _ in 0..10 {
            match one_scrape(port).await {
                Ok(d) => scrape_ms.push(d.as_secs_f64() * 1000.0),
                Err(e) => {
                    failed = true;
                    eprintln!("web_load: a scrape during the slowloris attack failed: {e}");
                }
            }
            rss_peak = rss_peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = attack.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after_attack = rss_kib(pid);

        // 3. the crowd
        let until = Instant::now() + Duration::from_secs(o.seconds);
        let crowd: Vec<_> = (0..o.scrapers).map(|_| tokio::spawn(scraper(port, until))).collect();
        let mut all = CrowdResult::default();
        let sampler = {
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            (stop, tokio::spawn(async move {
                let mut peak = 0;
                while !s2.load(Ordering::Relaxed) {
                    peak = rss_kib(pid).max(peak);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                peak
            }))
        };
        for t in crowd {
            if let Ok(r) = t.await {
                all.latencies_us.extend(r.latencies_us);
                all.errors += r.errors;
                all.retried += r.retried;
                if all.first_error.is_none() {
                    all.first_error = r.first_error;
                }
            }
        }
        sampler.0.store(true, Ordering::Relaxed);
        let rss_crowd_peak = sampler.1.await.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_end = rss_kib(pid);
        all.latencies_us.sort_unstable();
        if all.errors > 0 {
            failed = true;
            eprintln!("web_load: {} scraper errors, first: {:?}", all.errors, all.first_error);
        }
        let max_scrape = scrape_ms.iter().cloned().fold(0.0, f64::max);
        let mib = |k: u64| k as f64 / 1024.0;
        println!("| figure | value |");
        println!("|---|---|");
        println!("| exporter RSS at start | {:.1} MiB |", mib(rss_start));
        println!(
            "| {} slowloris connections (reconnecting; {} reconnects): peak RSS | {:.1} MiB (+{:.1} MiB) |",
            o.slowloris,
            reconnects.load(Ordering::Relaxed),
            mib(rss_peak),
            mib(rss_peak.saturating_sub(rss_start))
        );
        println!(
            "| normal scrapes during the attack | {}/10 answered, slowest {:.1} ms |",
            scrape_ms.len(),
            max_scrape
        );
        println!("| RSS 2 s after the attack | {:.1} MiB |", mib(rss_after_attack));
        println!(
            "| {} keep-alive scrapers for {} s (--web.max-connections {}) | {} answers, {} errors, {} retried on a closed idle connection |",
            o.scrapers,
            o.seconds,
            o.max_connections,
            all.latencies_us.len(),
            all.errors,
            all.retried
        );
        println!(
            "| scrape latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
            percentile(&all.latencies_us, 0.5),
            percentile(&all.latencies_us, 0.99),
            percentile(&all.latencies_us, 1.0)
        );
        println!("| peak RSS during the crowd | {:.1} MiB |", mib(rss_crowd_peak));
        println!(
            "| RSS 3 s after the crowd | {:.1} MiB ({:+.1} MiB vs start) |",
            mib(rss_end),
            mib(rss_end) - mib(rss_start)
        );
    });
    drop(exporter);
    if failed {
        std::process::exit(1);
    }
}
