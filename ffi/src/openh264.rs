//! openh264 settings that the `openh264` crate's safe API does not offer, through its raw API.

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_RC_FRAME_SKIP, SBitrateInfo,
    SPATIAL_LAYER_ALL,
};

/// openh264 refused a setting; its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("openh264 refused the setting (status {0})")]
pub struct Openh264OptionError(pub i32);

/// Sets the encoder's target bitrate, in bits per second, from the next frame on (the rate
/// control picks it up without a keyframe). Bitrates above `i32::MAX` are taken as that.
pub fn set_target_bitrate(encoder: &mut Encoder, bps: u32) -> Result<(), Openh264OptionError> {
    let mut info = SBitrateInfo {
        iLayer: SPATIAL_LAYER_ALL,
        iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
    };
    // SAFETY: ENCODER_OPTION_BITRATE reads an `SBitrateInfo`.
    unsafe { set_option(encoder, ENCODER_OPTION_BITRATE, &mut info) }
}

/// Lets the rate control skip frames (`true`) to hold a target the picture cannot be coded
/// within at the coarsest quantiser, or makes it code every frame (`false`). A skipped frame
/// gives an empty bitstream.
pub fn set_frame_skip(encoder: &mut Encoder, skip: bool) -> Result<(), Openh264OptionError> {
    let mut value = skip;
    // SAFETY: ENCODER_OPTION_RC_FRAME_SKIP reads a `bool`.
    unsafe { set_option(encoder, ENCODER_OPTION_RC_FRAME_SKIP, &mut value) }
}

/// `SetOption(option, value)` on the encoder.
///
/// # Safety
///
/// `option` must be one that reads a `T` through its pointer.
unsafe fn set_option<T>(
    encoder: &mut Encoder,
    option: ENCODER_OPTION,
    value: &mut T,
) -> Result<(), Openh264OptionError> {
    // SAFETY: `raw_api` is the encoder's own API, initialised when the encoder was made and
    // valid while we hold `&mut Encoder`, so nothing else uses it during the call. The option
    // reads a `T` (the caller's promise) through the pointer, only during the call; `value` is
    // one, alive and exclusively borrowed until the call returns.
    let status = unsafe {
        encoder
            .raw_api()
            .set_option(option, std::ptr::from_mut(value).cast())
    };
    if status == 0 {
        Ok(())
    } else {
        Err(Openh264OptionError(status))
    }
}
