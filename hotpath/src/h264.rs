//! Just enough H.264 Annex-B parsing to check and describe what the encoder produced.

/// NAL unit types we care about.
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

/// Iterates over the NAL units of an Annex-B byte stream (start codes removed).
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        let start = find_start_code(rest)?;
        let body = &rest[start..];
        let end = find_start_code_at(body).unwrap_or(body.len());
        let nal = &body[..end];
        rest = &body[end..];
        // Trailing zero bytes belong to the next start code, not to this unit.
        let trimmed = nal
            .iter()
            .rposition(|&b| b != 0)
            .map_or(&nal[..0], |i| &nal[..=i]);
        Some(trimmed)
    })
}

/// Index just past the first start code (`00 00 01` or `00 00 00 01`).
fn find_start_code(s: &[u8]) -> Option<usize> {
    s.windows(3).position(|w| w == [0, 0, 1]).map(|i| i + 3)
}

/// Index of the first start code's first zero byte.
fn find_start_code_at(s: &[u8]) -> Option<usize> {
    let i = s.windows(3).position(|w| w == [0, 0, 1])?;
    Some(if i > 0 && s[i - 1] == 0 { i - 1 } else { i })
}

/// The type of a NAL unit (low 5 bits of its first byte).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// What an access unit holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessUnitInfo {
    pub idr: bool,
    pub sps: bool,
    pub pps: bool,
    pub slices: usize,
}

/// Summarises the NAL units of one access unit.
pub fn inspect(au: &[u8]) -> AccessUnitInfo {
    let mut info = AccessUnitInfo::default();
    for nal in nal_units(au) {
        match nal_type(nal) {
            Some(NAL_IDR) => {
                info.idr = true;
                info.slices += 1;
            }
            Some(NAL_SLICE) => info.slices += 1,
            Some(NAL_SPS) => info.sps = true,
            Some(NAL_PPS) => info.pps = true,
            _ => {}
        }
    }
    info
}

/// The WebCodecs / RFC 6381 codec string (`avc1.PPCCLL`) from the SPS in an access unit.
pub fn codec_string(au: &[u8]) -> Option<String> {
    let sps = nal_units(au).find(|n| nal_type(n) == Some(NAL_SPS))?;
    let &[_, profile, constraints, level, ..] = sps else {
        return None;
    };
    Some(format!("avc1.{profile:02X}{constraints:02X}{level:02X}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_annex_b() {
        let au = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x20, 0xaa, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88,
            0x84, 0,
        ];
        let units: Vec<&[u8]> = nal_units(&au).collect();
        assert_eq!(
            units,
            vec![
                &[0x67, 0x42, 0xc0, 0x20, 0xaa][..],
                &[0x68, 0xce],
                &[0x65, 0x88, 0x84]
            ]
        );
        assert_eq!(
            inspect(&au),
            AccessUnitInfo {
                idr: true,
                sps: true,
                pps: true,
                slices: 1
            }
        );
        assert_eq!(codec_string(&au).as_deref(), Some("avc1.42C020"));
    }

    #[test]
    fn garbage_is_harmless() {
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(inspect(&[0, 0, 1]), AccessUnitInfo::default());
        assert_eq!(codec_string(&[0, 0, 1, 0x67, 0x42]), None);
    }
}
