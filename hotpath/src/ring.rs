//! The broadcast ring: one writer (the frame thread), any number of readers (viewers), each at
//! its own pace. Slots are allocated once; publishing copies the access unit into a slot and
//! never waits for a reader. Each slot is a sequence lock: a reader copies the bytes out and
//! then checks that the writer did not come round in the meantime. A reader that fell a whole
//! ring behind skips to the newest frame, waits for the next IDR and asks the writer for one:
//! at once, or, for a patient reader ([`RingReader::set_patient`]: a viewer whose link does not
//! set the bitrate), only once [`KEYFRAME_PATIENCE`] has passed since the last IDR, so that a
//! spectator on a weak link does not make every viewer take an IDR each time it falls behind.
//!
//! Everything shared is an atomic, so the ring is lock-free and safe Rust.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

/// How long after the last keyframe a patient reader's request is granted: until then it
/// waits, with its picture still, for a keyframe someone else asks for.
pub const KEYFRAME_PATIENCE: Duration = Duration::from_secs(3);

/// Ring sizes, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Number of slots (frames held). At least 2.
    pub slots: usize,
    /// Largest access unit a slot holds, in bytes.
    pub slot_bytes: usize,
    /// Most readers at once.
    pub max_readers: usize,
}

impl RingConfig {
    /// Sizes for a `width` x `height` stream: 16 slots (a quarter second at 60 fps) each as
    /// large as an uncompressed I420 picture. An IDR of noise at the highest bitrate the
    /// command line allows (100 Mbit/s) takes 0.6 of that: a keyframe that did not fit would be
    /// dropped and asked for again on every tick, and no viewer could ever start.
    pub fn for_picture(width: u32, height: u32) -> Self {
        let raw = width as usize * height as usize * 3 / 2;
        Self {
            slots: 16,
            slot_bytes: raw.max(64 * 1024),
            max_readers: 1024,
        }
    }
}

/// Facts about one published access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Position in the stream: 0, 1, 2, ... with no gaps.
    pub seq: u64,
    pub keyframe: bool,
    /// Capture time, microseconds since the Unix epoch.
    pub capture_us: u64,
    /// Payload length in bytes.
    pub len: usize,
}

/// Why a frame could not be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("access unit of {len} bytes exceeds the ring's slot size of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Why a reader could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("all {0} reader places are taken")]
    Full(usize),
}

/// What a read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A frame; its payload was appended to the output buffer.
    Frame(FrameMeta),
    /// Nothing new yet.
    Empty,
    /// The stream has ended (the writer is gone) and everything was read.
    Closed,
}

struct Slot {
    /// Sequence lock: `2n + 1` while frame `n` is being written, `2n + 2` once it is complete.
    stamp: AtomicU64,
    len: AtomicUsize,
    keyframe: AtomicBool,
    capture_us: AtomicU64,
    /// The payload, eight bytes a word, little-endian.
    words: Box<[AtomicU64]>,
}

struct ReaderPlace {
    taken: AtomicBool,
    waker: AtomicWaker,
}

struct Shared {
    slots: Box<[Slot]>,
    slot_bytes: usize,
    /// Frames published so far (the next frame's `seq`).
    published: AtomicU64,
    closed: AtomicBool,
    keyframe_wanted: AtomicBool,
    /// A patient reader wants a keyframe ([`RingReader::set_patient`]).
    keyframe_wanted_patient: AtomicBool,
    places: Box<[ReaderPlace]>,
    /// One past the highest reader place ever taken: the writer wakes only those.
    places_used: AtomicUsize,
    readers: AtomicUsize,
    lagged: AtomicU64,
    /// Reports of viewers whose link holds a queue ([`Ring::report_slow_link`]).
    slow_links: AtomicU64,
    /// Lags and slow links that count for the bitrate ([`Ring::report_trouble`]).
    troubles: AtomicU64,
    /// The least rate (bit/s) a trouble's link was seen to carry since the writer last
    /// cleared it; `u64::MAX` for none.
    trouble_rate: AtomicU64,
}

/// The ring. Make one with [`Ring::new`], which also gives the single [`RingWriter`].
#[derive(Clone)]
pub struct Ring {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("published", &self.published())
            .field("readers", &self.readers())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Allocates every slot now; nothing is allocated per frame afterwards.
    pub fn new(config: RingConfig) -> (Ring, RingWriter) {
        assert!(config.slots >= 2, "a ring needs at least two slots");
        let words = config.slot_bytes.div_ceil(8);
        let slots = (0..config.slots)
            .map(|_| Slot {
                stamp: AtomicU64::new(0),
                len: AtomicUsize::new(0),
                keyframe: AtomicBool::new(false),
                capture_us: AtomicU64::new(0),
                // Zeroed by the allocator, not written: a slot's pages take memory only once
                // an access unit as large reaches them.
                words: bytemuck::zeroed_slice_box(words),
            })
            .collect();
        let places = (0..config.max_readers)
            .map(|_| ReaderPlace {
                taken: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            })
            .collect();
        let shared = Arc::new(Shared {
            slots,
            slot_bytes: words * 8,
            published: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            keyframe_wanted: AtomicBool::new(false),
            keyframe_wanted_patient: AtomicBool::new(false),
            places,
            places_used: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
            lagged: AtomicU64::new(0),
            slow_links: AtomicU64::new(0),
            troubles: AtomicU64::new(0),
            trouble_rate: AtomicU64::new(u64::MAX),
        });
        (
            Ring {
                shared: shared.clone(),
            },
            RingWriter {
                shared,
                patience: KEYFRAME_PATIENCE,
                last_keyframe: None,
            },
        )
    }

    /// A new reader. It starts at the next keyframe, which it asks for.
    pub fn subscribe(&self) -> Result<RingReader, SubscribeError> {
        self.subscribe_with(false)
    }

    /// [`Ring::subscribe`] for a reader that can wait: its keyframe is asked for patiently
    /// (granted once [`KEYFRAME_PATIENCE`] has passed since the last one), and so are those of
    /// its lags until told otherwise ([`RingReader::set_patient`]).
    pub fn subscribe_patiently(&self) -> Result<RingReader, SubscribeError> {
        self.subscribe_with(true)
    }

    fn subscribe_with(&self, patient: bool) -> Result<RingReader, SubscribeError> {
        let s = &self.shared;
        let place = s
            .places
            .iter()
            .position(|p| {
                p.taken
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or(SubscribeError::Full(s.places.len()))?;
        s.places_used.fetch_max(place + 1, Ordering::AcqRel);
        s.readers.fetch_add(1, Ordering::Relaxed);
        if patient {
            s.keyframe_wanted_patient.store(true, Ordering::Release);
        } else {
            s.keyframe_wanted.store(true, Ordering::Release);
        }
        Ok(RingReader {
            shared: s.clone(),
            place,
            next: s.published.load(Ordering::Acquire),
            need_keyframe: true,
            lags: 0,
            patient,
        })
    }

    /// Asks the writer for a keyframe (a viewer's decoder restarted).
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Release);
    }

    /// [`Ring::request_keyframe`] for a patient viewer: granted once [`KEYFRAME_PATIENCE`]
    /// has passed since the last keyframe.
    pub fn request_keyframe_patiently(&self) {
        self.shared
            .keyframe_wanted_patient
            .store(true, Ordering::Release);
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Acquire)
    }

    /// Readers now subscribed.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    /// Times a reader fell a whole ring behind.
    pub fn lagged(&self) -> u64 {
        self.shared.lagged.load(Ordering::Relaxed)
    }

    /// Says that a viewer's link holds a queue: its frames arrive later than they would
    /// on an empty link, though the viewer has not fallen behind in the ring (yet).
    pub fn report_slow_link(&self) {
        self.shared.slow_links.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports of [`Ring::report_slow_link`] so far.
    pub fn slow_links(&self) -> u64 {
        self.shared.slow_links.load(Ordering::Relaxed)
    }

    /// Says that a viewer whose link matters for the bitrate lagged or has a slow link, and,
    /// where known, the bits a second that link was seen to carry: the writer's bitrate
    /// adaptation counts these ([`RingWriter::viewer_troubles`], [`RingWriter::trouble_rate`]).
    pub fn report_trouble(&self, link_bps: Option<u64>) {
        if let Some(bps) = link_bps {
            self.shared.trouble_rate.fetch_min(bps, Ordering::Relaxed);
        }
        self.shared.troubles.fetch_add(1, Ordering::Relaxed);
    }

    /// The largest access unit a slot holds.
    pub fn slot_bytes(&self) -> usize {
        self.shared.slot_bytes
    }
}

/// The one writer.
pub struct RingWriter {
    shared: Arc<Shared>,
    /// How long patient readers wait after a keyframe ([`KEYFRAME_PATIENCE`]).
    patience: Duration,
    /// When the last keyframe was published.
    last_keyframe: Option<Instant>,
}

impl std::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWriter").finish_non_exhaustive()
    }
}

impl RingWriter {
    /// Whether a reader asked for a keyframe since the last call (clears the request): any
    /// reader's at once, a patient reader's once the patience has passed since the last
    /// keyframe. A keyframe made for either serves both: every reader waiting for one gets it.
    pub fn take_keyframe_request(&mut self) -> bool {
        let s = &*self.shared;
        if s.keyframe_wanted.swap(false, Ordering::AcqRel) {
            s.keyframe_wanted_patient.store(false, Ordering::Release);
            return true;
        }
        s.keyframe_wanted_patient.load(Ordering::Acquire)
            && self
                .last_keyframe
                .is_none_or(|at| at.elapsed() >= self.patience)
            && s.keyframe_wanted_patient.swap(false, Ordering::AcqRel)
    }

    /// How long patient readers wait after a keyframe (default [`KEYFRAME_PATIENCE`]).
    pub fn set_keyframe_patience(&mut self, patience: Duration) {
        self.patience = patience;
    }

    /// Asks for a keyframe again (the writer could not publish the one it made).
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Release);
    }

    /// Readers now subscribed.
    pub fn readers(&self) -> usize {
        self.shared.readers.load(Ordering::Relaxed)
    }

    /// Reports of [`Ring::report_trouble`] since the start: each says the link of a viewer
    /// that matters does not carry the stream.
    pub fn viewer_troubles(&self) -> u64 {
        self.shared.troubles.load(Ordering::Relaxed)
    }

    /// The least link rate reported with a trouble since [`RingWriter::clear_trouble_rate`].
    pub fn trouble_rate(&self) -> Option<u64> {
        Some(self.shared.trouble_rate.load(Ordering::Relaxed)).filter(|&r| r != u64::MAX)
    }

    /// Forgets the link rates reported so far (once a decrease has used them).
    pub fn clear_trouble_rate(&self) {
        self.shared.trouble_rate.store(u64::MAX, Ordering::Relaxed);
    }

    /// Copies one access unit into the next slot and wakes the readers. Never blocks and
    /// never allocates.
    pub fn publish(
        &mut self,
        keyframe: bool,
        capture_us: u64,
        payload: &[u8],
    ) -> Result<u64, PublishError> {
        let s = &*self.shared;
        if payload.len() > s.slot_bytes {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max: s.slot_bytes,
            });
        }
        let seq = s.published.load(Ordering::Relaxed);
        let slot = &s.slots[(seq % s.slots.len() as u64) as usize];
        slot.stamp.store(2 * seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.len.store(payload.len(), Ordering::Relaxed);
        slot.keyframe.store(keyframe, Ordering::Relaxed);
        slot.capture_us.store(capture_us, Ordering::Relaxed);
        let mut chunks = payload.chunks_exact(8);
        for (word, chunk) in slot.words.iter().zip(&mut chunks) {
            let bytes: [u8; 8] = chunk.try_into().expect("chunks_exact yields 8 bytes");
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut bytes = [0u8; 8];
            bytes[..tail.len()].copy_from_slice(tail);
            slot.words[payload.len() / 8].store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        slot.stamp.store(2 * seq + 2, Ordering::Release);
        s.published.store(seq + 1, Ordering::Release);
        if keyframe {
            self.last_keyframe = Some(Instant::now());
        }
        self.wake_readers();
        Ok(seq)
    }

    fn wake_readers(&self) {
        let s = &*self.shared;
        let used = s.places_used.load(Ordering::Acquire);
        for place in &s.places[..used] {
            if place.taken.load(Ordering::Relaxed) {
                place.waker.wake();
            }
        }
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.wake_readers();
    }
}

/// One reader's cursor into the ring.
pub struct RingReader {
    shared: Arc<Shared>,
    place: usize,
    /// The next frame to read.
    next: u64,
    /// Skip frames until a keyframe (new reader, or one that lagged).
    need_keyframe: bool,
    /// Times this reader fell a whole ring behind.
    lags: u64,
    /// Its lags ask for a keyframe patiently ([`RingReader::set_patient`]).
    patient: bool,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("next", &self.next)
            .field("need_keyframe", &self.need_keyframe)
            .field("lags", &self.lags)
            .finish_non_exhaustive()
    }
}

impl RingReader {
    /// Reads the next frame, if there is one, appending its payload to `out`.
    pub fn try_read(&mut self, out: &mut Vec<u8>) -> ReadOutcome {
        let Self {
            shared,
            next,
            need_keyframe,
            lags,
            patient,
            ..
        } = self;
        let s = &**shared;
        let wanted = if *patient {
            &s.keyframe_wanted_patient
        } else {
            &s.keyframe_wanted
        };
        let lag = |next: &mut u64, need_keyframe: &mut bool, lags: &mut u64, published: u64| {
            // Fell behind: skip to the newest frame and ask for a keyframe to restart from.
            *next = published;
            *need_keyframe = true;
            *lags += 1;
            s.lagged.fetch_add(1, Ordering::Relaxed);
            wanted.store(true, Ordering::Release);
        };
        loop {
            let published = s.published.load(Ordering::Acquire);
            if *next >= published {
                if !s.closed.load(Ordering::Acquire) {
                    return ReadOutcome::Empty;
                }
                // The writer may have published its last frames between the two loads; once
                // `closed` is seen, every frame it published is seen too.
                if *next >= s.published.load(Ordering::Acquire) {
                    return ReadOutcome::Closed;
                }
                continue;
            }
            if published - *next > s.slots.len() as u64 {
                lag(next, need_keyframe, lags, published);
                continue;
            }
            let seq = *next;
            let slot = &s.slots[(seq % s.slots.len() as u64) as usize];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp != 2 * seq + 2 {
                // The writer has come round to this slot again.
                lag(next, need_keyframe, lags, published);
                continue;
            }
            let keyframe = slot.keyframe.load(Ordering::Relaxed);
            if *need_keyframe && !keyframe {
                *next += 1;
                continue;
            }
            let len = slot.len.load(Ordering::Relaxed).min(s.slot_bytes);
            let capture_us = slot.capture_us.load(Ordering::Relaxed);
            let start = out.len();
            out.reserve(len.next_multiple_of(8));
            for word in &slot.words[..len.div_ceil(8)] {
                out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            out.truncate(start + len);
            fence(Ordering::Acquire);
            if slot.stamp.load(Ordering::Relaxed) != stamp {
                out.truncate(start);
                lag(
                    next,
                    need_keyframe,
                    lags,
                    s.published.load(Ordering::Acquire),
                );
                continue;
            }
            *next += 1;
            *need_keyframe = false;
            return ReadOutcome::Frame(FrameMeta {
                seq,
                keyframe,
                capture_us,
                len,
            });
        }
    }

    /// Like [`try_read`](Self::try_read), but when there is nothing new, arranges for `cx` to
    /// be woken when the writer publishes or goes away.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<ReadOutcome> {
        match self.try_read(out) {
            ReadOutcome::Empty => {}
            done => return Poll::Ready(done),
        }
        self.shared.places[self.place].waker.register(cx.waker());
        // Check again: the writer may have published between the read and the register.
        match self.try_read(out) {
            ReadOutcome::Empty => Poll::Pending,
            done => Poll::Ready(done),
        }
    }

    /// Reads, waiting up to `timeout` for a frame (for plain threads and tests).
    pub fn read_blocking(&mut self, out: &mut Vec<u8>, timeout: Duration) -> ReadOutcome {
        let deadline = std::time::Instant::now() + timeout;
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(outcome) = self.poll_read(&mut cx, out) {
                return outcome;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return ReadOutcome::Empty;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Whether this reader is waiting for a keyframe.
    pub fn needs_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// Times this reader fell a whole ring behind and skipped ahead.
    pub fn lags(&self) -> u64 {
        self.lags
    }

    /// Whether this reader's lags ask for a keyframe patiently: granted once
    /// [`KEYFRAME_PATIENCE`] has passed since the last one (it skips ahead and waits, its
    /// picture still, meanwhile). For a viewer whose link does not set the bitrate: a spectator
    /// on a weak link would otherwise make every viewer take an IDR each time it fell behind.
    pub fn set_patient(&mut self, patient: bool) {
        self.patient = patient;
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        let place = &self.shared.places[self.place];
        drop(place.waker.take());
        self.shared.readers.fetch_sub(1, Ordering::Relaxed);
        place.taken.store(false, Ordering::Release);
    }
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RingConfig {
        RingConfig {
            slots: 4,
            slot_bytes: 64,
            max_readers: 8,
        }
    }

    fn read(r: &mut RingReader) -> Option<(FrameMeta, Vec<u8>)> {
        let mut out = Vec::new();
        match r.try_read(&mut out) {
            ReadOutcome::Frame(m) => Some((m, out)),
            _ => None,
        }
    }

    #[test]
    fn reader_starts_at_a_keyframe_and_asks_for_one() {
        let (ring, mut w) = Ring::new(small());
        w.publish(true, 1, b"key0").unwrap();
        assert!(!w.take_keyframe_request());
        let mut r = ring.subscribe().unwrap();
        assert!(
            w.take_keyframe_request(),
            "a new reader asks for a keyframe"
        );
        w.publish(false, 2, b"delta1").unwrap();
        assert_eq!(
            read(&mut r),
            None,
            "deltas before the first keyframe are skipped"
        );
        w.publish(true, 3, b"key2").unwrap();
        let (meta, bytes) = read(&mut r).unwrap();
        assert_eq!(
            meta,
            FrameMeta {
                seq: 2,
                keyframe: true,
                capture_us: 3,
                len: 4
            }
        );
        assert_eq!(bytes, b"key2");
        w.publish(false, 4, b"delta3").unwrap();
        assert_eq!(read(&mut r).unwrap().1, b"delta3");
        assert_eq!(read(&mut r), None);
    }

    #[test]
    fn payloads_of_every_length_round_trip() {
        let (ring, mut w) = Ring::new(small());
        let mut r = ring.subscribe().unwrap();
        for len in 0..=64usize {
            let payload: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
            w.publish(true, len as u64, &payload).unwrap();
            let (meta, bytes) = read(&mut r).unwrap();
            assert_eq!(meta.len, len);
            assert_eq!(bytes, payload);
        }
        assert_eq!(
            w.publish(true, 0, &[0; 65]),
            Err(PublishError::TooLarge { len: 65, max: 64 })
        );
    }

    #[test]
    fn appends_after_what_the_caller_wrote() {
        let (ring, mut w) = Ring::new(small());
        let mut r = ring.subscribe().unwrap();
        w.publish(true, 0, b"payload!x").unwrap();
        let mut out = b"HEADER".to_vec();
        assert!(matches!(r.try_read(&mut out), ReadOutcome::Frame(_)));
        assert_eq!(out, b"HEADERpayload!x");
    }

    #[test]
    fn a_patient_readers_lag_waits_for_the_patience_or_anyone_elses_keyframe() {
        let (ring, mut w) = Ring::new(small());
        w.set_keyframe_patience(Duration::from_millis(300));
        let mut spectator = ring.subscribe().unwrap();
        spectator.set_patient(true);
        // A new reader is never kept waiting for its first keyframe.
        assert!(w.take_keyframe_request());
        // Taken before the writer's own instant, so never later than it.
        let keyframe_at = Instant::now();
        w.publish(true, 0, b"k0").unwrap();
        assert_eq!(read(&mut spectator).unwrap().1, b"k0");
        let mut n = 0;
        let mut lag_behind = |w: &mut RingWriter, spectator: &mut RingReader| {
            for _ in 0..6 {
                n += 1;
                w.publish(false, n, b"d").unwrap();
            }
            assert_eq!(read(spectator), None, "lagged and waiting for a keyframe");
        };
        lag_behind(&mut w, &mut spectator);
        assert_eq!(spectator.lags(), 1);
        // Within the patience after the last keyframe: no keyframe for it yet, and the request
        // stays until the patience is over, then is granted once.
        assert!(!w.take_keyframe_request());
        while keyframe_at.elapsed() < Duration::from_millis(300) {
            assert!(!w.take_keyframe_request(), "granted before its time");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(w.take_keyframe_request());
        assert!(!w.take_keyframe_request());
        w.publish(true, 100, b"k100").unwrap();
        assert_eq!(read(&mut spectator).unwrap().1, b"k100");

        // A keyframe someone else asks for at once serves the patient reader too, and clears
        // its request.
        lag_behind(&mut w, &mut spectator);
        ring.request_keyframe();
        assert!(w.take_keyframe_request());
        w.publish(true, 200, b"k200").unwrap();
        assert_eq!(read(&mut spectator).unwrap().1, b"k200");
        std::thread::sleep(Duration::from_millis(350));
        assert!(!w.take_keyframe_request(), "nothing left to grant");

        // An impatient reader's lag asks at once; a patient decoder restart waits like a lag.
        spectator.set_patient(false);
        lag_behind(&mut w, &mut spectator);
        assert!(w.take_keyframe_request());
        w.publish(true, 300, b"k300").unwrap();
        ring.request_keyframe_patiently();
        assert!(!w.take_keyframe_request());
        std::thread::sleep(Duration::from_millis(350));
        assert!(w.take_keyframe_request());
    }

    #[test]
    fn stalled_reader_skips_to_next_keyframe_and_writer_never_waits() {
        let (ring, mut w) = Ring::new(small());
        let mut slow = ring.subscribe().unwrap();
        let mut fast = ring.subscribe().unwrap();
        w.take_keyframe_request();
        w.publish(true, 0, b"k0").unwrap();
        assert_eq!(read(&mut slow).unwrap().1, b"k0");
        assert_eq!(read(&mut fast).unwrap().1, b"k0");
        for n in 1..=20u64 {
            w.publish(false, n, format!("d{n}").as_bytes()).unwrap();
            assert_eq!(read(&mut fast).unwrap().1, format!("d{n}").as_bytes());
        }
        // The slow reader is 20 frames behind a 4-slot ring: it lags, asks for a keyframe.
        assert_eq!(read(&mut slow), None);
        assert!(w.take_keyframe_request());
        assert_eq!(ring.lagged(), 1);
        assert_eq!(
            (slow.lags(), fast.lags()),
            (1, 0),
            "each reader knows its own lags"
        );
        // A lag alone does not count for the bitrate: the viewer's task says whether it does.
        assert_eq!(w.viewer_troubles(), 0);
        ring.report_trouble(None);
        assert_eq!((w.viewer_troubles(), w.trouble_rate()), (1, None));
        ring.report_trouble(Some(900_000));
        ring.report_trouble(Some(600_000));
        ring.report_trouble(Some(800_000));
        assert_eq!(
            (w.viewer_troubles(), w.trouble_rate()),
            (4, Some(600_000)),
            "the least"
        );
        w.clear_trouble_rate();
        assert_eq!(w.trouble_rate(), None);
        w.publish(false, 21, b"d21").unwrap();
        w.publish(true, 22, b"k22").unwrap();
        assert_eq!(read(&mut slow).unwrap().1, b"k22");
        assert_eq!(read(&mut fast).unwrap().1, b"d21");
        assert_eq!(read(&mut fast).unwrap().1, b"k22");
    }

    #[test]
    fn reader_places_are_reused_and_bounded() {
        let (ring, _w) = Ring::new(small());
        let readers: Vec<_> = (0..8).map(|_| ring.subscribe().unwrap()).collect();
        assert_eq!(ring.readers(), 8);
        assert_eq!(ring.subscribe().unwrap_err(), SubscribeError::Full(8));
        drop(readers);
        assert_eq!(ring.readers(), 0);
        let again = ring.subscribe().unwrap();
        assert_eq!(
            again.place, 0,
            "a reader that reconnects takes a freed place"
        );
    }

    #[test]
    fn closed_after_the_writer_goes() {
        let (ring, mut w) = Ring::new(small());
        let mut r = ring.subscribe().unwrap();
        w.publish(true, 0, b"k").unwrap();
        drop(w);
        assert!(read(&mut r).is_some());
        assert_eq!(r.try_read(&mut Vec::new()), ReadOutcome::Closed);
    }

    #[test]
    fn closed_only_once_the_last_frame_is_read() {
        // The writer publishes its last frame and goes while the reader looks: the reader must
        // get that frame before it is told the stream has ended.
        for round in 0..40_000 {
            let (ring, mut w) = Ring::new(small());
            let mut r = ring.subscribe().unwrap();
            let writer = std::thread::spawn(move || {
                w.publish(true, 0, b"last").unwrap();
            });
            let mut out = Vec::new();
            let mut frames = 0;
            loop {
                match r.try_read(&mut out) {
                    ReadOutcome::Frame(_) => frames += 1,
                    ReadOutcome::Empty => std::hint::spin_loop(),
                    ReadOutcome::Closed => break,
                }
            }
            writer.join().unwrap();
            assert_eq!(frames, 1, "round {round}: the last frame was lost");
        }
    }

    #[test]
    fn concurrent_readers_see_intact_frames_in_order() {
        let (ring, mut w) = Ring::new(RingConfig {
            slots: 8,
            slot_bytes: 4096,
            max_readers: 16,
        });
        let frames = 5_000u64;
        let readers: Vec<_> = (0..4)
            .map(|i| {
                let mut r = ring.subscribe().unwrap();
                std::thread::spawn(move || {
                    let (mut got, mut last) = (0u64, None::<u64>);
                    let mut out = Vec::new();
                    loop {
                        out.clear();
                        match r.read_blocking(&mut out, Duration::from_secs(5)) {
                            ReadOutcome::Frame(m) => {
                                // Payload: seq repeated, length depends on seq.
                                let want = payload(m.seq);
                                assert_eq!(out, want, "torn or wrong frame {}", m.seq);
                                assert!(last.is_none_or(|l| m.seq > l), "out of order");
                                last = Some(m.seq);
                                got += 1;
                                if i == 0 {
                                    // One reader is slow now and then: it must lag, not block.
                                    if m.seq % 512 == 0 {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                }
                            }
                            ReadOutcome::Closed => return got,
                            ReadOutcome::Empty => panic!("no frame within 5 s"),
                        }
                    }
                })
            })
            .collect();
        fn payload(seq: u64) -> Vec<u8> {
            let n = 1 + (seq % 500) as usize;
            seq.to_le_bytes().iter().copied().cycle().take(n).collect()
        }
        for seq in 0..frames {
            // Every frame a keyframe, so a lagging reader resumes at once.
            w.publish(true, seq, &payload(seq)).unwrap();
            // About 20 kHz: fast enough to lap a stalled reader, slow enough for the others.
            std::thread::sleep(Duration::from_micros(50));
        }
        drop(w);
        let counts: Vec<u64> = readers.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }
}
