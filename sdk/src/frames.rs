//! Frames over quinn streams, client side.

use quiver_proto::frame::{decode_frame, decode_payload, parse_header, HEADER_LEN, MAX_FRAME_LEN};
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
        let Some((frame, used)) =
            decode_frame(&self.buf[self.at..], MAX_FRAME_LEN).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        self.at += used;
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
    // As encoded (QUIC keeps the buffer), not copied as `write_all` would.
    send.write_chunk(bytes.into())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{ConversationResponse, Seq};
    use std::sync::Arc;
    use std::time::Duration;

    /// A stream from a real QUIC peer on loopback: what the test writes to the returned
    /// sender, the reader gets.
    async fn stream() -> anyhow::Result<(quinn::SendStream, FrameReader, Vec<quinn::Endpoint>)> {
        let ca = quiver_certs::Ca::generate("test CA")?;
        let node = ca.issue_node("node", &["127.0.0.1".to_string()])?;
        let certs =
            rustls_pemfile::certs(&mut node.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = rustls_pemfile::private_key(&mut node.key_pem.as_bytes())?
            .ok_or(anyhow::anyhow!("no key"))?;
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![quiver_proto::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let server = quinn::Endpoint::server(
            quinn::ServerConfig::with_crypto(Arc::new(crypto)),
            "127.0.0.1:0".parse()?,
        )?;
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let config = crate::tls::quic_config(
            &ca.cert_pem,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .map_err(anyhow::Error::msg)?;
        client.set_default_client_config(config);
        let connecting = client.connect(server.local_addr()?, "127.0.0.1")?;
        let incoming = server.accept().await.ok_or(anyhow::anyhow!("no client"))?;
        let (node, app) = tokio::try_join!(incoming, connecting)?;
        // Pushes go node → app on a stream the node opens.
        let mut send = node.open_uni().await?;
        let first = quiver_proto::encode_frame(&ConversationResponse::Error {
            code: quiver_proto::ErrorCode::Internal,
        })?;
        send.write_all(&first).await?;
        let recv = app.accept_uni().await?;
        let mut frames = FrameReader::new(recv);
        let opening: Option<ConversationResponse> =
            frames.next().await.map_err(anyhow::Error::msg)?;
        assert!(matches!(opening, Some(ConversationResponse::Error { .. })));
        Ok((send, frames, vec![server, client]))
    }

    fn sent(n: u64) -> ConversationResponse {
        ConversationResponse::Sent {
            id: quiver_proto::ClientMsgId(u128::from(n)),
            seq: Seq(n),
        }
    }

    #[tokio::test]
    async fn frames_split_anyhow_come_out_whole_and_in_order() -> anyhow::Result<()> {
        let (mut send, mut frames, _endpoints) = stream().await?;
        let mut bytes = Vec::new();
        for n in 1..=200 {
            bytes.extend(quiver_proto::encode_frame(&sent(n))?);
        }
        // Pieces of 1 to 7 bytes, with the writer yielding between rounds so they leave in
        // many packets: headers and payloads are cut at every offset.
        let writer = tokio::spawn(async move {
            let (mut at, mut size) = (0, 1);
            while at < bytes.len() {
                let end = (at + size).min(bytes.len());
                send.write_all(&bytes[at..end]).await?;
                (at, size) = (end, size % 7 + 1);
                if size == 1 {
                    tokio::task::yield_now().await;
                }
            }
            send.finish()?;
            anyhow::Ok(send)
        });
        for n in 1..=200 {
            let frame: Option<ConversationResponse> =
                frames.next().await.map_err(anyhow::Error::msg)?;
            assert_eq!(frame, Some(sent(n)));
        }
        let end: Option<ConversationResponse> = frames.next().await.map_err(anyhow::Error::msg)?;
        assert_eq!(end, None, "a clean end between frames");
        let _send = writer.await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_or_lies_about_a_length_is_an_error(
    ) -> anyhow::Result<()> {
        let (mut send, mut frames, _endpoints) = stream().await?;
        let whole = quiver_proto::encode_frame(&sent(1))?;
        send.write_all(&whole[..whole.len() - 1]).await?;
        send.finish()?;
        let cut = frames.next::<ConversationResponse>().await;
        assert!(cut.is_err(), "{cut:?}");

        let (mut send, mut frames, _endpoints) = stream().await?;
        send.write_all(&u32::MAX.to_be_bytes()).await?;
        let huge = frames.next::<ConversationResponse>().await;
        assert!(huge.is_err(), "{huge:?}");
        Ok(())
    }
}
