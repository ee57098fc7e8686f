//! The HTTP load tool (`web_load`) in its short form against the real exporter: 200 reconnecting
//! slowloris connections and 50 keep-alive scrapers for 3 s on loopback. Every normal scrape during
//! the attack is answered and no scraper sees an error. Figures (RSS, latency) belong to the full run
//! in benches/README.md, not to this test.

mod common;

#[test]
fn web_load_short_form_answers_every_scrape() {
    let out = common::run_short(env!("CARGO_BIN_EXE_web_load"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "web_load failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("| 10/10 answered"), "{stdout}");
    assert!(stdout.contains(" 0 errors,"), "{stdout}");
    println!("{stdout}");
}
