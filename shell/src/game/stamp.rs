//! The stamp: when a frame was drawn, its number and both players' keys, written into the top-left
//! corner of the built-in game's frames as black and white blocks that survive video compression
//! (`playpod game --stamp`, `playpod demo --stamp`).
//!
//! A harness reads it back from decoded frames: the draw time gives glass-to-glass latency (draw
//! -> decoded on the same machine's clock), the key bits the delay from a key press to its effect,
//! the frame number lets a quality score regenerate the exact source frame.
//!
//! Layout: [`COLUMNS`] x [`ROWS`] blocks of [`BLOCK`] pixels from (0, 0), one bit each, row by
//! row, most significant bit of the first byte first; white is 1. The 10 bytes are the draw time
//! (milliseconds since the Unix epoch, modulo 2^32, big-endian), the frame number (modulo 2^24,
//! big-endian), player 1's and player 2's keys (the wire bitmask) and a CRC-8 of the nine before.
//! The browser harness reads it the same way (`tests/src/g2g.js`).

use x11rb::protocol::xproto::Rectangle;

/// Side of one block in pixels: a whole number of 8x8 transform blocks, so that each block is
/// flat inside the encoder's transform.
pub const BLOCK: u16 = 8;
/// Blocks per row.
pub const COLUMNS: u16 = 20;
/// Rows of blocks.
pub const ROWS: u16 = 4;
/// Width of the stamp in pixels.
pub const WIDTH: u16 = BLOCK * COLUMNS;
/// Height of the stamp in pixels.
pub const HEIGHT: u16 = BLOCK * ROWS;
/// Bytes the stamp carries, the CRC included.
const BYTES: usize = (COLUMNS as usize * ROWS as usize) / 8;

/// What a stamp says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Draw time: milliseconds since the Unix epoch, modulo 2^32.
    pub time_ms: u32,
    /// Frame number, modulo 2^24.
    pub frame: u32,
    /// The keys players 1 and 2 held in this frame (bit `i` is `Key::ALL[i]`).
    pub keys: [u8; 2],
}

impl Stamp {
    /// The stamp of frame `frame` drawn now.
    pub fn now(frame: u64, keys: [u8; 2]) -> Stamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Stamp {
            // Both wrap on purpose: readers compare them with their own clock and count.
            time_ms: (ms & u128::from(u32::MAX)) as u32,
            frame: (frame & 0xff_ffff) as u32,
            keys,
        }
    }

    /// The bytes the blocks carry, CRC last.
    pub fn to_bytes(self) -> [u8; BYTES] {
        let t = self.time_ms.to_be_bytes();
        let f = self.frame.to_be_bytes();
        let mut out = [
            t[0],
            t[1],
            t[2],
            t[3],
            f[1],
            f[2],
            f[3],
            self.keys[0],
            self.keys[1],
            0,
        ];
        out[BYTES - 1] = crc8(&out[..BYTES - 1]);
        out
    }

    /// The stamp these bytes carry, if their CRC holds.
    pub fn from_bytes(bytes: [u8; BYTES]) -> Option<Stamp> {
        if crc8(&bytes[..BYTES - 1]) != bytes[BYTES - 1] {
            return None;
        }
        Some(Stamp {
            time_ms: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            frame: u32::from_be_bytes([0, bytes[4], bytes[5], bytes[6]]),
            keys: [bytes[7], bytes[8]],
        })
    }

    /// Whether bit `i` (block `i`, row by row) is set.
    fn bit(bytes: &[u8; BYTES], i: usize) -> bool {
        bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// The stamp's blocks as rectangles to fill white (`ones`) and black (`zeros`); both are
    /// cleared first.
    pub fn rects(self, ones: &mut Vec<Rectangle>, zeros: &mut Vec<Rectangle>) {
        ones.clear();
        zeros.clear();
        let bytes = self.to_bytes();
        for (i, (x, y)) in block_origins().enumerate() {
            let rect = Rectangle {
                x: x as i16,
                y: y as i16,
                width: BLOCK,
                height: BLOCK,
            };
            if Self::bit(&bytes, i) {
                ones.push(rect);
            } else {
                zeros.push(rect);
            }
        }
    }

    /// Paints the stamp into a picture of 4-byte pixels (BGRX or RGBX: white and black are the
    /// same in both) whose rows are `stride` bytes apart.
    ///
    /// # Panics
    /// If the picture is smaller than the stamp.
    pub fn paint_x32(self, pixels: &mut [u8], stride: usize) {
        let bytes = self.to_bytes();
        for (i, (x, y)) in block_origins().enumerate() {
            let value = if Self::bit(&bytes, i) { 0xff } else { 0 };
            for row in y..y + BLOCK {
                let start = usize::from(row) * stride + usize::from(x) * 4;
                pixels[start..start + usize::from(BLOCK) * 4].fill(value);
            }
        }
    }

    /// Reads the stamp from a picture through `brightness(x, y)` (0..=255): each block is the
    /// mean of its 4x4 centre, 1 when above the middle. `None` when the CRC does not hold.
    pub fn read(brightness: impl Fn(u16, u16) -> u8) -> Option<Stamp> {
        let mut bytes = [0u8; BYTES];
        let inset = BLOCK / 2 - 2;
        for (i, (x, y)) in block_origins().enumerate() {
            let mut sum = 0u32;
            for dy in 0..4 {
                for dx in 0..4 {
                    sum += u32::from(brightness(x + inset + dx, y + inset + dy));
                }
            }
            if sum / 16 >= 128 {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        Stamp::from_bytes(bytes)
    }

    /// Reads the stamp from an 8-bit plane (the luma of a decoded picture, or any grey image)
    /// whose rows are `stride` bytes apart. `None` if the plane is too small or the CRC fails.
    pub fn read_plane(plane: &[u8], stride: usize) -> Option<Stamp> {
        let needed = (usize::from(HEIGHT) - 1) * stride + usize::from(WIDTH);
        if stride < usize::from(WIDTH) || plane.len() < needed {
            return None;
        }
        Stamp::read(|x, y| plane[usize::from(y) * stride + usize::from(x)])
    }
}

/// The top-left corner of every block, in bit order.
fn block_origins() -> impl Iterator<Item = (u16, u16)> {
    (0..ROWS).flat_map(|r| (0..COLUMNS).map(move |c| (c * BLOCK, r * BLOCK)))
}

/// CRC-8 (polynomial 0x07, initial 0xff): catches any misread block, and an all-black or
/// all-white corner is no stamp.
fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0xffu8;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: Stamp = Stamp {
        time_ms: 0xdead_beef,
        frame: 0x12_3456,
        keys: [0b1000_0001, 0b0100_0010],
    };

    fn painted(stamp: Stamp, width: usize, height: usize) -> Vec<u8> {
        let mut pixels = vec![0x40; width * height * 4];
        stamp.paint_x32(&mut pixels, width * 4);
        pixels
    }

    fn luma(pixels: &[u8]) -> Vec<u8> {
        pixels.chunks_exact(4).map(|p| p[1]).collect()
    }

    #[test]
    fn bytes_round_trip_and_the_crc_catches_each_bit() {
        assert_eq!(Stamp::from_bytes(SAMPLE.to_bytes()), Some(SAMPLE));
        let bytes = SAMPLE.to_bytes();
        for bit in 0..BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 0x80 >> (bit % 8);
            assert_eq!(Stamp::from_bytes(flipped), None, "bit {bit} flipped");
        }
    }

    #[test]
    fn painted_stamps_read_back() {
        for stamp in [
            SAMPLE,
            Stamp {
                time_ms: 0,
                frame: 0,
                keys: [0, 0],
            },
            Stamp::now(u64::MAX, [0xff, 0xff]),
        ] {
            let pixels = painted(stamp, 200, 40);
            assert_eq!(Stamp::read_plane(&luma(&pixels), 200), Some(stamp));
        }
        assert_eq!(Stamp::now(0x1_2345_6789, [0, 0]).frame, 0x45_6789);
    }

    #[test]
    fn blocks_survive_noise_but_not_a_flipped_block() {
        let pixels = painted(SAMPLE, WIDTH.into(), HEIGHT.into());
        // Compression-like noise of +-60 on every pixel keeps every block on its side.
        let noisy: Vec<u8> = luma(&pixels)
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let n = (i * 7919 % 121) as i16 - 60;
                (i16::from(v) + n).clamp(0, 255) as u8
            })
            .collect();
        assert_eq!(Stamp::read_plane(&noisy, WIDTH.into()), Some(SAMPLE));
        // One block inverted: the CRC refuses the reading.
        let mut wrong = luma(&pixels);
        for y in 8..16 {
            for x in 24..32 {
                let v = &mut wrong[y * usize::from(WIDTH) + x];
                *v = 255 - *v;
            }
        }
        assert_eq!(Stamp::read_plane(&wrong, WIDTH.into()), None);
    }

    #[test]
    fn rects_cover_every_block_once() {
        let (mut ones, mut zeros) = (Vec::new(), Vec::new());
        SAMPLE.rects(&mut ones, &mut zeros);
        assert_eq!(ones.len() + zeros.len(), usize::from(COLUMNS * ROWS));
        let ones_expected: u32 = SAMPLE.to_bytes().iter().map(|b| b.count_ones()).sum();
        assert_eq!(ones.len() as u32, ones_expected);
        assert!(
            ones.iter()
                .chain(&zeros)
                .all(|r| r.x as u16 + r.width <= WIDTH && r.y as u16 + r.height <= HEIGHT)
        );
    }

    #[test]
    fn flat_corners_are_no_stamp() {
        for value in [0u8, 0xff] {
            assert_eq!(Stamp::from_bytes([value; BYTES]), None, "{value:#x}");
            let plane = vec![value; usize::from(WIDTH) * usize::from(HEIGHT)];
            assert_eq!(Stamp::read_plane(&plane, WIDTH.into()), None);
        }
    }

    #[test]
    fn too_small_planes_read_nothing() {
        assert_eq!(Stamp::read_plane(&[255; 100], 10), None);
        assert_eq!(Stamp::read_plane(&[], 1000), None);
    }
}
