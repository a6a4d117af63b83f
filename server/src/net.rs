//! Frames over quinn streams: the only place the node turns stream bytes into messages.

use quiver_proto::frame::{decode_payload, parse_header, FrameError, HEADER_LEN};
use quiver_proto::stream::{Inbound, Phase};
use quiver_proto::ErrorCode;
use serde::{de::DeserializeOwned, Serialize};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    /// The peer finished the stream cleanly between frames.
    #[error("stream finished")]
    Finished,
    /// The bytes broke the protocol.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream or connection failed (reset, closed, ended mid-frame).
    #[error("stream read failed: {0}")]
    Read(String),
}

impl FrameReadError {
    /// The code to close the stream with, if the peer broke the protocol.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameReadError::Frame(FrameError::TooLarge { .. }) => Some(ErrorCode::FrameTooLarge),
            FrameReadError::Frame(FrameError::Malformed(_)) => Some(ErrorCode::Malformed),
            _ => None,
        }
    }
}

/// Reads one frame of type `T`, refusing lengths above `max` before reading the payload.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<T, FrameReadError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(FrameReadError::Finished),
        Err(e) => return Err(FrameReadError::Read(e.to_string())),
    }
    let len = parse_header(header, max)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload)
        .await
        .map_err(|e| FrameReadError::Read(e.to_string()))?;
    Ok(decode_payload(&payload)?)
}

/// A client stream read through its sans-IO state machine
/// ([`quiver_proto::stream::Inbound`]): this only moves bytes from quinn into it.
pub struct Reader<P: Phase> {
    recv: quinn::RecvStream,
    inbound: Inbound<P>,
}

/// Why a [`Reader`] gives no more requests.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    /// The client broke the stream's protocol; close it with this code.
    #[error("protocol error: {0}")]
    Refused(ErrorCode),
    /// The stream or connection failed (reset, closed, ended mid-frame).
    #[error("stream read failed: {0}")]
    Failed(String),
}

impl<P: Phase> Reader<P> {
    /// Reads `recv` in `phase`, frames of at most `max_frame` bytes.
    pub fn new(recv: quinn::RecvStream, phase: P, max_frame: usize) -> Self {
        Self {
            recv,
            inbound: Inbound::new(phase, max_frame),
        }
    }

    /// The stream's state machine.
    pub fn phase(&self) -> &P {
        self.inbound.phase()
    }

    /// The next request; `Ok(None)` when the client finished the stream between frames.
    /// Cancel-safe: a call dropped mid-way loses nothing.
    pub async fn next(&mut self) -> Result<Option<P::Step>, StreamEnd> {
        loop {
            if let Some(step) = self.inbound.next_step().map_err(StreamEnd::Refused)? {
                return Ok(Some(step));
            }
            match self.recv.read_chunk(self.inbound.wants(), true).await {
                Ok(Some(chunk)) => self.inbound.feed(&chunk.bytes),
                Ok(None) if self.inbound.at_boundary() => return Ok(None),
                Ok(None) => return Err(StreamEnd::Failed("stream ended mid-frame".into())),
                Err(e) => return Err(StreamEnd::Failed(e.to_string())),
            }
        }
    }

    /// The stream itself, for a transfer whose bytes after the first frame are raw. Only
    /// whole frames were read (never more than [`Inbound::wants`]), so nothing is lost.
    pub fn into_recv(self) -> quinn::RecvStream {
        debug_assert!(self.inbound.at_boundary());
        self.recv
    }

    /// Frees the buffer if it holds no partial frame (it keeps the room of the largest
    /// frame read so far): for a stream whose first frame is much larger than the rest.
    pub fn release_buffer(&mut self) {
        self.inbound.release_buffer();
    }

    /// Asks the client to stop sending on this stream, with `code`.
    pub fn stop(&mut self, code: ErrorCode) {
        let _ = self.recv.stop(varint(code));
    }
}

/// Writes one frame. Handed to QUIC as it is encoded (`write_chunk`), not copied into a
/// buffer of QUIC's own as `write_all` would.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), std::io::Error> {
    let bytes = quiver_proto::encode_frame(msg).map_err(std::io::Error::other)?;
    send.write_chunk(bytes.into())
        .await
        .map_err(std::io::Error::other)
}

/// Copies one direction of a relayed stream; a failure on one side resets the other, so
/// both ends see the transfer broken rather than complete.
pub async fn pump(mut from: quinn::RecvStream, mut to: quinn::SendStream, chunk: usize) {
    loop {
        match from.read_chunk(chunk, true).await {
            Ok(Some(chunk)) => {
                if to.write_chunk(chunk.bytes).await.is_err() {
                    let _ = from.stop(varint(ErrorCode::Unavailable));
                    return;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return;
            }
            Err(_) => {
                let _ = to.reset(varint(ErrorCode::Unavailable));
                return;
            }
        }
    }
}

/// A QUIC error code from a protocol error code.
pub fn varint(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code.to_u32())
}
