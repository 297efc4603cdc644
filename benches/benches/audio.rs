//! Per-frame costs of the audio path: Opus (restricted low delay, 96 kbit/s stereo) on one 10 ms
//! frame of a chord, the whole encoder stage (Opus + broadcast ring publish), and a PCM frame
//! through the SPSC ring between the capture and encoder threads.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use playpod_hotpath::audio::encode::new_encoder;
use playpod_hotpath::audio::{
    AudioStats, FRAME_SAMPLES, MAX_PACKET, OpusSettings, OpusStage, PcmFrame, SAMPLE_RATE,
};
use playpod_hotpath::ring::{Ring, RingConfig};

/// 100 frames (1 s) of a three-note chord with a little noise: typical game sound.
fn frames() -> Vec<PcmFrame> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..100)
        .map(|n| {
            let mut f = PcmFrame::default();
            for (i, pair) in f.samples.chunks_exact_mut(2).enumerate() {
                let t = (n * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
                let tau = 2.0 * std::f64::consts::PI;
                let chord =
                    (tau * 261.6 * t).sin() + (tau * 329.6 * t).sin() + (tau * 392.0 * t).sin();
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f64 / f64::from(1u32 << 24) - 0.5;
                let l = (6_000.0 * chord + 500.0 * noise) as i16;
                let r = (6_000.0 * chord - 500.0 * noise) as i16;
                pair.copy_from_slice(&[l, r]);
            }
            f
        })
        .collect()
}

fn opus(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("audio_10ms_frame");
    g.throughput(Throughput::Elements(1));
    let mut encoder = new_encoder(OpusSettings::default()).unwrap();
    let mut packet = [0u8; MAX_PACKET];
    let mut n = 0;
    g.bench_function("opus_encode_96k_stereo", |b| {
        b.iter(|| {
            let len = encoder
                .encode(&frames[n % frames.len()].samples, &mut packet)
                .unwrap();
            n += 1;
            len
        })
    });
    let (ring, writer) = Ring::new(RingConfig {
        slots: 64,
        slot_bytes: 1536,
        max_readers: 4,
    });
    let _reader = ring.subscribe().unwrap();
    let mut stage = OpusStage::new(
        writer,
        Arc::new(AudioStats::default()),
        OpusSettings::default(),
    )
    .unwrap();
    let mut n = 0;
    g.bench_function("encoder_stage_opus_and_ring", |b| {
        b.iter(|| {
            let seq = stage.encode(&frames[n % frames.len()]).unwrap();
            n += 1;
            seq
        })
    });
    let (mut producer, mut consumer) = rtrb::RingBuffer::<PcmFrame>::new(8);
    let mut n = 0;
    g.bench_function("pcm_ring_push_pop", |b| {
        b.iter(|| {
            producer.push(frames[n % frames.len()]).unwrap();
            n += 1;
            consumer.pop().unwrap().capture_us
        })
    });
    g.finish();
}

criterion_group!(benches, opus);
criterion_main!(benches);
