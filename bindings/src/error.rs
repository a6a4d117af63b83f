//! [`QuiverError`]: every failure of a binding call, as one enum the foreign code can
//! match on (a Kotlin sealed class, a Swift enum, a Python exception class each).

use quiver_sdk::{AppError, HistoryError, RestError, SendError, StoreError};

/// Why a call failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum QuiverError {
    /// Log in first: the store holds no session.
    #[error("not logged in")]
    NotLoggedIn,
    /// Connect first (or the client was closed).
    #[error("not connected")]
    NotConnected,
    /// The node answered a REST call with an error (`status`, stable `code`).
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code, such as `unauthorized` or `conflict`.
        code: String,
        /// Detail.
        message: String,
    },
    /// The node could not be reached or refused the connection.
    #[error("connection: {message}")]
    Connection {
        /// Detail.
        message: String,
    },
    /// A message was refused or not sent.
    #[error("send: {message}")]
    Send {
        /// Detail.
        message: String,
    },
    /// A file transfer failed.
    #[error("file: {message}")]
    File {
        /// Detail.
        message: String,
    },
    /// The store failed.
    #[error("store: {message}")]
    Store {
        /// Detail.
        message: String,
    },
    /// An argument was not valid (a user name, a message id).
    #[error("invalid: {message}")]
    Invalid {
        /// Detail.
        message: String,
    },
}

impl From<AppError> for QuiverError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotLoggedIn => QuiverError::NotLoggedIn,
            AppError::Rest(e) => e.into(),
            AppError::Connect(e) => QuiverError::Connection {
                message: e.to_string(),
            },
            AppError::Store(e) => e.into(),
            AppError::OtherUser(owner) => QuiverError::Invalid {
                message: format!("this store is {owner}'s: open another one"),
            },
        }
    }
}

impl From<RestError> for QuiverError {
    fn from(e: RestError) -> Self {
        match e {
            RestError::Api {
                status,
                error,
                message,
            } => QuiverError::Api {
                status,
                code: error,
                message,
            },
            other => QuiverError::Connection {
                message: other.to_string(),
            },
        }
    }
}

impl From<StoreError> for QuiverError {
    fn from(e: StoreError) -> Self {
        QuiverError::Store {
            message: e.to_string(),
        }
    }
}

impl From<SendError> for QuiverError {
    fn from(e: SendError) -> Self {
        QuiverError::Send {
            message: e.to_string(),
        }
    }
}

impl From<HistoryError> for QuiverError {
    fn from(e: HistoryError) -> Self {
        QuiverError::Connection {
            message: e.to_string(),
        }
    }
}

impl From<quiver_sdk::FileError> for QuiverError {
    fn from(e: quiver_sdk::FileError) -> Self {
        QuiverError::File {
            message: e.to_string(),
        }
    }
}

/// A user name from the foreign side.
pub(crate) fn user(name: &str) -> Result<quiver_sdk::UserId, QuiverError> {
    quiver_sdk::UserId::parse(name).map_err(|e| QuiverError::Invalid {
        message: format!("user {name:?}: {e}"),
    })
}

/// A group id from the foreign side.
pub(crate) fn group(id: &str) -> Result<quiver_sdk::GroupId, QuiverError> {
    quiver_sdk::GroupId::parse(id).map_err(|e| QuiverError::Invalid {
        message: format!("group {id:?}: {e}"),
    })
}
