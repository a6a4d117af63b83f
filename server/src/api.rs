//! What every REST handler shares: [`ApiError`], the one JSON shape of a failure (it
//! never shows internals; the cause is logged instead), and [`Authed`], the caller from a
//! valid bearer token. Below the handlers (`http`, `groups::rest`), which all use it.

use crate::auth::{unix_now, Claims};
use crate::directory::DirectoryError;
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use quiver_proto::rest::ApiErrorBody;
use quiver_proto::ErrorCode;
use std::sync::Arc;
use std::time::Instant;

/// A REST failure as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, bad or expired token, or wrong user name or password.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// The request conflicts with what exists (a taken user name).
    #[error("{0}")]
    Conflict(&'static str),
    /// The request body is over the limit.
    #[error("request body too large")]
    TooLarge,
    /// Too many attempts; try again later.
    #[error("too many attempts, try again later")]
    RateLimited,
    /// The node is too busy for this now (password hashing is full); retry in a second.
    #[error("busy, try again in a second")]
    Busy,
    /// The operator closed registration (`limits.registration_open = false`).
    #[error("registration is closed on this node")]
    RegistrationClosed,
    /// A group refused the change: not a member or not allowed (403 `not_member`), full
    /// (409 `quota_exceeded`), a change that makes no sense now (409 `conflict`), made too
    /// often (429), or groups unavailable (503).
    #[error("{1}")]
    Group(ErrorCode, &'static str),
    /// Something failed inside the node; the cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::RegistrationClosed => (StatusCode::FORBIDDEN, "registration_closed"),
            ApiError::Group(code, _) => match code {
                ErrorCode::NotMember => (StatusCode::FORBIDDEN, "not_member"),
                ErrorCode::QuotaExceeded => (StatusCode::CONFLICT, "quota_exceeded"),
                ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::CONFLICT, "conflict"),
            },
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = ApiErrorBody {
            error: code.into(),
            message: self.to_string(),
        };
        if matches!(
            self,
            ApiError::Busy | ApiError::RateLimited | ApiError::Group(ErrorCode::RateLimited, _)
        ) {
            let wait = if matches!(self, ApiError::Busy) {
                "1"
            } else {
                "10"
            };
            return (status, [(header::RETRY_AFTER, wait)], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::UserExists => ApiError::Conflict("user name is taken"),
            DirectoryError::NoSuchUser => ApiError::NotFound("no such user"),
            DirectoryError::NoRequest => ApiError::NotFound("no such friend request"),
            DirectoryError::SelfFriend => ApiError::BadRequest("cannot befriend yourself".into()),
            DirectoryError::TooManyRequests => {
                ApiError::Conflict("too many friend requests are waiting")
            }
            DirectoryError::TooManyMuted => ApiError::Group(
                ErrorCode::QuotaExceeded,
                "as many groups muted as one may be in; unmute one first",
            ),
            DirectoryError::Storage(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge;
        }
        ApiError::BadRequest(e.body_text())
    }
}

/// The caller, from a valid `Authorization: Bearer` token.
pub struct Authed(pub Claims);

impl FromRequestParts<Arc<Shared>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let claims = shared
            .tokens
            .verify(token, unix_now())
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
        if !shared
            .directory
            .has_device(&claims.user, claims.device)
            .await?
        {
            return Err(ApiError::Unauthorized("token revoked"));
        }
        // Friendship changes fsync: one user must not be able to keep the disk busy.
        if !shared.limits.admit_request(&claims.user, Instant::now()) {
            return Err(ApiError::RateLimited);
        }
        Ok(Authed(claims))
    }
}
