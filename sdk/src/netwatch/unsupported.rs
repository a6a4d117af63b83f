//! Platforms without a network watcher here: we do not poll; the app calls `rebind()`.

/// Never fires: [`Watcher::new`] says the platform is not supported.
pub(super) struct Watcher;

impl Watcher {
    pub(super) fn new() -> std::io::Result<Self> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub(super) async fn changed(&mut self) -> std::io::Result<()> {
        std::future::pending().await
    }
}
