//! # quiver-ffi — Quiver's app SDK for Kotlin, Swift and Python
//!
//! uniffi bindings (proc-macro style) over [`quiver_sdk::App`]: one object,
//! [`QuiverApp`], opened on a store file and a node's address; async functions (they run
//! on a tokio runtime inside the library); events delivered to a listener the app
//! implements ([`EventListener`]); errors as one enum ([`QuiverError`]). Message ids cross
//! as 32-hex-digit strings, since the foreign languages have no `u128`.
//!
//! - [`app`]: the object and its calls;
//! - [`groups`]: its group calls;
//! - [`event`]: what the listener receives;
//! - [`error`]: what calls throw.

pub mod app;
pub mod error;
pub mod event;
pub mod groups;

pub use app::QuiverApp;
pub use error::QuiverError;
pub use event::{EventListener, QuiverEvent};

uniffi::setup_scaffolding!();
