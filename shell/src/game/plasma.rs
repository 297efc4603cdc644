//! A plasma that changes every pixel every frame, for benchmarks: the worst case for a video
//! encoder, deterministic given the seed and the frame number.
//!
//! Per frame it fills three small tables (columns, rows, diagonals) from a sine table; a pixel is
//! a palette entry picked by the sum of its three table values plus a palette shift. Between two
//! frames each table value moves by at most 1 and the shift by `SHIFT`, so every palette index
//! moves by 3..=9 and every pixel changes (the palette has no equal entries that close).

use super::render::PixelFormat;

/// Entries of the sine table (one period).
const SINE_LEN: usize = 1024;
/// Palette shift per frame.
const SHIFT: u8 = 6;

/// The plasma generator for one picture size.
#[derive(Debug, Clone)]
pub struct Plasma {
    width: usize,
    height: usize,
    /// One period of a sine, 0..=85, so that three of them add up to at most 255.
    sine: Vec<u8>,
    /// Pixel bytes per palette index.
    palette: [[u8; 4]; 256],
    /// Spatial frequencies of the column, row and diagonal terms.
    frequency: [usize; 3],
    /// Phase offsets of the three terms.
    offset: [usize; 3],
    /// Whether each term's phase runs backwards.
    reverse: [bool; 3],
    columns: Vec<u8>,
    rows: Vec<u8>,
    diagonals: Vec<u8>,
}

impl Plasma {
    /// A plasma of `width` x `height` pixels whose pattern and colours depend on `seed`.
    pub fn new(seed: u64, width: u16, height: u16, format: PixelFormat) -> Plasma {
        let (width, height) = (usize::from(width), usize::from(height));
        let mut bits = seed ^ 0x5eed_0f91_a53a;
        let mut take = |n: u64| {
            bits = bits
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from((bits >> 33) % n).unwrap_or(0)
        };
        let frequency = [2 + take(3), 2 + take(3), 1 + take(3)];
        let offset = [take(1024), take(1024), take(1024)];
        let reverse = [take(2) == 1, take(2) == 1, take(2) == 1];
        let hue = take(256) as f64;

        let sine = (0..SINE_LEN)
            .map(|i| {
                let angle = i as f64 * std::f64::consts::TAU / SINE_LEN as f64;
                (42.5 + 42.5 * angle.sin()).round() as u8
            })
            .collect();
        let mut palette = [[0; 4]; 256];
        for (i, entry) in palette.iter_mut().enumerate() {
            let angle = (i as f64 + hue) * std::f64::consts::TAU / 256.0;
            let third = std::f64::consts::TAU / 3.0;
            let level = |a: f64| (127.5 + 127.5 * a.sin()).round().clamp(0.0, 255.0) as u8;
            let rgb = [
                level(angle),
                level(angle + third),
                level(angle + 2.0 * third),
            ];
            *entry = format.bytes(format.pixel(rgb));
        }
        Plasma {
            width,
            height,
            sine,
            palette,
            frequency,
            offset,
            reverse,
            columns: vec![0; width],
            rows: vec![0; height],
            diagonals: vec![0; width + height],
        }
    }

    /// Bytes per row of the picture (4 per pixel).
    pub fn stride(&self) -> usize {
        self.width * 4
    }

    /// Bytes of the whole picture.
    pub fn len(&self) -> usize {
        self.stride() * self.height
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Draws frame number `frame` into `out` (rows of [`Plasma::stride`] bytes; rows beyond
    /// the picture or beyond `out` are left alone).
    pub fn render(&mut self, frame: u64, out: &mut [u8]) {
        let phase = |term: usize| {
            let t = usize::try_from(frame % SINE_LEN as u64).unwrap_or(0);
            let t = if self.reverse[term] { SINE_LEN - t } else { t };
            self.offset[term] + t
        };
        let (p0, p1, p2) = (phase(0), phase(1), phase(2));
        let at = |i: usize| self.sine[i % SINE_LEN];
        let shift = u8::try_from(frame % 256).unwrap_or(0).wrapping_mul(SHIFT);
        for (x, c) in self.columns.iter_mut().enumerate() {
            *c = at(x * self.frequency[0] + p0);
        }
        for (y, r) in self.rows.iter_mut().enumerate() {
            *r = at(y * self.frequency[1] + p1).wrapping_add(shift);
        }
        for (d, v) in self.diagonals.iter_mut().enumerate() {
            *v = at(d * self.frequency[2] + p2);
        }
        let stride = self.stride();
        for (y, (row, &r)) in out.chunks_exact_mut(stride).zip(&self.rows).enumerate() {
            let diagonals = &self.diagonals[y..y + self.width];
            for ((px, &c), &d) in row.chunks_exact_mut(4).zip(&self.columns).zip(diagonals) {
                let index = c.wrapping_add(r).wrapping_add(d);
                px.copy_from_slice(&self.palette[usize::from(index)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(plasma: &mut Plasma, n: u64) -> Vec<u8> {
        let mut out = vec![0; plasma.len()];
        plasma.render(n, &mut out);
        out
    }

    fn changed_pixels(a: &[u8], b: &[u8]) -> usize {
        a.chunks_exact(4)
            .zip(b.chunks_exact(4))
            .filter(|(p, q)| p != q)
            .count()
    }

    #[test]
    fn every_pixel_changes_every_frame() {
        for seed in [1, 2, 99] {
            let mut plasma = Plasma::new(seed, 768, 96, PixelFormat::BGRX);
            let pixels = 768 * 96;
            for n in [0, 1, 255, 256, 1023, 1024, 100_000] {
                let a = frame(&mut plasma, n);
                let b = frame(&mut plasma, n + 1);
                assert_eq!(changed_pixels(&a, &b), pixels, "seed {seed}, frame {n}");
            }
        }
    }

    #[test]
    fn the_palette_has_no_close_repeats() {
        let plasma = Plasma::new(5, 16, 16, PixelFormat::BGRX);
        for i in 0..256 {
            for step in 3..=9 {
                assert_ne!(
                    plasma.palette[i],
                    plasma.palette[(i + step) % 256],
                    "{i} +{step}"
                );
            }
        }
    }

    #[test]
    fn deterministic_given_seed_and_frame() {
        let mut a = Plasma::new(3, 128, 64, PixelFormat::BGRX);
        let mut b = Plasma::new(3, 128, 64, PixelFormat::BGRX);
        let late = frame(&mut a, 500);
        for n in 0..500 {
            frame(&mut b, n);
        }
        assert_eq!(
            frame(&mut b, 500),
            late,
            "a frame depends on its number only"
        );
        let mut c = Plasma::new(4, 128, 64, PixelFormat::BGRX);
        assert_ne!(frame(&mut c, 500), late);
    }

    #[test]
    fn pixels_are_bgrx_with_x_zero() {
        let mut plasma = Plasma::new(1, 64, 8, PixelFormat::BGRX);
        let out = frame(&mut plasma, 7);
        assert!(out.chunks_exact(4).all(|p| p[3] == 0));
        let colours: std::collections::HashSet<&[u8]> = out.chunks_exact(4).collect();
        assert!(
            colours.len() > 20,
            "a varied picture: {} colours",
            colours.len()
        );
    }

    #[test]
    fn a_short_buffer_is_filled_as_far_as_it_goes() {
        let mut plasma = Plasma::new(1, 64, 8, PixelFormat::BGRX);
        let mut out = vec![0xaa; 64 * 4 * 3 + 5];
        plasma.render(1, &mut out);
        assert!(out[..64 * 4 * 3].chunks_exact(4).all(|p| p[3] == 0));
        assert_eq!(&out[64 * 4 * 3..], &[0xaa; 5]);
    }
}
