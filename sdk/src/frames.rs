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

/// Writes one frame.
pub(crate) async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), String> {
    let bytes = quiver_proto::encode_frame(msg).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}
