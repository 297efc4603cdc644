//! The GPU path: BGRX -> YUV 4:2:0 on the GPU (CUDA), reading Xvfb's framebuffer in place, and
//! NVENC encoding the converted picture without a trip through host memory.
//!
//! What runs where is decided once at start ([`GpuChoice::detect`]):
//! - a GPU with NVENC: CUDA conversion to NV12 in GPU memory -> NVENC;
//! - a GPU without NVENC (data-centre Hopper: H100, H200): CUDA conversion to I420, copied
//!   back to host memory -> openh264;
//! - no GPU: the SIMD CPU conversion -> openh264.
//!
//! Each choice comes with its reason, for the log, `/readyz` and `/metrics`.

use std::sync::Arc;

use playpod_ffi::cuda::{ChromaLayout, DevicePicture, Gpu, GpuError, Staging};
use playpod_ffi::nvenc::{self, Nvenc, NvencError};

use crate::capture::{CaptureError, FrameSource};
use crate::convert::I420Frame;
use crate::encode::{EncodeError, Encoded, EncoderSettings, InputKind, Picture, VideoEncoder};

/// What the machine offers, found at start.
#[derive(Debug)]
pub struct GpuChoice {
    /// The GPU, when there is a usable one.
    pub gpu: Option<Arc<Gpu>>,
    /// NVENC, when the GPU has it and the driver is new enough.
    pub nvenc: Option<Arc<Nvenc>>,
    /// Why the GPU (or NVENC) is not used, when it is not.
    pub reason: String,
}

impl GpuChoice {
    /// Looks for a GPU and NVENC. Never fails: what is missing becomes the reason.
    pub fn detect() -> GpuChoice {
        let gpu = match Gpu::open() {
            Ok(gpu) => gpu,
            Err(err) => {
                return GpuChoice {
                    gpu: None,
                    nvenc: None,
                    reason: err.to_string(),
                };
            }
        };
        match Nvenc::load() {
            Ok(nvenc) => GpuChoice {
                reason: format!(
                    "{} with NVENC (driver API {})",
                    gpu.name(),
                    nvenc.driver_version()
                ),
                gpu: Some(gpu),
                nvenc: Some(nvenc),
            },
            Err(err) => GpuChoice {
                reason: format!("{} has no usable NVENC: {err}", gpu.name()),
                gpu: Some(gpu),
                nvenc: None,
            },
        }
    }
}

/// Why a GPU stage failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuStageError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("GPU conversion failed: {0}")]
    Gpu(#[from] GpuError),
}

/// BGRX -> YUV 4:2:0 on the GPU, from the framebuffer in place when the source allows it.
#[derive(Debug)]
pub struct GpuConverter {
    gpu: Arc<Gpu>,
    picture: DevicePicture,
    staging: Option<Staging>,
    /// Whether to try reading the source in place; cleared (with a logged reason) when the
    /// source cannot be registered, after which frames are uploaded.
    in_place: bool,
}

impl GpuConverter {
    /// A converter making `layout` pictures of `width` x `height`.
    pub fn new(
        gpu: Arc<Gpu>,
        width: u32,
        height: u32,
        layout: ChromaLayout,
    ) -> Result<Self, GpuError> {
        let picture = gpu.alloc_picture(width, height, layout)?;
        Ok(Self {
            gpu,
            picture,
            staging: None,
            in_place: true,
        })
    }

    /// Converts `source`'s current picture into the device picture and returns it.
    pub fn convert(
        &mut self,
        source: &mut dyn FrameSource,
    ) -> Result<&DevicePicture, GpuStageError> {
        if self.in_place {
            match source.gpu_frame(&self.gpu) {
                Ok(Some(frame)) => {
                    self.gpu.convert(&frame, &mut self.picture)?;
                    return Ok(&self.picture);
                }
                Ok(None) => self.in_place = false,
                Err(err) => {
                    tracing::warn!(
                        reason = %err,
                        "the GPU cannot read this framebuffer in place; uploading each frame"
                    );
                    self.in_place = false;
                }
            }
        }
        let frame = source.grab()?;
        self.gpu.upload_and_convert(
            frame.bytes,
            frame.stride,
            &mut self.staging,
            &mut self.picture,
        )?;
        Ok(&self.picture)
    }

    /// Converts into an I420 picture in host memory (for the CPU encoder).
    pub fn convert_to_host(
        &mut self,
        source: &mut dyn FrameSource,
        dst: &mut I420Frame,
    ) -> Result<(), GpuStageError> {
        self.convert(source)?;
        self.gpu.download_i420(&self.picture, dst.as_bytes_mut())?;
        Ok(())
    }

    /// The picture the last [`GpuConverter::convert`] made.
    pub fn picture(&self) -> &DevicePicture {
        &self.picture
    }

    /// Whether frames are read in place (no upload).
    pub fn reads_in_place(&self) -> bool {
        self.in_place
    }
}

/// NVENC behind the encoder trait: NV12 pictures in GPU memory, registered on first use.
pub struct NvencEncoder {
    // Declared first so the registration goes before the session's other parts.
    input: Option<nvenc::Registered>,
    output: nvenc::Bitstream,
    encoder: nvenc::Encoder,
}

impl std::fmt::Debug for NvencEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvencEncoder")
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

impl NvencEncoder {
    /// Opens a low-latency H.264 session on `gpu` (preset P1 to P4).
    pub fn new(
        nvenc: &Arc<Nvenc>,
        gpu: &Arc<Gpu>,
        settings: EncoderSettings,
        preset: u8,
    ) -> Result<Self, NvencError> {
        let encoder = nvenc::Encoder::open(
            nvenc,
            gpu,
            nvenc::H264Settings {
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                bitrate_bps: settings.bitrate_bps,
                preset,
            },
        )?;
        let output = encoder.bitstream()?;
        Ok(Self {
            input: None,
            output,
            encoder,
        })
    }
}

impl VideoEncoder for NvencEncoder {
    fn name(&self) -> &'static str {
        "nvenc"
    }

    fn input(&self) -> InputKind {
        InputKind::DeviceNv12
    }

    /// Reconfigures the session's CBR rate: no keyframe, no reset of its rate control. NVENC
    /// skips no frames: below what a picture needs its quality drops instead.
    fn set_bitrate(&mut self, bps: u32) -> Result<(), EncodeError> {
        Ok(self.encoder.set_bitrate(bps)?)
    }

    fn encode(
        &mut self,
        picture: Picture<'_>,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<Encoded, EncodeError> {
        let Picture::Device(picture) = picture else {
            return Err(EncodeError::WrongInput);
        };
        if self
            .input
            .as_ref()
            .is_none_or(|input| !input.is_for(picture))
        {
            self.input = None;
            self.input = Some(self.encoder.register(picture)?);
        }
        let Some(input) = &self.input else {
            return Err(EncodeError::WrongInput);
        };
        let au = self
            .encoder
            .encode(picture, input, &mut self.output, keyframe)?;
        let before = out.len();
        out.extend_from_slice(au.bytes());
        Ok(Encoded {
            keyframe: au.keyframe(),
            len: out.len() - before,
        })
    }
}
