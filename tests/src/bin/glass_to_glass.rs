//! Glass to glass, measured in headless Chromium: starts `playpod demo --stamp`, opens it as
//! player 1 and for `--seconds` reads the stamp of every decoded frame (draw -> decoded latency)
//! while pressing the up arrow twice a second (key press on the page -> first decoded frame whose
//! stamp shows the key held). Prints a table and one JSON line; `--out FILE` also writes the JSON.
//!
//! ```text
//! cargo build --release -p playpod && cargo build --release -p playpod-tests --bin glass-to-glass
//! target/release/glass-to-glass --seconds 60
//! ```
//!
//! Needs Xvfb, Chromium and chromedriver (`./test.sh` installs them). Both ends run on this
//! machine, so they share one clock; "decoded" is the decoder's output callback, before the
//! frame is painted (at most one display refresh later).

use std::time::Duration;

use clap::Parser;
use playpod_tests::browser::{Chromedriver, new_session, require_browser};
use playpod_tests::g2g::{self, Percentiles};
use playpod_tests::{Served, playpod_bin};

#[derive(Debug, Parser)]
#[command(about = "Glass-to-glass latency of playpod in headless Chromium")]
struct Args {
    /// How long to measure.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    seconds: u64,
    /// What the game shows: `pong` (the demo game) or `plasma` (every pixel changes every frame,
    /// the encoder's and decoder's worst case).
    #[arg(long, default_value = "pong", value_parser = ["pong", "plasma"])]
    scene: String,
    /// Extra arguments for `playpod demo` (e.g. `--demo-arg=--bitrate-kbps=1000`).
    #[arg(long = "demo-arg", allow_hyphen_values = true)]
    demo_args: Vec<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn row(name: &str, p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.count, p.p50, p.p95, p.p99, p.max
        ),
        None => format!("| {name} | 0 | - | - | - | - |"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require_browser();
    let _ = playpod_bin();
    let mut demo: Vec<&str> = vec!["demo", "--stamp", "--scene", &args.scene];
    demo.extend(args.demo_args.iter().map(String::as_str));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let profile = tempfile::Builder::new()
            .prefix("playpod-chromium-")
            .tempdir()?;
        let served = Served::start(&demo);
        let driver = Chromedriver::start();
        let client = new_session(&driver, profile.path()).await;
        let result = g2g::measure(
            &client,
            &served,
            Duration::from_secs(args.seconds),
            Duration::from_millis(500),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        drop(driver);
        drop(served);
        result
    })?;
    println!(
        "playpod demo --stamp --scene {} (768x768, 60 fps), headless Chromium, {:.0} s, \
         {} decoded frames ({} repeating the game frame before, {} out of order), {} unreadable \
         stamps\n",
        args.scene,
        report.seconds,
        report.frames.len(),
        report.repeated(),
        report.out_of_order(),
        report.unreadable
    );
    println!("| ms | samples | p50 | p95 | p99 | max |\n|---|---:|---:|---:|---:|---:|");
    println!("{}", row("draw -> decoded", report.draw_to_decoded()));
    println!(
        "{}",
        row(
            "key press -> decoded frame showing it",
            report.key_to_visible()
        )
    );
    println!(
        "\n{} of {} key presses seen in the stamp",
        report.key_latencies_ms.len(),
        report.presses
    );
    let json = report.to_json();
    println!("{json}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))?;
    }
    Ok(())
}
