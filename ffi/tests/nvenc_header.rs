//! The NVENC constants written by hand in `ffi/src/nvenc/mod.rs` (structure versions and GUIDs,
//! which bindgen cannot carry over) checked against the vendored header by the C compiler.

use std::process::Command;

use playpod_ffi::nvenc::{self, sys};

const PROBE: &str = r#"
#include <stdio.h>
#include "nvEncodeAPI.h"
#define V(name) printf("%s %u\n", #name, (unsigned)(name));
#define G(name) printf("%s %08x-%04x-%04x-%02x%02x%02x%02x%02x%02x%02x%02x\n", #name, \
    name.Data1, name.Data2, name.Data3, name.Data4[0], name.Data4[1], name.Data4[2], \
    name.Data4[3], name.Data4[4], name.Data4[5], name.Data4[6], name.Data4[7]);
int main(void) {
    V(NVENCAPI_VERSION)
    V(NV_ENCODE_API_FUNCTION_LIST_VER)
    V(NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER)
    V(NV_ENC_PRESET_CONFIG_VER)
    V(NV_ENC_CONFIG_VER)
    V(NV_ENC_RC_PARAMS_VER)
    V(NV_ENC_INITIALIZE_PARAMS_VER)
    V(NV_ENC_REGISTER_RESOURCE_VER)
    V(NV_ENC_MAP_INPUT_RESOURCE_VER)
    V(NV_ENC_CREATE_BITSTREAM_BUFFER_VER)
    V(NV_ENC_PIC_PARAMS_VER)
    V(NV_ENC_LOCK_BITSTREAM_VER)
    V(NV_ENC_RECONFIGURE_PARAMS_VER)
    V(NVENC_INFINITE_GOPLENGTH)
    G(NV_ENC_CODEC_H264_GUID)
    G(NV_ENC_H264_PROFILE_BASELINE_GUID)
    G(NV_ENC_PRESET_P1_GUID)
    G(NV_ENC_PRESET_P2_GUID)
    G(NV_ENC_PRESET_P3_GUID)
    G(NV_ENC_PRESET_P4_GUID)
    return 0;
}
"#;

fn guid(g: &sys::GUID) -> String {
    let d = g.Data4;
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

#[test]
fn hand_written_constants_match_the_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&src, PROBE).expect("write probe");
    let header_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/nvenc");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D__linux__", "-I", header_dir, "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the C compiler `{cc}`: {err}"));
    assert!(status.success(), "the header probe did not compile");
    let out = Command::new(&exe).output().expect("run probe");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let from_header = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
            .to_owned()
    };
    let ours = [
        ("NVENCAPI_VERSION", sys::NVENCAPI_VERSION),
        (
            "NV_ENCODE_API_FUNCTION_LIST_VER",
            nvenc::NV_ENCODE_API_FUNCTION_LIST_VER,
        ),
        (
            "NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER",
            nvenc::NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS_VER,
        ),
        ("NV_ENC_PRESET_CONFIG_VER", nvenc::NV_ENC_PRESET_CONFIG_VER),
        ("NV_ENC_CONFIG_VER", nvenc::NV_ENC_CONFIG_VER),
        ("NV_ENC_RC_PARAMS_VER", nvenc::NV_ENC_RC_PARAMS_VER),
        (
            "NV_ENC_INITIALIZE_PARAMS_VER",
            nvenc::NV_ENC_INITIALIZE_PARAMS_VER,
        ),
        (
            "NV_ENC_REGISTER_RESOURCE_VER",
            nvenc::NV_ENC_REGISTER_RESOURCE_VER,
        ),
        (
            "NV_ENC_MAP_INPUT_RESOURCE_VER",
            nvenc::NV_ENC_MAP_INPUT_RESOURCE_VER,
        ),
        (
            "NV_ENC_CREATE_BITSTREAM_BUFFER_VER",
            nvenc::NV_ENC_CREATE_BITSTREAM_BUFFER_VER,
        ),
        ("NV_ENC_PIC_PARAMS_VER", nvenc::NV_ENC_PIC_PARAMS_VER),
        (
            "NV_ENC_LOCK_BITSTREAM_VER",
            nvenc::NV_ENC_LOCK_BITSTREAM_VER,
        ),
        (
            "NV_ENC_RECONFIGURE_PARAMS_VER",
            nvenc::NV_ENC_RECONFIGURE_PARAMS_VER,
        ),
        ("NVENC_INFINITE_GOPLENGTH", nvenc::INFINITE_GOP),
    ];
    for (name, value) in ours {
        assert_eq!(from_header(name), value.to_string(), "{name}");
    }
    let guids = [
        ("NV_ENC_CODEC_H264_GUID", nvenc::CODEC_H264),
        (
            "NV_ENC_H264_PROFILE_BASELINE_GUID",
            nvenc::H264_PROFILE_BASELINE,
        ),
        ("NV_ENC_PRESET_P1_GUID", nvenc::PRESET_P1),
        ("NV_ENC_PRESET_P2_GUID", nvenc::PRESET_P2),
        ("NV_ENC_PRESET_P3_GUID", nvenc::PRESET_P3),
        ("NV_ENC_PRESET_P4_GUID", nvenc::PRESET_P4),
    ];
    for (name, value) in guids {
        assert_eq!(from_header(name), guid(&value), "{name}");
    }
}
