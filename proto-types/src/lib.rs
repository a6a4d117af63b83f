//! # quiver-proto — the Quiver wire protocol, sans-IO
//!
//! Everything that server and SDK must agree on byte for byte lives here, and nothing else:
//! no sockets, no tokio, no clock. Keeping one crate for both sides is deliberate — brokers
//! whose client and server codecs live apart drift apart.
//!
//! ## Layout
//! - [`ids`]: newtype ids (`UserId`, `DeviceId`, `ClientMsgId`, `Seq`).
//! - [`frame`]: length-prefixed postcard frames with a hard size cap. Decoding checks the
//!   length *before* allocating and never panics on any input.
//! - [`messages`]: every message of protocol version 1, grouped by the stream it travels on.
//! - [`error`]: [`ErrorCode`], the codes the node uses to reset streams and close connections.
//! - [`files`]: file messages — blob ids, chunk sizes, the transfer streams' answers.
//! - [`mesh`]: what nodes say to each other over their mutual-TLS links.
//! - [`group`]: group ids, roles and the membership changes in a group's log.
//! - [`rest`]: JSON bodies and paths of the REST API.
//! - [`stream`]: the node's per-stream state machines (bytes in, requests out).
//! - [`cursor`]: [`CursorTracker`], the "highest contiguous acknowledged `seq`" state machine
//!   used by the node (per device) and by the SDK (to drop redeliveries).
//!
//! ## Streams of one connection
//! 1. **Control** — the first bidirectional stream the client opens: `Hello` → `Welcome`,
//!    then acks and read marks from the client.
//! 2. **Conversation** — one client-opened bidirectional stream per peer: `Open`, then
//!    `Chat` frames; the node answers `Sent` only once the entry is durable.
//! 3. **File transfer** — a client-opened bidirectional stream per upload or download,
//!    `Upload` or `Download` first, then raw sealed bytes ([`files`]). At lower priority
//!    than chat, so a big file never holds a message up.
//! 4. **Push** — one server-opened unidirectional stream per peer, carrying inbox
//!    [`Entry`] frames in `seq` order. The client acknowledges them on the control stream.

pub mod carrier;
pub mod cursor;
pub mod datagram;
pub mod error;
pub mod files;
pub mod frame;
pub mod group;
pub mod ids;
pub mod mesh;
pub mod messages;
pub mod rest;
pub mod stream;

pub use cursor::CursorTracker;
pub use error::ErrorCode;
pub use frame::{
    decode_frame, decode_payload, encode_frame, frame_encoded, parse_header, FrameError,
};
pub use group::{GroupChange, GroupId, Role};
pub use ids::{ClientMsgId, DeviceId, IdError, Seq, UserId};
pub use messages::{
    ControlRequest, ControlResponse, ConversationRequest, ConversationResponse, Entry, EntryKind,
    ReceiptKind, ReceiptOf, MAX_HISTORY_PAGE,
};

/// ALPN protocol id of Quiver's client protocol over QUIC.
pub const ALPN: &[u8] = b"quiver/1";

/// Protocol version carried in `Hello`; a node refuses versions it does not speak.
pub const PROTOCOL_VERSION: u16 = 2;
