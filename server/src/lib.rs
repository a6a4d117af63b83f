//! # quiver-server — the Quiver node
//!
//! A library that the `quiver-server` binary (and every test) starts with
//! [`Node::start`]. One module per concern:
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | the validated configuration and every limit |
//! | [`tls`] | certificates and rustls configurations |
//! | [`listener`] | the QUIC endpoint and its accept loop |
//! | [`carrier`] | the endpoint's socket: UDP, and QUIC in TLS over TCP where UDP is blocked |
//! | [`session`] | one client connection: hello, control, conversations, pushes |
//! | [`datagrams`] | a connection's typing and presence datagrams: checked, relayed, never stored |
//! | [`presence`] | who shows what, in memory only |
//! | [`credit`] | how many streams a client or mesh peer is offered, growing with use |
//! | [`feed`] | one device's cursor, acks and push window, on its user's home node |
//! | [`conversation`] | chats on a stream appended in order, `Sent` after durability |
//! | [`router`] | where a chat or receipt goes (home nodes); the only writer of inboxes |
//! | [`receipt_batch`] | DELIVERED receipts gathered while the last batch commits, one entry each batch |
//! | [`live`] | what is connected now: caps per address and per user, sessions to close |
//! | [`metrics`] | counters, gauges, the flush histogram; Prometheus text |
//! | [`mesh`] | node-to-node QUIC links (mutual TLS), the node registry in Redis |
//! | [`mesh_serve`] | what peers ask this node: every stream a mesh peer opens |
//! | [`files`] | upload and download streams, here or relayed to the owner's home node |
//! | [`history`] | history pages of an inbox or a group log, newest first, bounded |
//! | [`blobs`] | sealed file bytes on disk by SHA-256, quotas, collection |
//! | [`inbox`] | per-user logs and their index, device cursors, durable heads |
//! | [`log`] | the inbox log's segment files: checksummed records, torn tails cut on open |
//! | [`commit`] | group commit: one fsync for many concurrent appends |
//! | [`directory`] | accounts, devices, friendships, homes (embedded sled or Redis) |
//! | [`http`] | the REST API (axum), the groups' membership calls among it |
//! | [`https`] | the HTTPS listener: TLS, connection caps, timeouts |
//! | [`rest_limits`] | REST rate limits: logins per account and address, requests per user |
//! | [`hasher`] | password hashing on a few threads, with a bounded queue |
//! | [`auth`] | password hashing and signed tokens |
//! | [`net`] | frames over quinn streams |
//! | [`shared`] | the state the running parts share (built by [`node`], used by the rest) |
//! | [`node`] | start-up and ordered shutdown: the assembler on top |
//! | [`push`] | notifications for away devices through a push gateway: coalescing, retries |
//! | [`group_push`] | notifications for large groups: their members swept once per window |
//! | [`private`] | the data folder and keys readable by the node's user only |
//! | [`rate`] | token-bucket rate limits |
//!
//! ## Data flow
//! `listener → session → router → inbox → (durable) → session push loops`.
//! A chat is appended to the recipient's inbox; `Sent` goes back once a group flush has
//! made it durable; every session of the recipient wakes on the durable head and pushes
//! from its device's cursor. A device's ack makes the router append DELIVERED to the
//! sender's inbox (with the other receipts between the same two that came meanwhile),
//! which reaches the sender the same way.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod carrier;
pub mod commit;
pub mod config;
pub mod conversation;
pub mod credit;
pub mod datagrams;
pub mod directory;
pub mod disk;
pub mod feed;
pub mod files;
pub mod group_files;
pub mod group_limits;
pub mod group_mesh;
pub mod group_push;
pub mod groups;
pub mod hasher;
pub mod held;
pub mod history;
pub mod http;
pub mod https;
pub mod inbox;
pub mod listener;
pub mod live;
pub mod log;
pub mod mesh;
pub mod mesh_serve;
pub mod metrics;
pub mod net;
pub mod node;
pub mod presence;
pub mod presence_mesh;
pub mod private;
pub mod push;
pub mod rate;
pub mod receipt_batch;
pub mod rest_limits;
pub mod router;
pub mod session;
pub mod shared;
pub mod sled_flush;
pub mod tls;
pub mod upload_window;

pub use config::{Config, FileLimits, GroupLimits, HttpLimits, InboxConfig, Limits};
pub use node::{Node, NodeError};
