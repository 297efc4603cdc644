//! The low rendition: the same picture at half its width and height, encoded by a second
//! encoder into a ring of its own, for the viewers whose links cannot carry the stream while
//! the players' links set its bitrate (a spectator on a weak link). Without it such a viewer
//! falls behind, skips ahead and waits for a keyframe, its picture standing still for up to
//! [`crate::ring::KEYFRAME_PATIENCE`] each time; with it, the viewer moves to a stream a
//! quarter the size, whose keyframes and bitrate are its viewers' own.
//!
//! It runs on the frame thread, right after the main picture is published (the main stream's
//! latency does not change), only on ticks that made a frame and only while someone reads its
//! ring: it costs nothing otherwise.

use std::sync::Arc;
use std::time::Instant;

use crate::convert::{self, I420Frame, half_size};
use crate::encode::{EncoderSettings, Picture, VideoEncoder};
use crate::pipeline::{PipelineError, encode_into_ring, follow_viewers};
use crate::rate::RateAdapt;
use crate::ring::{Ring, RingConfig, RingWriter};
use crate::stats::PipelineStats;

/// The share of the main stream's bitrate the low rendition starts at: the same bits per pixel
/// for a quarter of the pixels.
pub const BITRATE_SHARE: u32 = 4;

/// The smallest main picture that gets a low rendition (its half is 16x16, H.264's macroblock).
pub const MIN_MAIN_SIDE: u32 = 32;

/// The settings of the low rendition of a stream made with `main`: [`half_size`] and
/// [`BITRATE_SHARE`] of the bitrate. `None` for a picture smaller than [`MIN_MAIN_SIDE`].
pub fn low_settings(main: EncoderSettings) -> Option<EncoderSettings> {
    if main.width < MIN_MAIN_SIDE || main.height < MIN_MAIN_SIDE {
        return None;
    }
    let (width, height) = half_size(main.width, main.height);
    Some(EncoderSettings {
        width,
        height,
        fps: main.fps,
        bitrate_bps: main.bitrate_bps / BITRATE_SHARE,
    })
}

/// The low rendition's state on the frame thread. Owns its buffers, allocated up front.
pub struct LowRendition {
    picture: I420Frame,
    /// Whether `picture` holds the main picture last encoded.
    current: bool,
    encoder: Box<dyn VideoEncoder>,
    adapt: Option<RateAdapt>,
    out: Vec<u8>,
    writer: RingWriter,
    stats: Arc<PipelineStats>,
}

impl std::fmt::Debug for LowRendition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LowRendition")
            .field("width", &self.picture.width())
            .field("height", &self.picture.height())
            .field("encoder", &self.encoder.name())
            .finish_non_exhaustive()
    }
}

impl LowRendition {
    /// A low rendition encoded by `encoder` (made with `settings`, see [`low_settings`]) into a
    /// new ring sized for its picture, with fresh statistics. Its bitrate follows its own
    /// viewers' links, down from `settings.bitrate_bps`, unless `fixed_bitrate`.
    pub fn with_ring(
        encoder: Box<dyn VideoEncoder>,
        settings: EncoderSettings,
        fixed_bitrate: bool,
    ) -> (Self, Ring, Arc<PipelineStats>) {
        let config = RingConfig::for_picture(settings.width, settings.height);
        let (ring, writer) = Ring::new(config);
        let stats = Arc::new(PipelineStats::default());
        stats.set_full_bitrate(settings.bitrate_bps);
        let adapt = (!fixed_bitrate).then(|| {
            RateAdapt::new(
                settings.bitrate_bps,
                writer.viewer_troubles(),
                Instant::now(),
            )
        });
        let low = Self {
            picture: I420Frame::new(settings.width, settings.height),
            current: false,
            encoder,
            adapt,
            out: Vec::with_capacity(config.slot_bytes * 2),
            writer,
            stats: stats.clone(),
        };
        (low, ring, stats)
    }

    /// Whether anyone reads the low rendition's ring.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0
    }

    /// One tick, after the main stage's: `main` is the main picture last encoded, `fresh`
    /// whether it was encoded on this tick. A frame is made when the main stream made one, or
    /// when the low rendition's viewers want a keyframe; nothing while nobody reads it.
    pub(crate) fn tick(
        &mut self,
        main: &I420Frame,
        fresh: bool,
        ready: Instant,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        if !self.has_readers() {
            // Its picture will be stale by the time someone reads it again.
            self.current = false;
            return Ok(());
        }
        let want_key = self.writer.take_keyframe_request();
        if fresh || !self.current {
            convert::halve_i420(main, &mut self.picture)?;
            self.current = true;
        } else if !want_key {
            return Ok(());
        }
        follow_viewers(
            &mut self.adapt,
            &self.writer,
            &mut *self.encoder,
            &self.stats,
            ready,
        );
        encode_into_ring(
            &mut *self.encoder,
            Picture::Host(&self.picture),
            want_key,
            capture_us,
            &mut self.out,
            &mut self.writer,
            &self.stats,
        )?;
        Ok(())
    }
}
