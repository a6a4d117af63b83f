//! Passwords (argon2) and login tokens (HMAC-SHA256 signed by the node).
//!
//! A token is `base64url(postcard(Claims)) "." base64url(tag)`. Any holder of the node's
//! token key can verify it without a lookup, which is what lets a connection authenticate
//! without touching the directory.

use argon2::password_hash::{self, rand_core::OsRng, Output, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
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

thread_local! {
    /// argon2's 19 MiB work area, one per thread that hashes, kept and reused: only the
    /// node's few hashing threads ([`crate::hasher`]) ever fill one. Allocated anew for
    /// every hash, the freed areas stayed in the allocator's per-thread arenas (up to 8
    /// per core), and a burst of logins left hundreds of MiB behind.
    static WORK_AREA: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs argon2 into `out` in this thread's work area.
fn argon2_into(
    argon: &Argon2,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    WORK_AREA.with_borrow_mut(|area| {
        let blocks = argon.params().block_count();
        if area.len() != blocks {
            *area = vec![Block::default(); blocks];
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut area[..])
    })
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane) into
/// a PHC string. CPU-heavy: call from a hashing thread.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Ok(argon2_into(&argon, password.as_bytes(), salt_bytes, out)?)
    })?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::default().into()),
        params: argon.params().try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Checks a password against a stored PHC hash (in constant time). CPU-heavy: call from
/// a hashing thread.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let check = || -> Result<bool, password_hash::Error> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let version = match parsed.version {
            Some(v) => Version::try_from(v)?,
            None => Version::default(),
        };
        let argon = Argon2::new(
            Algorithm::try_from(parsed.algorithm)?,
            version,
            Params::try_from(&parsed)?,
        );
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let computed = Output::init_with(expected.len(), |out| {
            Ok(argon2_into(&argon, password.as_bytes(), salt_bytes, out)?)
        })?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    };
    check().unwrap_or(false)
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
        // Hashes stored before the work area was reused still verify, and the other way.
        use argon2::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password(&theirs, "correct horse"));
        assert!(!verify_password(&theirs, "correct horsf"));
        let ours = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &ours)
            .is_ok());
    }
}
