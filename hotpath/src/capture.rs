//! Where frames come from: Xvfb's framebuffer read in place (a `-fbdir` file or a `-shmem`
//! segment), or, from any X server, MIT-SHM `XShmGetImage` into a segment of our own.

use std::path::Path;
use std::sync::Arc;

use playpod_ffi::cuda::{DeviceFrame, Gpu, GpuError};
use playpod_ffi::{AttachedShm, MappedFile, OwnedShm, ShmError};
use x11rb::connection::Connection;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::ImageFormat;
use x11rb::rust_connection::RustConnection;

use crate::convert::BgrxFrame;
use crate::xwd::{self, FramebufferLayout, XwdError};

/// Why frames cannot be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Shm(#[from] ShmError),
    #[error("the framebuffer is not a readable XWD image: {0}")]
    Xwd(#[from] XwdError),
    #[error("the screen is {screen_w}x{screen_h}, smaller than the stream's {want_w}x{want_h}")]
    TooSmall {
        screen_w: u32,
        screen_h: u32,
        want_w: u32,
        want_h: u32,
    },
    #[error("cannot connect to X display {display}: {reason}")]
    Connect { display: String, reason: String },
    #[error("the X server has no MIT-SHM extension")]
    NoShm,
    #[error("the X server's root window has depth {0}; only 24-bit TrueColor is supported")]
    Depth(u8),
    #[error("X request failed: {0}")]
    X(String),
}

/// A source of BGRX pictures.
pub trait FrameSource: Send {
    /// What kind of source this is, for logs (`fbdir`, `shmem`, `xshm`).
    fn kind(&self) -> &'static str;

    /// The current picture, cropped to the stream size. The in-place sources allocate nothing
    /// and make no system call.
    fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError>;

    /// The current picture as `gpu` reads it in place, for sources that are shared memory the
    /// GPU can map; `Ok(None)` for the others, which [`FrameSource::grab`] then uploads.
    fn gpu_frame(&mut self, gpu: &Arc<Gpu>) -> Result<Option<DeviceFrame<'_>>, GpuError> {
        let _ = gpu;
        Ok(None)
    }
}

fn cropped(
    layout: FramebufferLayout,
    width: u32,
    height: u32,
) -> Result<FramebufferLayout, CaptureError> {
    if layout.width < width || layout.height < height {
        return Err(CaptureError::TooSmall {
            screen_w: layout.width,
            screen_h: layout.height,
            want_w: width,
            want_h: height,
        });
    }
    if layout.width > width || layout.height > height {
        tracing::warn!(
            screen = %format_args!("{}x{}", layout.width, layout.height),
            stream = %format_args!("{width}x{height}"),
            "the screen is larger than the stream; streaming its top-left corner"
        );
    }
    Ok(FramebufferLayout {
        width,
        height,
        ..layout
    })
}

fn frame_in(bytes: &[u8], layout: FramebufferLayout) -> BgrxFrame<'_> {
    BgrxFrame {
        bytes: &bytes[layout.pixel_offset..],
        width: layout.width,
        height: layout.height,
        stride: layout.stride,
    }
}

/// Xvfb's `-fbdir` framebuffer file, mapped and read in place.
#[derive(Debug)]
pub struct FramebufferFile {
    map: MappedFile,
    layout: FramebufferLayout,
}

impl FramebufferFile {
    pub fn open(path: &Path, width: u32, height: u32) -> Result<Self, CaptureError> {
        let map = MappedFile::open(path)?;
        let layout = cropped(xwd::parse(map.bytes())?, width, height)?;
        Ok(Self { map, layout })
    }
}

impl FrameSource for FramebufferFile {
    fn kind(&self) -> &'static str {
        "fbdir"
    }

    fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
        Ok(frame_in(self.map.bytes(), self.layout))
    }

    fn gpu_frame(&mut self, gpu: &Arc<Gpu>) -> Result<Option<DeviceFrame<'_>>, GpuError> {
        let l = self.layout;
        self.map
            .gpu_frame(gpu, l.pixel_offset, l.stride, l.width, l.height)
            .map(Some)
    }
}

/// Xvfb's `-shmem` SysV segment, attached read-only and read in place.
#[derive(Debug)]
pub struct FramebufferSegment {
    shm: AttachedShm,
    layout: FramebufferLayout,
}

impl FramebufferSegment {
    pub fn attach(shmid: i32, width: u32, height: u32) -> Result<Self, CaptureError> {
        let shm = AttachedShm::attach(shmid)?;
        let layout = cropped(xwd::parse(shm.bytes())?, width, height)?;
        Ok(Self { shm, layout })
    }
}

impl FrameSource for FramebufferSegment {
    fn kind(&self) -> &'static str {
        "shmem"
    }

    fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
        Ok(frame_in(self.shm.bytes(), self.layout))
    }

    fn gpu_frame(&mut self, gpu: &Arc<Gpu>) -> Result<Option<DeviceFrame<'_>>, GpuError> {
        let l = self.layout;
        self.shm
            .gpu_frame(gpu, l.pixel_offset, l.stride, l.width, l.height)
            .map(Some)
    }
}

/// Any X server: `XShmGetImage` of the root window into our own segment (one copy by the
/// server, one round trip per frame).
#[derive(Debug)]
pub struct XShmSource {
    conn: RustConnection,
    root: u32,
    seg: u32,
    shm: OwnedShm,
    width: u32,
    height: u32,
}

impl XShmSource {
    pub fn connect(display: &str, width: u32, height: u32) -> Result<Self, CaptureError> {
        let x_err = |e: &dyn std::fmt::Display| CaptureError::X(e.to_string());
        let (conn, screen) = x11rb::connect(Some(display)).map_err(|e| CaptureError::Connect {
            display: display.to_owned(),
            reason: e.to_string(),
        })?;
        let root_screen = &conn.setup().roots[screen];
        let (root, depth) = (root_screen.root, root_screen.root_depth);
        let (sw, sh) = (
            u32::from(root_screen.width_in_pixels),
            u32::from(root_screen.height_in_pixels),
        );
        if depth != 24 {
            return Err(CaptureError::Depth(depth));
        }
        if sw < width || sh < height {
            return Err(CaptureError::TooSmall {
                screen_w: sw,
                screen_h: sh,
                want_w: width,
                want_h: height,
            });
        }
        conn.shm_query_version()
            .map_err(|_| CaptureError::NoShm)?
            .reply()
            .map_err(|_| CaptureError::NoShm)?;
        let shm = OwnedShm::create(width as usize * height as usize * 4)?;
        let seg = conn.generate_id().map_err(|e| x_err(&e))?;
        conn.shm_attach(seg, shm.id() as u32, false)
            .map_err(|e| x_err(&e))?
            .check()
            .map_err(|e| x_err(&e))?;
        Ok(Self {
            conn,
            root,
            seg,
            shm,
            width,
            height,
        })
    }
}

impl FrameSource for XShmSource {
    fn kind(&self) -> &'static str {
        "xshm"
    }

    fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
        self.conn
            .shm_get_image(
                self.root,
                0,
                0,
                self.width as u16,
                self.height as u16,
                !0,
                ImageFormat::Z_PIXMAP.into(),
                self.seg,
                0,
            )
            .map_err(|e| CaptureError::X(e.to_string()))?
            .reply()
            .map_err(|e| CaptureError::X(e.to_string()))?;
        Ok(BgrxFrame {
            bytes: self.shm.bytes(),
            width: self.width,
            height: self.height,
            stride: self.width as usize * 4,
        })
    }
}
