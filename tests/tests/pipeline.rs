//! Real Xvfb + a test X client drawing known pictures -> our capture (in place), conversion and
//! H.264 -> decoded by an independent decoder (FFmpeg) -> compared with the framebuffer.

use std::time::Instant;

use playpod_hotpath::capture::{FrameSource, FramebufferFile};
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder};
use playpod_hotpath::pipeline::{FrameStage, unix_micros};
use playpod_hotpath::ring::ReadOutcome;
use playpod_hotpath::{h264, xwd};
use playpod_tests::{Xvfb, ffmpeg_decode, have, psnr};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ConnectionExt, CreateGCAux, CreateWindowAux, ImageFormat, WindowClass,
};
use x11rb::wrapper::ConnectionExt as _;

const W: u32 = 768;
const H: u32 = 768;
const FRAMES: u32 = 24;
const MARK: usize = 32; // size of one index-marker block

/// Test picture `k`: colour bars, a smooth gradient, and the frame index as 8 black/white blocks.
fn picture(k: u32) -> Vec<u8> {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [16, 235, 235],
        [235, 235, 16],
        [16, 235, 16],
        [235, 16, 235],
        [16, 16, 235],
        [235, 16, 16],
        [16, 16, 16],
    ];
    let (w, h) = (W as usize, H as usize);
    let mut px = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let bgr = if y < h / 2 {
                BARS[x * 8 / w]
            } else {
                let g = (x * 255 / w) as u8;
                [g, ((y - h / 2) * 255 / (h / 2)) as u8, 255 - g]
            };
            let at = (y * w + x) * 4;
            px[at..at + 3].copy_from_slice(&bgr);
        }
    }
    for bit in 0..8 {
        let v = if k >> bit & 1 == 1 { 255 } else { 0 };
        for y in 0..MARK {
            for x in bit * MARK..(bit + 1) * MARK {
                let at = ((h / 2 + 64 + y) * w + x) * 4;
                px[at..at + 3].fill(v);
            }
        }
    }
    px
}

/// Reads the index marker back from a decoded BGRX picture.
fn marker(px: &[u8]) -> u32 {
    let (w, h) = (W as usize, H as usize);
    (0..8)
        .map(|bit| {
            let (x, y) = (bit * MARK + MARK / 2, h / 2 + 64 + MARK / 2);
            let v = px[(y * w + x) * 4 + 1];
            u32::from(v > 128) << bit
        })
        .sum()
}

fn rgb_only(px: &[u8]) -> Vec<u8> {
    px.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

#[test]
fn pictures_survive_capture_encode_and_an_independent_decoder() {
    assert!(
        have("ffmpeg"),
        "ffmpeg is needed as the independent decoder (apt-get install ffmpeg)"
    );
    let xvfb = Xvfb::start(W, H);
    let (conn, screen) = x11rb::connect(Some(&xvfb.name())).expect("connect to Xvfb");
    let screen = &conn.setup().roots[screen];
    let win = conn.generate_id().unwrap();
    conn.create_window(
        24,
        win,
        screen.root,
        0,
        0,
        W as u16,
        H as u16,
        0,
        WindowClass::INPUT_OUTPUT,
        screen.root_visual,
        &CreateWindowAux::new().override_redirect(1),
    )
    .unwrap();
    conn.map_window(win).unwrap();
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, win, &CreateGCAux::new()).unwrap();
    conn.sync().unwrap();

    let mut source = FramebufferFile::open(&xvfb.framebuffer(), W, H).expect("map the framebuffer");
    let settings = EncoderSettings {
        width: W,
        height: H,
        fps: 60,
        bitrate_bps: 2_500_000,
    };
    let (mut stage, ring, _stats) = FrameStage::with_ring(
        Box::new(FramebufferFile::open(&xvfb.framebuffer(), W, H).unwrap()),
        Box::new(Openh264Encoder::new(settings).unwrap()),
        settings,
    );
    let mut reader = ring.subscribe().unwrap();

    let mut stream = Vec::new();
    let mut captured = Vec::new();
    let mut seqs = Vec::new();
    for k in 0..FRAMES {
        let px = picture(k);
        // PutImage in strips under the request size limit, then a round trip so it is drawn.
        let rows = 64;
        for y in (0..H).step_by(rows) {
            let start = (y * W * 4) as usize;
            let end = (((y + rows as u32).min(H)) * W * 4) as usize;
            conn.put_image(
                ImageFormat::Z_PIXMAP,
                win,
                gc,
                W as u16,
                ((end - start) / (W as usize * 4)) as u16,
                0,
                y as i16,
                0,
                24,
                &px[start..end],
            )
            .unwrap();
        }
        conn.sync().unwrap();
        // What the framebuffer holds now is the reference.
        let frame = source.grab().unwrap();
        let mut reference = Vec::with_capacity((W * H * 4) as usize);
        for row in 0..H as usize {
            reference.extend_from_slice(
                &frame.bytes[row * frame.stride..row * frame.stride + W as usize * 4],
            );
        }
        assert_eq!(marker(&reference), k, "Xvfb shows picture {k}");
        captured.push(reference);

        let report = stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert_eq!(report.keyframe, k == 0, "only the first frame is an IDR");
        let mut au = Vec::new();
        match reader.try_read(&mut au) {
            ReadOutcome::Frame(meta) => {
                assert_eq!(meta.keyframe, k == 0);
                if k == 0 {
                    let info = h264::inspect(&au);
                    assert!(
                        info.sps && info.pps && info.idr,
                        "first access unit: SPS, PPS, IDR"
                    );
                }
                seqs.push(meta.seq);
            }
            other => panic!("frame {k} not in the ring: {other:?}"),
        }
        stream.extend_from_slice(&au);
    }
    assert_eq!(
        seqs,
        (0..u64::from(FRAMES)).collect::<Vec<_>>(),
        "ring order"
    );

    let decoded = ffmpeg_decode(stream, "bgr0");
    let size = (W * H * 4) as usize;
    assert_eq!(decoded.len() % size, 0);
    let decoded: Vec<&[u8]> = decoded.chunks_exact(size).collect();
    assert_eq!(
        decoded.len(),
        FRAMES as usize,
        "every frame decodes, none extra"
    );
    let mut worst = f64::INFINITY;
    for (k, (dec, reference)) in decoded.iter().zip(&captured).enumerate() {
        assert_eq!(
            marker(dec),
            k as u32,
            "decoded frame {k} is picture {k} (order)"
        );
        let db = psnr(&rgb_only(dec), &rgb_only(reference));
        worst = worst.min(db);
        assert!(db >= 35.0, "frame {k}: PSNR {db:.1} dB < 35 dB");
    }
    println!("worst PSNR over {FRAMES} frames: {worst:.1} dB");
}

#[test]
fn framebuffer_header_is_read_from_xvfb_not_assumed() {
    // A non-default size: the layout must follow what Xvfb wrote.
    let xvfb = Xvfb::start(640, 480);
    let bytes = std::fs::read(xvfb.framebuffer()).unwrap();
    let layout = xwd::parse(&bytes).unwrap();
    assert_eq!(
        (layout.width, layout.height, layout.stride),
        (640, 480, 2560)
    );
    assert!(
        FramebufferFile::open(&xvfb.framebuffer(), 768, 768).is_err(),
        "too small a screen is an error"
    );
}
