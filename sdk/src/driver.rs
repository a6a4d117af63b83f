//! The driver task of a [`crate::Client`]: keeps it connected until it is closed —
//! announces state changes, rewrites the outbox on each new connection and when answers
//! are overdue, and reconnects with exponential backoff and jitter.

use crate::error::ConnectError;
use crate::event::{ConnectionState, Event};
use crate::link::{handshake, Link};
use crate::state::{random_u128, Inner};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the driver looks for messages that wait too long for `Sent`.
const RESEND_CHECK: Duration = Duration::from_secs(1);

/// Keeps the client connected until it is closed; without a first connection it starts
/// by connecting.
pub(crate) async fn drive(inner: Arc<Inner>, first: Option<Arc<Link>>) {
    let mut closing = inner.closing.subscribe();
    let mut link = match first {
        Some(link) => link,
        None => match reconnect(&inner, &mut closing, 1).await {
            Some(link) => link,
            None => return,
        },
    };
    loop {
        inner.announce(ConnectionState::Online);
        inner.flush_all(false).await;
        let reason = loop {
            tokio::select! {
                error = link.conn.closed() => break error.to_string(),
                // `closing` only ever turns true.
                _ = closing.changed() => return,
                _ = tokio::time::sleep(RESEND_CHECK) => inner.flush_all(true).await,
            }
        };
        inner.set_link(None);
        if *closing.borrow() {
            return;
        }
        tracing::info!(%reason, "connection lost; reconnecting");
        inner.announce(ConnectionState::Offline { reason });
        match reconnect(&inner, &mut closing, link.id + 1).await {
            Some(next) => link = next,
            None => return,
        }
    }
}

/// Tries to connect until it works, the node refuses for good, or the client closes.
async fn reconnect(
    inner: &Arc<Inner>,
    closing: &mut watch::Receiver<bool>,
    id: u64,
) -> Option<Arc<Link>> {
    let options = &inner.options;
    let name = options.name_to_verify();
    let mut delay = options.backoff_min;
    loop {
        inner.announce(ConnectionState::Connecting);
        match handshake(
            &inner.endpoint,
            options.addr,
            &name,
            &options.token,
            options.connect_timeout,
            options
                .tcp_fallback
                .then_some((&inner.carrier, options.fallback_after)),
        )
        .await
        {
            Ok(handshake) if handshake.user == inner.user => {
                inner.seen().advance_to(handshake.cursor);
                let link = Link::start(inner, handshake, id);
                inner.set_link(Some(link.clone()));
                return Some(link);
            }
            Ok(_) => return stop(inner, "the token names another user".into()),
            Err(ConnectError::Refused { code, message }) if !code.is_retryable() => {
                return stop(inner, format!("refused by node: {code}: {message}"));
            }
            Err(e) => tracing::debug!(error = %e, ?delay, "reconnect failed"),
        }
        // Jitter (0.5 to 1.5 times the delay) keeps a crowd of phones from reconnecting
        // in lockstep after a node restart.
        let jittered = delay.mul_f64(0.5 + (random_u128() % 1000) as f64 / 1000.0);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => delay = (delay * 2).min(options.backoff_max),
            // A new path (the train left the tunnel): try at once, from the shortest delay.
            _ = inner.network_changed.notified() => delay = options.backoff_min,
            _ = closing.changed() => return None,
        }
    }
}

fn stop(inner: &Inner, reason: String) -> Option<Arc<Link>> {
    tracing::warn!(%reason, "client stopped");
    let _ = inner
        .events
        .try_send((Event::Disconnected { reason }, None));
    None
}
