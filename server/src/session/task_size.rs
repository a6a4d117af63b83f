//! Pins the size of a session's future. Every open connection keeps one, idle or not, in
//! its tokio task, so a byte here is 50,000 bytes on a node with 50,000 connections; the
//! idle target (≤ 24 KiB a connection at 50,000) held by 589 bytes at `8b1b220`
//! (docs/PERFORMANCE.md, "An idle session's task, 640 bytes smaller"). The bench measures
//! the whole connection, only when someone runs it; this catches the session's share
//! growing in the suite.

use std::future::Future;

/// The largest `session::run` future whose task stays in a 2,176-byte tokio cell: the
/// listener's task adds 32 bytes to it, and tokio's cell around a task 112, rounded up to
/// 128 bytes, so 2,032 + 32 + 112 fills the cell exactly and one byte more costs every
/// connection another 128. At `8b1b220` the future was exactly this (in debug and release
/// builds of rustc 1.95); with user ids shared (`Arc<str>`) it is 2,000.
const SESSION_FUTURE_BYTES: usize = 2032;

/// The size of the future `f` returns, without calling it.
fn returned_size<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn a_sessions_future_does_not_grow() {
    let size = returned_size(super::run);
    assert!(
        size <= SESSION_FUTURE_BYTES,
        "session::run's future is {size} bytes, over {SESSION_FUTURE_BYTES}: box what is \
         kept across awaits for the session's life, or measure `quiver-bench idle \
         --connections 50000 --one-socket` and raise the bound with the figure"
    );
}
