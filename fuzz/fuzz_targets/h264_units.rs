//! Any bytes as an access unit out of the encoder, split into NAL units to find keyframes and
//! the codec string a viewer is told: every unit is a part of the input with no start code in
//! it, the units written again behind 4-byte start codes split into the same units and describe
//! the same access unit, and nothing panics.
#![no_main]

use playpod_hotpath::h264;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = data.as_ptr_range();
    let units: Vec<&[u8]> = h264::nal_units(data).collect();
    for unit in &units {
        let range = unit.as_ptr_range();
        assert!(input.start <= range.start && range.end <= input.end);
        assert!(!unit.windows(3).any(|w| w == [0, 0, 1]), "{unit:02x?}");
        assert!(unit.last() != Some(&0), "{unit:02x?}");
    }
    let mut again = Vec::with_capacity(data.len() + 4 * units.len());
    for unit in &units {
        again.extend_from_slice(&[0, 0, 0, 1]);
        again.extend_from_slice(unit);
    }
    let split_again: Vec<&[u8]> = h264::nal_units(&again).collect();
    assert_eq!(units, split_again);
    assert_eq!(h264::inspect(data), h264::inspect(&again));
    let codec = h264::codec_string(data);
    assert_eq!(codec, h264::codec_string(&again));
    if let Some(codec) = codec {
        assert!(codec.len() == 11 && codec.starts_with("avc1."), "{codec}");
    }
});
