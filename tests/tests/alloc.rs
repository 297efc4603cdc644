//! Zero heap allocations per frame in steady state: capture (in place, real Xvfb), conversion,
//! encoding and the ring, and the low rendition beside them (halving, its encoder, its ring),
//! counted by a counting global allocator on the frame thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use playpod_ffi::{CountingAllocator, count_allocations as counted};
use playpod_hotpath::capture::FramebufferFile;
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder};
use playpod_hotpath::pipeline::{FrameStage, unix_micros};
use playpod_hotpath::rendition::{LowRendition, low_settings};
use playpod_hotpath::ring::{ReadOutcome, Ring};
use playpod_tests::{Xvfb, start_game};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn steady_state_frames_allocate_nothing() {
    const W: u32 = 768;
    const H: u32 = 768;
    let xvfb = Xvfb::start(W, H);
    // The plasma changes every pixel every frame: the encoder works as hard as it can.
    let _game = start_game(&xvfb.name(), "plasma", (W, H));
    std::thread::sleep(Duration::from_millis(500));

    let settings = EncoderSettings {
        width: W,
        height: H,
        fps: 60,
        bitrate_bps: 2_500_000,
    };
    let (stage, ring, _stats) = FrameStage::with_ring(
        Box::new(FramebufferFile::open(&xvfb.framebuffer(), W, H).unwrap()),
        Box::new(Openh264Encoder::new(settings).unwrap()),
        settings,
    );
    let low = low_settings(settings).unwrap();
    let (rendition, low_ring, low_stats) =
        LowRendition::with_ring(Box::new(Openh264Encoder::new(low).unwrap()), low, false);
    let mut stage = stage.with_low_rendition(rendition);
    // A viewer of each on other threads reads everything, as the shell would.
    let stop = Arc::new(AtomicBool::new(false));
    let view = |ring: &Ring| {
        let mut reader = ring.subscribe().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut frames = 0u64;
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                if let ReadOutcome::Frame(_) =
                    reader.read_blocking(&mut buf, Duration::from_millis(50))
                {
                    frames += 1;
                }
            }
            frames
        })
    };
    let viewer = view(&ring);
    let low_viewer = view(&low_ring);

    let mut frame = || {
        let report = stage
            .run_once(Instant::now(), unix_micros())
            .expect("frame");
        std::thread::sleep(Duration::from_millis(5));
        report
    };
    // Warm-up: first IDR, encoder internals, buffers growing to their working size.
    for _ in 0..30 {
        frame();
    }
    let low_keyframes = || low_stats.keyframes.load(Ordering::Relaxed);
    let low_before = (
        low_stats.frames_encoded.load(Ordering::Relaxed),
        low_keyframes(),
    );
    let (keyframes, allocations) = counted(|| {
        let mut keyframes = 0;
        for n in 0..240 {
            if n % 60 == 30 {
                // A new viewer's keyframe request, mid-run: IDRs must not allocate either.
                ring.request_keyframe();
            }
            if n % 60 == 45 {
                low_ring.request_keyframe();
            }
            keyframes += u32::from(frame().keyframe);
        }
        keyframes
    });
    stop.store(true, Ordering::Relaxed);
    let viewed = viewer.join().unwrap();
    let low_viewed = low_viewer.join().unwrap();
    assert_eq!(keyframes, 4, "the requested IDRs were made");
    assert!(viewed > 200, "the viewer saw the frames ({viewed})");
    assert_eq!(
        low_stats.frames_encoded.load(Ordering::Relaxed) - low_before.0,
        240,
        "the low rendition made a frame of each"
    );
    assert_eq!(
        low_keyframes() - low_before.1,
        4,
        "its requested IDRs were made"
    );
    assert!(low_viewed > 200, "its viewer saw the frames ({low_viewed})");
    assert_eq!(
        allocations, 0,
        "heap allocations in 240 steady-state frames"
    );
    // And the counter does count: one allocation is seen.
    let (_, one) = counted(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(one, 1);
}
