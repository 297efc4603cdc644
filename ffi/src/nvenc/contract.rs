//! The NVENC layer's side of the driver contract, on a machine without NVENC.
//!
//! `ffi/nvenc/fake/fake_nvenc.c` stands in for `libnvidia-encode.so.1`: compiled from the same
//! vendored header, it checks what the driver checks of its caller (structure versions, the
//! fields we set, read back through the C layout, handles and the order of calls) and logs
//! every call. These tests hold the safe layer to that: the version negotiation, a session set
//! up for low latency, map -> encode -> lock -> unmap -> unlock, everything released in order
//! whatever is dropped first, and failures named by their call with nothing left mapped.
//! They say nothing of the hardware: that is `tests/tests/gpu.rs` on a GPU with NVENC.

use std::ffi::{CString, c_char};
use std::path::PathBuf;
use std::process::Command;

use super::*;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/nvenc/fake/fake_nvenc.c");
const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/nvenc");

/// 12.1 as `NvEncodeAPIGetMaxSupportedVersion` packs it.
const PACKED_12_1: u32 = (12 << 4) | 1;

/// One copy of the stand-in library (its own path, so its own state), reset for a test.
struct Fake {
    path: PathBuf,
    library: libloading::Library,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn new(max_version: u32, h264: bool) -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(LIBRARY);
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let status = Command::new(&cc)
            .args([
                "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-I", HEADER_DIR,
            ])
            .arg("-o")
            .arg(&path)
            .arg(SOURCE)
            .status()
            .unwrap_or_else(|err| panic!("cannot run the C compiler `{cc}`: {err}"));
        assert!(
            status.success(),
            "the stand-in NVENC library did not compile"
        );
        // SAFETY: our own stand-in library; its initialisers are C's defaults.
        let library = unsafe { libloading::Library::new(&path) }.expect("load the stand-in");
        let fake = Fake {
            path,
            library,
            _dir: dir,
        };
        // SAFETY: `fake_nvenc_reset(uint32_t, int)` in fake_nvenc.c.
        unsafe {
            let reset: libloading::Symbol<'_, unsafe extern "C" fn(u32, i32)> =
                fake.library.get(b"fake_nvenc_reset\0").unwrap();
            reset(max_version, i32::from(h264));
        }
        fake
    }

    fn load(&self) -> Result<Arc<Nvenc>, NvencError> {
        Nvenc::load_from(self.path.as_os_str())
    }

    /// The calls so far, a line each.
    fn log(&self) -> Vec<String> {
        // SAFETY: `const char *fake_nvenc_log(void)` returns its NUL-terminated log buffer,
        // copied at once.
        let text = unsafe {
            let log: libloading::Symbol<'_, unsafe extern "C" fn() -> *const c_char> =
                self.library.get(b"fake_nvenc_log\0").unwrap();
            CStr::from_ptr(log()).to_string_lossy().into_owned()
        };
        text.lines().map(str::to_owned).collect()
    }

    /// The calls logged since `from`, by name only.
    fn calls_since(&self, from: usize) -> Vec<String> {
        self.log()[from..]
            .iter()
            .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// The next call of `call` fails with `status`.
    fn fail_next(&self, call: &str, status: sys::NVENCSTATUS) {
        let call = CString::new(call).unwrap();
        // SAFETY: `fake_nvenc_fail(const char *, NVENCSTATUS)`; it copies the name.
        unsafe {
            let fail: libloading::Symbol<'_, unsafe extern "C" fn(*const c_char, u32)> =
                self.library.get(b"fake_nvenc_fail\0").unwrap();
            fail(call.as_ptr(), status.0);
        }
    }

    /// Sessions, registrations and buffers the stand-in still holds.
    fn live(&self) -> i32 {
        // SAFETY: `int fake_nvenc_live(void)`.
        unsafe {
            let live: libloading::Symbol<'_, unsafe extern "C" fn() -> i32> =
                self.library.get(b"fake_nvenc_live\0").unwrap();
            live()
        }
    }
}

const SETTINGS: H264Settings = H264Settings {
    width: 768,
    height: 768,
    fps: 60,
    bitrate_bps: 2_500_000,
    preset: 2,
};

/// A CUDA context as far as the stand-in is concerned: any non-null pointer.
fn context() -> *mut c_void {
    NonNull::<u8>::dangling().as_ptr().cast()
}

fn open(nvenc: &Arc<Nvenc>, settings: H264Settings) -> Result<Encoder, NvencError> {
    Encoder::open_on(nvenc, context(), Arc::new(()), settings)
}

fn surface(address: u64) -> Surface {
    Surface {
        address,
        width: 768,
        height: 768,
        pitch: 1024,
    }
}

#[test]
fn the_driver_version_is_negotiated() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().expect("a 12.1 driver");
    assert_eq!(nvenc.driver_version(), API_VERSION);
    assert_eq!(
        fake.calls_since(0),
        [
            "NvEncodeAPIGetMaxSupportedVersion",
            "NvEncodeAPICreateInstance"
        ]
    );

    // A newer driver takes our structures as they are.
    let newer = Fake::new(13 << 4, true);
    assert_eq!(
        newer.load().expect("a 13.0 driver").driver_version(),
        ApiVersion {
            major: 13,
            minor: 0
        }
    );

    // An older one would refuse them: stop before asking for its functions.
    let older = Fake::new((11 << 4) | 1, true);
    let err = older.load().expect_err("an 11.1 driver");
    assert_eq!(
        err,
        NvencError::DriverTooOld {
            driver: ApiVersion {
                major: 11,
                minor: 1
            }
        }
    );
    assert!(err.to_string().contains("update the driver"), "{err}");
    assert_eq!(older.calls_since(0), ["NvEncodeAPIGetMaxSupportedVersion"]);
}

#[test]
fn a_session_is_set_up_for_low_latency() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let encoder = open(&nvenc, SETTINGS).expect("open a session");
    let log = fake.log();
    assert_eq!(log[2], "nvEncOpenEncodeSessionEx cuda");
    // P2 with ultra-low-latency tuning (3), from the H.264 presets.
    assert!(log.contains(&"nvEncGetEncodePresetConfigEx h264 P2 tuning=3".to_owned()));
    // The preset's finite GOP, VBR and slices are overridden: baseline, infinite GOP and IDR
    // period, no B-frames, CBR at the bitrate with a one-frame VBV, zero reorder delay, SPS
    // and PPS repeated, one slice, BT.601 limited range.
    let init = log
        .iter()
        .find(|line| line.starts_with("nvEncInitializeEncoder"))
        .expect("initialised");
    assert_eq!(
        init,
        "nvEncInitializeEncoder 768x768 dar=768x768 max=768x768 fps=60/1 P2 tuning=3 ptd=1 \
         async=0 profile=baseline gop=4294967295 idr=4294967295 p=1 rc=2 avg=2500000 \
         max=2500000 vbv=41666 delay=41666 zeroreorder=1 repeatspspps=1 slice=0/0 \
         vui=1/0/1/6/6/6"
    );
    drop(encoder);
    assert_eq!(fake.log().last().unwrap(), "nvEncDestroyEncoder");
    assert_eq!(fake.live(), 0);

    for (preset, name) in [(0, "P1"), (1, "P1"), (3, "P3"), (4, "P4"), (9, "P4")] {
        let fake = Fake::new(PACKED_12_1, true);
        let nvenc = fake.load().unwrap();
        let _encoder = open(&nvenc, H264Settings { preset, ..SETTINGS }).unwrap();
        let wanted = format!("nvEncGetEncodePresetConfigEx h264 {name} tuning=3");
        assert!(fake.log().contains(&wanted), "preset {preset}");
    }
}

#[test]
fn encoding_maps_encodes_locks_unmaps_and_unlocks() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let mut encoder = open(&nvenc, SETTINGS).unwrap();
    let picture = surface(0x7f00_0000_0000);
    let input = encoder.register_surface(picture).expect("register");
    let mut output = encoder.bitstream().expect("bitstream");
    assert!(
        fake.log().contains(
            &"nvEncRegisterResource 768x768 pitch=1024 address=0x7f0000000000".to_owned()
        )
    );

    let from = fake.log().len();
    let au = encoder
        .encode_surface(picture, &input, &mut output, true)
        .expect("encode an IDR");
    assert!(au.keyframe());
    // SPS, PPS and an IDR slice, as the stand-in writes them.
    let nal_types: Vec<u8> = au
        .bytes()
        .windows(5)
        .filter(|w| w[..4] == [0, 0, 0, 1])
        .map(|w| w[4] & 0x1f)
        .collect();
    assert_eq!(nal_types, [7, 8, 5]);
    assert_eq!(
        fake.calls_since(from),
        [
            "nvEncMapInputResource",
            "nvEncEncodePicture",
            "nvEncLockBitstream",
            "nvEncUnmapInputResource"
        ]
    );
    assert!(
        fake.log()
            .contains(&"nvEncEncodePicture ts=0 idr=1 spspps=1".to_owned())
    );
    drop(au);
    assert_eq!(fake.log().last().unwrap(), "nvEncUnlockBitstream");

    for ts in 1..=3 {
        let au = encoder
            .encode_surface(picture, &input, &mut output, false)
            .unwrap();
        assert!(!au.keyframe());
        assert_eq!(au.bytes(), [0, 0, 0, 1, 0x41, 0x80]);
        let line = format!("nvEncEncodePicture ts={ts} idr=0 spspps=0");
        assert!(fake.log().contains(&line), "{line}");
    }
    assert!(
        !fake.log().iter().any(|line| line.contains("REFUSED")),
        "{:#?}",
        fake.log()
    );
}

#[test]
fn everything_is_released_in_order_whatever_is_dropped_first() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let encoder = open(&nvenc, SETTINGS).unwrap();
    let input = encoder.register_surface(surface(0x1000)).unwrap();
    let output = encoder.bitstream().unwrap();
    let from = fake.log().len();
    // The encoder goes first; its registration and buffer keep the session alive.
    drop(encoder);
    drop(nvenc);
    assert!(fake.calls_since(from).is_empty());
    drop(input);
    drop(output);
    assert_eq!(
        fake.calls_since(from),
        [
            "nvEncUnregisterResource",
            "nvEncDestroyBitstreamBuffer",
            "nvEncDestroyEncoder"
        ]
    );
    assert_eq!(fake.live(), 0);
    assert!(
        !fake
            .log()
            .iter()
            .any(|l| l.contains("REFUSED") || l.contains("LEAKED"))
    );
}

#[test]
fn failures_name_their_call_and_leave_nothing_mapped() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let mut encoder = open(&nvenc, SETTINGS).unwrap();
    let picture = surface(0x2000);
    let input = encoder.register_surface(picture).unwrap();
    let mut output = encoder.bitstream().unwrap();

    let busy = sys::NVENCSTATUS::NV_ENC_ERR_ENCODER_BUSY;
    for call in ["nvEncEncodePicture", "nvEncLockBitstream"] {
        fake.fail_next(call, busy);
        let from = fake.log().len();
        let err = encoder
            .encode_surface(picture, &input, &mut output, false)
            .expect_err("a planted failure");
        assert_eq!(
            err,
            NvencError::Call {
                call,
                status: NvencStatus(busy.0)
            }
        );
        assert_eq!(
            err.to_string(),
            format!("{call} failed: NV_ENC_ERR_ENCODER_BUSY (18)")
        );
        assert_eq!(encoder.last_error(), format!("{call}: planted failure"));
        // The input is unmapped after the failure, so the next frame can map it.
        assert_eq!(
            fake.calls_since(from).last().unwrap(),
            "nvEncUnmapInputResource"
        );
        let au = encoder
            .encode_surface(picture, &input, &mut output, true)
            .expect("the next frame encodes");
        assert!(au.keyframe());
    }
    drop((input, output, encoder));
    assert_eq!(fake.live(), 0);

    // A session whose set-up fails is destroyed.
    fake.fail_next(
        "nvEncInitializeEncoder",
        sys::NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM,
    );
    let err = open(&nvenc, SETTINGS).expect_err("initialisation fails");
    assert!(
        err.to_string()
            .starts_with("nvEncInitializeEncoder failed: NV_ENC_ERR_UNSUPPORTED_PARAM"),
        "{err}"
    );
    assert_eq!(fake.log().last().unwrap(), "nvEncDestroyEncoder");
    assert_eq!(fake.live(), 0);
}

#[test]
fn a_gpu_without_h264_is_refused() {
    let fake = Fake::new(PACKED_12_1, false);
    let nvenc = fake.load().unwrap();
    let err = open(&nvenc, SETTINGS).expect_err("no H.264");
    assert_eq!(err, NvencError::NoH264);
    assert_eq!(fake.live(), 0);
    assert!(
        !fake
            .calls_since(0)
            .contains(&"nvEncInitializeEncoder".to_owned())
    );
}

#[test]
fn a_registration_encodes_only_its_own_picture_on_its_own_session() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let mut encoder = open(&nvenc, SETTINGS).unwrap();
    let other = open(&nvenc, SETTINGS).unwrap();
    let picture = surface(0x3000);
    let input = encoder.register_surface(picture).unwrap();
    let mut output = encoder.bitstream().unwrap();
    let mut foreign_output = other.bitstream().unwrap();
    let foreign_input = other.register_surface(picture).unwrap();
    let from = fake.log().len();
    for wrong in [
        surface(0x4000),
        Surface {
            pitch: 768,
            ..picture
        },
    ] {
        let err = encoder
            .encode_surface(wrong, &input, &mut output, false)
            .expect_err("another picture");
        assert_eq!(err, NvencError::WrongInput);
    }
    let err = encoder
        .encode_surface(picture, &input, &mut foreign_output, false)
        .expect_err("another session's buffer");
    assert_eq!(err, NvencError::WrongInput);
    let err = encoder
        .encode_surface(picture, &foreign_input, &mut output, false)
        .expect_err("another session's registration");
    assert_eq!(err, NvencError::WrongInput);
    assert!(
        fake.calls_since(from).is_empty(),
        "nothing reached the driver"
    );
}

#[test]
fn a_new_bitrate_reconfigures_the_rate_and_nothing_else() {
    let fake = Fake::new(PACKED_12_1, true);
    let nvenc = fake.load().unwrap();
    let mut encoder = open(&nvenc, SETTINGS).unwrap();
    let picture = surface(0x7f00_0000_0000);
    let input = encoder.register_surface(picture).unwrap();
    let mut output = encoder.bitstream().unwrap();
    drop(
        encoder
            .encode_surface(picture, &input, &mut output, true)
            .unwrap(),
    );
    assert_eq!(encoder.bitrate_bps(), 2_500_000);

    // CBR at the new rate, the VBV still one frame; no reset of the rate control, no IDR.
    let from = fake.log().len();
    encoder.set_bitrate(1_000_000).expect("reconfigure");
    assert_eq!(
        fake.log()[from..],
        ["nvEncReconfigureEncoder avg=1000000 max=1000000 vbv=16666 delay=16666 reset=0 idr=0"]
    );
    assert_eq!(encoder.bitrate_bps(), 1_000_000);
    let au = encoder
        .encode_surface(picture, &input, &mut output, false)
        .unwrap();
    assert!(!au.keyframe(), "a new rate needs no keyframe");
    drop(au);

    // A refusal leaves the session at the rate it had, and the next change starts from there.
    let unsupported = sys::NVENCSTATUS::NV_ENC_ERR_UNSUPPORTED_PARAM;
    fake.fail_next("nvEncReconfigureEncoder", unsupported);
    let err = encoder.set_bitrate(500_000).expect_err("a planted failure");
    assert_eq!(
        err,
        NvencError::Call {
            call: "nvEncReconfigureEncoder",
            status: NvencStatus(unsupported.0),
        }
    );
    assert_eq!(encoder.bitrate_bps(), 1_000_000);
    assert_eq!(encoder.config.rcParams.averageBitRate, 1_000_000);
    let err = encoder.set_bitrate(0).expect_err("no bitrate");
    assert!(encoder.last_error().ends_with("bitrate 0"), "{err}");
    assert_eq!(encoder.bitrate_bps(), 1_000_000);
    encoder.set_bitrate(3_000_000).expect("back up");
    assert!(
        fake.log()
            .last()
            .unwrap()
            .starts_with("nvEncReconfigureEncoder avg=3000000 max=3000000"),
        "{:?}",
        fake.log().last()
    );

    // The stand-in holds the rest of the configuration to what the session was set up with:
    // a reconfiguration that also changed the GOP would be refused.
    encoder.config.gopLength = 30;
    let err = encoder.set_bitrate(2_000_000).expect_err("a changed GOP");
    assert_eq!(
        err,
        NvencError::Call {
            call: "nvEncReconfigureEncoder",
            status: NvencStatus(unsupported.0),
        }
    );
    assert_eq!(
        encoder.last_error(),
        "nvEncReconfigureEncoder: GOP structure"
    );
}
