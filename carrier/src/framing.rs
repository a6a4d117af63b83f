//! Packets on a tunnel's byte stream: a 2-byte big-endian length (1 to
//! [`MAX_TUNNEL_PACKET`]), then the packet. Both ends read and write them the same way.

use quiver_proto::carrier::MAX_TUNNEL_PACKET;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Reads one packet; `Ok(None)` at a clean end of the stream. A length of zero or above
/// the maximum is an `InvalidData` error: the tunnel ends.
pub async fn read_packet(read: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match read.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_TUNNEL_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("tunnel packet of {len} bytes"),
        ));
    }
    let mut packet = vec![0u8; len];
    read.read_exact(&mut packet).await?;
    Ok(Some(packet))
}

/// Writes what arrives on `out` until it closes, flushing once per batch.
pub async fn write_packets(
    write: impl AsyncWrite + Unpin,
    out: &mut mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut write = BufWriter::new(write);
    while let Some(packet) = out.recv().await {
        let mut next = Some(packet);
        while let Some(packet) = next {
            // Packets come from quinn, never above MAX_TUNNEL_PACKET; clip rather than
            // write a length that lies.
            let len = packet.len().min(MAX_TUNNEL_PACKET);
            write.write_all(&(len as u16).to_be_bytes()).await?;
            write.write_all(&packet[..len]).await?;
            next = out.try_recv().ok();
        }
        write.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packets_cross_a_stream_and_bad_lengths_end_it() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(8);
        for packet in [vec![1u8; 1200], vec![2u8; 1], vec![3u8; MAX_TUNNEL_PACKET]] {
            tx.send(packet).await.expect("queue");
        }
        drop(tx);
        write_packets(client, &mut rx).await.expect("written");
        let mut got = Vec::new();
        while let Some(packet) = read_packet(&mut server).await.expect("read") {
            got.push(packet);
        }
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [1200, 1, 1500]
        );

        for bad in [[0u8, 0], (MAX_TUNNEL_PACKET as u16 + 1).to_be_bytes()] {
            let error = read_packet(&mut &bad[..]).await.expect_err("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
    }
}
