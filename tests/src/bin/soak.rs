//! A soak run of `playpod demo` (or, with `--pod`, of `playpod pod` as in a session's pod):
//! viewers, listeners and both players come and go for `--seconds` while the pod's memory, file
//! descriptors, threads and CPU are sampled; then every churned connection must be gone, no key
//! held, nothing grown beyond the limits, and SIGTERM must leave no process or file behind.
//! Prints a line per sample, then one JSON line; exits 1 if anything was wrong (each problem
//! printed), 2 on bad arguments.
//!
//! ```text
//! cargo build --release -p playpod && cargo build --release -p playpod-tests --bin soak
//! target/release/soak --seconds 3600 [--pod] [--arg=--scene=plasma]
//! ```
//!
//! Needs Xvfb and PulseAudio (`./demo.sh` installs them). `./test.sh` runs it for 20 s (the
//! `soak` test); the memory check means something only over a long run.

use std::time::Duration;

use clap::Parser;
use playpod_tests::playpod_bin;
use playpod_tests::soak::{Options, run};

#[derive(Debug, Parser)]
#[command(about = "Soak run of playpod demo under churning viewers, listeners and players")]
struct Args {
    /// How long the churn lasts.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=7 * 86_400))]
    seconds: u64,
    /// Seconds between two samples of the pod.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_seconds: u64,
    /// The pod's baseline (memory, descriptors, threads) is its sample at this time.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    warm_up_seconds: u64,
    /// How much the pod's resident memory may grow from the baseline to the end, in MiB.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=4096))]
    max_rss_growth_mib: u64,
    /// Stream with `playpod pod --framebuffer` from an Xvfb and the built-in game started here,
    /// as in a session's pod, instead of `playpod demo` (without audio).
    #[arg(long)]
    pod: bool,
    /// Extra arguments for `playpod demo` or `playpod pod` (e.g. `--arg=--scene=plasma`).
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = playpod_bin();
    let options = Options {
        duration: Duration::from_secs(args.seconds),
        sample_every: Duration::from_secs(args.sample_seconds),
        warm_up: Duration::from_secs(args.warm_up_seconds.min(args.seconds)),
        max_rss_growth_kib: args.max_rss_growth_mib * 1024,
        pod: args.pod,
        extra_args: args.args,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&options))?;
    println!("{}", report.json);
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{:#}\n", report.json))?;
    }
    if report.problems.is_empty() {
        eprintln!("soak: passed");
        Ok(())
    } else {
        for problem in &report.problems {
            eprintln!("soak: {problem}");
        }
        std::process::exit(1);
    }
}
