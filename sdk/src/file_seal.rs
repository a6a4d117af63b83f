//! Sealing a file chunk by chunk, and naming its sealed bytes: the format of section 5
//! of docs/PROTOCOL.md ("File chunks"), under a friendship key or a group key of one
//! epoch alike.
//!
//! Chunk `i` of a file whose plaintext SHA-256 is `h` is sealed with XChaCha20-Poly1305,
//! nonce `h[..16] ‖ i` and associated data `h ‖ size ‖ i`. The nonce is derived, not
//! random, so the sealed bytes (and so the blob id) of a file are the same every time:
//! an upload can resume after the app restarts, and the same file sent twice under one
//! key is stored once. Reuse is safe: a nonce repeats only for the same `h`, so for the
//! same plaintext. The associated data ties every chunk to its place: reordered,
//! truncated or altered chunks do not open.

use crate::seal::{FriendKey, SealError};
use quiver_proto::files::{chunk_count, sealed_len, BlobId, FileRef, CHUNK_LEN};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// What a file message says about its file, sealed as the message body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's name as the sender wrote it: untrusted. It may hold folders, `..`,
    /// control or bidi characters; show or save [`FileInfo::safe_name`] instead.
    pub name: String,
    /// Its media type, such as `image/jpeg`.
    pub media_type: String,
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
}

impl FileInfo {
    /// The name cut to its last path component, without control, format or bidi
    /// characters, at most 255 bytes, never empty, `.` or `..`: safe as a file name and
    /// to print on a terminal.
    pub fn safe_name(&self) -> String {
        let last = self.name.rsplit(['/', '\\']).next().unwrap_or_default();
        let mut name = String::new();
        for c in last.chars().filter(|&c| !crate::text::is_unsafe_char(c)) {
            if name.len() + c.len_utf8() > 255 {
                break;
            }
            name.push(c);
        }
        match name.trim() {
            "" | "." | ".." => "file".into(),
            _ => name,
        }
    }
}

fn chunk_nonce(sha256: &[u8; 32], index: u64) -> [u8; crate::xchacha::NONCE_LEN] {
    let mut nonce = [0u8; crate::xchacha::NONCE_LEN];
    nonce[..16].copy_from_slice(&sha256[..16]);
    nonce[16..].copy_from_slice(&index.to_be_bytes());
    nonce
}

fn chunk_aad(info: &FileInfo, index: u64) -> Vec<u8> {
    let mut aad = b"quiver/1 file".to_vec();
    aad.extend_from_slice(&info.sha256);
    aad.extend_from_slice(&info.size.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// Seals chunk `index` of the file described by `info`; `TooLong` only for a chunk no
/// file here makes (chunks are [`CHUNK_LEN`]).
pub fn seal_chunk(
    key: &FriendKey,
    info: &FileInfo,
    index: u64,
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    let nonce = chunk_nonce(&info.sha256, index);
    let mut sealed = Vec::new();
    crate::xchacha::seal_into(&key.0, &nonce, &chunk_aad(info, index), plain, &mut sealed)
        .ok_or(SealError::TooLong)?;
    Ok(sealed)
}

/// Opens chunk `index`; `None` if it was altered, moved or sealed with another key.
pub fn open_chunk(key: &FriendKey, info: &FileInfo, index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    let nonce = chunk_nonce(&info.sha256, index);
    crate::xchacha::open(&key.0, &nonce, &chunk_aad(info, index), sealed)
}

/// Plaintext length of chunk `index` of a file of `size` bytes.
pub(crate) fn plain_len(size: u64, index: u64) -> usize {
    let start = index * CHUNK_LEN as u64;
    (size.saturating_sub(start)).min(CHUNK_LEN as u64) as usize
}

/// Reads chunk `index` of `file`.
pub(crate) async fn read_chunk(
    file: &mut tokio::fs::File,
    size: u64,
    index: u64,
) -> io::Result<Vec<u8>> {
    let mut plain = vec![0u8; plain_len(size, index)];
    file.seek(std::io::SeekFrom::Start(index * CHUNK_LEN as u64))
        .await?;
    file.read_exact(&mut plain).await?;
    Ok(plain)
}

/// Describes the file at `path` and computes its blob id: one pass to hash the
/// plaintext, one to seal and hash the sealed bytes. Blocking.
pub(crate) fn prepare(
    path: &Path,
    media_type: &str,
    key: &FriendKey,
) -> io::Result<(FileInfo, FileRef)> {
    use std::io::Read;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut file = std::fs::File::open(path)?;
    let mut plain = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        plain.update(&buf[..n]);
        size += n as u64;
    }
    let info = FileInfo {
        name,
        media_type: media_type.to_owned(),
        size,
        sha256: digest(plain),
    };
    let mut file = std::fs::File::open(path)?;
    let mut sealed = ring::digest::Context::new(&ring::digest::SHA256);
    for index in 0..chunk_count(size) {
        let len = plain_len(size, index);
        file.read_exact(&mut buf[..len])?;
        sealed.update(&seal_chunk(key, &info, index, &buf[..len]).map_err(io::Error::other)?);
    }
    let file = FileRef {
        blob: BlobId(digest(sealed)),
        size: sealed_len(size),
    };
    Ok((info, file))
}

pub(crate) fn digest(context: ring::digest::Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Length and SHA-256 of a file. Blocking.
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((len, digest(hash)));
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_open_only_in_their_place_and_seal_the_same_every_time() {
        let key = FriendKey([3; 32]);
        let info = FileInfo {
            name: "a.bin".into(),
            media_type: "application/octet-stream".into(),
            size: 10,
            sha256: [9; 32],
        };
        let sealed = seal_chunk(&key, &info, 0, b"0123456789").unwrap();
        assert_eq!(sealed, seal_chunk(&key, &info, 0, b"0123456789").unwrap());
        assert_eq!(sealed.len(), 10 + 16);
        assert_eq!(open_chunk(&key, &info, 0, &sealed).unwrap(), b"0123456789");
        assert!(open_chunk(&key, &info, 1, &sealed).is_none(), "moved");
        let mut altered = sealed.clone();
        altered[4] ^= 1;
        assert!(open_chunk(&key, &info, 0, &altered).is_none(), "altered");
        let truncated = FileInfo {
            size: 5,
            ..info.clone()
        };
        assert!(open_chunk(&key, &truncated, 0, &sealed).is_none(), "size");
        assert!(
            open_chunk(&FriendKey([4; 32]), &info, 0, &sealed).is_none(),
            "key"
        );
    }

    #[test]
    fn a_prepared_file_names_its_sealed_bytes() {
        let dir = std::env::temp_dir().join(format!("quiver-prepare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let data: Vec<u8> = (0..CHUNK_LEN * 2 + 100).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let key = FriendKey([1; 32]);
        let (info, file) = prepare(&path, "x/y", &key).unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(file.size, data.len() as u64 + 3 * 16);
        let mut sealed = Vec::new();
        for (i, chunk) in data.chunks(CHUNK_LEN).enumerate() {
            sealed.extend(seal_chunk(&key, &info, i as u64, chunk).unwrap());
        }
        let id = ring::digest::digest(&ring::digest::SHA256, &sealed);
        assert_eq!(file.blob.0, id.as_ref());
        assert_eq!(
            prepare(&path, "x/y", &key).unwrap(),
            (info, file),
            "deterministic"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
