//! Network changes on Apple platforms and Windows, through if-watch (SCDynamicStore,
//! NotifyIpInterfaceChange): an address came or went. [`super::follow`] asks the routing
//! table what it meant.

/// The OS's address-change notifications.
pub(super) struct Watcher(if_watch::tokio::IfWatcher);

impl Watcher {
    pub(super) fn new() -> std::io::Result<Self> {
        if_watch::tokio::IfWatcher::new().map(Self)
    }

    /// Waits for the next address to come or go.
    pub(super) async fn changed(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.0.poll_if_event(cx))
            .await
            .map(|_| ())
    }
}
