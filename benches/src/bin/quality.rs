//! Quality of a decoded stream of the stamped plasma (`playpod game --scene plasma --stamp`)
//! against its exact source frames.
//!
//! Reads raw yuv420p frames of WxH (what an independent decoder writes:
//! `ffmpeg -i stream.h264 -fps_mode passthrough -f rawvideo -pix_fmt yuv420p -`), from a file or
//! stdin. For each frame it reads the stamp in the luma (frame number, CRC-checked), regenerates
//! that source frame (the plasma of that seed, size and number with the same stamp painted in),
//! converts it to I420 (BT.601, limited range) and scores the decoded frame against it.
//!
//! The conversion of the reference is by default the textbook floating-point one
//! (`bgrx_to_i420_scalar`), which neither encoder uses: FFmpeg's swscale matches it to ~74 dB
//! (x264 lossless), playpod's SIMD converter to ~55 dB, so neither side is scored against its own
//! rounding. `--conversion simd` scores against playpod's converter instead.
//!
//! Scores:
//!
//! - PSNR of Y, U and V (mean square error over the whole plane; identical planes score
//!   [`PSNR_CAP`] dB), and the weighted YUV PSNR (6 Y + U + V) / 8;
//! - SSIM of Y, computed like x264 and FFmpeg's `ssim` filter: 8x8 windows with uniform weights
//!   at a stride of 4 (overlapping), K1 = 0.01, K2 = 0.03, L = 255, averaged over the windows.
//!
//! Frames whose stamp does not read (CRC fails: a block the encoder smeared, or a frame torn
//! between two draws at the stamp) are counted as `unreadable` and not scored. Frames that repeat
//! the previous frame's number (the capture took the same game frame twice) are scored and counted
//! as `repeats`. Prints one JSON line: `frames`, `scored`, `unreadable`, `repeats`,
//! `psnr_y {mean,min}`, `psnr_u {mean}`, `psnr_v {mean}`, `psnr_yuv {mean}`, `ssim_y {mean,min}`,
//! `frame_span [first,last]` (stamp numbers) and `partial_bytes` (a cut-off last frame).
//! Means are over the scored frames.
//!
//! `quality --size 768x768 --seed 1 decoded.yuv`

use std::io::Read;
use std::path::PathBuf;

use clap::Parser;
use playpod::game::plasma::Plasma;
use playpod::game::render::PixelFormat;
use playpod::game::stamp::{self, Stamp};
use playpod_hotpath::convert::{BgrxFrame, I420Frame, bgrx_to_i420, bgrx_to_i420_scalar};

/// What identical planes score, instead of infinity.
const PSNR_CAP: f64 = 100.0;

#[derive(Debug, Parser)]
#[command(
    name = "quality",
    about = "PSNR and SSIM of decoded yuv420p frames of the stamped plasma against their source frames."
)]
struct Args {
    /// Raw yuv420p frames; `-` reads stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
    /// Frame size, WxH.
    #[arg(long, default_value = "768x768", value_parser = parse_size)]
    size: (u16, u16),
    /// The plasma's seed (`playpod game --seed`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How the regenerated source frames are converted to I420: `simd` is playpod's own
    /// converter (yuvutils-rs), `scalar` the textbook floating-point formulas it is tested
    /// against; both BT.601 limited range, chroma the mean of each 2x2 block.
    #[arg(long, value_enum, default_value_t = Conversion::Scalar)]
    conversion: Conversion,
    /// Also write the regenerated reference frames (yuv420p, one per scored frame) to this file,
    /// to check the scores with another tool (`ffmpeg -lavfi psnr/ssim`).
    #[arg(long, value_name = "FILE")]
    reference_out: Option<PathBuf>,
    /// Also write every frame's scores to this CSV file (decoded index, stamp frame number,
    /// PSNR Y/U/V, SSIM Y; empty scores for an unreadable stamp), to find the worst frames.
    #[arg(long, value_name = "FILE")]
    frames_out: Option<PathBuf>,
}

/// Which BGRX -> I420 conversion makes the reference pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Conversion {
    Simd,
    Scalar,
}

fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = playpod::cli::parse_size(s)?;
    if w < stamp::WIDTH || h < stamp::HEIGHT {
        return Err(format!(
            "{w}x{h} is smaller than the stamp ({}x{})",
            stamp::WIDTH,
            stamp::HEIGHT
        ));
    }
    Ok((w, h))
}

/// PSNR in dB of two 8-bit planes of equal size, capped at [`PSNR_CAP`].
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "planes of one size");
    if a.is_empty() {
        return PSNR_CAP;
    }
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| {
            let d = u64::from(p.abs_diff(q));
            d * d
        })
        .sum();
    if sse == 0 {
        return PSNR_CAP;
    }
    let mse = sse as f64 / a.len() as f64;
    (10.0 * (255.0 * 255.0 / mse).log10()).min(PSNR_CAP)
}

/// The weighted YUV PSNR used in video coding reports: (6 Y + U + V) / 8.
fn psnr_yuv(y: f64, u: f64, v: f64) -> f64 {
    (6.0 * y + u + v) / 8.0
}

/// Sums over one 4x4 block: a, b, a^2 + b^2, a * b.
fn block_sums(a: &[u8], b: &[u8], stride: usize, x: usize, y: usize) -> [u64; 4] {
    let mut s = [0u64; 4];
    for row in y..y + 4 {
        let start = row * stride + x;
        for (&p, &q) in a[start..start + 4].iter().zip(&b[start..start + 4]) {
            let (p, q) = (u64::from(p), u64::from(q));
            s[0] += p;
            s[1] += q;
            s[2] += p * p + q * q;
            s[3] += p * q;
        }
    }
    s
}

/// SSIM of one window from its sums over `n` pixels.
fn ssim_window(s: [u64; 4], n: f64) -> f64 {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let (ma, mb) = (s[0] as f64 / n, s[1] as f64 / n);
    let vars = s[2] as f64 / n - ma * ma - mb * mb;
    let cov = s[3] as f64 / n - ma * mb;
    (2.0 * ma * mb + C1) * (2.0 * cov + C2) / ((ma * ma + mb * mb + C1) * (vars + C2))
}

/// SSIM of two 8-bit planes of `width` x `height` whose rows are `stride` bytes apart: the mean
/// over every 8x8 window at a stride of 4 (x264's and FFmpeg's `ssim`). Planes smaller than one
/// window score 1 when equal and 0 otherwise.
fn ssim(a: &[u8], b: &[u8], width: usize, height: usize, stride: usize) -> f64 {
    let (bw, bh) = (width / 4, height / 4);
    if bw < 2 || bh < 2 {
        return if a == b { 1.0 } else { 0.0 };
    }
    // Two rows of block sums; each window adds four neighbouring blocks.
    let mut above: Vec<[u64; 4]> = (0..bw)
        .map(|bx| block_sums(a, b, stride, bx * 4, 0))
        .collect();
    let mut below = vec![[0u64; 4]; bw];
    let mut total = 0.0;
    for by in 1..bh {
        for (bx, sums) in below.iter_mut().enumerate() {
            *sums = block_sums(a, b, stride, bx * 4, by * 4);
        }
        for bx in 0..bw - 1 {
            let mut s = [0u64; 4];
            for block in [above[bx], above[bx + 1], below[bx], below[bx + 1]] {
                for (t, v) in s.iter_mut().zip(block) {
                    *t += v;
                }
            }
            total += ssim_window(s, 64.0);
        }
        std::mem::swap(&mut above, &mut below);
    }
    total / ((bw - 1) * (bh - 1)) as f64
}

/// One decoded frame's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scores {
    psnr_y: f64,
    psnr_u: f64,
    psnr_v: f64,
    ssim_y: f64,
}

fn score(decoded: &I420Frame, reference: &I420Frame) -> Scores {
    let (dy, du, dv) = decoded.planes();
    let (ry, ru, rv) = reference.planes();
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    Scores {
        psnr_y: psnr(dy, ry),
        psnr_u: psnr(du, ru),
        psnr_v: psnr(dv, rv),
        ssim_y: ssim(dy, ry, w, h, w),
    }
}

/// Regenerates source frames from stamps.
struct Source {
    plasma: Plasma,
    bgrx: Vec<u8>,
    picture: I420Frame,
    stamp: Option<Stamp>,
    width: u16,
    height: u16,
    conversion: Conversion,
}

impl Source {
    fn new(seed: u64, width: u16, height: u16, conversion: Conversion) -> Source {
        let plasma = Plasma::new(seed, width, height, PixelFormat::BGRX);
        Source {
            bgrx: vec![0; plasma.len()],
            plasma,
            picture: I420Frame::new(u32::from(width), u32::from(height)),
            stamp: None,
            width,
            height,
            conversion,
        }
    }

    /// The I420 source frame that carried `stamp`.
    fn frame(&mut self, stamp: Stamp) -> &I420Frame {
        if self.stamp != Some(stamp) {
            let stride = usize::from(self.width) * 4;
            self.plasma.render(u64::from(stamp.frame), &mut self.bgrx);
            stamp.paint_x32(&mut self.bgrx, stride);
            let src = BgrxFrame {
                bytes: &self.bgrx,
                width: u32::from(self.width),
                height: u32::from(self.height),
                stride,
            };
            let convert = match self.conversion {
                Conversion::Simd => bgrx_to_i420,
                Conversion::Scalar => bgrx_to_i420_scalar,
            };
            convert(&src, &mut self.picture).expect("the picture has the plasma's size");
            self.stamp = Some(stamp);
        }
        &self.picture
    }
}

/// Running totals over the stream.
#[derive(Debug, Default)]
struct Report {
    frames: u64,
    unreadable: u64,
    repeats: u64,
    scored: Vec<Scores>,
    first: Option<u32>,
    last: Option<u32>,
}

impl Report {
    fn add(&mut self, stamp: Option<Stamp>, scores: Option<Scores>) {
        self.frames += 1;
        match (stamp, scores) {
            (Some(stamp), Some(scores)) => {
                if self.last == Some(stamp.frame) {
                    self.repeats += 1;
                }
                self.first.get_or_insert(stamp.frame);
                self.last = Some(stamp.frame);
                self.scored.push(scores);
            }
            _ => self.unreadable += 1,
        }
    }

    fn json(&self, partial_bytes: usize) -> serde_json::Value {
        let n = self.scored.len();
        let mean = |f: fn(&Scores) -> f64| {
            (n > 0).then(|| self.scored.iter().map(f).sum::<f64>() / n as f64)
        };
        let min = |f: fn(&Scores) -> f64| self.scored.iter().map(f).reduce(f64::min);
        let round = |v: Option<f64>, digits: i32| {
            v.map(|v| (v * 10f64.powi(digits)).round() / 10f64.powi(digits))
        };
        let yuv = |s: &Scores| psnr_yuv(s.psnr_y, s.psnr_u, s.psnr_v);
        serde_json::json!({
            "frames": self.frames,
            "scored": n,
            "unreadable": self.unreadable,
            "repeats": self.repeats,
            "psnr_y": {"mean": round(mean(|s| s.psnr_y), 3), "min": round(min(|s| s.psnr_y), 3)},
            "psnr_u": {"mean": round(mean(|s| s.psnr_u), 3)},
            "psnr_v": {"mean": round(mean(|s| s.psnr_v), 3)},
            "psnr_yuv": {"mean": round(mean(yuv), 3)},
            "ssim_y": {"mean": round(mean(|s| s.ssim_y), 5), "min": round(min(|s| s.ssim_y), 5)},
            "frame_span": [self.first, self.last],
            "partial_bytes": partial_bytes,
        })
    }
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end of the input).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    use std::io::Write;
    let (w, h) = args.size;
    let mut input: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?,
        )
    };
    let create = |path: &Option<PathBuf>| -> anyhow::Result<_> {
        path.as_ref()
            .map(|path| {
                std::fs::File::create(path)
                    .map(std::io::BufWriter::new)
                    .with_context(|| format!("cannot create {}", path.display()))
            })
            .transpose()
    };
    let mut reference_out = create(&args.reference_out)?;
    let mut frames_out = create(&args.frames_out)?;
    if let Some(out) = &mut frames_out {
        writeln!(out, "index,frame,psnr_y,psnr_u,psnr_v,ssim_y").context("writing the scores")?;
    }
    let mut source = Source::new(args.seed, w, h, args.conversion);
    let mut decoded = I420Frame::new(u32::from(w), u32::from(h));
    let mut report = Report::default();
    let partial = loop {
        let got = read_full(&mut input, decoded.as_bytes_mut()).context("reading the frames")?;
        if got < decoded.as_bytes().len() {
            break got;
        }
        let (luma, _, _) = decoded.planes();
        let stamp = Stamp::read_plane(luma, usize::from(w));
        let scores = stamp.map(|stamp| {
            let reference = source.frame(stamp);
            score(&decoded, reference)
        });
        if let (Some(out), Some(stamp)) = (&mut reference_out, stamp) {
            out.write_all(source.frame(stamp).as_bytes())
                .context("writing the reference frames")?;
        }
        if let Some(out) = &mut frames_out {
            let index = report.frames;
            match (stamp, scores) {
                (Some(stamp), Some(s)) => writeln!(
                    out,
                    "{index},{},{:.3},{:.3},{:.3},{:.5}",
                    stamp.frame, s.psnr_y, s.psnr_u, s.psnr_v, s.ssim_y
                ),
                _ => writeln!(out, "{index},,,,,"),
            }
            .context("writing the scores")?;
        }
        report.add(stamp, scores);
    };
    for out in [reference_out, frames_out].into_iter().flatten() {
        out.into_inner()
            .map_err(|err| err.into_error())
            .context("writing an output file")?;
    }
    Ok(report.json(partial))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("quality: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A varied grey plane: a ramp with a checker on top.
    fn plane(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (40 + (x * 3 + y * 2) % 160 + 20 * ((x / 4 + y / 4) % 2)) as u8
            })
            .collect()
    }

    #[test]
    fn identical_planes_score_the_cap_and_one() {
        let a = plane(64, 48);
        assert_eq!(psnr(&a, &a), PSNR_CAP);
        assert!((ssim(&a, &a, 64, 48, 64) - 1.0).abs() < 1e-12);
        assert_eq!(psnr_yuv(PSNR_CAP, PSNR_CAP, PSNR_CAP), PSNR_CAP);
    }

    #[test]
    fn known_noise_gives_the_expected_psnr() {
        // +-5 on every pixel (no clipping): MSE 25, PSNR 10 log10(255^2 / 25) = 34.151 dB.
        let a = plane(64, 48);
        let b: Vec<u8> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 2 == 0 { v + 5 } else { v - 5 })
            .collect();
        assert!((psnr(&a, &b) - 34.1514).abs() < 1e-3, "{}", psnr(&a, &b));
        // One pixel in 100 off by 10: MSE 1, PSNR 48.131 dB.
        let mut c = vec![128u8; 10_000];
        let d = c.clone();
        for v in c.iter_mut().step_by(100) {
            *v += 10;
        }
        assert!((psnr(&c, &d) - 48.1308).abs() < 1e-3);
        assert!((psnr_yuv(30.0, 38.0, 46.0) - 33.0).abs() < 1e-12);
    }

    #[test]
    fn ssim_of_flat_planes_is_the_luminance_term() {
        // No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) in every window.
        let (a, b) = (vec![100u8; 32 * 32], vec![110u8; 32 * 32]);
        let c1 = (0.01f64 * 255.0).powi(2);
        let expected = (2.0 * 100.0 * 110.0 + c1) / (100.0f64.powi(2) + 110.0f64.powi(2) + c1);
        assert!((ssim(&a, &b, 32, 32, 32) - expected).abs() < 1e-12);
    }

    #[test]
    fn ssim_falls_with_noise_and_is_symmetric() {
        let a = plane(96, 64);
        let noisy = |amp: i16| -> Vec<u8> {
            a.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let n = ((i * 7919) % (2 * amp as usize + 1)) as i16 - amp;
                    (i16::from(v) + n).clamp(0, 255) as u8
                })
                .collect()
        };
        let (light, heavy) = (noisy(4), noisy(40));
        let (s_light, s_heavy) = (ssim(&a, &light, 96, 64, 96), ssim(&a, &heavy, 96, 64, 96));
        assert!(s_light < 1.0 && s_heavy < s_light && s_heavy > 0.0);
        assert!((ssim(&light, &a, 96, 64, 96) - s_light).abs() < 1e-12);
        // The stride is honoured: the same plane inside a wider buffer scores the same.
        let wide: Vec<u8> = a
            .chunks(96)
            .flat_map(|r| [r, &[0u8; 32][..]].concat())
            .collect();
        let wide_light: Vec<u8> = light
            .chunks(96)
            .flat_map(|r| [r, &[255u8; 32][..]].concat())
            .collect();
        assert!((ssim(&wide, &wide_light, 96, 64, 128) - s_light).abs() < 1e-12);
    }

    #[test]
    fn a_stamped_source_frame_reads_back_and_scores_perfectly_against_itself() {
        let (w, h) = (256u16, 64u16);
        let stamp = Stamp {
            time_ms: 12345,
            frame: 0x00_0421,
            keys: [1, 2],
        };
        let mut source = Source::new(3, w, h, Conversion::Scalar);
        let picture = source.frame(stamp).clone();
        let (luma, _, _) = picture.planes();
        assert_eq!(Stamp::read_plane(luma, usize::from(w)), Some(stamp));
        let s = score(&picture, source.frame(stamp));
        assert_eq!(
            (s.psnr_y, s.psnr_u, s.psnr_v),
            (PSNR_CAP, PSNR_CAP, PSNR_CAP)
        );
        assert!((s.ssim_y - 1.0).abs() < 1e-12);
        // The next frame of the plasma is a different picture: far from perfect.
        let next = Stamp {
            frame: stamp.frame + 1,
            ..stamp
        };
        let other = source.frame(next).clone();
        let s = score(&picture, &other);
        assert!(s.psnr_y < 40.0 && s.ssim_y < 0.99, "{s:?}");
    }

    #[test]
    fn the_two_reference_conversions_are_close_but_not_equal() {
        let stamp = Stamp {
            time_ms: 1,
            frame: 77,
            keys: [0, 0],
        };
        let simd = Source::new(5, 256, 64, Conversion::Simd)
            .frame(stamp)
            .clone();
        let scalar = Source::new(5, 256, 64, Conversion::Scalar)
            .frame(stamp)
            .clone();
        let s = score(&simd, &scalar);
        assert!(s.psnr_y > 45.0 && s.psnr_y < PSNR_CAP, "{s:?}");
        let a = Args::try_parse_from(["quality"]).unwrap();
        assert_eq!(
            a.conversion,
            Conversion::Scalar,
            "the default is the textbook conversion"
        );
    }

    #[test]
    fn the_report_counts_unreadable_frames_and_repeats_apart() {
        let stamp = |frame| Stamp {
            time_ms: 0,
            frame,
            keys: [0, 0],
        };
        let s = |y| Scores {
            psnr_y: y,
            psnr_u: 40.0,
            psnr_v: 40.0,
            ssim_y: 0.9,
        };
        let mut r = Report::default();
        r.add(Some(stamp(10)), Some(s(30.0)));
        r.add(None, None);
        r.add(Some(stamp(10)), Some(s(34.0)));
        r.add(Some(stamp(12)), Some(s(32.0)));
        let j = r.json(5);
        assert_eq!(j["frames"], 4);
        assert_eq!(j["scored"], 3);
        assert_eq!(j["unreadable"], 1);
        assert_eq!(j["repeats"], 1);
        assert_eq!(j["psnr_y"]["mean"], 32.0);
        assert_eq!(j["psnr_y"]["min"], 30.0);
        assert_eq!(j["frame_span"], serde_json::json!([10, 12]));
        assert_eq!(j["partial_bytes"], 5);
        let empty = Report::default().json(0);
        assert!(empty["psnr_y"]["mean"].is_null());
    }

    #[test]
    fn sizes_smaller_than_the_stamp_are_refused() {
        assert!(parse_size("768x768").is_ok());
        assert!(parse_size("64x64").is_err());
        assert!(parse_size("banana").is_err());
    }
}
