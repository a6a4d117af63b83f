//! Frames over quinn streams, client side.

use quiver_proto::frame::{decode_payload, parse_header, HEADER_LEN, MAX_FRAME_LEN};
use serde::{de::DeserializeOwned, Serialize};

/// Reads one frame; `Ok(None)` when the stream finished cleanly between frames.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, String> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = parse_header(header, MAX_FRAME_LEN).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    decode_payload(&payload)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Frames from a stream that carries nothing else, read a chunk at a time: one read of
/// the stream brings every frame that has arrived (each read takes the connection's
/// lock), where [`read_frame`] makes two reads of every frame. Under load the reads were
/// a twentieth of an app's time.
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    /// Bytes read and not yet taken, from `at` on.
    buf: Vec<u8>,
    at: usize,
}

/// A buffer kept between frames at most this large: one frame can be up to
/// `MAX_FRAME_LEN`, and a stream that carried one should not keep its room.
const KEEP: usize = 64 * 1024;

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// The next frame; `Ok(None)` when the stream finished cleanly between frames.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, String> {
        loop {
            if let Some(frame) = self.take()? {
                return Ok(Some(frame));
            }
            let chunk = self
                .recv
                .read_chunk(MAX_FRAME_LEN, true)
                .await
                .map_err(|e| e.to_string())?;
            let Some(chunk) = chunk else {
                return if self.at == self.buf.len() {
                    Ok(None)
                } else {
                    Err("the stream ended inside a frame".into())
                };
            };
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf.extend_from_slice(&chunk.bytes);
        }
    }

    /// A whole frame from what was read, if there is one.
    fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, String> {
        let ready = &self.buf[self.at..];
        let Some((header, rest)) = ready.split_first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = parse_header(*header, MAX_FRAME_LEN).map_err(|e| e.to_string())?;
        let Some(payload) = rest.get(..len) else {
            return Ok(None);
        };
        let frame = decode_payload(payload).map_err(|e| e.to_string())?;
        self.at += HEADER_LEN + len;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if self.buf.capacity() > KEEP {
                self.buf = Vec::new();
            }
        }
        Ok(Some(frame))
    }
}

/// Writes one frame.
pub(crate) async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), String> {
    let bytes = quiver_proto::encode_frame(msg).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}
