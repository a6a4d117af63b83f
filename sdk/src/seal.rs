//! Sealing bodies with the friendship key: XChaCha20-Poly1305, a random 24-byte nonce,
//! and the message's metadata (sender, recipient, client message id) as associated data.
//!
//! The associated data binds a body to its envelope: a body moved to another message, or
//! stamped with another sender, fails to open instead of showing as someone else's words.

use crate::xchacha::{self, NONCE_LEN, TAG_LEN};
use quiver_proto::{ClientMsgId, GroupId, UserId};

/// A friendship's 32-byte key.
#[derive(Clone, PartialEq, Eq)]
pub struct FriendKey(pub [u8; 32]);

impl std::fmt::Debug for FriendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FriendKey(..)")
    }
}

/// Why a body could not be opened.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SealError {
    /// Shorter than a nonce and a tag.
    #[error("sealed body is truncated")]
    Truncated,
    /// Wrong key, tampered bytes or metadata that does not match.
    #[error("sealed body does not authenticate")]
    Forged,
    /// Too long for the cipher (over 256 GiB): not sealed.
    #[error("body too long to seal")]
    TooLong,
}

/// Associated data: `label`, each name after its length in a byte, then `fields` —
/// built in one allocation of the size it ends with (two bodies a message, sealed and
/// opened, went through three reallocations each).
fn associated(label: &[u8], names: [&str; 2], fields: &[&[u8]]) -> Vec<u8> {
    let names_len: usize = names.iter().map(|name| 1 + name.len()).sum();
    let fields_len: usize = fields.iter().map(|field| field.len()).sum();
    let mut aad = Vec::with_capacity(label.len() + names_len + fields_len);
    aad.extend_from_slice(label);
    for name in names {
        aad.push(name.len() as u8);
        aad.extend_from_slice(name.as_bytes());
    }
    for field in fields {
        aad.extend_from_slice(field);
    }
    aad
}

fn associated_data(from: &UserId, to: &UserId, id: ClientMsgId) -> Vec<u8> {
    let names = [from.as_str(), to.as_str()];
    associated(b"quiver/1 body", names, &[&id.0.to_be_bytes()])
}

/// Seals `plaintext` from `from` to `to`: nonce followed by ciphertext and tag.
pub fn seal(
    key: &FriendKey,
    from: &UserId,
    to: &UserId,
    id: ClientMsgId,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_with(key, &associated_data(from, to, id), plaintext)
}

/// Opens a body sealed by [`seal`] with the same key and metadata.
pub fn open(
    key: &FriendKey,
    from: &UserId,
    to: &UserId,
    id: ClientMsgId,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    open_with(key, &associated_data(from, to, id), sealed)
}

/// The associated data of a group message: the group, the sender, the key epoch and the
/// message id, so a body cannot be moved to another group, sender or message.
fn group_associated_data(group: &GroupId, from: &UserId, epoch: u32, id: ClientMsgId) -> Vec<u8> {
    let names = [group.as_str(), from.as_str()];
    let fields: [&[u8]; 2] = [&epoch.to_be_bytes(), &id.0.to_be_bytes()];
    associated(b"quiver/1 group", names, &fields)
}

/// Seals `plaintext` from `from` to `group` with the group key of `epoch`.
pub fn seal_group(
    key: &FriendKey,
    group: &GroupId,
    from: &UserId,
    epoch: u32,
    id: ClientMsgId,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_with(
        key,
        &group_associated_data(group, from, epoch, id),
        plaintext,
    )
}

/// Opens a body sealed by [`seal_group`].
pub fn open_group(
    key: &FriendKey,
    group: &GroupId,
    from: &UserId,
    epoch: u32,
    id: ClientMsgId,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    open_with(key, &group_associated_data(group, from, epoch, id), sealed)
}

fn seal_with(key: &FriendKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    // A fresh random 192-bit nonce from the thread's CSPRNG (ChaCha, seeded and reseeded
    // from the OS): the OS generator's syscall per message was 5 % of a busy client.
    let mut nonce = [0u8; NONCE_LEN];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
    let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    sealed.extend_from_slice(&nonce);
    xchacha::seal_into(&key.0, &nonce, aad, plaintext, &mut sealed).ok_or(SealError::TooLong)?;
    Ok(sealed)
}

fn open_with(key: &FriendKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Truncated);
    }
    let (nonce, ciphertext) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(SealError::Truncated)?;
    xchacha::open(&key.0, nonce, aad, ciphertext).ok_or(SealError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The associated data is part of the wire contract (docs/PROTOCOL.md): a foreign
    /// client builds the same bytes.
    #[test]
    fn associated_data_is_as_the_protocol_writes_it() {
        let [alice, bob] = ["alice", "bob"].map(|n| UserId::parse(n).unwrap());
        let id = ClientMsgId(0x0102);
        let mut want = b"quiver/1 body\x05alice\x03bob".to_vec();
        want.extend_from_slice(&0x0102u128.to_be_bytes());
        assert_eq!(associated_data(&alice, &bob, id), want);

        let group = GroupId::from_bits(0xab);
        let mut want = b"quiver/1 group\x11g00000000000000ab\x05alice".to_vec();
        want.extend_from_slice(&7u32.to_be_bytes());
        want.extend_from_slice(&0x0102u128.to_be_bytes());
        assert_eq!(group_associated_data(&group, &alice, 7, id), want);
    }

    #[test]
    fn sealed_bodies_open_only_with_their_key_and_metadata() {
        let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| UserId::parse(n).unwrap());
        let key = FriendKey([7; 32]);
        let sealed = seal(&key, &alice, &bob, ClientMsgId(1), b"hello bob").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"hello bob"));
        assert_eq!(
            open(&key, &alice, &bob, ClientMsgId(1), &sealed).unwrap(),
            b"hello bob"
        );
        assert_eq!(
            open(&key, &carol, &bob, ClientMsgId(1), &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&key, &alice, &bob, ClientMsgId(2), &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&FriendKey([8; 32]), &alice, &bob, ClientMsgId(1), &sealed),
            Err(SealError::Forged)
        );
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(
            open(&key, &alice, &bob, ClientMsgId(1), &tampered),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&key, &alice, &bob, ClientMsgId(1), &sealed[..20]),
            Err(SealError::Truncated)
        );
    }

    #[test]
    fn group_bodies_open_only_in_their_group_epoch_and_message() {
        let (alice, carol) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("carol").unwrap(),
        );
        let (g, other) = (GroupId::from_bits(1), GroupId::from_bits(2));
        let key = FriendKey([7; 32]);
        let sealed = seal_group(&key, &g, &alice, 3, ClientMsgId(1), b"hi all").unwrap();
        assert_eq!(
            open_group(&key, &g, &alice, 3, ClientMsgId(1), &sealed).unwrap(),
            b"hi all"
        );
        for (group, from, epoch, id) in [
            (&other, &alice, 3, 1),
            (&g, &carol, 3, 1),
            (&g, &alice, 2, 1),
            (&g, &alice, 3, 2),
        ] {
            let opened = open_group(&key, group, from, epoch, ClientMsgId(id), &sealed);
            assert_eq!(opened, Err(SealError::Forged));
        }
    }
}
