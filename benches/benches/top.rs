//! `kepler-rs top` on a 1,000-pod node: parsing the exposition into a reading, building the sorted
//! table, and redrawing the screen (ratatui's test backend, 200x50). Target: under 5 ms together.

use criterion::{criterion_group, criterion_main, Criterion};
use kepler_rs::remote::exposition;
use kepler_rs::top::app::App;
use kepler_rs::top::model::Reading;
use kepler_rs::top::table::{Sort, View};
use kepler_rs::top::view;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::fmt::Write;
use std::hint::black_box;

/// An exposition shaped like the exporter's: 1,000 pods with two containers each, two zones.
fn exposition_1000_pods() -> String {
    let mut out = String::with_capacity(4 << 20);
    let node = "node_name=\"bench-node\"";
    for (zone, watts) in [("package", 180.0), ("dram", 20.0)] {
        for metric in ["joules_total", "watts", "idle_watts", "active_watts"] {
            let _ = writeln!(
                out,
                "kepler_node_cpu_{metric}{{{node},zone=\"{zone}\",source=\"rapl\"}} {watts}"
            );
        }
    }
    let _ = writeln!(
        out,
        "kepler_exporter_last_tick_timestamp_seconds{{{node}}} 1700000000.5"
    );
    for family in ["joules_total", "watts"] {
        for pod in 0..1000 {
            let uid = format!("{pod:08x}-0000-4000-8000-000000000000");
            for zone in ["package", "dram"] {
                let _ = writeln!(
                    out,
                    "kepler_pod_cpu_{family}{{{node},pod_id=\"{uid}\",pod_name=\"jupyter-user-{pod}\",pod_namespace=\"jhub\",zone=\"{zone}\"}} {}",
                    pod as f64 * 1.25
                );
            }
        }
        for pod in 0..1000 {
            let uid = format!("{pod:08x}-0000-4000-8000-000000000000");
            for c in 0..2 {
                for zone in ["package", "dram"] {
                    let _ = writeln!(
                        out,
                        "kepler_container_cpu_{family}{{{node},container_id=\"{c:08x}{pod:056x}\",container_name=\"notebook-{c}\",pod_id=\"{uid}\",zone=\"{zone}\"}} {}",
                        pod as f64 * 0.6
                    );
                }
            }
        }
    }
    out
}

fn parse_and_redraw(c: &mut Criterion) {
    let text = exposition_1000_pods();
    let reading = Reading::from_samples(&exposition::parse(&text).unwrap()).unwrap();
    assert_eq!(reading.pods.len(), 1000);
    assert_eq!(reading.containers.len(), 2000);

    c.bench_function("top/parse text only (1000 pods)", |b| {
        b.iter(|| exposition::parse(black_box(&text)).unwrap().len())
    });

    c.bench_function("top/parse 1000-pod exposition", |b| {
        b.iter(|| {
            let samples = exposition::parse(black_box(&text)).unwrap();
            Reading::from_samples(&samples).unwrap()
        })
    });

    let mut app = App::new(
        "bench".into(),
        2.0,
        View::Pods,
        Sort::default(),
        String::new(),
    );
    app.on_reading(Ok(reading.clone()), 1.7e9);
    let mut terminal = Terminal::new(TestBackend::new(200, 50)).unwrap();
    c.bench_function("top/redraw 1000 pods 200x50", |b| {
        b.iter(|| {
            terminal
                .draw(|f| view::draw(f, black_box(&app)))
                .unwrap()
                .area
        })
    });

    c.bench_function(
        "top/refresh: parse, rates, table, redraw (1000 pods)",
        |b| {
            b.iter(|| {
                let samples = exposition::parse(black_box(&text)).unwrap();
                let reading = Reading::from_samples(&samples).unwrap();
                app.on_reading(Ok(reading), 1.7e9);
                terminal.draw(|f| view::draw(f, &app)).unwrap().area
            })
        },
    );
}

criterion_group!(benches, parse_and_redraw);
criterion_main!(benches);
