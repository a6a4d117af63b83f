//! The SDK's errors, one enum per kind of operation.

use quiver_proto::ErrorCode;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The CA certificate could not be used.
    #[error("tls setup: {0}")]
    Tls(String),
    /// The QUIC connection could not be made.
    #[error("connect: {0}")]
    Connect(String),
    /// The node refused the session (bad or expired token, version).
    #[error("refused by node: {code}: {message}")]
    Refused {
        /// The node's reason.
        code: ErrorCode,
        /// Its human-readable detail.
        message: String,
    },
    /// The node broke the protocol during the handshake.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client's store could not be read.
    #[error("store: {0}")]
    Store(String),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No key for that friend or group: not a friend, not a member, or keys not loaded.
    #[error("no key for {0}: not a friend or member, or its keys are not loaded")]
    NoKey(String),
    /// The node refused the message; `code.is_retryable()` says whether to try again.
    #[error("rejected by node: {0}")]
    Rejected(ErrorCode),
    /// The node closed the conversation stream with this code.
    #[error("conversation closed by node: {0}")]
    StreamClosed(ErrorCode),
    /// The connection or stream failed before `Sent` arrived; retry with the same id.
    #[error("connection lost: {0}")]
    Connection(String),
    /// The message could not be sealed.
    #[error("sealing failed")]
    Seal,
    /// The client's store could not keep the message, so it was not sent.
    #[error("store: {0}")]
    Store(String),
}

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The CA certificate could not be used.
    #[error("tls setup: {0}")]
    Tls(String),
    /// The request did not complete.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The node answered with an error.
    #[error("{status} {error}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code, such as `unauthorized`.
        error: String,
        /// Human-readable message.
        message: String,
    },
}

/// Why a history page was not read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The client is not connected now; ask again once [`crate::ConnectionState::Online`].
    #[error("not connected")]
    Offline,
    /// The node refused the page (`NotMember`, `RateLimited`, `Unavailable`…);
    /// `code.is_retryable()` says whether to ask again.
    #[error("refused by node: {0}")]
    Refused(ErrorCode),
    /// The stream failed or broke the protocol before the page ended; ask again.
    #[error("history stream: {0}")]
    Stream(String),
}
