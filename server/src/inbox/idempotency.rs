//! Idempotency digests: what makes two appends to an inbox "the same message", so that a
//! retry (or a second device's ack) finds the first one's `seq` instead of appending again.

use quiver_proto::{EntryKind, ReceiptKind, Seq, UserId};

/// What makes two appends "the same message", so that a retry finds the first one's
/// `seq`: a chat's sender and id, a receipt's reader, kind and `seq`. It follows from the
/// entry itself, so the index and the log cannot disagree. The index keeps a 128-bit
/// digest of it (SHA-256, cut): cryptographic, so a sender cannot pick message ids that
/// collide with another's. A group's membership change has no id to retry with and is
/// never the same as another: `None`, and not indexed. A batch of receipts is several
/// receipts: `None` here, each has its own ([`each_digest`]).
pub(super) fn idempotency_digest(peer: &UserId, kind: &EntryKind) -> Option<Digest> {
    let (tag, number) = match kind {
        EntryKind::Chat { id, .. } => (b'c', id.0),
        // A group's chats and files share the ids of the one group stream.
        EntryKind::GroupChat { id, .. } | EntryKind::GroupFile { id, .. } => (b'g', id.0),
        EntryKind::Member(_) | EntryKind::Receipts { .. } => return None,
        EntryKind::Receipt { kind, seq, .. } => return Some(receipt_digest(peer, *kind, *seq)),
    };
    Some(digest_of(tag, peer, number))
}

/// The idempotency digest of a `kind` receipt from `reader` of the message at `seq` of
/// the reader's inbox, alone or in a batch.
pub(super) fn receipt_digest(reader: &UserId, kind: ReceiptKind, seq: Seq) -> Digest {
    let tag = match kind {
        ReceiptKind::Delivered => b'D',
        ReceiptKind::Read => b'R',
    };
    digest_of(tag, reader, u128::from(seq.0))
}

/// Every idempotency digest of an entry: none, one, or one per receipt of a batch.
pub(super) fn each_digest(peer: &UserId, kind: &EntryKind, mut each: impl FnMut(Digest)) {
    match kind {
        EntryKind::Receipts { kind, messages } => messages
            .iter()
            .for_each(|m| each(receipt_digest(peer, *kind, m.seq))),
        kind => idempotency_digest(peer, kind).into_iter().for_each(each),
    }
}

fn digest_of(tag: u8, peer: &UserId, number: u128) -> Digest {
    let name = peer.as_str().as_bytes();
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    sha.update(&[tag, name.len() as u8]);
    sha.update(name);
    sha.update(&number.to_be_bytes());
    let digest = sha.finish();
    let (high, rest) = digest
        .as_ref()
        .split_first_chunk::<8>()
        .unwrap_or((&[0; 8], &[]));
    let (low, _) = rest.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    (u64::from_be_bytes(*high), u64::from_be_bytes(*low))
}

/// 128 bits of an idempotency key's SHA-256, as two `u64`s: a `u128` key would be
/// aligned to 16 bytes and make every index slot 32 bytes instead of 24.
pub(super) type Digest = (u64, u64);
