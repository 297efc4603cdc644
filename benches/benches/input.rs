//! Players' input: parse one message against the held keys and work out the keys that changed
//! (what a player's thread does per WebSocket message before the XTEST requests), per form.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use playpod_hotpath::input::{ErrorReply, Frame, PlayerKeys, changes, parse};

/// Parses `frames` in turn (each pair undoes the other, so every message changes keys) and
/// folds the changes, as a player's thread would send them.
fn play(frames: &[Frame<'_>; 2], held: &mut PlayerKeys, n: &mut usize) -> u32 {
    let frame = frames[*n & 1];
    *n += 1;
    let new = parse(black_box(frame), *held).expect("valid message");
    let mut sent = 0;
    for (key, pressed) in changes(*held, new) {
        sent += u32::from(key as u8) << u32::from(pressed);
    }
    *held = new;
    sent
}

fn parse_and_diff(c: &mut Criterion) {
    let cases: [(&str, [Frame<'static>; 2]); 3] = [
        ("binary_1_byte", [Frame::Binary(&[0x11]), Frame::Binary(&[0x06])]),
        (
            "json_diff_2_keys",
            [
                Frame::Text(br#"{"up":true,"a":false}"#),
                Frame::Text(br#"{"up":false,"a":true}"#),
            ],
        ),
        (
            "json_full_8_keys",
            [
                Frame::Text(
                    br#"{"up":true,"down":false,"left":true,"right":false,"a":true,"b":false,"start":true,"select":false}"#,
                ),
                Frame::Text(
                    br#"{"up":false,"down":true,"left":false,"right":true,"a":false,"b":true,"start":false,"select":true}"#,
                ),
            ],
        ),
    ];
    let mut g = c.benchmark_group("input_parse_and_diff");
    g.throughput(Throughput::Elements(1));
    for (name, frames) in &cases {
        let (mut held, mut n) = (PlayerKeys::NONE, 0);
        g.bench_function(*name, |b| b.iter(|| play(frames, &mut held, &mut n)));
    }
    g.bench_function("invalid_with_error_reply", |b| {
        b.iter(|| {
            let err = parse(
                black_box(Frame::Text(br#"{"up":true,"jump":false}"#)),
                PlayerKeys::NONE,
            )
            .expect_err("unknown key");
            ErrorReply::new(&err).as_bytes().len()
        })
    });
    g.finish();
}

criterion_group!(benches, parse_and_diff);
criterion_main!(benches);
