//! Follows the machine's network for a [`crate::Client`], so that a phone moving from
//! Wi-Fi to 4G (or back) keeps receiving without the app calling
//! [`crate::Client::rebind`].
//!
//! A receiving device sends nothing of its own between keep-alives, so when the link it
//! used goes away the node keeps pushing to the dead address until the device next speaks.
//! Here the OS tells us when links, addresses or default routes change (netlink on Linux
//! and Android, if-watch on Apple platforms and Windows: events, never a polling loop).
//! After a burst of changes settles, we ask the kernel which local address it would now
//! use to reach the node (a connected UDP socket sends nothing). Only when that address
//! differs does the client move to a fresh socket, which makes QUIC send at once from the
//! new path: the node learns it within one round trip, on the same connection. A change
//! that leaves the path alone (another interface, a router advertisement refreshing the
//! same default route) costs two system calls and no packet.

use crate::carrier::unspecified;
use crate::state::Inner;
use std::net::{IpAddr, SocketAddr};
use std::sync::Weak;
use std::time::Duration;

// One watcher per family of platforms, each a `Watcher` with `new` and `changed`.
#[cfg_attr(any(target_os = "linux", target_os = "android"), path = "netlink.rs")]
#[cfg_attr(
    any(target_os = "macos", target_os = "ios", target_os = "windows"),
    path = "ifwatch.rs"
)]
#[cfg_attr(
    not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "windows"
    )),
    path = "unsupported.rs"
)]
mod os;
use os::Watcher;

/// Changes come in bursts (a link goes down, then its addresses and routes): the path is
/// judged once the burst has been quiet this long.
const SETTLE: Duration = Duration::from_millis(30);

/// The longest a burst may hold the judgement back.
const SETTLE_AT_MOST: Duration = Duration::from_millis(300);

/// Watches the network until the client closes or is dropped.
pub(crate) async fn follow(inner: Weak<Inner>) {
    let Some((server, mut closing)) = inner
        .upgrade()
        .map(|inner| (inner.options.addr, inner.closing.subscribe()))
    else {
        return;
    };
    let mut watcher = match Watcher::new() {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::info!(%error, "cannot watch the network; rebind() is the app's to call");
            return;
        }
    };
    let mut path = route_source(server).ok();
    loop {
        tokio::select! {
            changed = watcher.changed() => if let Err(error) = changed {
                tracing::info!(%error, "network watch ended");
                return;
            },
            _ = closing.changed() => return,
        }
        // Let the burst settle; every further change restarts the wait, up to a bound (a
        // host that never stops changing links still gets its path judged).
        let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
        loop {
            let quiet = (tokio::time::Instant::now() + SETTLE).min(deadline);
            tokio::select! {
                changed = watcher.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(quiet) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let now = route_source(server).ok();
        if now.is_some() && now != path {
            tracing::info!(from = ?path, to = ?now, "network path changed; moving");
            if let Err(error) = inner.rebind() {
                tracing::warn!(%error, "rebind after a network change failed");
            }
        }
        if now.is_some() {
            // A client waiting to reconnect tries at once on a network that works.
            inner.network_changed.notify_waiters();
        }
        path = now;
    }
}

/// The local address the kernel would send from to reach `server` now: it follows the
/// routing table, so it changes exactly when the path does. No packet is sent.
fn route_source(server: SocketAddr) -> std::io::Result<IpAddr> {
    let probe = std::net::UdpSocket::bind(unspecified(server))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}
