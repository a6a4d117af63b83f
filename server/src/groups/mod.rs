//! Groups: conversations with their own log on the group's home node (the node that made
//! them), one order for every member, a cursor per member device (read diffusion: one
//! append per message whatever the size).
//!
//! - [`state`]: one group's members, roles, invitations and keys, and the rules;
//! - [`store`]: every group here — state, logs, receipt markers;
//! - [`feed`]: a connected device's feeds of its groups, on its control stream;
//! - [`send`]: a member's conversation stream to a group;
//! - [`news`]: large groups' chats waiting for their members to be notified;
//! - the membership API is REST: [`crate::http`] (`http/groups.rs`).
//!
//! In a mesh, a group lives on its home node; requests, chats and devices elsewhere reach
//! it through [`crate::group_mesh`].

pub mod feed;
pub mod news;
pub mod send;
pub mod state;
pub mod store;

pub use store::Groups;
