//! H.264 encoders behind one trait: openh264 on the CPU, NVENC on NVIDIA GPUs (`crate::gpu`).
//!
//! Every encoder makes a constrained-baseline stream a browser decodes with the lowest delay:
//! no B-frames, no periodic or scene-change IDRs (an IDR only when asked), and SPS and PPS in
//! front of every IDR so any IDR is a valid starting point for a new viewer.

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;

use playpod_ffi::cuda::DevicePicture;

use crate::convert::I420Frame;

/// The picture an encoder takes: in host memory (I420) or already on the GPU (NV12).
#[derive(Debug, Clone, Copy)]
pub enum Picture<'a> {
    Host(&'a I420Frame),
    Device(&'a DevicePicture),
}

/// Where an encoder wants its pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// I420 in host memory (openh264).
    HostI420,
    /// NV12 in GPU memory (NVENC).
    DeviceNv12,
}

/// Stream settings every encoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
}

/// What one call to [`VideoEncoder::encode`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The access unit is an IDR (with SPS and PPS in front).
    pub keyframe: bool,
    /// Bytes appended to the output.
    pub len: usize,
}

/// Why an encoder failed. `Copy` and allocation-free, for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("openh264 could not be initialised")]
    Init,
    #[error("openh264 failed to encode a frame")]
    Encode,
    #[error("the encoder was given a picture in the wrong memory or layout")]
    WrongInput,
    #[error("this encoder keeps the bitrate it started with")]
    FixedBitrate,
    #[error("{0}")]
    Option(#[from] playpod_ffi::openh264::Openh264OptionError),
    #[error("NVENC failed: {0}")]
    Nvenc(#[from] playpod_ffi::nvenc::NvencError),
    #[error("picture is {got_w}x{got_h}, the encoder was set up for {want_w}x{want_h}")]
    Size {
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
}

/// An H.264 encoder.
pub trait VideoEncoder: Send {
    /// A short name for logs and metrics (`openh264`, `nvenc`).
    fn name(&self) -> &'static str;

    /// Where the encoder wants its pictures.
    fn input(&self) -> InputKind {
        InputKind::HostI420
    }

    /// Changes the target bitrate, bits per second, from the next frame on (no keyframe
    /// needed). Encoders that cannot answer [`EncodeError::FixedBitrate`].
    fn set_bitrate(&mut self, _bps: u32) -> Result<(), EncodeError> {
        Err(EncodeError::FixedBitrate)
    }

    /// Encodes `picture` and appends one Annex-B access unit to `out`. With `keyframe` the
    /// access unit is an IDR with SPS and PPS. Nothing appended (`len` 0) means the rate
    /// control skipped the frame, which only happens below the bitrate it was made with.
    /// Must not allocate once `out` has capacity.
    fn encode(
        &mut self,
        picture: Picture<'_>,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<Encoded, EncodeError>;
}

/// The CPU encoder: Cisco's openh264, built from source (with nasm for its assembly).
pub struct Openh264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
}

impl std::fmt::Debug for Openh264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Openh264Encoder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Openh264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // Every tick gives a frame: skipping would stall the picture for a viewer.
            .skip_frames(false)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            // IDR only on demand: no periodic ones, no scene-change ones.
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .scene_change_detect(false)
            // Background detection is made for cameras; on game screens it costs ~12 % of the
            // encoder's CPU on Pong and changes nothing measurable on the plasma (PSNR/SSIM).
            // Adaptive quantisation stays: without it small high-contrast detail (text, the
            // latency stamp) is smeared now and then.
            .background_detection(false)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .num_threads(1)
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|_| EncodeError::Init)?;
        Ok(Self { encoder, settings })
    }
}

impl VideoEncoder for Openh264Encoder {
    fn name(&self) -> &'static str {
        "openh264"
    }

    /// Below the bitrate it was made with, frames may be skipped (an empty access unit):
    /// full-screen motion (the plasma: ~1.5 Mbit/s at 768x768 and 60 fps) costs a floor of
    /// bits per frame even at the coarsest quantiser, so only fewer frames go lower.
    fn set_bitrate(&mut self, bps: u32) -> Result<(), EncodeError> {
        playpod_ffi::openh264::set_target_bitrate(&mut self.encoder, bps)?;
        playpod_ffi::openh264::set_frame_skip(&mut self.encoder, bps < self.settings.bitrate_bps)?;
        Ok(())
    }

    fn encode(
        &mut self,
        picture: Picture<'_>,
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<Encoded, EncodeError> {
        let Picture::Host(picture) = picture else {
            return Err(EncodeError::WrongInput);
        };
        let s = self.settings;
        if picture.width() != s.width || picture.height() != s.height {
            return Err(EncodeError::Size {
                got_w: picture.width(),
                got_h: picture.height(),
                want_w: s.width,
                want_h: s.height,
            });
        }
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let source = YUVSlices::new(
            picture.planes(),
            (s.width as usize, s.height as usize),
            picture.strides(),
        );
        let bitstream = self
            .encoder
            .encode(&source)
            .map_err(|_| EncodeError::Encode)?;
        let before = out.len();
        bitstream.write_vec(out);
        Ok(Encoded {
            keyframe: bitstream.frame_type() == FrameType::IDR,
            len: out.len() - before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 128,
            height: 96,
            fps: 60,
            bitrate_bps: 500_000,
        }
    }

    fn moving_picture(n: u32) -> I420Frame {
        let mut f = I420Frame::new(128, 96);
        let bytes: Vec<u8> = (0..128 * 96 * 4)
            .map(|i| ((i as u32 / 4 % 128 + n * 3) ^ (i as u32 / 512)) as u8)
            .collect();
        let src = crate::convert::BgrxFrame {
            bytes: &bytes,
            width: 128,
            height: 96,
            stride: 512,
        };
        crate::convert::bgrx_to_i420(&src, &mut f).unwrap();
        f
    }

    #[test]
    fn idr_only_on_demand_with_parameter_sets() {
        let mut enc = Openh264Encoder::new(settings()).unwrap();
        let mut out = Vec::with_capacity(1 << 20);
        for n in 0..40 {
            out.clear();
            let want_key = n == 0 || n == 25;
            let got = enc
                .encode(Picture::Host(&moving_picture(n)), n == 25, &mut out)
                .unwrap();
            let info = h264::inspect(&out);
            assert_eq!(got.keyframe, want_key, "frame {n}");
            assert_eq!(info.idr, want_key, "frame {n}");
            assert_eq!(
                info.sps && info.pps,
                want_key,
                "frame {n}: SPS/PPS only with IDRs"
            );
            assert!(
                info.slices >= 1 && got.len == out.len(),
                "frame {n} is empty"
            );
            if want_key {
                let codec = h264::codec_string(&out).unwrap();
                // Constrained baseline: profile 66, constraint_set1 flag.
                assert!(
                    codec.starts_with("avc1.42")
                        && (u8::from_str_radix(&codec[7..9], 16).unwrap() & 0x40) != 0,
                    "{codec}"
                );
            }
        }
    }

    /// A picture of film grain: every frame costs whatever the rate control lets it.
    fn noise(w: u32, h: u32, seed: u32) -> I420Frame {
        let mut state = seed.wrapping_mul(2_654_435_761) | 1;
        let bytes: Vec<u8> = (0..w * h * 4)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // Grain of a sixteenth of the range on mid grey: hard to predict, cheap at a
                // coarse quantiser.
                112 + (state & 31) as u8
            })
            .collect();
        let src = crate::convert::BgrxFrame {
            bytes: &bytes,
            width: w,
            height: h,
            stride: w as usize * 4,
        };
        let mut f = I420Frame::new(w, h);
        crate::convert::bgrx_to_i420(&src, &mut f).unwrap();
        f
    }

    #[test]
    fn a_new_bitrate_applies_from_the_next_frames_without_a_keyframe() {
        let s = EncoderSettings {
            width: 256,
            height: 192,
            fps: 30,
            bitrate_bps: 2_000_000,
        };
        let mut enc = Openh264Encoder::new(s).unwrap();
        let mut out = Vec::with_capacity(1 << 20);
        let mut phase = |enc: &mut Openh264Encoder, from: u32| {
            let mut bytes = 0;
            let mut keyframes = 0;
            for n in from..from + 60 {
                out.clear();
                let got = enc
                    .encode(Picture::Host(&noise(256, 192, n)), n == 0, &mut out)
                    .unwrap();
                // The first frames after a change let the rate control settle.
                if n >= from + 30 {
                    bytes += got.len;
                }
                keyframes += usize::from(got.keyframe);
            }
            (bytes, keyframes)
        };
        let (high, _) = phase(&mut enc, 0);
        enc.set_bitrate(400_000).unwrap();
        let (low, keyframes) = phase(&mut enc, 60);
        assert_eq!(keyframes, 0, "no keyframe for the change");
        // 30 frames at 30 fps: a second's worth of the target each time.
        let (high_bps, low_bps) = (high * 8, low * 8);
        assert!(
            (1_400_000..2_600_000).contains(&high_bps),
            "{high_bps} bit/s at 2 Mbit/s"
        );
        assert!(low_bps < 600_000, "{low_bps} bit/s at 400 kbit/s");
        enc.set_bitrate(2_000_000).unwrap();
        let (back, _) = phase(&mut enc, 120);
        assert!(back * 8 > 1_400_000, "{} bit/s back at 2 Mbit/s", back * 8);
    }

    #[test]
    fn wrong_size_is_an_error() {
        let mut enc = Openh264Encoder::new(settings()).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            enc.encode(Picture::Host(&I420Frame::new(64, 64)), false, &mut out),
            Err(EncodeError::Size { .. })
        ));
        assert!(out.is_empty());
    }
}
