//! Requests to the push gateway: one POST per notification (the body below), retried
//! with doubling backoff after a 5xx, a timeout or a broken connection; a target the
//! gateway names in `rejected` is forgotten. At most `in_flight` requests at once: the
//! notifier waits for a free one, so a gateway that hangs fills the notifier's bounded
//! queue (what does not fit is dropped and counted). It costs the node a bounded number
//! of tasks and never slows chat, whose side never waits.
//!
//! The body (Sygnal's shape): `{"notification": {"id", "sender", "seq", "counts":
//! {"unread"}, "prio", "devices": [{"app_id", "pushkey", "kind", "device"}]}}`; the
//! answer: `{"rejected": [pushkey…]}` (2xx).

use crate::config::PushConfig;
use crate::directory::Directory;
use crate::metrics::Metrics;
use quiver_proto::rest::PushTarget;
use quiver_proto::{DeviceId, GroupId, Seq, UserId};
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The first retry's wait; each next one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Why the gateway client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway's CA could not be read.
    #[error("push gateway CA: {0}")]
    Ca(String),
    /// The HTTP client could not be built.
    #[error("push gateway client: {0}")]
    Client(String),
}

/// One notification for one device.
#[derive(Clone, Debug)]
pub struct Notification {
    /// The device's user.
    pub owner: UserId,
    /// The device.
    pub device: DeviceId,
    /// Where the gateway reaches it.
    pub target: PushTarget,
    /// The sender of the newest chat.
    pub sender: UserId,
    /// The group it was sent to, for a group chat.
    pub group: Option<GroupId>,
    /// The newest chat's place.
    pub seq: Seq,
    /// Entries the device has not acknowledged.
    pub unread: u64,
}

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    rejected: Vec<String>,
}

/// The gateway client.
#[derive(Clone)]
pub struct Gateway {
    url: String,
    http: reqwest::Client,
    retries: u32,
    slots: Arc<Semaphore>,
}

impl Gateway {
    /// The client for `config`'s gateway; `None` when none is configured.
    pub fn new(config: &PushConfig) -> Result<Option<Self>, GatewayError> {
        let Some(url) = &config.gateway_url else {
            return Ok(None);
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .use_preconfigured_tls(tls(config)?);
        if !url.starts_with("https://") {
            builder = builder.http1_only();
        }
        let http = builder
            .build()
            .map_err(|e| GatewayError::Client(e.to_string()))?;
        Ok(Some(Self {
            url: url.clone(),
            http,
            retries: config.retries,
            slots: Arc::new(Semaphore::new(config.in_flight)),
        }))
    }

    /// Sends `n` on a task of its own, once fewer than `in_flight` requests are out.
    pub async fn send(
        &self,
        n: Notification,
        directory: Arc<dyn Directory>,
        metrics: Arc<Metrics>,
    ) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.deliver(n, directory, metrics).await;
            drop(slot);
        });
    }

    async fn deliver(&self, n: Notification, directory: Arc<dyn Directory>, metrics: Arc<Metrics>) {
        let body = serde_json::json!({ "notification": {
            "id": match &n.group {
                Some(group) => format!("{}:{}:{}", n.owner, group, n.seq.0),
                None => format!("{}:{}", n.owner, n.seq.0),
            },
            "sender": n.sender,
            "group": n.group,
            "seq": n.seq.0,
            "counts": { "unread": n.unread },
            "prio": "high",
            "devices": [{
                "app_id": n.target.app_id, "pushkey": n.target.token,
                "kind": n.target.kind, "device": n.device.0,
            }],
        }});
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                metrics.push_retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let answer = match self.http.post(&self.url).json(&body).send().await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(error = %e, "push gateway did not answer");
                    continue;
                }
            };
            let status = answer.status();
            if status.is_server_error() {
                tracing::debug!(%status, "push gateway failed");
                continue;
            }
            if !status.is_success() {
                tracing::warn!(%status, "push gateway refused a notification");
                metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            metrics.push_sent.fetch_add(1, Ordering::Relaxed);
            let answer: Answer = answer.json().await.unwrap_or_default();
            if answer.rejected.contains(&n.target.token) {
                metrics.push_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(user = %n.owner, device = %n.device, "push target rejected");
                if let Err(e) = directory.remove_push_target(&n.owner, n.device).await {
                    tracing::warn!(error = %e, "could not forget a rejected push target");
                }
            }
            return;
        }
        metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// TLS for the gateway: the configured CA only (the node trusts no default roots).
fn tls(config: &PushConfig) -> Result<rustls::ClientConfig, GatewayError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &config.gateway_ca {
        let pem = std::fs::read(path).map_err(|e| GatewayError::Ca(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| GatewayError::Ca(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| GatewayError::Ca(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| GatewayError::Client(e.to_string()))
}
