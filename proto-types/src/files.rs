//! File messages: what travels in the inbox (a [`FileRef`] next to a sealed description)
//! and the byte streams that move the sealed file itself.
//!
//! A file is cut into chunks of [`CHUNK_LEN`] plaintext bytes; each chunk is sealed on its
//! own (ciphertext plus a 16-byte tag), so a transfer can stop and resume at any chunk and
//! a corrupted chunk is caught by itself. The node stores the concatenated sealed chunks
//! under their SHA-256, the [`BlobId`], and never sees a key.
//!
//! ## Streams
//! A client-opened bidirectional stream whose first frame is
//! [`crate::ConversationRequest::Upload`] or [`crate::ConversationRequest::Download`]
//! carries one transfer:
//! - **upload**: `Upload { blob, size }` → [`FileResponse::Ready`] `{ offset }` (what the
//!   node already has); the client sends the sealed bytes `offset..size` raw and finishes
//!   its side; the node checks the SHA-256 and answers [`FileResponse::Stored`].
//! - **download**: `Download { blob, owner, offset }` → `Ready { offset, size }`, then the
//!   sealed bytes `offset..size` raw, then the node finishes the stream.
//!
//! A refusal is one [`FileResponse::Error`] instead of `Ready` (or of `Stored`), before any
//! byte is stored.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Plaintext bytes per sealed chunk.
pub const CHUNK_LEN: usize = 64 * 1024;

/// Bytes the seal adds to each chunk (the Poly1305 tag).
pub const TAG_LEN: usize = 16;

/// Sealed bytes per chunk (all but the last, which may be shorter).
pub const SEALED_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;

/// How many chunks a file of `size` plaintext bytes has: an empty file has one empty chunk,
/// so every file has at least one tag to check.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_LEN as u64).max(1)
}

/// The stored (sealed) size of a file of `size` plaintext bytes.
pub fn sealed_len(size: u64) -> u64 {
    size + chunk_count(size) * TAG_LEN as u64
}

/// A blob's name: the SHA-256 of its sealed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(pub [u8; 32]);

impl BlobId {
    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        crate::rest::to_hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        crate::rest::key_from_hex(hex).map(BlobId)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..12])
    }
}

/// The file a chat message carries: which blob, and how many sealed bytes it has. The
/// blob lives on the sender's home node, where the sender uploaded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The sealed bytes' SHA-256.
    pub blob: BlobId,
    /// How many sealed bytes.
    pub size: u64,
}

/// Node → client on a file stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileResponse {
    /// The transfer starts at `offset` of a blob of `size` sealed bytes.
    Ready {
        /// Upload: the bytes the node already has. Download: where the bytes start.
        offset: u64,
        /// The blob's sealed size.
        size: u64,
    },
    /// The upload is complete, checked and durable.
    Stored,
    /// The transfer was refused or failed; nothing follows.
    Error {
        /// Why; [`ErrorCode::is_retryable`] tells whether to try again.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_one_tag_per_chunk() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(sealed_len(0), 16);
        assert_eq!(sealed_len(1), 17);
        let chunk = CHUNK_LEN as u64;
        assert_eq!(sealed_len(chunk), chunk + 16);
        assert_eq!(sealed_len(chunk + 1), chunk + 1 + 32);
        assert_eq!(sealed_len(256 << 20), (256 << 20) + 4096 * 16);
    }

    #[test]
    fn blob_ids_print_and_parse_as_hex() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlobId::from_hex("xyz"), None);
    }
}
