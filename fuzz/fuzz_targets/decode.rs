//! Every message type of the wire protocol, decoded from arbitrary bytes: never a panic,
//! and whatever decodes re-encodes to a frame that decodes to the same value.
//!
//! Run with `cargo +nightly fuzz run decode -- -max_total_time=600` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_proto::{
    decode_frame, encode_frame, ControlRequest, ControlResponse, ConversationRequest,
    ConversationResponse, Entry,
};
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(Some((msg, used))) = decode_frame::<T>(data, 64 * 1024) {
        assert!(used <= data.len());
        let bytes = encode_frame(&msg).expect("a decoded message encodes");
        let (again, _) = decode_frame::<T>(&bytes, usize::MAX).unwrap().unwrap();
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ControlRequest>(data);
    round_trip::<ControlResponse>(data);
    round_trip::<ConversationRequest>(data);
    round_trip::<ConversationResponse>(data);
    round_trip::<Entry>(data);
});
