//! The file format: an 8-byte magic, then frames of a little-endian `u32`
//! length, a little-endian `u32` CRC-32 (IEEE) of the payload, and the
//! payload (a record's JSON). A frame is whole or it is not there: a crash
//! mid-write leaves a torn tail, which the reader tells from a corrupted
//! frame by where it is (at the end of the file) and says so.

/// The first bytes of every audit file.
pub const MAGIC: &[u8; 8] = b"TPAUDIT\x01";

/// A frame's header: length and CRC.
pub const HEADER: usize = 8;

/// The largest payload a frame may hold; a length above it is corruption.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Appends one frame holding `payload` to `out`; a payload past
/// [`MAX_PAYLOAD`] (or empty) is not framed (the writer keeps records
/// below it) and `false` says so.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) -> bool {
    if payload.is_empty() || payload.len() > MAX_PAYLOAD {
        return false;
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    true
}

/// What the bytes at an offset hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole frame whose CRC checks: its payload, and the frame's length.
    Whole(&'a [u8], usize),
    /// The bytes end before the frame does: a torn tail if nothing follows.
    Short,
    /// A length of 0 or above [`MAX_PAYLOAD`], or a CRC that does not
    /// check.
    Corrupt,
}

/// Reads the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Frame<'_> {
    if bytes.len() < HEADER {
        return Frame::Short;
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    // No frame is empty: zeros (an extent a crash left unwritten) are not
    // a frame, though their CRC would check.
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Corrupt;
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len) else {
        return Frame::Short;
    };
    if crc32fast::hash(payload) != crc {
        return Frame::Corrupt;
    }
    Frame::Whole(payload, HEADER + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_any_flipped_byte_is_caught() {
        let mut buf = Vec::new();
        assert!(encode(br#"{"a":1}"#, &mut buf));
        assert!(!encode(b"", &mut buf));
        assert_eq!(decode(&[0; 16]), Frame::Corrupt);
        assert_eq!(decode(&buf), Frame::Whole(br#"{"a":1}"#, buf.len()));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            assert_ne!(
                decode(&bad),
                Frame::Whole(br#"{"a":1}"#, buf.len()),
                "byte {i} flipped"
            );
        }
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Frame::Short, "cut at {cut}");
        }
    }
}
