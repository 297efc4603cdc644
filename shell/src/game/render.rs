//! What a Pong frame looks like, as plain rectangles per colour (no X inside), and how colours
//! become pixel values.

use x11rb::protocol::xproto::Rectangle;

use super::pong::{Pong, Rect, Side};

/// The colours of a Pong frame. Every ink has its own exact colour, so a test can find each
/// object on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ink {
    Background = 0,
    Net = 1,
    LeftPaddle = 2,
    RightPaddle = 3,
    Ball = 4,
    Score = 5,
}

impl Ink {
    /// All inks, in drawing order (later ones on top).
    pub const ALL: [Ink; 6] = [
        Ink::Background,
        Ink::Net,
        Ink::Score,
        Ink::LeftPaddle,
        Ink::RightPaddle,
        Ink::Ball,
    ];

    /// The ink's colour, `[red, green, blue]`.
    pub const fn rgb(self) -> [u8; 3] {
        match self {
            Ink::Background => [0x10, 0x14, 0x24],
            Ink::Net => [0x50, 0x58, 0x70],
            Ink::LeftPaddle => [0xff, 0x8c, 0x1a],
            Ink::RightPaddle => [0x2a, 0xc8, 0xff],
            Ink::Ball => [0xff, 0xff, 0xff],
            Ink::Score => [0xc8, 0xc8, 0xd2],
        }
    }
}

/// How a TrueColor visual packs red, green and blue into a pixel, and the byte order of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub red_mask: u32,
    pub green_mask: u32,
    pub blue_mask: u32,
    /// Image byte order: most significant byte first.
    pub msb_first: bool,
}

impl PixelFormat {
    /// Xvfb's 24-bit format on little-endian machines: bytes B, G, R, X.
    pub const BGRX: PixelFormat = PixelFormat {
        red_mask: 0x00ff_0000,
        green_mask: 0x0000_ff00,
        blue_mask: 0x0000_00ff,
        msb_first: false,
    };

    /// The pixel value of `[red, green, blue]`.
    pub fn pixel(&self, [r, g, b]: [u8; 3]) -> u32 {
        channel(r, self.red_mask) | channel(g, self.green_mask) | channel(b, self.blue_mask)
    }

    /// The pixel's bytes in a 32-bit-per-pixel ZPixmap image.
    pub fn bytes(&self, pixel: u32) -> [u8; 4] {
        if self.msb_first {
            pixel.to_be_bytes()
        } else {
            pixel.to_le_bytes()
        }
    }
}

/// Scales an 8-bit channel to the width of `mask` and puts it in place.
fn channel(value: u8, mask: u32) -> u32 {
    if mask == 0 {
        return 0;
    }
    let shift = mask.trailing_zeros();
    let max = u64::from(mask >> shift);
    let scaled = (u64::from(value) * max + 127) / 255;
    (u32::try_from(scaled).unwrap_or(u32::MAX) << shift) & mask
}

/// The rectangles of one frame, grouped by ink; the lists are reused from frame to frame.
#[derive(Debug, Default)]
pub struct DrawList {
    rects: [Vec<Rectangle>; 6],
}

impl DrawList {
    pub fn rects(&self, ink: Ink) -> &[Rectangle] {
        &self.rects[ink as usize]
    }

    fn clear(&mut self) {
        self.rects.iter_mut().for_each(Vec::clear);
    }

    /// Adds a rectangle, clipped to what X coordinates can hold; empty ones are dropped.
    fn push(&mut self, ink: Ink, r: Rect) {
        let x0 = r.x.clamp(0, i32::from(i16::MAX));
        let y0 = r.y.clamp(0, i32::from(i16::MAX));
        let x1 = r.x.saturating_add(r.width).clamp(0, i32::from(i16::MAX));
        let y1 = r.y.saturating_add(r.height).clamp(0, i32::from(i16::MAX));
        if x1 <= x0 || y1 <= y0 {
            return;
        }
        // The clamps above keep every value within i16 and u16.
        let fit = |v: i32| i16::try_from(v).unwrap_or(i16::MAX);
        let size = |v: i32| u16::try_from(v).unwrap_or(u16::MAX);
        self.rects[ink as usize].push(Rectangle {
            x: fit(x0),
            y: fit(y0),
            width: size(x1 - x0),
            height: size(y1 - y0),
        });
    }
}

/// Segments of a seven-segment digit, bits a..g = 0..6.
const DIGIT_SEGMENTS: [u8; 10] = [
    0b011_1111, // 0: a b c d e f
    0b000_0110, // 1: b c
    0b101_1011, // 2: a b d e g
    0b100_1111, // 3: a b c d g
    0b110_0110, // 4: b c f g
    0b110_1101, // 5: a c d f g
    0b111_1101, // 6: a c d e f g
    0b000_0111, // 7: a b c
    0b111_1111, // 8: all
    0b110_1111, // 9: a b c d f g
];

/// Fills `list` with the rectangles of the current frame of `pong`.
pub fn draw_pong(pong: &Pong, list: &mut DrawList) {
    list.clear();
    let g = pong.geometry();
    let (w, h) = (g.width, g.height);
    list.push(
        Ink::Background,
        Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        },
    );

    // The net: a dashed line down the middle.
    let net_w = (w / 192).max(1);
    let dash = (h / 40).max(2);
    let mut y = dash / 2;
    while y < h {
        let rect = Rect {
            x: (w - net_w) / 2,
            y,
            width: net_w,
            height: dash,
        };
        list.push(Ink::Net, rect);
        y += 2 * dash;
    }

    // Scores, either side of the net near the top.
    let digit_h = (h / 12).max(5);
    let digit_w = (digit_h / 2).max(3);
    let top = h / 24;
    let gap = w / 16;
    let [left, right] = pong.score();
    let left_digits = digits(left);
    let left_width = number_width(left_digits.len(), digit_w);
    draw_number(
        list,
        left_digits,
        w / 2 - gap - left_width,
        top,
        digit_w,
        digit_h,
    );
    draw_number(list, digits(right), w / 2 + gap, top, digit_w, digit_h);

    list.push(Ink::LeftPaddle, pong.paddle(Side::Left));
    list.push(Ink::RightPaddle, pong.paddle(Side::Right));
    if let Some(ball) = pong.ball() {
        list.push(Ink::Ball, ball);
    }
}

fn digits(n: u8) -> &'static [u8] {
    const ALL: [[u8; 2]; 100] = {
        let mut all = [[0; 2]; 100];
        let mut i = 0;
        while i < 100 {
            all[i] = [(i / 10) as u8, (i % 10) as u8];
            i += 1;
        }
        all
    };
    let pair = &ALL[usize::from(n.min(99))];
    if n < 10 { &pair[1..] } else { pair }
}

fn number_width(count: usize, digit_w: i32) -> i32 {
    let count = i32::try_from(count).unwrap_or(2);
    count * digit_w + (count - 1).max(0) * digit_spacing(digit_w)
}

fn digit_spacing(digit_w: i32) -> i32 {
    (digit_w / 2).max(1)
}

fn draw_number(list: &mut DrawList, digits: &[u8], x: i32, y: i32, dw: i32, dh: i32) {
    let mut x = x;
    for &d in digits {
        draw_digit(list, d, x, y, dw, dh);
        x += dw + digit_spacing(dw);
    }
}

fn draw_digit(list: &mut DrawList, digit: u8, x: i32, y: i32, dw: i32, dh: i32) {
    let t = (dh / 8).max(1);
    let mid = (dh - t) / 2;
    let segments = [
        (0, 0, dw, t),              // a: top
        (dw - t, 0, t, mid + t),    // b: top right
        (dw - t, mid, t, dh - mid), // c: bottom right
        (0, dh - t, dw, t),         // d: bottom
        (0, mid, t, dh - mid),      // e: bottom left
        (0, 0, t, mid + t),         // f: top left
        (0, mid, dw, t),            // g: middle
    ];
    let on = DIGIT_SEGMENTS[usize::from(digit % 10)];
    for (bit, &(sx, sy, sw, sh)) in segments.iter().enumerate() {
        if on & (1 << bit) != 0 {
            list.push(
                Ink::Score,
                Rect {
                    x: x + sx,
                    y: y + sy,
                    width: sw,
                    height: sh,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paints the draw list into a plain buffer of inks, as the X server would.
    fn paint(list: &DrawList, w: usize, h: usize) -> Vec<Option<Ink>> {
        let mut img = vec![None; w * h];
        for ink in Ink::ALL {
            for r in list.rects(ink) {
                for y in r.y as usize..(r.y as usize + r.height as usize).min(h) {
                    for x in r.x as usize..(r.x as usize + r.width as usize).min(w) {
                        img[y * w + x] = Some(ink);
                    }
                }
            }
        }
        img
    }

    fn count(img: &[Option<Ink>], ink: Ink) -> usize {
        img.iter().filter(|&&p| p == Some(ink)).count()
    }

    #[test]
    fn a_frame_shows_paddles_ball_net_and_scores() {
        let pong = Pong::new(1, 768, 768);
        let mut list = DrawList::default();
        draw_pong(&pong, &mut list);
        let img = paint(&list, 768, 768);
        assert!(
            img.iter().all(Option::is_some),
            "the background covers everything"
        );
        assert_eq!(count(&img, Ink::LeftPaddle), 16 * 128);
        assert_eq!(count(&img, Ink::RightPaddle), 16 * 128);
        assert_eq!(count(&img, Ink::Ball), 12 * 12);
        assert!(count(&img, Ink::Net) > 768 * 2 / 3);
        assert!(count(&img, Ink::Score) > 2 * 64 * 8, "two zeros");
    }

    #[test]
    fn digits_light_the_right_segments() {
        let mut list = DrawList::default();
        for (digit, segments) in [(0, 6), (1, 2), (7, 3), (8, 7)] {
            list.clear();
            draw_digit(&mut list, digit, 0, 0, 32, 64);
            assert_eq!(list.rects(Ink::Score).len(), segments, "digit {digit}");
        }
        assert_eq!(digits(7), &[7]);
        assert_eq!(digits(11), &[1, 1]);
        assert_eq!(digits(255), &[9, 9]);
        // A one and a seven differ by the top bar only.
        list.clear();
        draw_digit(&mut list, 1, 0, 0, 32, 64);
        let one = paint(&list, 32, 64);
        list.clear();
        draw_digit(&mut list, 7, 0, 0, 32, 64);
        let seven = paint(&list, 32, 64);
        let differ = one.iter().zip(&seven).filter(|(a, b)| a != b).count();
        assert_eq!(differ, (32 - 8) * 8);
    }

    #[test]
    fn rectangles_are_clipped_to_x_coordinates() {
        let mut list = DrawList::default();
        list.push(
            Ink::Ball,
            Rect {
                x: -5,
                y: -5,
                width: 10,
                height: 10,
            },
        );
        list.push(
            Ink::Ball,
            Rect {
                x: -20,
                y: 0,
                width: 10,
                height: 10,
            },
        );
        list.push(
            Ink::Ball,
            Rect {
                x: 40_000,
                y: 0,
                width: 10,
                height: 10,
            },
        );
        let rects: Vec<_> = list
            .rects(Ink::Ball)
            .iter()
            .map(|r| (r.x, r.y, r.width, r.height))
            .collect();
        assert_eq!(rects, [(0, 0, 5, 5)]);
    }

    #[test]
    fn pixel_values_follow_the_visual_masks() {
        assert_eq!(PixelFormat::BGRX.pixel([0x12, 0x34, 0x56]), 0x0012_3456);
        assert_eq!(PixelFormat::BGRX.bytes(0x0012_3456), [0x56, 0x34, 0x12, 0]);
        let rgb565 = PixelFormat {
            red_mask: 0xf800,
            green_mask: 0x07e0,
            blue_mask: 0x001f,
            msb_first: true,
        };
        assert_eq!(rgb565.pixel([255, 255, 255]), 0xffff);
        assert_eq!(rgb565.pixel([255, 0, 0]), 0xf800);
        assert_eq!(rgb565.pixel([0, 0, 0]), 0);
        assert_eq!(rgb565.bytes(0x0102_0304), [1, 2, 3, 4]);
    }

    #[test]
    fn every_ink_has_its_own_colour() {
        for a in Ink::ALL {
            for b in Ink::ALL {
                assert_eq!(a == b, a.rgb() == b.rgb());
            }
        }
    }
}
