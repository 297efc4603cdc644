//! A short soak: `playpod demo` under 20 s of churning viewers, listeners and players (the
//! `soak` binary runs the same for as long as asked; README: Operations).

use std::time::Duration;

use playpod_tests::soak::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_under_churn_keeps_every_frame_and_returns_to_its_baseline() {
    let options = Options {
        duration: Duration::from_secs(20),
        sample_every: Duration::from_secs(5),
        warm_up: Duration::from_secs(5),
        // A short run: this catches gross growth (a leak per connection; the churn makes
        // several hundred), the long run documented in the README catches slow growth.
        max_rss_growth_kib: 4 * 1024,
        pod: false,
        extra_args: Vec::new(),
    };
    let report = run(&options).await.expect("run the soak");
    eprintln!("{}", report.json);
    assert!(
        report.problems.is_empty(),
        "soak problems: {:#?}",
        report.problems
    );
    let churn = &report.json["churn"];
    for counter in [
        "videoSessions",
        "audioSessions",
        "playerSessions",
        "refusals",
        "takeovers",
        "movedToLowRendition",
    ] {
        assert!(
            churn[counter].as_u64().unwrap_or(0) > 0,
            "no {counter} in 20 s: {churn}"
        );
    }
    assert!(
        report.samples.len() >= 4,
        "{} samples",
        report.samples.len()
    );
}
