//! A raw protocol client for the tests that must send what the SDK never would.

use quiver_proto::{decode_frame, encode_frame, ControlRequest, ControlResponse, PROTOCOL_VERSION};
use quiver_tests::TestNode;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Which carrier a raw client's packets take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// QUIC over UDP.
    Udp,
    /// QUIC in TLS over TCP (the carrier for networks that block UDP).
    Tcp,
}

/// A QUIC connection to `node` over `via`, with the right ALPN and trust, but no session
/// yet.
pub async fn connect_via(via: Via, node: &TestNode) -> anyhow::Result<quinn::Connection> {
    let mut endpoint = match via {
        Via::Udp => quinn::Endpoint::client("127.0.0.1:0".parse()?)?,
        Via::Tcp => quiver_sdk::tcp_endpoint(node.quic_addr(), "127.0.0.1", &node.ca_pem)?,
    };
    endpoint.set_default_client_config(
        quiver_sdk::tls::quic_config(
            &node.ca_pem,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .map_err(anyhow::Error::msg)?,
    );
    Ok(endpoint.connect(node.quic_addr(), "127.0.0.1")?.await?)
}

/// A connection with its control stream, and the node's answer to Hello.
pub type Helloed = (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    ControlResponse,
);

/// Connects and says Hello with `token`; returns the control stream and the node's answer.
pub async fn hello(node: &TestNode, token: &str) -> anyhow::Result<Helloed> {
    hello_via(Via::Udp, node, token).await
}

/// [`hello`] over the carrier `via`.
pub async fn hello_via(via: Via, node: &TestNode, token: &str) -> anyhow::Result<Helloed> {
    hello_as(via, node, token, PROTOCOL_VERSION).await
}

/// [`hello_via`] saying protocol `version`.
pub async fn hello_as(
    via: Via,
    node: &TestNode,
    token: &str,
    version: u16,
) -> anyhow::Result<Helloed> {
    let conn = connect_via(via, node).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = ControlRequest::Hello {
        version,
        token: token.into(),
    };
    send.write_all(&encode_frame(&hello)?).await?;
    let answer = read_one(&mut recv).await?;
    Ok((conn, send, recv, answer))
}

/// Reads exactly one frame from a stream that may carry more.
pub async fn read_one<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> anyhow::Result<T> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    let mut frame = header.to_vec();
    frame.resize(4 + len, 0);
    recv.read_exact(&mut frame[4..]).await?;
    let (msg, _) = decode_frame(&frame, 1 << 20)?.ok_or_else(|| anyhow::anyhow!("short frame"))?;
    Ok(msg)
}

/// Reads a stream to its end and decodes every frame on it.
pub async fn read_all<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> anyhow::Result<Vec<T>> {
    let bytes = recv.read_to_end(1 << 20).await?;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((msg, used)) = decode_frame(&bytes[at..], 1 << 20)? {
        out.push(msg);
        at += used;
    }
    Ok(out)
}
