//! The frame thread: on each tick of the frame clock, capture in place, convert, encode and
//! publish into the broadcast ring, all on one pinned thread with no hand-off between stages
//! (the whole chain takes a few milliseconds, well inside one frame, so a second thread would
//! only add a queue and latency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{CaptureError, FrameSource};
use crate::clock::{FrameClock, phase_correction};
use crate::convert::{self, ConvertError, I420Frame};
use crate::damage::ScreenChanges;
use crate::encode::{EncodeError, EncoderSettings, InputKind, Picture, VideoEncoder};
use crate::gpu::{GpuConverter, GpuStageError};
use crate::rate::RateAdapt;
use crate::rendition::LowRendition;
use crate::ring::{PublishError, Ring, RingConfig, RingWriter};
use crate::stats::{PipelineStats, bump};

/// Why the frame thread stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("capture failed: {0}")]
    Capture(#[from] CaptureError),
    #[error("colour conversion failed: {0}")]
    Convert(#[from] ConvertError),
    #[error("encoding failed: {0}")]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Gpu(#[from] GpuStageError),
    #[error("the frame thread panicked")]
    Panicked,
}

/// What one frame produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameReport {
    pub keyframe: bool,
    pub bytes: usize,
    /// Ring position, or `None` when the access unit did not fit in a slot.
    pub seq: Option<u64>,
}

/// Microseconds since the Unix epoch: the clock of every capture time on the wire.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When a tick with nothing new on the screen makes no frame ([`FrameStage::skip_unchanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unchanged {
    /// Frames still encoded after the picture last changed (or after an IDR), the same picture
    /// each time, so the encoder can refine it: on the plasma at 2.5 Mbit/s, PSNR-Y rises from
    /// 50.2 to 52.3 dB over the 11 frames after motion stops, then stays.
    pub settle_frames: u32,
    /// A frame at least this often (ticks) even when nothing changes, so a viewer knows the
    /// stream is alive.
    pub refresh_ticks: u32,
}

impl Unchanged {
    /// The defaults for `fps`: 15 settling frames, a frame a second.
    pub fn for_fps(fps: u32) -> Self {
        Self {
            settle_frames: 15,
            refresh_ticks: fps.max(1),
        }
    }
}

/// Skipping state: what was last encoded and how long ago.
#[derive(Debug)]
struct SkipState {
    policy: Unchanged,
    /// The last picture encoded (host pictures only), swapped with the stage's picture, never
    /// copied.
    previous: I420Frame,
    have_previous: bool,
    settle_left: u32,
    since_encoded: u32,
}

/// Capture -> convert -> encode -> publish, one frame per call. Owns every buffer it uses,
/// allocated up front; a call allocates nothing.
pub struct FrameStage {
    source: Box<dyn FrameSource>,
    picture: I420Frame,
    skip: Option<SkipState>,
    changes: Option<ScreenChanges>,
    encoder: Box<dyn VideoEncoder>,
    adapt: Option<RateAdapt>,
    // After the encoder: an encoder's registration of the device picture goes first.
    gpu: Option<GpuConverter>,
    low: Option<LowRendition>,
    out: Vec<u8>,
    writer: RingWriter,
    stats: Arc<PipelineStats>,
}

impl std::fmt::Debug for FrameStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStage")
            .field("source", &self.source.kind())
            .field("encoder", &self.encoder.name())
            .finish_non_exhaustive()
    }
}

impl FrameStage {
    pub fn new(
        source: Box<dyn FrameSource>,
        encoder: Box<dyn VideoEncoder>,
        writer: RingWriter,
        stats: Arc<PipelineStats>,
        settings: EncoderSettings,
        slot_bytes: usize,
    ) -> Self {
        stats.set_full_bitrate(settings.bitrate_bps);
        Self {
            source,
            picture: I420Frame::new(settings.width, settings.height),
            skip: None,
            changes: None,
            encoder,
            adapt: None,
            gpu: None,
            low: None,
            // Twice a slot: an access unit too large for the ring is still encoded whole,
            // then refused by the ring, without the buffer growing.
            out: Vec::with_capacity(slot_bytes * 2),
            writer,
            stats,
        }
    }

    /// A stage publishing into a new ring sized for the picture ([`RingConfig::for_picture`]),
    /// with fresh statistics: the usual way to build one.
    pub fn with_ring(
        source: Box<dyn FrameSource>,
        encoder: Box<dyn VideoEncoder>,
        settings: EncoderSettings,
    ) -> (Self, Ring, Arc<PipelineStats>) {
        let config = RingConfig::for_picture(settings.width, settings.height);
        let (ring, writer) = Ring::new(config);
        let stats = Arc::new(PipelineStats::default());
        let stage = Self::new(
            source,
            encoder,
            writer,
            stats.clone(),
            settings,
            config.slot_bytes,
        );
        (stage, ring, stats)
    }

    /// Converts on the GPU with `converter` (its layout must suit the encoder: NV12 for
    /// NVENC, I420 for the CPU encoder).
    pub fn with_gpu_converter(mut self, converter: GpuConverter) -> Self {
        self.gpu = Some(converter);
        self
    }

    /// Makes no frame on a tick when nothing new is on the screen ([`FrameStage::tick`]): the
    /// same picture as the last one encoded, once `policy.settle_frames` more of it were, and
    /// no keyframe is wanted. Allocates the second picture this needs now.
    pub fn skip_unchanged(mut self, policy: Unchanged) -> Self {
        self.skip = Some(SkipState {
            policy,
            previous: I420Frame::new(self.picture.width(), self.picture.height()),
            have_previous: false,
            settle_left: 0,
            since_encoded: 0,
        });
        self
    }

    /// With [`FrameStage::skip_unchanged`], a tick on which `changes` says nothing was drawn
    /// is skipped before capture too.
    pub fn with_screen_changes(mut self, changes: ScreenChanges) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Lowers the encoder's bitrate while viewers lag or report slow links, and brings it back after
    /// ([`RateAdapt`]); `max_bps` is the configured bitrate, the ceiling. An encoder that keeps
    /// its bitrate turns this off at its first change, with a warning.
    pub fn adapt_bitrate(mut self, max_bps: u32) -> Self {
        self.stats.set_full_bitrate(max_bps);
        self.adapt = Some(RateAdapt::new(
            max_bps,
            self.writer.viewer_troubles(),
            Instant::now(),
        ));
        self
    }

    /// Also makes the low rendition ([`crate::rendition`]) of each frame, while someone reads
    /// it. Only for an encoder that takes host pictures: otherwise `low` is dropped, with a
    /// warning.
    pub fn with_low_rendition(mut self, low: LowRendition) -> Self {
        if self.host_input() {
            self.low = Some(low);
        } else {
            tracing::warn!(
                encoder = self.encoder.name(),
                "no low rendition: the encoder does not take pictures from host memory"
            );
        }
        self
    }

    /// Whether anyone is reading the ring, or the low rendition's.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0 || self.low.as_ref().is_some_and(LowRendition::has_readers)
    }

    /// Makes one frame, whatever is on the screen. `ready` is when the frame was due;
    /// `capture_us` goes on the wire.
    pub fn run_once(
        &mut self,
        ready: Instant,
        capture_us: u64,
    ) -> Result<FrameReport, PipelineError> {
        let want_key = self.writer.take_keyframe_request();
        self.capture()?;
        let same = self.same_as_encoded(true);
        self.encode_and_publish(ready, capture_us, want_key, same)
    }

    /// One tick of the frame clock: like [`FrameStage::run_once`], but with
    /// [`FrameStage::skip_unchanged`] nothing is encoded or sent (`Ok(None)`) when nothing
    /// new is on the screen.
    pub fn tick(
        &mut self,
        ready: Instant,
        capture_us: u64,
    ) -> Result<Option<FrameReport>, PipelineError> {
        let Some(skip) = &mut self.skip else {
            return self.run_once(ready, capture_us).map(Some);
        };
        let want_key = self.writer.take_keyframe_request();
        skip.since_encoded = skip.since_encoded.saturating_add(1);
        let due =
            want_key || skip.settle_left > 0 || skip.since_encoded >= skip.policy.refresh_ticks;
        // Without damage tracking, anything may have been drawn.
        let drawn = self.changes.as_ref().is_none_or(ScreenChanges::take);
        if !due && !drawn {
            bump(&self.stats.frames_unchanged, 1);
            self.low_unchanged(ready, capture_us)?;
            return Ok(None);
        }
        self.capture()?;
        let same = self.same_as_encoded(drawn);
        if same && !due {
            bump(&self.stats.frames_unchanged, 1);
            self.low_unchanged(ready, capture_us)?;
            return Ok(None);
        }
        self.encode_and_publish(ready, capture_us, want_key, same)
            .map(Some)
    }

    /// Whether the encoder takes its pictures from host memory (`self.picture`), rather than
    /// from the GPU converter's device picture.
    fn host_input(&self) -> bool {
        self.encoder.input() == InputKind::HostI420
    }

    /// Captures and converts the current picture, into `self.picture` or on the GPU.
    fn capture(&mut self) -> Result<(), PipelineError> {
        let convert_start = Instant::now();
        match (&mut self.gpu, self.encoder.input()) {
            (None, InputKind::HostI420) => {
                let frame = self.source.grab()?;
                convert::bgrx_to_i420(&frame, &mut self.picture)?;
            }
            (Some(gpu), InputKind::HostI420) => {
                gpu.convert_to_host(&mut *self.source, &mut self.picture)?;
            }
            (Some(gpu), InputKind::DeviceNv12) => {
                gpu.convert(&mut *self.source)?;
            }
            (None, InputKind::DeviceNv12) => return Err(EncodeError::WrongInput.into()),
        }
        bump(&self.stats.frames_captured, 1);
        self.stats
            .convert_time
            .record(micros(convert_start.elapsed()));
        Ok(())
    }

    /// Whether the picture just captured is the one last encoded. A host picture is compared
    /// (the early difference of a moving picture ends the comparison at once); on the GPU
    /// only the X server's damage tells.
    fn same_as_encoded(&self, drawn: bool) -> bool {
        match &self.skip {
            Some(skip) if self.host_input() => {
                skip.have_previous && skip.previous.as_bytes() == self.picture.as_bytes()
            }
            Some(_) => !drawn,
            None => false,
        }
    }

    /// The low rendition's tick after a main frame: `swapped` when the picture just encoded
    /// went to the skipping state's `previous`.
    fn low_after(
        &mut self,
        swapped: bool,
        ready: Instant,
        capture_us: u64,
    ) -> Result<(), PipelineError> {
        let Some(low) = &mut self.low else {
            return Ok(());
        };
        let picture = match (&self.skip, swapped) {
            (Some(skip), true) => &skip.previous,
            _ => &self.picture,
        };
        low.tick(picture, true, ready, capture_us)
    }

    /// The low rendition's tick when the main stream made no frame: only a keyframe its
    /// viewers want, of the picture last encoded.
    fn low_unchanged(&mut self, ready: Instant, capture_us: u64) -> Result<(), PipelineError> {
        match (&mut self.low, &self.skip) {
            (Some(low), Some(skip)) if skip.have_previous => {
                low.tick(&skip.previous, false, ready, capture_us)
            }
            _ => Ok(()),
        }
    }

    fn encode_and_publish(
        &mut self,
        ready: Instant,
        capture_us: u64,
        want_key: bool,
        same: bool,
    ) -> Result<FrameReport, PipelineError> {
        follow_viewers(
            &mut self.adapt,
            &self.writer,
            &mut *self.encoder,
            &self.stats,
            ready,
        );
        let host = self.host_input();
        let picture = match (&self.gpu, host) {
            (Some(gpu), false) => Picture::Device(gpu.picture()),
            // Without a converter a device-input encoder never gets here: capture refused.
            _ => Picture::Host(&self.picture),
        };
        let Some(report) = encode_into_ring(
            &mut *self.encoder,
            picture,
            want_key,
            capture_us,
            &mut self.out,
            &mut self.writer,
            &self.stats,
        )?
        else {
            // Skipped by the rate control (a bitrate lowered for a slow viewer): the picture
            // last encoded stays the one to compare with.
            self.low_after(false, ready, capture_us)?;
            return Ok(FrameReport {
                keyframe: false,
                bytes: 0,
                seq: None,
            });
        };
        if report.seq.is_some() {
            let latency = micros(ready.elapsed());
            self.stats.ready_to_ring.record(latency);
            self.stats
                .ready_to_ring_window
                .record(u32::try_from(latency).unwrap_or(u32::MAX));
        }
        let mut swapped = false;
        if let Some(skip) = &mut self.skip {
            skip.since_encoded = 0;
            if !same || report.keyframe {
                skip.settle_left = skip.policy.settle_frames;
            } else {
                skip.settle_left = skip.settle_left.saturating_sub(1);
            }
            if host {
                std::mem::swap(&mut skip.previous, &mut self.picture);
                skip.have_previous = true;
                swapped = true;
            }
        }
        // After the main frame is in its ring: its viewers do not wait for this one.
        self.low_after(swapped, ready, capture_us)?;
        Ok(report)
    }
}

/// Encodes `picture` with `encoder` (into `out`) and publishes the access unit in `writer`'s
/// ring, counting in `stats`: one frame of the main stream or of the low rendition. `None`
/// when the rate control skipped the frame (a wanted keyframe stays wanted); an access unit
/// too large for the ring is counted, and a keyframe asked for again (`seq` `None`).
pub(crate) fn encode_into_ring(
    encoder: &mut dyn VideoEncoder,
    picture: Picture<'_>,
    want_key: bool,
    capture_us: u64,
    out: &mut Vec<u8>,
    writer: &mut RingWriter,
    stats: &PipelineStats,
) -> Result<Option<FrameReport>, EncodeError> {
    if want_key {
        bump(&stats.keyframe_requests, 1);
    }
    let encode_start = Instant::now();
    out.clear();
    let encoded = encoder.encode(picture, want_key, out)?;
    stats.encode_time.record(micros(encode_start.elapsed()));
    if encoded.len == 0 {
        bump(&stats.frames_dropped_rate, 1);
        if want_key {
            writer.request_keyframe();
        }
        return Ok(None);
    }
    bump(&stats.frames_encoded, 1);
    bump(&stats.bytes_encoded, encoded.len as u64);
    if encoded.keyframe {
        bump(&stats.keyframes, 1);
    }
    let seq = match writer.publish(encoded.keyframe, capture_us, out) {
        Ok(seq) => {
            bump(&stats.frames_published, 1);
            Some(seq)
        }
        Err(PublishError::TooLarge { .. }) => {
            bump(&stats.frames_dropped_oversize, 1);
            writer.request_keyframe();
            None
        }
    };
    Ok(Some(FrameReport {
        keyframe: encoded.keyframe,
        bytes: encoded.len,
        seq,
    }))
}

/// Bitrate adaptation's step for a frame of the stream `writer` publishes: a new target for
/// `encoder` when its viewers lag or have been calm for a while. An encoder that keeps its
/// bitrate turns adaptation off (`adapt` becomes `None`), with a warning.
pub(crate) fn follow_viewers(
    adapt: &mut Option<RateAdapt>,
    writer: &RingWriter,
    encoder: &mut dyn VideoEncoder,
    stats: &PipelineStats,
    now: Instant,
) {
    let Some(rate) = adapt else {
        return;
    };
    let before = rate.current_bps();
    let link = writer.trouble_rate();
    let Some(bps) = rate.update(now, writer.viewer_troubles(), link) else {
        return;
    };
    if bps < before {
        writer.clear_trouble_rate();
    }
    match encoder.set_bitrate(bps) {
        Ok(()) => {
            stats
                .bitrate_target_bps
                .store(u64::from(bps), Ordering::Relaxed);
            if bps < before {
                bump(&stats.bitrate_decreases, 1);
            }
        }
        Err(err) => {
            tracing::warn!(
                encoder = encoder.name(),
                %err,
                kept_bps = before,
                "bitrate adaptation is off: the encoder did not take a new bitrate"
            );
            *adapt = None;
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Frame-thread settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub fps: u32,
    /// Pin the frame thread to this core.
    pub pin_core: Option<usize>,
    /// Make frames even when nobody watches (benchmarks); otherwise idle pods cost nothing.
    pub always_encode: bool,
    /// Move the ticks to just after the game draws (where the display's drawing is tracked),
    /// rather than keep the phase the clock started with.
    pub follow_drawing: bool,
}

/// The running frame thread.
#[derive(Debug)]
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), PipelineError>>>,
}

impl Pipeline {
    /// Starts the frame thread.
    pub fn spawn(mut stage: FrameStage, config: PipelineConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("playpod-frames".into())
            .spawn(move || {
                if let Some(core) = config.pin_core {
                    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::debug!(core, "frame thread pinned");
                    } else {
                        tracing::warn!(core, "cannot pin the frame thread to its core");
                    }
                }
                frame_loop(&mut stage, config, &thread_stop)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Whether the frame thread is still running.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the thread and returns how it ended.
    pub fn stop(mut self) -> Result<(), PipelineError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), PipelineError> {
        self.stop.store(true, Ordering::Release);
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| PipelineError::Panicked)?,
            None => Ok(()),
        }
    }

    /// If the thread has ended, how (once).
    pub fn try_finish(&mut self) -> Option<Result<(), PipelineError>> {
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            Some(self.join())
        } else {
            None
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Err(err) = self.join() {
            tracing::error!(%err, "frame thread ended with an error");
        }
    }
}

fn frame_loop(
    stage: &mut FrameStage,
    config: PipelineConfig,
    stop: &AtomicBool,
) -> Result<(), PipelineError> {
    let mut clock = FrameClock::new(Instant::now(), config.fps);
    let stats = stage.stats.clone();
    // A game draws on a clock of its own: with a tick at a fixed phase, each of its frames
    // would wait anywhere from nothing to a whole period for the tick (the same wait every
    // frame, set by when the two clocks happened to start), and a drawing that straddles the
    // tick is captured half done. So the ticks follow the drawing: each moves a quarter of the
    // way towards `DRAW_LAG` after the latest drawing started.
    let drawing = config
        .follow_drawing
        .then(|| stage.changes.clone())
        .flatten();
    while !stop.load(Ordering::Acquire) {
        let tick = clock.next_tick(Instant::now());
        bump(&stats.frames_dropped_late, tick.missed);
        let now = Instant::now();
        if tick.deadline > now {
            std::thread::sleep(tick.deadline - now);
        }
        if let Some(since) = drawing
            .as_ref()
            .and_then(ScreenChanges::drawing_started)
            .and_then(|started| tick.deadline.checked_duration_since(started))
            && let Some((by, earlier)) = phase_correction(since, clock.period())
        {
            clock.shift(by, earlier);
        }
        if !config.always_encode && !stage.has_readers() {
            continue;
        }
        stage.tick(tick.deadline, unix_micros())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, AtomicU64};

    use super::*;
    use crate::convert::BgrxFrame;
    use crate::encode::Openh264Encoder;
    use crate::ring::ReadOutcome;
    use crate::stats::PipelineStats;

    const W: u32 = 64;
    const H: u32 = 48;

    /// A screen of one grey level, set from outside; counts how often it is read.
    struct Screen {
        level: Arc<AtomicU8>,
        grabs: Arc<AtomicU64>,
        bytes: Vec<u8>,
    }

    impl FrameSource for Screen {
        fn kind(&self) -> &'static str {
            "test"
        }

        fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
            self.grabs.fetch_add(1, Ordering::Relaxed);
            self.bytes.fill(self.level.load(Ordering::Relaxed));
            Ok(BgrxFrame {
                bytes: &self.bytes,
                width: W,
                height: H,
                stride: W as usize * 4,
            })
        }
    }

    struct Rig {
        stage: FrameStage,
        ring: Ring,
        stats: Arc<PipelineStats>,
        level: Arc<AtomicU8>,
        grabs: Arc<AtomicU64>,
    }

    const POLICY: Unchanged = Unchanged {
        settle_frames: 3,
        refresh_ticks: 10,
    };

    const SETTINGS: EncoderSettings = EncoderSettings {
        width: W,
        height: H,
        fps: 60,
        bitrate_bps: 300_000,
    };

    fn rig(changes: Option<ScreenChanges>) -> Rig {
        let settings = SETTINGS;
        let level = Arc::new(AtomicU8::new(10));
        let grabs = Arc::new(AtomicU64::new(0));
        let screen = Screen {
            level: level.clone(),
            grabs: grabs.clone(),
            bytes: vec![0; (W * H * 4) as usize],
        };
        let (stage, ring, stats) = FrameStage::with_ring(
            Box::new(screen),
            Box::new(Openh264Encoder::new(settings).unwrap()),
            settings,
        );
        let stage = stage.skip_unchanged(POLICY);
        let stage = match changes {
            Some(changes) => stage.with_screen_changes(changes),
            None => stage,
        };
        Rig {
            stage,
            ring,
            stats,
            level,
            grabs,
        }
    }

    impl Rig {
        /// Ticks `n` times; which of them made a frame.
        fn ticks(&mut self, n: usize) -> Vec<bool> {
            (0..n)
                .map(|_| {
                    self.stage
                        .tick(Instant::now(), unix_micros())
                        .unwrap()
                        .is_some()
                })
                .collect()
        }
    }

    fn count(made: &[bool]) -> usize {
        made.iter().filter(|m| **m).count()
    }

    /// Reads every frame waiting in `reader`; their keyframe flags and the first keyframe.
    fn drain(reader: &mut crate::ring::RingReader) -> (Vec<bool>, Option<Vec<u8>>) {
        let (mut keys, mut first_key) = (Vec::new(), None);
        let mut out = Vec::new();
        loop {
            out.clear();
            match reader.try_read(&mut out) {
                ReadOutcome::Frame(meta) => {
                    keys.push(meta.keyframe);
                    if meta.keyframe && first_key.is_none() {
                        first_key = Some(out.clone());
                    }
                }
                _ => return (keys, first_key),
            }
        }
    }

    #[test]
    fn the_low_rendition_is_made_while_read_with_keyframes_of_its_own() {
        use crate::rendition::{LowRendition, low_settings};
        use openh264::formats::YUVSource as _;
        let low_settings = low_settings(SETTINGS).expect("64x48 has a low rendition");
        assert_eq!((low_settings.width, low_settings.height), (32, 24));
        assert_eq!(low_settings.bitrate_bps, 75_000);
        let (low, low_ring, low_stats) = LowRendition::with_ring(
            Box::new(Openh264Encoder::new(low_settings).unwrap()),
            low_settings,
            false,
        );
        let mut r = rig(None);
        r.stage = r.stage.with_low_rendition(low);
        let encoded = |stats: &PipelineStats| stats.frames_encoded.load(Ordering::Relaxed);
        let keys = |stats: &PipelineStats| stats.keyframes.load(Ordering::Relaxed);

        // Nobody reads it: the frame thread idles, and then makes main frames only.
        assert!(!r.stage.has_readers());
        let mut main = r.ring.subscribe().unwrap();
        r.ticks(20);
        assert_eq!(encoded(&low_stats), 0);
        let main_keys = keys(&r.stats);
        let main_frames = encoded(&r.stats);
        drain(&mut main);

        // A low viewer on an unchanged screen: one keyframe of the low rendition at once,
        // and none of the main stream.
        let mut viewer = low_ring.subscribe().unwrap();
        assert!(r.ticks(1) == [false], "no main frame");
        assert_eq!((encoded(&low_stats), keys(&low_stats)), (1, 1));
        assert_eq!(keys(&r.stats), main_keys, "the main stream took an IDR");
        let (flags, key) = drain(&mut viewer);
        assert_eq!(flags, [true]);
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let picture = decoder
            .decode(&key.unwrap())
            .unwrap()
            .expect("the low keyframe decodes to a picture");
        assert_eq!(picture.dimensions(), (32, 24));
        // Grey level 10 is Y 25 (BT.601, limited range); lossy, so near it.
        let (y, stride) = (picture.y(), picture.strides().0);
        let mean = (0..24)
            .flat_map(|row| y[row * stride..][..32].iter())
            .map(|&v| u32::from(v))
            .sum::<u32>()
            / (32 * 24);
        assert!(mean.abs_diff(25) <= 2, "mean Y {mean}");

        // A change: a frame of each, the low one no keyframe.
        r.level.store(200, Ordering::Relaxed);
        assert!(r.ticks(1) == [true]);
        assert_eq!((encoded(&low_stats), keys(&low_stats)), (2, 1));
        assert_eq!(drain(&mut viewer).0, [false]);
        assert_eq!(encoded(&r.stats), main_frames + 1);

        // Only the low rendition read: the frame thread still works for it.
        drop(main);
        assert!(r.stage.has_readers());
        // Its viewer gone: nothing more of it.
        drop(viewer);
        r.level.store(100, Ordering::Relaxed);
        r.ticks(5);
        assert_eq!(encoded(&low_stats), 2);
    }

    #[test]
    fn an_unchanged_picture_settles_then_is_sent_once_per_refresh() {
        let mut r = rig(None);
        // First frame, then the settling frames of the same picture, then nothing until the
        // refresh tick.
        let made = r.ticks(1 + 3 + 10);
        assert_eq!(made[..4], [true; 4], "{made:?}");
        assert_eq!(made[4..13], [false; 9], "{made:?}");
        assert!(
            made[13],
            "the refresh frame, a second after the last: {made:?}"
        );
        // Every tick read the screen (no damage tracking), only 5 were encoded.
        assert_eq!(r.grabs.load(Ordering::Relaxed), 14);
        assert_eq!(r.stats.frames_encoded.load(Ordering::Relaxed), 5);
        assert_eq!(r.stats.frames_unchanged.load(Ordering::Relaxed), 9);
        assert_eq!(r.stats.frames_published.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_change_is_sent_at_once_and_settles_again() {
        let mut r = rig(None);
        r.ticks(20);
        r.level.store(200, Ordering::Relaxed);
        let made = r.ticks(5);
        assert_eq!(made, [true, true, true, true, false], "change + 3 settling");
        // A picture changing on every tick is sent on every tick.
        let mut changing = Vec::new();
        for n in 0..30u8 {
            r.level.store(n * 7, Ordering::Relaxed);
            changing.extend(r.ticks(1));
        }
        assert_eq!(count(&changing), 30);
    }

    #[test]
    fn a_keyframe_request_is_served_on_an_unchanged_screen() {
        let mut r = rig(None);
        let mut reader = r.ring.subscribe().unwrap();
        r.ticks(8);
        let mut out = Vec::new();
        while !matches!(reader.try_read(&mut out), ReadOutcome::Empty) {}
        // A new viewer asks; the next tick makes an IDR although nothing changed, and the
        // IDR settles too (it is the new viewer's first picture).
        r.ring.request_keyframe();
        let made = r.ticks(5);
        assert_eq!(made, [true, true, true, true, false]);
        out.clear();
        match reader.try_read(&mut out) {
            ReadOutcome::Frame(meta) => assert!(meta.keyframe, "{meta:?}"),
            other => panic!("no frame: {other:?}"),
        }
    }

    #[test]
    fn with_damage_nothing_drawn_means_nothing_read() {
        let changes = ScreenChanges::new();
        let mut r = rig(Some(changes.clone()));
        let made = r.ticks(1 + 3 + 8);
        assert_eq!(count(&made), 4);
        // The first tick (flag raised at start) and the settling ticks read the screen; the
        // eight after did not.
        assert_eq!(r.grabs.load(Ordering::Relaxed), 4);
        assert_eq!(r.stats.frames_unchanged.load(Ordering::Relaxed), 8);
        // Drawn, but the same picture: read, not encoded.
        changes.mark();
        assert_eq!(r.ticks(1), [false]);
        assert_eq!(r.grabs.load(Ordering::Relaxed), 5);
        // The refresh tick reads and sends even without damage.
        assert_eq!(r.ticks(1), [true]);
        // Drawn and changed: sent.
        r.ticks(10);
        r.level.store(99, Ordering::Relaxed);
        changes.mark();
        assert_eq!(r.ticks(1), [true]);
        // A change with no damage reported is not seen until the server reports it: the
        // frame thread trusts the X server (what it draws, it reports).
        r.ticks(3);
        r.level.store(150, Ordering::Relaxed);
        assert_eq!(r.ticks(2), [false, false]);
    }

    /// A 768x768 screen of new noise on every read: the hardest picture to compress.
    struct Noise {
        state: u64,
        bytes: Vec<u8>,
    }

    impl FrameSource for Noise {
        fn kind(&self) -> &'static str {
            "noise"
        }

        fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
            for b in &mut self.bytes {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                *b = self.state as u8;
            }
            Ok(BgrxFrame {
                bytes: &self.bytes,
                width: 768,
                height: 768,
                stride: 768 * 4,
            })
        }
    }

    #[test]
    fn keyframes_of_noise_at_the_highest_bitrate_fit_the_ring() {
        // The most the command line allows (--bitrate-kbps 100000): IDRs of noise are over
        // half an uncompressed picture. One that did not fit would be dropped and asked for
        // again, every tick, and no viewer would ever start.
        let settings = EncoderSettings {
            width: 768,
            height: 768,
            fps: 60,
            bitrate_bps: 100_000_000,
        };
        let source = Noise {
            state: 0x2545_f491_4f6c_dd1d,
            bytes: vec![0; 768 * 768 * 4],
        };
        let (mut stage, ring, stats) = FrameStage::with_ring(
            Box::new(source),
            Box::new(Openh264Encoder::new(settings).unwrap()),
            settings,
        );
        for n in 0..12 {
            if n % 5 == 0 {
                ring.request_keyframe();
            }
            let report = stage.run_once(Instant::now(), unix_micros()).unwrap();
            assert!(
                report.seq.is_some(),
                "frame {n}: {} bytes (keyframe: {}) do not fit slots of {}",
                report.bytes,
                report.keyframe,
                ring.slot_bytes()
            );
        }
        assert_eq!(stats.frames_dropped_oversize.load(Ordering::Relaxed), 0);
        assert_eq!(stats.keyframes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn run_once_always_makes_a_frame() {
        let mut r = rig(None);
        for _ in 0..20 {
            r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        }
        assert_eq!(r.stats.frames_encoded.load(Ordering::Relaxed), 20);
        assert_eq!(r.stats.frames_unchanged.load(Ordering::Relaxed), 0);
    }

    /// Makes a reader fall a whole ring behind: frames published, none read, then a read.
    fn make_a_reader_lag(r: &mut Rig) {
        let mut reader = r.ring.subscribe().unwrap();
        let mut buf = Vec::new();
        for _ in 0..20 {
            r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        }
        let lagged = r.ring.lagged();
        reader.try_read(&mut buf);
        assert_eq!(r.ring.lagged(), lagged + 1);
    }

    #[test]
    fn a_viewer_trouble_lowers_the_bitrate() {
        let mut r = rig(None);
        r.stage = r.stage.adapt_bitrate(300_000);
        let target = |r: &Rig| r.stats.bitrate_target_bps.load(Ordering::Relaxed);
        r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert_eq!(target(&r), 300_000, "no trouble, no change");
        // A lag by itself is the viewer task's to weigh (a spectator's may not count).
        make_a_reader_lag(&mut r);
        r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert_eq!(target(&r), 300_000);
        r.ring.report_trouble(None);
        r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert_eq!(target(&r), 225_000);
        assert_eq!(r.stats.bitrate_decreases.load(Ordering::Relaxed), 1);
    }

    /// openh264 that claims it cannot change its bitrate, as an encoder might.
    struct Fixed(Openh264Encoder);

    impl VideoEncoder for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn encode(
            &mut self,
            picture: Picture<'_>,
            keyframe: bool,
            out: &mut Vec<u8>,
        ) -> Result<crate::encode::Encoded, EncodeError> {
            self.0.encode(picture, keyframe, out)
        }
    }

    #[test]
    fn an_encoder_that_keeps_its_bitrate_turns_adaptation_off_and_goes_on() {
        let mut r = rig(None);
        let settings = EncoderSettings {
            width: W,
            height: H,
            fps: 60,
            bitrate_bps: 300_000,
        };
        r.stage.encoder = Box::new(Fixed(Openh264Encoder::new(settings).unwrap()));
        r.stage = r.stage.adapt_bitrate(300_000);
        make_a_reader_lag(&mut r);
        r.ring.report_trouble(None);
        r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert!(r.stage.adapt.is_none());
        assert_eq!(r.stats.bitrate_target_bps.load(Ordering::Relaxed), 300_000);
        assert_eq!(r.stats.bitrate_decreases.load(Ordering::Relaxed), 0);
        assert_eq!(r.stats.frames_encoded.load(Ordering::Relaxed), 21);
    }

    /// openh264 whose rate control skips every frame, as it may below its first bitrate.
    struct Skipping;

    impl VideoEncoder for Skipping {
        fn name(&self) -> &'static str {
            "skipping"
        }
        fn encode(
            &mut self,
            _picture: Picture<'_>,
            _keyframe: bool,
            _out: &mut Vec<u8>,
        ) -> Result<crate::encode::Encoded, EncodeError> {
            Ok(crate::encode::Encoded {
                keyframe: false,
                len: 0,
            })
        }
    }

    #[test]
    fn a_frame_the_encoder_skips_is_not_published_and_a_wanted_keyframe_stays_wanted() {
        let mut r = rig(None);
        r.stage.encoder = Box::new(Skipping);
        let _reader = r.ring.subscribe().unwrap();
        r.ring.request_keyframe();
        let report = r.stage.run_once(Instant::now(), unix_micros()).unwrap();
        assert_eq!(report.seq, None);
        assert_eq!(r.ring.published(), 0, "no empty access unit in the ring");
        assert_eq!(r.stats.frames_dropped_rate.load(Ordering::Relaxed), 1);
        assert!(
            r.stage.writer.take_keyframe_request(),
            "the keyframe is asked for again"
        );
    }
}
