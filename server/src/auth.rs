//! Passwords (argon2) and login tokens (HMAC-SHA256 signed by the node).
//!
//! A token is `base64url(postcard(Claims)) "." base64url(tag)`. Any holder of the node's
//! token key can verify it without a lookup, which is what lets a connection authenticate
//! without touching the directory.

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use quiver_proto::{DeviceId, UserId};
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not two base64 parts, or claims that do not decode.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match this node's key.
    #[error("bad token signature")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("token expired")]
    Expired,
}

/// What a token says: who, which device, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub user: UserId,
    /// The device this token was issued to.
    pub device: DeviceId,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Signs and verifies tokens with the node's secret.
pub struct TokenKey {
    key: hmac::Key,
}

impl TokenKey {
    /// A key from 32 secret bytes (kept in the data folder).
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Makes a token for `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let body = postcard::to_stdvec(claims).expect("claims always serialize");
        let tag = hmac::sign(&self.key, &body);
        format!("{}.{}", B64.encode(&body), B64.encode(tag.as_ref()))
    }

    /// Checks signature and expiry (`now` in seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let body = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, &body, &tag).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = postcard::from_bytes(&body).map_err(|_| TokenError::Malformed)?;
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane).
/// CPU-heavy: call from a blocking task.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a stored hash. CPU-heavy: call from a blocking task.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: u64) -> Claims {
        Claims {
            user: UserId::parse("alice").unwrap(),
            device: DeviceId(7),
            expires_at,
        }
    }

    #[test]
    fn tokens_verify_and_refuse_tampering_and_expiry() {
        let key = TokenKey::new(&[1; 32]);
        let token = key.issue(&claims(100));
        assert_eq!(key.verify(&token, 99), Ok(claims(100)));
        assert_eq!(key.verify(&token, 100), Err(TokenError::Expired));
        assert_eq!(
            TokenKey::new(&[2; 32]).verify(&token, 0),
            Err(TokenError::BadSignature)
        );
        let forged = format!(
            "{}.{}",
            B64.encode(postcard::to_stdvec(&claims(999)).unwrap()),
            token.split_once('.').unwrap().1
        );
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(!hash.contains("correct horse"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "wrong"));
    }
}
