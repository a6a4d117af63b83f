//! Error codes the node sends when it refuses something: in `Rejected` and `Error`
//! frames, as QUIC stream reset codes and as QUIC connection close codes.
//!
//! Everywhere, a code travels as its number ([`ErrorCode::to_u32`]): inside a frame as a
//! postcard varint `u32`, never as the variant's position in this enum, so reordering the
//! variants cannot change the wire (`docs/PROTOCOL.md` lists them).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Why the node refused a request, closed a stream or closed a connection.
///
/// The numeric values are part of the wire protocol: never renumber, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// Bytes that do not decode as the frame expected on this stream.
    Malformed = 1,
    /// A frame's length prefix is above the node's frame limit.
    FrameTooLarge = 2,
    /// No token, a bad signature, an expired or revoked token, or a token for another device.
    Unauthenticated = 3,
    /// The client speaks a protocol version this node does not.
    VersionMismatch = 4,
    /// Sender and recipient are not friends (or the recipient does not exist).
    NotFriends = 5,
    /// A message body is above the node's body limit.
    BodyTooLarge = 6,
    /// A well-formed frame that is not allowed at this point of the stream.
    UnexpectedFrame = 7,
    /// An ack or read mark names a `seq` that is not the client's to name.
    InvalidSeq = 8,
    /// The node failed internally; the request may be retried.
    Internal = 9,
    /// The node cannot serve this now (storage or peer unavailable); retry later.
    Unavailable = 10,
    /// The node is shutting down; reconnect later.
    ShuttingDown = 11,
    /// The client went over a rate limit.
    RateLimited = 12,
    /// The client opened more streams than allowed, or its user has more conversations
    /// open on the node than allowed.
    TooManyStreams = 13,
    /// The client's address has more connections open on the node than allowed.
    TooManyConnections = 14,
    /// A file is above the node's maximum file size.
    FileTooLarge = 15,
    /// The upload would take the user over their storage quota.
    QuotaExceeded = 16,
    /// No such blob, or not one this user may read.
    NotFound = 17,
    /// The bytes do not match their hash (or, client side, a chunk does not authenticate).
    Corrupt = 18,
    /// The node is short of disk space and stores no new chats or uploads for now;
    /// retry later.
    StorageFull = 19,
    /// Not a member of the group (or no such group: the two are not told apart), or not
    /// allowed to do this in it.
    NotMember = 20,
    /// A group message sealed with a key the group has replaced: fetch the group's keys
    /// and seal it again.
    StaleEpoch = 21,
}

impl ErrorCode {
    /// The code as sent on the wire (QUIC reset / close code).
    pub fn to_u32(self) -> u32 {
        self as u32
    }

    /// Reads a code from the wire; `None` for codes this version does not know.
    pub fn from_u32(code: u32) -> Option<Self> {
        use ErrorCode::*;
        Some(match code {
            1 => Malformed,
            2 => FrameTooLarge,
            3 => Unauthenticated,
            4 => VersionMismatch,
            5 => NotFriends,
            6 => BodyTooLarge,
            7 => UnexpectedFrame,
            8 => InvalidSeq,
            9 => Internal,
            10 => Unavailable,
            11 => ShuttingDown,
            12 => RateLimited,
            13 => TooManyStreams,
            14 => TooManyConnections,
            15 => FileTooLarge,
            16 => QuotaExceeded,
            17 => NotFound,
            18 => Corrupt,
            19 => StorageFull,
            20 => NotMember,
            21 => StaleEpoch,
            _ => return None,
        })
    }

    /// Whether the same request may succeed if sent again later. `RateLimited` is: a
    /// client that slows down gets through.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Internal
                | ErrorCode::Unavailable
                | ErrorCode::ShuttingDown
                | ErrorCode::RateLimited
                | ErrorCode::StorageFull
        )
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.to_u32())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    /// A code this version does not know is refused: the frame does not decode.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(deserializer)?;
        ErrorCode::from_u32(n)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown error code {n}")))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.to_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for n in 0..64 {
            if let Some(code) = ErrorCode::from_u32(n) {
                assert_eq!(code.to_u32(), n);
            }
        }
        assert_eq!(ErrorCode::from_u32(13), Some(ErrorCode::TooManyStreams));
        assert_eq!(ErrorCode::from_u32(14), Some(ErrorCode::TooManyConnections));
        assert_eq!(ErrorCode::from_u32(18), Some(ErrorCode::Corrupt));
        assert_eq!(ErrorCode::from_u32(19), Some(ErrorCode::StorageFull));
        assert_eq!(ErrorCode::from_u32(0), None);
    }

    /// Inside a frame a code is its number, not its variant's position (which is one
    /// less): `Unauthenticated` is byte 3, as in the QUIC close code.
    #[test]
    fn codes_in_frames_are_their_numbers() {
        for n in 1..64 {
            let Some(code) = ErrorCode::from_u32(n) else {
                continue;
            };
            let bytes = postcard::to_stdvec(&code).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&n).unwrap(), "{code}");
            assert_eq!(postcard::from_bytes::<ErrorCode>(&bytes).unwrap(), code);
        }
        assert_eq!(
            postcard::to_stdvec(&ErrorCode::Unauthenticated).unwrap(),
            [3]
        );
        assert!(postcard::from_bytes::<ErrorCode>(&[0]).is_err());
        assert!(postcard::from_bytes::<ErrorCode>(&[99]).is_err());
    }
}
