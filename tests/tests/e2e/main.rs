//! End-to-end tests: real nodes, real QUIC, real sled, driven through the SDK (and, for
//! hostile input, through raw QUIC streams). One binary, so it links once.

mod carrier;
mod chat;
mod faults;
mod files;
mod friends;
mod group_files;
mod group_mesh;
mod groups;
mod hardening;
mod history;
mod hostile;
mod limits;
mod mesh;
mod mobility;
mod offline;
mod ops;
mod phone;
mod presence;
mod push;
mod push_mute;
mod raw;
mod receipts;
mod rest;
mod store;
