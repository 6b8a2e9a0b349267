//! UTF-16 text as both formats store it: VHDX creator, locator keys and values and VHD
//! W2ru/W2ku locators are little-endian, the VHD ParentUnicodeName is big-endian. Decoding
//! stops at the first NUL (fields are NUL-padded) and replaces unpaired surrogates, so any
//! bytes from a file decode without failing.

fn decode(units: impl Iterator<Item = u16>) -> String {
    let units: Vec<u16> = units.take_while(|&u| u != 0).collect();
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Decodes UTF-16LE `bytes` (an odd last byte is ignored).
pub fn decode_le(bytes: &[u8]) -> String {
    decode(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]])),
    )
}

/// Decodes UTF-16BE `bytes` (an odd last byte is ignored).
pub fn decode_be(bytes: &[u8]) -> String {
    decode(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]])),
    )
}

/// Encodes `s` as UTF-16LE, without a terminator.
pub fn encode_le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_padding_and_bad_surrogates() {
        let mut b = encode_le(r".\parent.vhdx");
        b.extend_from_slice(&[0, 0, 0x41, 0]);
        assert_eq!(decode_le(&b), r".\parent.vhdx");
        assert_eq!(
            decode_be(&[0, 0x61, 0xD8, 0x00, 0, 0x62, 0, 0]),
            "a\u{FFFD}b"
        );
        assert_eq!(decode_le(&[0x61]), "");
    }
}
