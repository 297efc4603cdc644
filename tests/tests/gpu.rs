//! The GPU path: the CUDA conversion kernel checked against the CPU reference, and NVENC.
//!
//! The kernel's source is also compiled for the CPU (with a small shim for CUDA's built-ins)
//! and checked bit for bit against the scalar reference everywhere, so its indexing, layouts
//! and arithmetic are tested on machines with no GPU. The tests that need a GPU print why they
//! skip when there is none.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use playpod_ffi::cuda::{ChromaLayout, Gpu};
use playpod_ffi::nvenc::{self, Nvenc};
use playpod_ffi::{CountingAllocator, MappedFile, count_allocations};
use playpod_hotpath::convert::{
    BgrxFrame, I420Frame, bgrx_to_i420, bgrx_to_i420_scalar, max_plane_difference,
};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const KERNEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ffi/cuda/bgrx_to_yuv420.cu");

/// CUDA's built-ins for a single-threaded CPU run of the kernel.
const SHIM: &str = r#"
#include <math.h>
#include <stddef.h>
struct dim3_ { unsigned int x, y, z; };
extern dim3_ blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
"#;

/// Runs the kernel over the whole grid: args `width height stride layout(0 I420, 1 NV12)
/// pitch`, BGRX on stdin, the YUV picture on stdout.
const MAIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
dim3_ blockIdx, blockDim, threadIdx;
extern "C" void bgrx_to_yuv420(const unsigned char*, unsigned, unsigned, unsigned,
    unsigned char*, unsigned, unsigned char*, unsigned char*, unsigned, unsigned);
int main(int argc, char** argv) {
    unsigned w = atoi(argv[1]), h = atoi(argv[2]), stride = atoi(argv[3]);
    int nv12 = atoi(argv[4]);
    unsigned pitch = atoi(argv[5]);
    size_t in_len = (size_t)stride * h, out_len = (size_t)pitch * h * 3 / 2;
    unsigned char* src = (unsigned char*)malloc(in_len);
    unsigned char* out = (unsigned char*)calloc(out_len, 1);
    if (fread(src, 1, in_len, stdin) != in_len) return 2;
    unsigned char* y = out;
    unsigned char *u, *v;
    unsigned c_pitch, c_step;
    if (nv12) { u = out + (size_t)pitch * h; v = u + 1; c_pitch = pitch; c_step = 2; }
    else { u = out + (size_t)w * h; v = u + (size_t)(w / 2) * (h / 2); c_pitch = w / 2; c_step = 1; }
    blockDim.x = 16; blockDim.y = 8; blockDim.z = 1;
    for (blockIdx.y = 0; blockIdx.y < (h / 2 + 7) / 8; blockIdx.y++)
    for (blockIdx.x = 0; blockIdx.x < (w / 2 + 15) / 16; blockIdx.x++)
    for (threadIdx.y = 0; threadIdx.y < 8; threadIdx.y++)
    for (threadIdx.x = 0; threadIdx.x < 16; threadIdx.x++)
        bgrx_to_yuv420(src, stride, w, h, y, pitch, u, v, c_pitch, c_step);
    fwrite(out, 1, out_len, stdout);
    return 0;
}
"#;

/// A picture with smooth gradients and noise, `stride` bytes per row.
fn pattern(width: u32, height: u32, stride: usize) -> Vec<u8> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = vec![0xa5u8; stride * height as usize];
    for y in 0..height as usize {
        for x in 0..width as usize {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let at = y * stride + x * 4;
            bytes[at] = (x * 255 / width as usize) as u8 ^ (s as u8 & 0x0f);
            bytes[at + 1] = (y * 255 / height as usize) as u8;
            bytes[at + 2] = (s >> 8) as u8;
            bytes[at + 3] = 0;
        }
    }
    bytes
}

fn reference(bytes: &[u8], width: u32, height: u32, stride: usize) -> I420Frame {
    let mut want = I420Frame::new(width, height);
    let src = BgrxFrame {
        bytes,
        width,
        height,
        stride,
    };
    bgrx_to_i420_scalar(&src, &mut want).expect("reference conversion");
    want
}

/// Splits a pitched NV12 picture into tight I420 bytes.
fn nv12_to_i420(nv12: &[u8], width: usize, height: usize, pitch: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height * 3 / 2);
    for row in nv12.chunks(pitch).take(height) {
        out.extend_from_slice(&row[..width]);
    }
    let chroma = &nv12[pitch * height..];
    for pick in [0, 1] {
        for row in chroma.chunks(pitch).take(height / 2) {
            out.extend(row[..width].iter().skip(pick).step_by(2));
        }
    }
    out
}

#[test]
fn the_kernel_source_matches_the_reference_when_run_on_the_cpu() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shim = dir.path().join("cuda_shim.h");
    let main = dir.path().join("main.cpp");
    let exe = dir.path().join("kernel");
    std::fs::write(&shim, SHIM).unwrap();
    std::fs::write(&main, MAIN).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    let status = Command::new(&cxx)
        // No fused multiply-add: the same rounding as the reference (and as --fmad=false).
        .args(["-O1", "-ffp-contract=off", "-include"])
        .arg(&shim)
        .args(["-x", "c++", KERNEL])
        .arg(&main)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the C++ compiler `{cxx}`: {err}"));
    assert!(status.success(), "the kernel did not compile for the CPU");

    // Odd sizes of blocks (not multiples of the 32x16 pixels a CUDA block covers) and a
    // padded stride, as Xvfb's framebuffer has when the stream is cropped.
    for (w, h, stride) in [
        (64u32, 48u32, 64 * 4),
        (98, 34, 98 * 4 + 24),
        (768, 768, 768 * 4),
    ] {
        let src = pattern(w, h, stride);
        let want = reference(&src, w, h, stride);
        for (nv12, pitch) in [
            (false, w as usize),
            (true, (w as usize).next_multiple_of(256)),
        ] {
            let mut child = Command::new(&exe)
                .args([
                    w.to_string(),
                    h.to_string(),
                    stride.to_string(),
                    u8::from(nv12).to_string(),
                    pitch.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run the kernel");
            child.stdin.take().unwrap().write_all(&src).unwrap();
            let out = child.wait_with_output().expect("kernel output");
            assert!(out.status.success());
            let got = if nv12 {
                nv12_to_i420(&out.stdout, w as usize, h as usize, pitch)
            } else {
                out.stdout
            };
            assert_eq!(
                got,
                want.as_bytes(),
                "{w}x{h} stride {stride} {}: the kernel differs from the reference",
                if nv12 { "NV12" } else { "I420" }
            );
        }
    }
}

fn gpu_or_skip() -> Option<Arc<Gpu>> {
    match Gpu::open() {
        Ok(gpu) => {
            println!("GPU: {}", gpu.name());
            Some(gpu)
        }
        Err(err) => {
            println!("skipped: no GPU here ({err})");
            None
        }
    }
}

/// The largest difference, over all planes, between a GPU picture and the reference.
fn gpu_difference(gpu: &Gpu, picture: &playpod_ffi::cuda::DevicePicture, want: &I420Frame) -> u8 {
    let mut got = I420Frame::new(want.width(), want.height());
    gpu.download_i420(picture, got.as_bytes_mut()).unwrap();
    let (dy, du, dv) = max_plane_difference(&got, want);
    dy.max(du).max(dv)
}

#[test]
fn gpu_conversion_matches_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (w, h) = (768u32, 768u32);
    let stride = w as usize * 4;
    let src = pattern(w, h, stride);
    let want = reference(&src, w, h, stride);

    // Uploaded from ordinary memory.
    let mut picture = gpu.alloc_picture(w, h, ChromaLayout::I420).unwrap();
    let mut staging = None;
    gpu.upload_and_convert(&src, stride, &mut staging, &mut picture)
        .unwrap();
    let diff = gpu_difference(&gpu, &picture, &want);
    assert!(
        diff <= 1,
        "GPU (uploaded) vs reference: max difference {diff}"
    );

    // Read in place from a registered file mapping, as from Xvfb's framebuffer.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &src).unwrap();
    let mut map = MappedFile::open(file.path()).unwrap();
    let mut in_place = gpu.alloc_picture(w, h, ChromaLayout::I420).unwrap();
    match map.gpu_frame(&gpu, 0, stride, w, h) {
        Ok(frame) => {
            gpu.convert(&frame, &mut in_place).unwrap();
            let diff = gpu_difference(&gpu, &in_place, &want);
            assert!(
                diff <= 1,
                "GPU (in place) vs reference: max difference {diff}"
            );
            let frames = 300;
            let start = Instant::now();
            let ((), allocations) = count_allocations(|| {
                for _ in 0..frames {
                    let frame = map.gpu_frame(&gpu, 0, stride, w, h).unwrap();
                    gpu.convert(&frame, &mut in_place).unwrap();
                }
            });
            let gpu_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(frames);
            assert_eq!(allocations, 0, "in-place GPU conversion allocated");
            let mut cpu = I420Frame::new(w, h);
            let frame = BgrxFrame {
                bytes: &src,
                width: w,
                height: h,
                stride,
            };
            let start = Instant::now();
            for _ in 0..frames {
                bgrx_to_i420(&frame, &mut cpu).unwrap();
            }
            let cpu_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(frames);
            println!(
                "768x768 BGRX->YUV420: GPU in place {gpu_us:.0} µs/frame, CPU SIMD {cpu_us:.0} µs/frame"
            );
            let (dy, du, dv) = max_plane_difference(&cpu, &want);
            println!("CPU SIMD vs reference: Y {dy} U {du} V {dv}");
        }
        Err(err) => println!("in-place registration unavailable here: {err}"),
    }
}

#[test]
fn nvenc_encodes_idr_on_demand_when_present() {
    let nvenc = match Nvenc::load() {
        Ok(nvenc) => nvenc,
        Err(err) => {
            println!("skipped: {err}");
            return;
        }
    };
    let Some(gpu) = gpu_or_skip() else { return };
    println!("NVENC driver API {}", nvenc.driver_version());
    let (w, h) = (768u32, 768u32);
    let settings = nvenc::H264Settings {
        width: w,
        height: h,
        fps: 60,
        bitrate_bps: 2_500_000,
        preset: 2,
    };
    let mut encoder = match nvenc::Encoder::open(&nvenc, &gpu, settings) {
        Ok(encoder) => encoder,
        Err(err) => {
            println!("skipped: this GPU cannot open an NVENC session: {err}");
            return;
        }
    };
    let stride = w as usize * 4;
    let src = pattern(w, h, stride);
    let mut picture = gpu.alloc_picture(w, h, ChromaLayout::Nv12).unwrap();
    let mut staging = None;
    gpu.upload_and_convert(&src, stride, &mut staging, &mut picture)
        .unwrap();
    let input = encoder.register(&picture).unwrap();
    let mut output = encoder.bitstream().unwrap();
    let first = encoder.encode(&picture, &input, &mut output, true).unwrap();
    assert!(first.keyframe());
    let info = playpod_hotpath::h264::inspect(first.bytes());
    assert!(info.sps && info.pps && info.idr, "{info:?}");
    drop(first);
    let frames = 300;
    let start = Instant::now();
    let mut idrs = 0;
    let ((), allocations) = count_allocations(|| {
        for i in 0..frames {
            let au = encoder
                .encode(&picture, &input, &mut output, i == 100)
                .unwrap();
            idrs += usize::from(au.keyframe());
        }
    });
    let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(frames);
    assert_eq!(idrs, 1, "IDR only on demand");
    assert_eq!(allocations, 0, "NVENC encoding allocated");
    println!("NVENC 768x768 H.264: {ms:.2} ms/frame");

    // The driver takes a new rate mid-stream (bitrate adaptation), without a keyframe.
    for bps in [600_000, 2_500_000] {
        encoder.set_bitrate(bps).expect("reconfigure the rate");
        assert_eq!(encoder.bitrate_bps(), bps);
        for _ in 0..30 {
            let au = encoder
                .encode(&picture, &input, &mut output, false)
                .unwrap();
            assert!(!au.keyframe(), "a new rate forced an IDR");
        }
    }
    println!("NVENC took 600 kbit/s and 2.5 Mbit/s mid-stream without an IDR");
}

#[test]
fn the_chosen_video_path_and_its_reason_are_reported() {
    let xvfb = playpod_tests::Xvfb::start(320, 240);
    let framebuffer = xvfb.framebuffer();
    let display = xvfb.name();
    let gpu = Gpu::open();
    let mut served = playpod_tests::Served::start(&[
        "pod",
        "--display",
        &display,
        "--framebuffer",
        framebuffer.to_str().unwrap(),
        "--size",
        "320x240",
        "--encoder",
        "auto",
    ]);
    let ready = served.get("/readyz");
    let body = ready.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body.trim()).expect("readyz JSON");
    let reason = json["encoderReason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match gpu {
        Err(err) => {
            assert_eq!(json["conversion"], "cpu", "{json}");
            assert_eq!(json["encoder"], "openh264", "{json}");
            assert!(reason.contains(&err.to_string()), "{json}");
        }
        Ok(gpu) => {
            assert_eq!(json["conversion"], "cuda", "{json}");
            assert!(reason.contains(gpu.name()), "{json}");
        }
    }
    let metrics = served.get("/metrics");
    assert!(
        metrics.contains(&format!(
            "conversion=\"{}\"",
            json["conversion"].as_str().unwrap()
        )),
        "{metrics}"
    );
    served.terminate();

    // Asking for NVENC where there is none fails at start with the reason.
    if Nvenc::load().is_err() || Gpu::open().is_err() {
        let err = playpod_tests::playpod_fails(&[
            "pod",
            "--display",
            &display,
            "--framebuffer",
            framebuffer.to_str().unwrap(),
            "--size",
            "320x240",
            "--encoder",
            "nvenc",
            "--listen",
            "127.0.0.1:0",
        ]);
        assert!(err.contains("NVENC is not available"), "{err}");
    }
}
