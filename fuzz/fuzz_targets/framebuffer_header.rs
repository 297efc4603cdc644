//! Any bytes as the framebuffer file Xvfb writes in the game's container, which the streamer
//! maps and reads in place: its header is refused, or the pixels it describes lie inside the
//! bytes with rows at least 4 x width apart; nothing panics.
#![no_main]

use playpod_hotpath::xwd;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(layout) = xwd::parse(data) else {
        return;
    };
    assert!((1..=16384).contains(&layout.width), "{layout:?}");
    assert!((1..=16384).contains(&layout.height), "{layout:?}");
    assert!(layout.stride >= 4 * layout.width as usize, "{layout:?}");
    assert!(layout.pixel_offset >= 100, "{layout:?}");
    let end = layout.pixel_offset + layout.pixel_bytes();
    assert!(end <= data.len(), "{layout:?} ends at {end} of {}", data.len());
});
