//! Shared pieces of playpod's benchmarks: deterministic test content.
//!
//! - `benches/pipeline.rs` (criterion): conversion, encoding and the ring, per frame.
//! - `latency-probe`: the real frame thread at 60 fps on a real Xvfb, frame ready -> ring p50/p99.
//! - `compare.py`: `playpod pod` against the ffmpeg x11grab + libx264 peer, CPU per frame.
//!   `compare.sh` installs its tools, builds and runs it; it adds quality (PSNR/SSIM against the
//!   source frames) and the fan-out to 1, 10 and 50 spectators.
//! - `ws-viewer`: one or many viewers of a session's video, counting frames; saves the stream.
//! - `quality`: PSNR and SSIM of a decoded stream of the stamped plasma against its source frames.

use playpod::game::plasma::Plasma;
use playpod::game::render::PixelFormat;
use playpod_hotpath::convert::{BgrxFrame, I420Frame, bgrx_to_i420};

/// `n` consecutive plasma frames (every pixel changes every frame), BGRX.
pub fn plasma_frames(width: u16, height: u16, n: u64) -> Vec<Vec<u8>> {
    let mut plasma = Plasma::new(7, width, height, PixelFormat::BGRX);
    (0..n)
        .map(|i| {
            let mut out = vec![0u8; plasma.len()];
            plasma.render(i, &mut out);
            out
        })
        .collect()
}

/// The same frames converted to I420.
pub fn plasma_pictures(width: u16, height: u16, n: u64) -> Vec<I420Frame> {
    plasma_frames(width, height, n)
        .iter()
        .map(|bytes| {
            let mut picture = I420Frame::new(u32::from(width), u32::from(height));
            let src = BgrxFrame {
                bytes,
                width: u32::from(width),
                height: u32::from(height),
                stride: usize::from(width) * 4,
            };
            bgrx_to_i420(&src, &mut picture).expect("sizes match");
            picture
        })
        .collect()
}
