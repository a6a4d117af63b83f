//! # quiver-carrier — what carries a Quiver QUIC endpoint's packets
//!
//! Networks that block UDP still pass TLS over TCP. Rather than a second protocol stack
//! beside QUIC (streams, flow control, close codes, datagrams and migration all made
//! again over a TCP multiplexer, and so able to differ), Quiver keeps QUIC and changes
//! what carries its packets: UDP, or a tunnel of TLS over TCP in which each packet is a
//! 2-byte length and its bytes (docs/PROTOCOL.md 3.7). The node and the SDK put a
//! [`CarrierSocket`] under their quinn endpoint; a [`Router`] of their own decides which
//! packet takes which way. Moving between carriers is a change of path to QUIC, the same
//! as a phone moving from Wi-Fi to 4G.
//!
//! - [`socket`]: the endpoint's socket over UDP and a queue of tunnelled packets;
//! - [`framing`]: the tunnel's packets on a byte stream, both ways.

pub mod framing;
pub mod socket;

pub use socket::{CarrierSocket, Inbound, Router};
