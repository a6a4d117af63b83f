//! # quiver-bench — measure a Quiver node
//!
//! Starts a real `quiver-server` process on loopback ([`node::NodeProcess`]) and drives it
//! through the real SDK with many simulated users ([`workload`]). Every message carries
//! its index and send time, so the receivers count loss, duplicates and reordering and
//! measure end-to-end latency (send → app has it, durability included).
//!
//! Modes: `pairs` (P senders each to its own receiver), `fanin` (many senders to one
//! receiver), `offline` (a backlog drained by a connecting device), `stalled` (node memory
//! while a receiver does not read), `idle` (memory per idle authenticated connection),
//! `file` (a file up and down, with chat latency next to it), `expire` (inbox retention
//! removing a backlog under a probe's chat), `hop` (mesh), `pairs
//! --compare mqtt` (the same against mosquitto), `table` (the standard runs as the
//! Markdown table of `docs/PERFORMANCE.md`), and `fsync` (the disk's sync latency now,
//! no node: [`disk`]). Delivery reports say how much CPU time the host took from this
//! (virtual) machine while they measured ([`steal`]).

pub mod carriers;
pub mod cluster;
pub mod disk;
pub mod files;
pub mod group;
pub mod held;
pub mod mqtt;
pub mod node;
pub mod presence;
pub mod push;
pub mod relay;
pub mod retention;
pub mod stats;
pub mod steal;
pub mod table;
pub mod workload;

pub use node::NodeProcess;
