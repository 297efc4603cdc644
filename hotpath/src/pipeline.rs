//! The frame thread: on each tick of the frame clock, capture in place, convert, encode and
//! publish into the broadcast ring, all on one pinned thread with no hand-off between stages
//! (the whole chain takes a few milliseconds, well inside one frame, so a second thread would
//! only add a queue and latency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{CaptureError, FrameSource};
use crate::clock::FrameClock;
use crate::convert::{self, ConvertError, I420Frame};
use crate::encode::{EncodeError, EncoderSettings, InputKind, Picture, VideoEncoder};
use crate::gpu::{GpuConverter, GpuStageError};
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

/// Capture -> convert -> encode -> publish, one frame per call. Owns every buffer it uses,
/// allocated up front; a call allocates nothing.
pub struct FrameStage {
    source: Box<dyn FrameSource>,
    picture: I420Frame,
    encoder: Box<dyn VideoEncoder>,
    // After the encoder: an encoder's registration of the device picture goes first.
    gpu: Option<GpuConverter>,
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
        Self {
            source,
            picture: I420Frame::new(settings.width, settings.height),
            encoder,
            gpu: None,
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

    /// Whether anyone is reading the ring.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0
    }

    /// Makes one frame. `ready` is when the frame was due; `capture_us` goes on the wire.
    pub fn run_once(
        &mut self,
        ready: Instant,
        capture_us: u64,
    ) -> Result<FrameReport, PipelineError> {
        let stats = &*self.stats;
        let convert_start = Instant::now();
        let picture = match (&mut self.gpu, self.encoder.input()) {
            (None, InputKind::HostI420) => {
                let frame = self.source.grab()?;
                convert::bgrx_to_i420(&frame, &mut self.picture)?;
                Picture::Host(&self.picture)
            }
            (Some(gpu), InputKind::HostI420) => {
                gpu.convert_to_host(&mut *self.source, &mut self.picture)?;
                Picture::Host(&self.picture)
            }
            (Some(gpu), InputKind::DeviceNv12) => Picture::Device(gpu.convert(&mut *self.source)?),
            (None, InputKind::DeviceNv12) => return Err(EncodeError::WrongInput.into()),
        };
        bump(&stats.frames_captured, 1);
        let encode_start = Instant::now();
        stats
            .convert_time
            .record(micros(encode_start - convert_start));

        let want_key = self.writer.take_keyframe_request();
        if want_key {
            bump(&stats.keyframe_requests, 1);
        }
        self.out.clear();
        let encoded = self.encoder.encode(picture, want_key, &mut self.out)?;
        stats.encode_time.record(micros(encode_start.elapsed()));
        bump(&stats.frames_encoded, 1);
        bump(&stats.bytes_encoded, encoded.len as u64);
        if encoded.keyframe {
            bump(&stats.keyframes, 1);
        }
        let seq = match self.writer.publish(encoded.keyframe, capture_us, &self.out) {
            Ok(seq) => {
                bump(&stats.frames_published, 1);
                let latency = micros(ready.elapsed());
                stats.ready_to_ring.record(latency);
                stats
                    .ready_to_ring_window
                    .record(u32::try_from(latency).unwrap_or(u32::MAX));
                Some(seq)
            }
            Err(PublishError::TooLarge { .. }) => {
                bump(&stats.frames_dropped_oversize, 1);
                self.writer.request_keyframe();
                None
            }
        };
        Ok(FrameReport {
            keyframe: encoded.keyframe,
            bytes: encoded.len,
            seq,
        })
    }
}

fn micros(d: Duration) -> u64 {
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
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    tracing::info!(core, pinned, "frame thread pinned");
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
    while !stop.load(Ordering::Acquire) {
        let tick = clock.next_tick(Instant::now());
        bump(&stats.frames_dropped_late, tick.missed);
        let now = Instant::now();
        if tick.deadline > now {
            std::thread::sleep(tick.deadline - now);
        }
        if !config.always_encode && !stage.has_readers() {
            continue;
        }
        stage.run_once(tick.deadline, unix_micros())?;
    }
    Ok(())
}
