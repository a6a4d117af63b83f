//! The TCP carrier, for networks that block UDP (docs/PROTOCOL.md section 3.7).
//!
//! A client that cannot reach the node over UDP opens TCP to the same host and port,
//! speaks TLS 1.3 with ALPN [`TUNNEL_ALPN`], and then carries its QUIC packets inside:
//! each is a 2-byte big-endian length and that many bytes. Everything above (the QUIC
//! connection, its streams, frames, datagrams, close codes) is the same on both carriers,
//! and a connection moves between them as it moves between networks.
//!
//! A client on TCP learns that UDP works again with a [probe](is_probe): 16 bytes to the
//! node's UDP port, starting with [`PROBE_MAGIC`]; the node sends the same 16 bytes back.
//! A QUIC packet never starts with a zero byte (its fixed bit is set), so the two cannot
//! be confused.

/// ALPN of the TCP carrier's TLS.
pub const TUNNEL_ALPN: &[u8] = b"quiver-tunnel/1";

/// The largest packet a tunnel carries; a longer length ends the tunnel. QUIC endpoints
/// here never send more than 1,472 bytes in one packet.
pub const MAX_TUNNEL_PACKET: usize = 1500;

/// The first 8 bytes of a UDP probe.
pub const PROBE_MAGIC: [u8; 8] = *b"\0QVPROBE";

/// A UDP probe's length: the magic and 8 bytes the client picks.
pub const PROBE_LEN: usize = 16;

/// Whether a UDP datagram is a probe (which the node echoes) rather than QUIC.
pub fn is_probe(datagram: &[u8]) -> bool {
    datagram.len() == PROBE_LEN && datagram.starts_with(&PROBE_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_down_numbers_hold() {
        // docs/PROTOCOL.md 3.7: foreign clients depend on these exact bytes.
        assert_eq!(
            PROBE_MAGIC,
            [0x00, 0x51, 0x56, 0x50, 0x52, 0x4f, 0x42, 0x45]
        );
        assert_eq!(TUNNEL_ALPN, b"quiver-tunnel/1");
        assert_eq!((PROBE_LEN, MAX_TUNNEL_PACKET), (16, 1500));
    }

    #[test]
    fn probes_are_told_from_quic() {
        let mut probe = [7u8; PROBE_LEN];
        probe[..8].copy_from_slice(&PROBE_MAGIC);
        assert!(is_probe(&probe));
        assert!(!is_probe(&probe[..15]), "length matters");
        // A QUIC long-header Initial of the same length is not a probe.
        let mut initial = probe;
        initial[0] = 0xc3;
        assert!(!is_probe(&initial));
    }
}
