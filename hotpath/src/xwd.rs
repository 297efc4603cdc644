//! The XWD image header Xvfb puts in front of its framebuffer (`-fbdir` file or `-shmem`
//! segment). Parsed from the bytes every time a source is opened; nothing is hard-coded.

/// Size of the fixed part of an XWD header (25 big-endian u32 fields).
const FIXED_HEADER: usize = 100;
/// Size of one colormap entry that follows the header (`XWDColor`).
const COLOR_ENTRY: usize = 12;
const XWD_FILE_VERSION: u32 = 7;
const Z_PIXMAP: u32 = 2;
const LSB_FIRST: u32 = 0;

/// Where the pixels of a framebuffer are and how they are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramebufferLayout {
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Offset of the first pixel from the start of the shared memory.
    pub pixel_offset: usize,
}

impl FramebufferLayout {
    /// Bytes the pixels span: `stride * height`.
    pub fn pixel_bytes(&self) -> usize {
        self.stride * self.height as usize
    }
}

/// Why bytes are not a framebuffer we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XwdError {
    #[error("framebuffer is {len} bytes, too short for an XWD header")]
    TooShort { len: usize },
    #[error("XWD header size {header_size} is invalid")]
    HeaderSize { header_size: u32 },
    #[error("XWD file version {0} is not 7")]
    Version(u32),
    #[error("XWD pixmap format {0} is not ZPixmap (2)")]
    Format(u32),
    #[error(
        "{bits} bits per pixel at depth {depth}; only 32 bpp, depth 24 BGRX is supported (start Xvfb with -screen 0 WxHx24)"
    )]
    PixelFormat { bits: u32, depth: u32 },
    #[error("XWD byte order {0} is not LSBFirst (0), pixels would not be BGRX")]
    ByteOrder(u32),
    #[error("XWD size {width}x{height} is empty or larger than 16384x16384")]
    Size { width: u32, height: u32 },
    #[error("XWD bytes per line {stride} is smaller than 4 x width {width}")]
    Stride { stride: u32, width: u32 },
    #[error("framebuffer is {len} bytes but its header says pixels end at byte {end}")]
    Truncated { len: usize, end: usize },
}

/// Reads the XWD header at the start of `bytes` and checks the pixels fit behind it.
pub fn parse(bytes: &[u8]) -> Result<FramebufferLayout, XwdError> {
    if bytes.len() < FIXED_HEADER {
        return Err(XwdError::TooShort { len: bytes.len() });
    }
    let field = |i: usize| {
        let at = i * 4;
        u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let header_size = field(0);
    let version = field(1);
    let format = field(2);
    let depth = field(3);
    let width = field(4);
    let height = field(5);
    let byte_order = field(7);
    let bits_per_pixel = field(11);
    let bytes_per_line = field(12);
    let ncolors = field(19);

    if (header_size as usize) < FIXED_HEADER || header_size > 1 << 16 {
        return Err(XwdError::HeaderSize { header_size });
    }
    if version != XWD_FILE_VERSION {
        return Err(XwdError::Version(version));
    }
    if format != Z_PIXMAP {
        return Err(XwdError::Format(format));
    }
    if bits_per_pixel != 32 || depth != 24 {
        return Err(XwdError::PixelFormat {
            bits: bits_per_pixel,
            depth,
        });
    }
    if byte_order != LSB_FIRST {
        return Err(XwdError::ByteOrder(byte_order));
    }
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(XwdError::Size { width, height });
    }
    if u64::from(bytes_per_line) < 4 * u64::from(width) {
        return Err(XwdError::Stride {
            stride: bytes_per_line,
            width,
        });
    }
    let pixel_offset = header_size as usize + ncolors as usize * COLOR_ENTRY;
    let layout = FramebufferLayout {
        width,
        height,
        stride: bytes_per_line as usize,
        pixel_offset,
    };
    let end = pixel_offset + layout.pixel_bytes();
    if end > bytes.len() {
        return Err(XwdError::Truncated {
            len: bytes.len(),
            end,
        });
    }
    Ok(layout)
}

/// Builds an XWD header like Xvfb's for a `width` x `height` BGRX screen (for tests and fuzzing).
pub fn header_for(width: u32, height: u32, ncolors: u32) -> Vec<u8> {
    let header_size = 100 + 60; // fixed part + window name, as Xvfb writes it
    let mut fields = [0u32; 25];
    fields[0] = header_size;
    fields[1] = XWD_FILE_VERSION;
    fields[2] = Z_PIXMAP;
    fields[3] = 24;
    fields[4] = width;
    fields[5] = height;
    fields[7] = LSB_FIRST;
    fields[8] = 32;
    fields[9] = LSB_FIRST;
    fields[10] = 32;
    fields[11] = 32;
    fields[12] = width * 4;
    fields[13] = 4; // TrueColor
    fields[14] = 0xff0000;
    fields[15] = 0xff00;
    fields[16] = 0xff;
    fields[17] = 8;
    fields[18] = 256;
    fields[19] = ncolors;
    let mut out: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
    out.resize(header_size as usize + ncolors as usize * COLOR_ENTRY, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, ncolors: u32) -> Vec<u8> {
        let mut v = header_for(w, h, ncolors);
        v.resize(v.len() + (w * h * 4) as usize, 0);
        v
    }

    #[test]
    fn parses_xvfb_layout() {
        let bytes = image(768, 768, 256);
        let layout = parse(&bytes).unwrap();
        assert_eq!(
            layout,
            FramebufferLayout {
                width: 768,
                height: 768,
                stride: 3072,
                pixel_offset: 3232,
            }
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let good = image(64, 32, 0);
        assert_eq!(parse(&good[..50]), Err(XwdError::TooShort { len: 50 }));
        assert!(matches!(
            parse(&good[..good.len() - 1]),
            Err(XwdError::Truncated { .. })
        ));
        let set = |i: usize, v: u32| {
            let mut b = good.clone();
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
            parse(&b)
        };
        assert_eq!(set(1, 6), Err(XwdError::Version(6)));
        assert_eq!(set(2, 1), Err(XwdError::Format(1)));
        assert!(matches!(set(11, 16), Err(XwdError::PixelFormat { .. })));
        assert!(matches!(set(3, 16), Err(XwdError::PixelFormat { .. })));
        assert_eq!(set(7, 1), Err(XwdError::ByteOrder(1)));
        assert!(matches!(set(4, 0), Err(XwdError::Size { .. })));
        assert!(matches!(set(12, 10), Err(XwdError::Stride { .. })));
        assert!(matches!(set(0, 4), Err(XwdError::HeaderSize { .. })));
        assert!(matches!(
            set(19, u32::MAX / 16),
            Err(XwdError::Truncated { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = image(16, 16, 0);
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..4 {
                let i = (next() % 100) as usize;
                b[i] = next() as u8;
            }
            let cut = (next() % b.len() as u64) as usize;
            let _ = parse(&b[..cut]);
            let _ = parse(&b);
        }
    }
}
