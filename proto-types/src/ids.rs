//! Newtype identifiers, so a device id can never be passed where a user id is expected.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// Why a string is not a valid [`UserId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// User names are 3 to 32 characters long.
    #[error("user name must be 3 to 32 characters")]
    Length,
    /// User names use lowercase ASCII letters, digits, `_` and `-` only.
    #[error("user name may contain only a-z, 0-9, '_' and '-'")]
    Charset,
}

/// A user, named by the unique user name chosen at registration.
///
/// The charset is restricted so the name can be used in storage keys and printed in logs
/// without escaping. A name read from the wire or from JSON is checked the same way as
/// [`UserId::parse`]: no `UserId` holds a name that `parse` would refuse.
///
/// Shared, not copied: a message's path through the node names its sender and recipient
/// in a dozen places (the log's index, the feed, the receipt), and cloning an `Arc` is a
/// count, where a `String` was an allocation each time. On the wire and in JSON it is a
/// plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Validates and wraps a user name.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        check(name)?;
        Ok(Self(name.into()))
    }

    /// The user name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` is a valid user name.
fn check(name: &str) -> Result<(), IdError> {
    if !(3..=32).contains(&name.len()) {
        return Err(IdError::Length);
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if !name.chars().all(ok) {
        return Err(IdError::Charset);
    }
    Ok(())
}

impl TryFrom<String> for UserId {
    type Error = IdError;

    fn try_from(name: String) -> Result<Self, IdError> {
        check(&name)?;
        Ok(Self(name.into()))
    }
}

impl From<UserId> for String {
    fn from(user: UserId) -> String {
        user.0.as_ref().to_owned()
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as a `&str` where the format lends one (postcard does): one allocation,
        // the `Arc`'s, for a name that checks.
        struct Name;
        impl Visitor<'_> for Name {
            type Value = UserId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<UserId, E> {
                UserId::parse(name).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One installation of the app (a phone, a laptop). Assigned by the node at first login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An id the sending client makes for each message; retries reuse it, so the node can
/// answer a retry with the `seq` it already gave instead of storing a second copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientMsgId(pub u128);

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Position of an entry in one user's inbox. Starts at 1; 0 means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_validated() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("bob_2-x").is_ok());
        assert_eq!(UserId::parse("al"), Err(IdError::Length));
        assert_eq!(UserId::parse(&"a".repeat(33)), Err(IdError::Length));
        assert_eq!(UserId::parse("Alice"), Err(IdError::Charset));
        assert_eq!(UserId::parse("al/ce"), Err(IdError::Charset));
    }

    #[test]
    fn names_from_the_wire_are_validated_too() {
        let alice = UserId::parse("alice").unwrap();
        let bytes = postcard::to_allocvec(&alice).unwrap();
        assert_eq!(bytes, b"\x05alice", "a plain string on the wire");
        assert_eq!(postcard::from_bytes::<UserId>(&bytes).unwrap(), alice);
        for bad in ["../../etc", "Alice", "al", "a\x1b[2J"] {
            let bytes = postcard::to_allocvec(bad).unwrap();
            assert!(postcard::from_bytes::<UserId>(&bytes).is_err(), "{bad:?}");
        }
    }
}
