//! Per-frame costs of the hot path at 768x768 on the plasma (every pixel changes every frame).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use playpod_benches::{plasma_frames, plasma_pictures};
use playpod_hotpath::convert::{
    BgrxFrame, I420Frame, bgrx_to_i420, bgrx_to_i420_scalar, half_size, halve_i420,
};
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder, Picture, VideoEncoder};
use playpod_hotpath::rendition::low_settings;
use playpod_hotpath::ring::{ReadOutcome, Ring, RingConfig};

const W: u16 = 768;
const H: u16 = 768;

fn convert(c: &mut Criterion) {
    let frames = plasma_frames(W, H, 1);
    let src = BgrxFrame {
        bytes: &frames[0],
        width: u32::from(W),
        height: u32::from(H),
        stride: usize::from(W) * 4,
    };
    let mut dst = I420Frame::new(u32::from(W), u32::from(H));
    let mut g = c.benchmark_group("convert_bgrx_to_i420_768");
    g.throughput(Throughput::Elements(1));
    g.bench_function("simd_yuvutils", |b| {
        b.iter(|| bgrx_to_i420(&src, &mut dst).unwrap())
    });
    g.bench_function("scalar_reference", |b| {
        b.iter(|| bgrx_to_i420_scalar(&src, &mut dst).unwrap())
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let pictures = plasma_pictures(W, H, 120);
    let settings = EncoderSettings {
        width: u32::from(W),
        height: u32::from(H),
        fps: 60,
        bitrate_bps: 2_500_000,
    };
    let mut encoder = Openh264Encoder::new(settings).unwrap();
    let mut out = Vec::with_capacity(1 << 20);
    let mut n = 0;
    let mut g = c.benchmark_group("encode_openh264_768_plasma_2500k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("p_frame", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .encode(
                    Picture::Host(&pictures[n % pictures.len()]),
                    false,
                    &mut out,
                )
                .unwrap();
            n += 1;
        })
    });
    g.bench_function("idr_frame", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .encode(Picture::Host(&pictures[n % pictures.len()]), true, &mut out)
                .unwrap();
            n += 1;
        })
    });
    g.finish();
}

/// What the low rendition adds to a frame while someone watches it: halving the 768x768
/// picture, and encoding the 384x384 half at a quarter of the bitrate.
fn low_rendition(c: &mut Criterion) {
    let main = EncoderSettings {
        width: u32::from(W),
        height: u32::from(H),
        fps: 60,
        bitrate_bps: 2_500_000,
    };
    let settings = low_settings(main).unwrap();
    let pictures = plasma_pictures(W, H, 120);
    let (hw, hh) = half_size(main.width, main.height);
    let halves: Vec<I420Frame> = pictures
        .iter()
        .map(|p| {
            let mut half = I420Frame::new(hw, hh);
            halve_i420(p, &mut half).unwrap();
            half
        })
        .collect();
    let mut half = I420Frame::new(hw, hh);
    let mut encoder = Openh264Encoder::new(settings).unwrap();
    let mut out = Vec::with_capacity(1 << 20);
    let mut n = 0;
    let mut g = c.benchmark_group("low_rendition_768_plasma");
    g.throughput(Throughput::Elements(1));
    g.bench_function("halve_to_384", |b| {
        b.iter(|| halve_i420(&pictures[0], &mut half).unwrap())
    });
    g.bench_function("encode_384_p_frame_625k", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .encode(Picture::Host(&halves[n % halves.len()]), false, &mut out)
                .unwrap();
            n += 1;
        })
    });
    g.finish();
}

/// What a tick on which something was drawn but nothing changed costs beyond the conversion:
/// comparing the picture with the last one encoded (equal: the whole picture is read).
fn unchanged_check(c: &mut Criterion) {
    let pictures = plasma_pictures(W, H, 2);
    let same = pictures[0].clone();
    let mut g = c.benchmark_group("unchanged_check_768");
    g.throughput(Throughput::Elements(1));
    g.bench_function("equal_pictures", |b| {
        b.iter(|| std::hint::black_box(pictures[0].as_bytes() == same.as_bytes()))
    });
    g.bench_function("changed_pictures", |b| {
        b.iter(|| std::hint::black_box(pictures[0].as_bytes() == pictures[1].as_bytes()))
    });
    g.finish();
}

fn ring(c: &mut Criterion) {
    let (ring, mut writer) = Ring::new(RingConfig::for_picture(u32::from(W), u32::from(H)));
    let mut reader = ring.subscribe().unwrap();
    let payload = vec![0xa5u8; 6 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    writer.publish(true, 0, &payload).unwrap();
    c.bench_function("ring_publish_and_read_6KiB", |b| {
        b.iter(|| {
            writer.publish(false, 1, &payload).unwrap();
            out.clear();
            assert!(matches!(reader.try_read(&mut out), ReadOutcome::Frame(_)));
        })
    });
}

criterion_group!(
    benches,
    convert,
    encode,
    low_rendition,
    unchanged_check,
    ring
);
criterion_main!(benches);
