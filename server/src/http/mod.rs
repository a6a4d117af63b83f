//! The REST API (axum, served over HTTPS): register, log in, friends, health.
//!
//! [`app`] builds the router with no server attached, so tests can call it directly;
//! [`crate::https::serve`] runs it behind rustls. Errors go out as one JSON shape ([`ApiError`]) that never
//! shows internals; the internal cause is logged instead.

pub(crate) mod group_calls;
mod groups;
mod muted;

use crate::api::{ApiError, Authed};
use crate::auth::{self, unix_now, Claims};
use crate::directory::{FriendKey, FriendRequestOutcome};
use crate::metrics::Scraped;
use crate::rest_limits::Admit;
use crate::router::Home;
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use quiver_proto::rest::{self, to_hex, FriendInfo, FriendStatus, FriendsResponse};
use quiver_proto::UserId;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest REST request body.
const MAX_BODY: usize = 16 * 1024;

/// The REST routes over the node's state.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(rest::HEALTH, get(health))
        .route(rest::READY, get(ready))
        .route(rest::METRICS, get(metrics))
        .route(rest::REGISTER, post(register))
        .route(rest::LOGIN, post(login))
        .route(rest::FRIEND_REQUESTS, post(request_friend))
        .route(rest::FRIEND_ACCEPT, post(accept_friend))
        .route(rest::FRIEND_REMOVE, post(remove_friend))
        .route(rest::FRIEND_BLOCK, post(block))
        .route(rest::FRIEND_UNBLOCK, post(unblock))
        .route(rest::FRIENDS, get(friends))
        .route(rest::LOGOUT, post(logout))
        .route(rest::PUSH, post(set_push_target).delete(remove_push_target))
        .merge(groups::routes())
        .merge(muted::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // The whole request, its body read included, or 408 (see `crate::https`).
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(shared.config.http.request_timeout_ms),
        ))
        .with_state(shared)
}

async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, Json<serde_json::Value>) {
    let registered = shared
        .router
        .mesh()
        .is_none_or(|mesh| mesh.registry().registered());
    if registered {
        (StatusCode::OK, Json(serde_json::json!({ "ready": true })))
    } else {
        let why = "not registered in the mesh: Redis does not answer";
        let body = serde_json::json!({ "ready": false, "reason": why });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Prometheus text exposition of the node's metrics, QUIC figures of the live sessions
/// included.
async fn metrics(State(shared): State<Arc<Shared>>) -> impl axum::response::IntoResponse {
    let mut scraped = Scraped::default();
    for conn in shared.live.sessions.connections() {
        scraped.quic.add(&conn.stats());
    }
    let (bytes, segments) = shared.router.inbox().footprint();
    scraped.inbox_log_bytes = bytes;
    scraped.inbox_segments = segments as u64;
    scraped.tunnels_open = shared.tunnels.count() as u64;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(&scraped),
    )
}

fn parse_user(name: &str) -> Result<UserId, ApiError> {
    UserId::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Runs password hashing on the node's few hashing threads; `Busy` when they are full.
async fn hashing<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    shared.hasher.run(f).await.map_err(|_| {
        shared.metrics.hashing_busy.fetch_add(1, Ordering::Relaxed);
        ApiError::Busy
    })
}

async fn register(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Result<Json<rest::RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !shared.config.limits.registration_open {
        return Err(ApiError::RegistrationClosed);
    }
    if !shared
        .limits
        .admit_registration(remote.ip(), Instant::now())
    {
        return Err(ApiError::RateLimited);
    }
    let Json(req) = body?;
    let user = parse_user(&req.user)?;
    if !(8..=1024).contains(&req.password.len()) {
        return Err(ApiError::BadRequest(
            "password must be 8 to 1024 bytes".into(),
        ));
    }
    let hash = hashing(&shared, move || auth::hash_password(&req.password))
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let home = &shared.config.node_id;
    shared.directory.create_user(&user, &hash, home).await?;
    tracing::info!(%user, "registered");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user": user })),
    ))
}

/// The local address a REST client reached the node at: a node listening on all
/// addresses tells each client the QUIC address on the same IP.
#[derive(Clone, Copy, Debug)]
pub struct ReachedAt(pub Option<SocketAddr>);

async fn login(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    reached: Option<axum::Extension<ReachedAt>>,
    body: Result<Json<rest::LoginRequest>, JsonRejection>,
) -> Result<Json<rest::LoginResponse>, ApiError> {
    let Json(req) = body?;
    let refused = || ApiError::Unauthorized("wrong user name or password");
    let user = UserId::parse(&req.user).map_err(|_| refused())?;
    // Limits are taken before argon2 runs: guessing costs the guesser, not the node.
    match shared
        .limits
        .admit_login(&user, remote.ip(), Instant::now())
    {
        Admit::Go => {}
        Admit::After(wait) => tokio::time::sleep(wait).await,
        Admit::Refuse => return Err(ApiError::RateLimited),
    }
    let hash = shared.directory.password_hash(&user).await?;
    let password = req.password;
    // An unknown user costs the same argon2 work as a known one, so timing does not tell.
    let ok = hashing(&shared, move || match hash {
        Some(hash) => auth::verify_password(&hash, &password),
        None => auth::hash_password(&password).is_err(),
    })
    .await?;
    if !ok {
        return Err(refused());
    }
    let device = shared.directory.register_device(&user, req.device).await?;
    if req.device != Some(device) {
        // A new device pages the history; it is pushed what comes from now on. Failing
        // that, it is pushed everything, as before: worth a warning, not a refusal.
        if let Err(code) = shared.router.start_device(&user, device).await {
            tracing::warn!(%user, %device, %code, "a new device's cursor was not moved to the head");
        }
    }
    let expires_at = unix_now() + shared.config.token_ttl_secs;
    let token = shared.tokens.issue(&Claims {
        user: user.clone(),
        device,
        expires_at,
    });
    tracing::info!(%user, %device, "logged in");
    // Normally a device connects to its user's home node: one hop less for everything.
    let quic_addr = match (shared.router.home(&user).await, shared.router.mesh()) {
        (Ok(Home::Peer(node)), Some(mesh)) => mesh.registry().lookup(&node).await.map(|n| n.client),
        _ => None,
    };
    let quic_addr = quic_addr.unwrap_or_else(|| {
        // This node: bound to every address, it answers with the one the client reached.
        let mut own = shared.quic_addr;
        if let (true, Some(axum::Extension(ReachedAt(Some(local))))) =
            (own.ip().is_unspecified(), reached)
        {
            own.set_ip(local.ip());
        }
        own
    });
    Ok(Json(rest::LoginResponse {
        token,
        user,
        device,
        expires_at,
        quic_addr: quic_addr.to_string(),
    }))
}

async fn request_friend(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::FriendRequest>, JsonRejection>,
) -> Result<Json<FriendStatus>, ApiError> {
    let Json(req) = body?;
    let other = parse_user(&req.user)?;
    let key = match shared.directory.request_friend(&me.user, &other).await? {
        FriendRequestOutcome::Pending => None,
        FriendRequestOutcome::Accepted(key) | FriendRequestOutcome::AlreadyFriends(key) => {
            Some(key)
        }
    };
    Ok(friend_status(other, key))
}

async fn accept_friend(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::FriendRequest>, JsonRejection>,
) -> Result<Json<FriendStatus>, ApiError> {
    let Json(req) = body?;
    let other = parse_user(&req.user)?;
    let key = shared.directory.accept_friend(&me.user, &other).await?;
    Ok(friend_status(other, Some(key)))
}

async fn remove_friend(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::FriendRequest>, JsonRejection>,
) -> Result<Json<FriendStatus>, ApiError> {
    let Json(req) = body?;
    let other = parse_user(&req.user)?;
    let was = shared.directory.remove_friend(&me.user, &other).await?;
    tracing::info!(user = %me.user, %other, was_friend = was, "friendship removed");
    Ok(keyless(other, "removed"))
}

async fn block(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::FriendRequest>, JsonRejection>,
) -> Result<Json<FriendStatus>, ApiError> {
    let Json(req) = body?;
    let other = parse_user(&req.user)?;
    shared.directory.block(&me.user, &other).await?;
    tracing::info!(user = %me.user, %other, "blocked");
    Ok(keyless(other, "blocked"))
}

async fn unblock(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::FriendRequest>, JsonRejection>,
) -> Result<Json<FriendStatus>, ApiError> {
    let Json(req) = body?;
    let other = parse_user(&req.user)?;
    shared.directory.unblock(&me.user, &other).await?;
    Ok(keyless(other, "unblocked"))
}

/// A relation with no key: "removed", "blocked", "unblocked".
fn keyless(user: UserId, status: &str) -> Json<FriendStatus> {
    Json(FriendStatus {
        user,
        status: status.into(),
        key: None,
    })
}

/// "friends" with the key once there is one, "pending" before.
fn friend_status(user: UserId, key: Option<FriendKey>) -> Json<FriendStatus> {
    let status = if key.is_some() { "friends" } else { "pending" };
    Json(FriendStatus {
        user,
        status: status.into(),
        key: key.map(|k| to_hex(&k)),
    })
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::LogoutRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body?;
    let device = (!req.all_devices).then_some(me.device);
    shared.directory.remove_devices(&me.user, device).await?;
    // Its tokens are refused from now on; its live sessions on this node end now.
    let code = crate::net::varint(quiver_proto::ErrorCode::Unauthenticated);
    let closed = shared
        .live
        .sessions
        .close(&me.user, device, code, b"logged out");
    tracing::debug!(closed, "sessions of logged-out devices closed");
    if let Some(mesh) = shared.router.mesh() {
        mesh.logout(&me.user, device).await;
    }
    tracing::info!(user = %me.user, all = req.all_devices, "logged out");
    Ok(Json(serde_json::json!({ "logged_out": true })))
}

/// Registers (or replaces) the caller's device's push target.
async fn set_push_target(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Result<Json<rest::PushTarget>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(target) = body?;
    if !["apns", "fcm", "webhook"].contains(&target.kind.as_str()) {
        return Err(ApiError::BadRequest("kind: apns, fcm or webhook".into()));
    }
    if target.token.is_empty() || target.token.len() > 4096 {
        return Err(ApiError::BadRequest("token: 1 to 4096 bytes".into()));
    }
    if target.app_id.is_empty() || target.app_id.len() > 256 {
        return Err(ApiError::BadRequest("app_id: 1 to 256 bytes".into()));
    }
    shared
        .directory
        .set_push_target(&me.user, me.device, &target)
        .await?;
    Ok(Json(serde_json::json!({ "push": true })))
}

/// Forgets the caller's device's push target.
async fn remove_push_target(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    shared
        .directory
        .remove_push_target(&me.user, me.device)
        .await?;
    Ok(Json(serde_json::json!({ "push": false })))
}

async fn friends(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
) -> Result<Json<FriendsResponse>, ApiError> {
    let relations = shared.directory.relations(&me.user).await?;
    Ok(Json(FriendsResponse {
        friends: relations
            .friends
            .into_iter()
            .map(|f| FriendInfo {
                user: f.user,
                key: to_hex(&f.key),
            })
            .collect(),
        incoming: relations.incoming,
        outgoing: relations.outgoing,
        blocked: relations.blocked,
    }))
}
