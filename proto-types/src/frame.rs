//! Frames: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! The length is checked against the caller's limit before a single payload byte is
//! buffered, so a hostile "100 MB" prefix costs the node four bytes, not 100 MB.

use serde::{de::DeserializeOwned, Serialize};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The hard ceiling on a frame's payload, whatever a node is configured with.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Why bytes could not be turned into a frame, or a frame into bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix (or an encoded message) is above the limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The length that was announced or produced.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `msg` as one frame (header and payload).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let malformed = |e: postcard::Error| FrameError::Malformed(e.to_string());
    // Measured first (no copies), so the frame is one allocation of the right size
    // instead of a small one grown several times.
    let len = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(malformed)?;
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(&header(len)?);
    let out = postcard::to_extend(msg, out).map_err(malformed)?;
    debug_assert_eq!(
        out.len(),
        HEADER_LEN + len,
        "postcard's Size flavor is exact"
    );
    Ok(out)
}

/// Frames `payload`, a message already encoded (with postcard, like [`encode_frame`]):
/// a node pushes stored entries this way without decoding and encoding them again.
pub fn frame_encoded(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header(payload.len())?);
    out.extend_from_slice(payload);
    Ok(out)
}

/// The header of a frame whose payload is `len` bytes, if that is within the ceiling.
fn header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok((len as u32).to_be_bytes())
}

/// Reads a frame header and checks the announced length against `max`.
pub fn parse_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    let max = max.min(MAX_FRAME_LEN);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    Ok(len)
}

/// Decodes a payload that must hold exactly one message of type `T`.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(FrameError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Decodes the first frame in `buf`: `Ok(None)` when more bytes are needed, otherwise the
/// message and how many bytes of `buf` it used.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = parse_header(*header, max)?;
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload)?, HEADER_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ConversationRequest, Entry, EntryKind};
    use crate::{ClientMsgId, ControlRequest, Seq, UserId};

    #[test]
    fn frames_round_trip_and_report_their_length() {
        let msg = ConversationRequest::Chat {
            id: ClientMsgId(7),
            sent_at_ms: 1,
            body: vec![1, 2, 3],
            file: None,
        };
        let bytes = encode_frame(&msg).unwrap();
        assert_eq!(
            decode_frame::<ConversationRequest>(&bytes[..3], 1024),
            Ok(None)
        );
        assert_eq!(
            decode_frame::<ConversationRequest>(&bytes[..bytes.len() - 1], 1024),
            Ok(None)
        );
        let (back, used) = decode_frame::<ConversationRequest>(&bytes, 1024)
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn an_encoded_payload_framed_is_the_frame_of_its_message() {
        let msg = ConversationRequest::Chat {
            id: ClientMsgId(9),
            sent_at_ms: 2,
            body: vec![4; 300],
            file: None,
        };
        let payload = postcard::to_stdvec(&msg).unwrap();
        assert_eq!(
            frame_encoded(&payload).unwrap(),
            encode_frame(&msg).unwrap()
        );
        assert!(matches!(
            frame_encoded(&vec![0; MAX_FRAME_LEN + 1]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn oversize_prefix_is_refused_before_any_payload() {
        let header = (100u32 * 1024 * 1024).to_be_bytes();
        assert!(matches!(
            decode_frame::<ControlRequest>(&header, 64 * 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_malformed() {
        let mut bytes = encode_frame(&ControlRequest::Ack { seq: Seq(3) }).unwrap();
        bytes.push(0);
        let len = (bytes.len() - HEADER_LEN) as u32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_frame::<ControlRequest>(&bytes, 1024),
            Err(FrameError::Malformed(_))
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<ControlRequest>(&garbage, 1024),
            Err(FrameError::Malformed(_))
        ));
    }

    /// A cheap, deterministic fuzz: every prefix and many mutations of valid frames decode to
    /// a value or an error, never a panic.
    #[test]
    fn decoding_never_panics_on_mutated_input() {
        let entry = Entry {
            seq: Seq(42),
            peer: UserId::parse("alice").unwrap(),
            kind: EntryKind::Chat {
                id: ClientMsgId(9),
                sent_at_ms: 5,
                body: vec![7; 40],
                file: None,
            },
        };
        let base = encode_frame(&entry).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..1 + round % 4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            let cut = (state as usize >> 8) % (bytes.len() + 1);
            let _ = decode_frame::<Entry>(&bytes[..cut], 4096);
            let _ = decode_frame::<ControlRequest>(&bytes, 4096);
            let _ = decode_frame::<ConversationRequest>(&bytes, 4096);
        }
    }
}
