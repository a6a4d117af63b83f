//! The HTTPS listener in front of the REST app: TLS, and the bounds that keep one client
//! from holding the node's descriptors.
//!
//! hyper on its own has no timer: a client that sends half a header, or keeps an idle
//! HTTP/1 keep-alive or HTTP/2 connection, holds a task, a descriptor and ~31 KiB for
//! ever, and one host could open connections until the node ran out of descriptors. So,
//! as nginx does:
//! - a cap on connections in total (at most half the open-file limit, so QUIC, the log
//!   and uploads keep theirs) and per client address; past either, a new connection is
//!   closed at once;
//! - the TLS handshake and each request's headers within `header_timeout_ms`;
//! - nothing read for `idle_timeout_ms` closes the connection (idle keep-alive, idle
//!   HTTP/2, a stalled body): a timeout on the socket's reads, below TLS;
//! - a whole request answered within `request_timeout_ms` (408), in [`crate::http::app`].

use crate::config::HttpLimits;
use crate::live::Counts;
use crate::metrics::Metrics;
use axum::extract::ConnectInfo;
use axum::Router;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// HTTP/2 streams one connection may have open at once.
const H2_STREAMS: u32 = 32;

/// The total connection cap after leaving half the open-file limit to everything else.
pub fn connection_cap(configured: u32) -> u32 {
    use rustix::process::{getrlimit, Resource};
    let files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let half = u32::try_from(files / 2).unwrap_or(u32::MAX).max(1);
    configured.min(half)
}

/// Serves `app` over TLS on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let cap = connection_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(cap, "https connections capped at half the open-file limit");
    }
    let total = Arc::new(Semaphore::new(cap as usize));
    let per_address = Counts::<IpAddr>::default();
    let mut connections = JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let held = total.clone().try_acquire_owned().ok().and_then(|permit| {
            let slot = per_address.take(&remote.ip(), limits.max_connections_per_address)?;
            Some((permit, slot))
        });
        let Some(held) = held else {
            // Dropping the socket closes it: refused before TLS costs anything.
            metrics.http_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "https connection refused: over a connection cap");
            continue;
        };
        let (acceptor, app, limits, metrics) = (
            acceptor.clone(),
            app.clone(),
            limits.clone(),
            metrics.clone(),
        );
        connections.spawn(async move {
            metrics.http_open.fetch_add(1, Ordering::Relaxed);
            let local = tcp.local_addr().ok();
            let mut tcp = tokio_io_timeout::TimeoutStream::new(tcp);
            let idle = Duration::from_millis(limits.idle_timeout_ms);
            tcp.set_read_timeout(Some(idle));
            tcp.set_write_timeout(Some(idle));
            let header = Duration::from_millis(limits.header_timeout_ms);
            match tokio::time::timeout(header, acceptor.accept(Box::pin(tcp))).await {
                Ok(Ok(tls)) => {
                    let app = app
                        .layer(axum::Extension(ConnectInfo(remote)))
                        .layer(axum::Extension(crate::http::ReachedAt(local)));
                    connection(tls, app, header).await;
                }
                _ => tracing::debug!(%remote, "tls handshake failed or timed out"),
            }
            metrics.http_open.fetch_sub(1, Ordering::Relaxed);
            drop(held);
        });
    }
}

/// Serves one TLS connection with HTTP/1 or HTTP/2, as the client chose.
async fn connection<IO>(tls: IO, app: Router, header: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS);
    let service = hyper_util::service::TowerToHyperService::new(app);
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(error = %e, "http connection ended");
    }
}
