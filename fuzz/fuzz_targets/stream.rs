//! The node's per-stream state machines (`quiver_proto::stream`), fed arbitrary bytes in
//! arbitrary chunks: never a panic, chunking changes nothing, the buffer stays within one
//! frame, errors are final, and no request comes out of order.
//!
//! Run with `cargo +nightly fuzz run stream -- -max_total_time=600` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| quiver_proto::stream::exercise(data));
