//! Glass to glass in a real browser: `playpod demo --stamp` draws each frame's draw time and the
//! players' keys into a corner ([`playpod::game::stamp`]); the page reads the stamp back from
//! every decoded frame (`window.playpodFrameHook`, called by the player for each frame the
//! decoder outputs) and timestamps it on the same machine's clock. A key pressed on the page is
//! timed from its `keydown` event to the first decoded frame whose stamp shows the key held.
//!
//! Used by the browser test (a few seconds) and by `glass-to-glass` (a minute, the reported
//! figures).

use std::time::Duration;

use fantoccini::Client;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use playpod::game::keys::Key;
use serde_json::{Value, json};

use crate::Served;
use crate::browser::WAIT_PLAYER;

/// Installed in the page: reads the stamp of every decoded frame (same layout and CRC as
/// `playpod::game::stamp`) and records `[draw -> decoded ms, frame number, keys 1, keys 2]`;
/// records every key event's time.
const INSTALL: &str = r"
const W = 160, H = 32, BLOCK = 8, COLUMNS = 20, BYTES = 10;
const canvas = new OffscreenCanvas(W, H);
const g = canvas.getContext('2d', { willReadFrequently: true });
const now = () => performance.timeOrigin + performance.now();
const rec = (window.__g2g = { frames: [], unreadable: 0, keys: [] });
const crc8 = (bytes) => {
  let crc = 0xff;
  for (const b of bytes) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
};
window.playpodFrameHook = (frame) => {
  try { read(frame); } catch (e) { rec.unreadable++; rec.error = String(e); }
};
const read = (frame) => {
  const t = now();
  if (frame.displayWidth < W || frame.displayHeight < H) { rec.unreadable++; return; }
  g.drawImage(frame, 0, 0, W, H, 0, 0, W, H);
  const px = g.getImageData(0, 0, W, H).data;
  const bytes = new Uint8Array(BYTES);
  for (let i = 0; i < BYTES * 8; i++) {
    const x0 = (i % COLUMNS) * BLOCK + BLOCK / 2 - 2, y0 = Math.floor(i / COLUMNS) * BLOCK + BLOCK / 2 - 2;
    let sum = 0;
    for (let y = y0; y < y0 + 4; y++) for (let x = x0; x < x0 + 4; x++) sum += px[(y * W + x) * 4 + 1];
    if (sum / 16 >= 128) bytes[i >> 3] |= 0x80 >> (i & 7);
  }
  if (crc8(bytes.subarray(0, BYTES - 1)) !== bytes[BYTES - 1]) { rec.unreadable++; return; }
  const drawn = ((bytes[0] << 24) >>> 0) + (bytes[1] << 16) + (bytes[2] << 8) + bytes[3];
  let ms = (t % 4294967296) - drawn;
  if (ms > 2147483648) ms -= 4294967296;
  if (ms < -2147483648) ms += 4294967296;
  rec.frames.push([ms, (bytes[4] << 16) | (bytes[5] << 8) | bytes[6], bytes[7], bytes[8], t]);
};
for (const type of ['keydown', 'keyup']) {
  window.addEventListener(type, (ev) => { if (!ev.repeat) rec.keys.push([now(), ev.code, type === 'keydown']); }, true);
}
return true;
";

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Percentiles> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Percentiles {
            count: v.len(),
            min: v[0],
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            max: v[v.len() - 1],
        })
    }

    pub fn to_json(self) -> Value {
        json!({"count": self.count, "min_ms": self.min, "p50_ms": self.p50, "p95_ms": self.p95,
               "p99_ms": self.p99, "max_ms": self.max})
    }
}

/// One decoded frame as the page saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedFrame {
    /// Draw (the stamp's time) -> decoded (the decoder's output callback), ms.
    pub latency_ms: f64,
    /// The stamp's frame number.
    pub frame: u32,
    /// Player 1's and 2's keys in the stamp.
    pub keys: [u8; 2],
    /// When it was decoded (ms since the Unix epoch, the page's clock).
    pub at_ms: f64,
}

/// What a measurement saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub seconds: f64,
    pub frames: Vec<DecodedFrame>,
    pub unreadable: u64,
    /// Key presses made (the `keydown`s of the measured key the page saw).
    pub presses: usize,
    /// Key press -> first decoded frame showing it held, ms, for each press that showed.
    pub key_latencies_ms: Vec<f64>,
}

impl Report {
    pub fn draw_to_decoded(&self) -> Option<Percentiles> {
        let v: Vec<f64> = self.frames.iter().map(|f| f.latency_ms).collect();
        Percentiles::of(&v)
    }

    pub fn key_to_visible(&self) -> Option<Percentiles> {
        Percentiles::of(&self.key_latencies_ms)
    }

    /// Decoded frames whose game frame number is below the one before (modulo 2^24).
    pub fn out_of_order(&self) -> usize {
        self.steps().filter(|&step| step > 0x80_0000).count()
    }

    /// Decoded frames showing the same game frame as the one before: the screen was captured
    /// twice between two game frames (the game's and the capture's 60 Hz clocks drift apart).
    pub fn repeated(&self) -> usize {
        self.steps().filter(|&step| step == 0).count()
    }

    fn steps(&self) -> impl Iterator<Item = u32> + '_ {
        self.frames
            .windows(2)
            .map(|w| w[1].frame.wrapping_sub(w[0].frame) & 0xff_ffff)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "decoded_frames": self.frames.len(),
            "unreadable_stamps": self.unreadable,
            "out_of_order": self.out_of_order(),
            "repeated": self.repeated(),
            "draw_to_decoded": self.draw_to_decoded().map(Percentiles::to_json),
            "key_presses": self.presses,
            "key_presses_seen": self.key_latencies_ms.len(),
            "key_to_visible": self.key_to_visible().map(Percentiles::to_json),
        })
    }
}

/// For each press of `bit` by `player` (0 or 1) at a page time in `presses` (ms): the time until
/// the first decoded frame after it whose stamp shows the bit set, provided the last frame before
/// the press showed it clear (otherwise the press is not counted: it was not a change).
pub fn key_latencies(frames: &[DecodedFrame], presses: &[f64], player: usize, bit: u8) -> Vec<f64> {
    presses
        .iter()
        .filter_map(|&t| {
            let before = frames.iter().rev().find(|f| f.at_ms <= t)?;
            if before.keys[player] & bit != 0 {
                return None;
            }
            frames
                .iter()
                .find(|f| f.at_ms > t && f.keys[player] & bit != 0)
                .map(|f| f.at_ms - t)
        })
        .collect()
}

/// Opens the demo (started with `--stamp`) as player 1, then for `duration` presses the up
/// arrow once every `press_every` (held 150 ms) while the page reads the stamp of every decoded
/// frame. A press is only timed when the frames decoded by then show the key up, so on a loaded
/// machine whose latency nears `press_every` fewer presses count: space them more there.
pub async fn measure(
    client: &Client,
    served: &Served,
    duration: Duration,
    press_every: Duration,
) -> anyhow::Result<Report> {
    client.goto(&format!("{}?player=1", served.url)).await?;
    let ready = client.execute_async(WAIT_PLAYER, vec![]).await?;
    if let Some(err) = ready.get("error") {
        anyhow::bail!("the player did not start: {err} ({ready})");
    }
    client.execute(INSTALL, vec![]).await?;
    // A press counts from a decoded frame showing the key up: let some arrive first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let hold = Duration::from_millis(150);
    let gap = press_every
        .saturating_sub(hold)
        .max(Duration::from_millis(50));
    let cycles = (duration.as_millis() / (hold + gap).as_millis()).max(1);
    let mut keys = KeyActions::new("keyboard".to_owned());
    for _ in 0..cycles {
        keys = keys
            .then(KeyAction::Down { value: '\u{e013}' })
            .then(KeyAction::Pause { duration: hold })
            .then(KeyAction::Up { value: '\u{e013}' })
            .then(KeyAction::Pause { duration: gap });
    }
    client.perform_actions(keys).await?;
    // Frames showing the last press are still on their way: wait until a frame drawn after the
    // last key event has been decoded (on a loaded machine that can take seconds), at most 10 s.
    let waited = std::time::Instant::now();
    let rec = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rec = client.execute("return window.__g2g;", vec![]).await?;
        let last_key = rec["keys"]
            .as_array()
            .and_then(|keys| keys.last())
            .and_then(|k| k[0].as_f64());
        let last_drawn = rec["frames"]
            .as_array()
            .and_then(|frames| frames.last())
            .and_then(|f| Some(f.get(4)?.as_f64()? - f.get(0)?.as_f64()?));
        let caught_up = match (last_key, last_drawn) {
            (None, _) => true,
            (Some(key), Some(drawn)) => drawn > key,
            (Some(_), None) => false,
        };
        if caught_up || waited.elapsed() > Duration::from_secs(10) {
            break rec;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    client
        .execute("window.playpodFrameHook = null;", vec![])
        .await?;
    if let Some(err) = rec.get("error") {
        eprintln!("reading a stamp failed: {err}");
    }
    let frames: Vec<DecodedFrame> = rec["frames"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no frames recorded: {rec}"))?
        .iter()
        .filter_map(|f| {
            let n = |i: usize| f.get(i).and_then(Value::as_f64);
            Some(DecodedFrame {
                latency_ms: n(0)?,
                frame: n(1)? as u32,
                keys: [n(2)? as u8, n(3)? as u8],
                at_ms: n(4)?,
            })
        })
        .collect();
    let presses: Vec<f64> = rec["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|k| k[1] == "ArrowUp" && k[2] == true)
        .filter_map(|k| k[0].as_f64())
        .collect();
    let key_latencies_ms = key_latencies(&frames, &presses, 0, Key::Up.bit());
    Ok(Report {
        seconds,
        unreadable: rec["unreadable"].as_u64().unwrap_or(0),
        presses: presses.len(),
        key_latencies_ms,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v).unwrap();
        assert_eq!(
            (p.min, p.p50, p.p95, p.p99, p.max),
            (1.0, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&[]), None);
        assert_eq!(Percentiles::of(&[7.0]).unwrap().p99, 7.0);
    }

    fn frame(at_ms: f64, keys: u8, number: u32) -> DecodedFrame {
        DecodedFrame {
            latency_ms: 30.0,
            frame: number,
            keys: [keys, 0],
            at_ms,
        }
    }

    #[test]
    fn key_latency_is_press_to_first_frame_showing_it() {
        let frames = [
            frame(100.0, 0, 1),
            frame(116.0, 0, 2),
            frame(133.0, 1, 3),
            frame(150.0, 1, 4),
            frame(166.0, 0, 5),
            frame(183.0, 1, 6),
        ];
        // Pressed at 120: visible at 133. Pressed at 140 while already shown: not a change.
        // Pressed at 170: visible at 183. Pressed at 190: never shown after.
        let got = key_latencies(&frames, &[120.0, 140.0, 170.0, 190.0], 0, 1);
        assert_eq!(got, vec![13.0, 13.0]);
    }

    #[test]
    fn out_of_order_frames_are_counted_across_the_wrap() {
        let mut r = Report {
            seconds: 1.0,
            frames: vec![
                frame(0.0, 0, 0xff_fffe),
                frame(1.0, 0, 0xff_ffff),
                frame(2.0, 0, 0),
            ],
            unreadable: 0,
            presses: 0,
            key_latencies_ms: vec![],
        };
        assert_eq!((r.out_of_order(), r.repeated()), (0, 0));
        r.frames.push(frame(3.0, 0, 0));
        r.frames.push(frame(4.0, 0, 0xff_fff0));
        assert_eq!((r.out_of_order(), r.repeated()), (1, 1));
    }
}
